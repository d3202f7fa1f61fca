"""Tiny random encoder models, made with `transformers`, and their reference outputs. A
developer's tool: the suite never runs it (models/make-test-fixtures.sh runs make_weights.py).

    python3 -m venv /tmp/encoder-golden && /tmp/encoder-golden/bin/pip install -r requirements.txt
    /tmp/encoder-golden/bin/python crates/encoder/tests/golden-gen/make_tiny_models.py

No real cross-encoder is small enough to ship, so fidelity is shown on random weights: each model
below is a complete Hugging Face directory (config, safetensors, tokenizer, sentence-transformers
modules where they apply) under ../fixtures/, and ../golden/tiny-*.json holds what `transformers`
/ `sentence-transformers` compute from exactly those files (each input alone, no padding). This
script writes everything but the weights, then make_weights.py writes model.safetensors from the
config.json written here, and the reference runs on that file, loaded strictly (so its tensor
names and shapes are checked against transformers' model).

- tiny-bert-reranker: BertForSequenceClassification (the ms-marco MiniLM cross-encoder layout:
  `bert.*`, pooler, `classifier`), one label, weights stored as f16.
- tiny-xlmr-reranker: XLMRobertaForSequenceClassification (the bge-reranker layout: `roberta.*`,
  `classifier.dense` + `classifier.out_proj`, positions offset past the padding id, a Unigram
  tokenizer with `<s> A </s></s> B </s>` pairs), weights stored as f32.
- tiny-st-embedder: a sentence-transformers model (BertModel + CLS pooling, no Normalize, query and
  document prompts, max_seq_length 24 so truncation shows), weights stored as bf16.

Weights are drawn (seeded numpy, in make_weights.py) with transformers' init rules and a wider
range than training uses (initializer_range 0.3) so that outputs differ clearly between inputs.
"""
import json
import pathlib
import shutil

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    BertTokenizerFast,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
    XLMRobertaTokenizerFast,
)

import make_weights

HERE = pathlib.Path(__file__).resolve().parent
FIXTURES = HERE.parent / "fixtures"
GOLDEN = HERE.parent / "golden"

TRAIN = [
    "what is the capital of france", "paris is the capital and largest city of france",
    "how do i bake bread", "mix flour water yeast and salt then bake the dough",
    "the weather today is sunny", "rust is a systems programming language",
    "berlin is the capital of germany", "a cross encoder reads the query and the document together",
    "embeddings map text to vectors", "Le chat dort sur le canapé",
]
QUERIES = ["what is the capital of france", "how do i bake bread", "rust programming"]
DOCUMENTS = [
    "Paris is the capital and largest city of France.",
    "Mix flour, water, yeast and salt; then bake the dough.",
    "Rust is a systems programming language.",
    "Berlin is the capital of Germany.",
    "The weather today is sunny!",
    # Longer than the models' windows: the pair is truncated (longest first).
    " ".join(["a cross encoder reads the query and the document together"] * 12),
]


def committed_or_trained(name, train):
    """The committed tokenizer of fixture `name` if there is one, else a new one from `train`:
    the tokenizers library's WordPiece and Unigram trainers do not give the same vocabulary twice
    (ties fall in hash-map order), so retraining would change the committed tokenizers and the
    token ids in the goldens for nothing."""
    path = FIXTURES / name / "tokenizer.json"
    return Tokenizer.from_file(str(path)) if path.exists() else train()


def wordpiece_tokenizer():
    tok = committed_or_trained("tiny-bert-reranker", train_wordpiece)
    return BertTokenizerFast(tokenizer_object=tok, model_max_length=64)


