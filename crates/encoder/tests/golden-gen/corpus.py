"""The multilingual texts the embedding goldens are made from (shared by the scripts here)."""

LONG = (
    "Retrieval-augmented generation first embeds every document of a collection, then embeds "
    "the user's question, finds the nearest documents by cosine similarity, reranks them with a "
    "cross-encoder that reads query and document together, and finally hands the best few to a "
    "chat model that answers with citations. "
) * 6  # far beyond all-MiniLM-L6-v2's 256-token window: the tail is truncated

TEXTS = [
    "hello",
    "The quick brown fox jumps over the lazy dog.",
    "How do I reset my password if I no longer have access to my email?",
    "Climate change affects sea levels and weather patterns across the globe.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Wie spät ist es in Zürich, wenn es in New York Mittag ist?",
    "Le serveur calcule des plongements pour chaque document de l'index.",
    "Où se trouve la gare la plus proche ? Je suis perdu à Montréal.",
    "¿Dónde está la biblioteca más cercana? Necesito un libro de Cervantes.",
    "A cidade de São Paulo é a maior do Brasil.",
    "La pizza napoletana è patrimonio dell'umanità.",
    "Москва — столица России, а Киев — столица Украины.",
    "Ελληνικά: η γρήγορη καφέ αλεπού.",
    "机器学习模型可以在本地计算机上运行。",
    "東京は日本の首都です。桜がきれいです。",
    "서울은 대한민국의 수도입니다.",
    "مرحبا بالعالم، كيف حالك اليوم؟",
    "שלום עולם",
    "नमस्ते दुनिया, आप कैसे हैं?",
    "สวัสดีชาวโลก",
    "Tiếng Việt có dấu: Hà Nội mùa thu.",
    "İstanbul'da hava bugün çok güzel.",
    "Zażółć gęślą jaźń.",
    "emoji 🎉🚀 and symbols ∑∫√ with numbers 3.14159 and 2,718",
    "SELECT name, email FROM users WHERE id = 42 ORDER BY name;",
    "fn main() { println!(\"Hello, world!\"); }",
    "   leading and trailing whitespace\tand a tab   ",
    "ALL CAPS SHOUTING IS LOWERCASED BY AN UNCASED TOKENIZER",
    "naïve café résumé — accents are stripped by the uncased normalizer",
    "a",
    "Supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopic",
    LONG,
]