def train_wordpiece():
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(TRAIN, trainers.WordPieceTrainer(vocab_size=120, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return tok


def unigram_tokenizer():
    tok = committed_or_trained("tiny-xlmr-reranker", train_unigram)
    return XLMRobertaTokenizerFast(tokenizer_object=tok, model_max_length=64)


def train_unigram():
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok.train_from_iterator(
        TRAIN, trainers.UnigramTrainer(vocab_size=120, special_tokens=specials, unk_token="<unk>")
    )
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return tok


def load_weights(model, path):
    """make_weights.py's file into the transformers model, strictly: a name or shape that
    make_weights.tensor_shapes gets wrong fails here. The reference runs on exactly the stored
    weights, computed in f32."""
    model.to(torch.float32).load_state_dict(load_file(path), strict=True)
    return model.to(torch.float32).eval()


def save(model, tokenizer, name, dtype):
    out = FIXTURES / name
    shutil.rmtree(out, ignore_errors=True)
    # config.json as transformers writes it for this model and dtype.
    model.config.architectures = [type(model).__name__]
    model.config.dtype = dtype
    model.config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    make_weights.write_model(name)
    return load_weights(model, out / "model.safetensors"), out


def pair_logits(model, tokenizer):
    rows = []
    for q in QUERIES:
        for d in DOCUMENTS:
            enc = tokenizer(q, d, truncation=True, max_length=tokenizer.model_max_length, return_tensors="pt")
            with torch.no_grad():
                logit = model(**enc).logits[0, 0].item()
            rows.append({"query": q, "document": d, "ids": enc["input_ids"][0].tolist(), "logit": logit})
    return rows


def write(name, doc):
    (GOLDEN / f"{name}.json").write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n")


def bert_reranker(tokenizer):
    cfg = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64, type_vocab_size=2, num_labels=1,
        hidden_act="gelu", initializer_range=0.3, pad_token_id=0,
    )
    model, _ = save(BertForSequenceClassification(cfg), tokenizer, "tiny-bert-reranker", torch.float16)
    write("tiny-bert-reranker", {"pairs": pair_logits(model, tokenizer)})


def xlmr_reranker():
    tokenizer = unigram_tokenizer()
    cfg = XLMRobertaConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=66, type_vocab_size=1, num_labels=1,
        hidden_act="gelu", initializer_range=0.3, pad_token_id=1, bos_token_id=0, eos_token_id=2,
    )
    model, _ = save(XLMRobertaForSequenceClassification(cfg), tokenizer, "tiny-xlmr-reranker", torch.float32)
    write("tiny-xlmr-reranker", {"pairs": pair_logits(model, tokenizer)})


def st_embedder(tokenizer):
    from sentence_transformers import SentenceTransformer, models as st_models

    cfg = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64, type_vocab_size=2,
        hidden_act="gelu", initializer_range=0.3, pad_token_id=0,
    )
    # sentence-transformers writes the directory (its modules, configs and a placeholder
    # model.safetensors, which make_weights.py then replaces).
    staging = FIXTURES / "tiny-st-embedder.staging"
    shutil.rmtree(staging, ignore_errors=True)
    BertModel(cfg, add_pooling_layer=False).to(torch.bfloat16).save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    word = st_models.Transformer(str(staging), max_seq_length=24)
    pool = st_models.Pooling(word.get_word_embedding_dimension(), pooling_mode="cls")
    st = SentenceTransformer(
        modules=[word, pool],
        prompts={"query": "query: ", "document": "passage: "},
        device="cpu",
    )
    out = FIXTURES / "tiny-st-embedder"
    shutil.rmtree(out, ignore_errors=True)
    st.save(str(out), safe_serialization=True)
    shutil.rmtree(staging)
    (out / "README.md").unlink(missing_ok=True)  # sentence-transformers' generated model card
    make_weights.write_model("tiny-st-embedder")
    stored = load_weights(BertModel(BertConfig.from_pretrained(out)), out / "model.safetensors").state_dict()
    st = SentenceTransformer(str(out), device="cpu")  # exactly what was saved
    st[0].auto_model.to(torch.float32)
    loaded = st[0].auto_model.state_dict()
    assert loaded.keys() == stored.keys() and all(torch.equal(loaded[k], stored[k]) for k in stored)
    texts = QUERIES + DOCUMENTS
    rows = []
    for prompt in [None, "query", "document"]:
        for t in texts:
            e = st.encode([t], prompt_name=prompt, batch_size=1, convert_to_numpy=True)[0]
            rows.append({"prompt_name": prompt, "text": t, "embedding": [float(f"{v:.9g}") for v in e]})
    write("tiny-st-embedder", {"max_seq_length": st.max_seq_length, "texts": rows})


def main():
    FIXTURES.mkdir(exist_ok=True)
    GOLDEN.mkdir(exist_ok=True)
    wp = wordpiece_tokenizer()
    bert_reranker(wp)
    xlmr_reranker()
    st_embedder(wp)
    for p in sorted(FIXTURES.rglob("*")):
        if p.is_file():
            print(p.relative_to(FIXTURES), p.stat().st_size)


if __name__ == "__main__":
    main()
