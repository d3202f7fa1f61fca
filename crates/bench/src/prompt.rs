//! Distinct prompts: nothing one request sends is a prefix another could reuse beyond the chat
//! template's own header, so every request pays its full prefill.

/// Short chat questions (about 15-25 tokens each once salted), cycled through.
const QUESTIONS: &[&str] = &[
    "Write a short poem about the sea at night.",
    "Explain in simple words why the sky is blue.",
    "Give me three tips for learning a new language.",
    "Describe how a bicycle works to a child.",
    "What are the main differences between cats and dogs as pets?",
    "Tell a short story about a robot who learns to paint.",
    "List some good habits for staying healthy in winter.",
    "How do plants turn sunlight into food?",
    "Suggest a simple recipe for a vegetable soup.",
    "Why do people enjoy listening to music?",
    "Describe a busy market in a small town.",
    "What should I pack for a weekend hiking trip?",
];

/// Common words that most tokenizers keep as one token with their leading space, so that a
/// padded prompt of n words is close to n tokens.
const WORDS: &[&str] = &[
    "the", "time", "people", "water", "house", "small", "river", "light", "market", "garden",
    "winter", "morning", "road", "city", "friend", "music", "paper", "green", "window", "table",
    "story", "school", "family", "stone", "bread", "train", "letter", "summer", "forest", "field",
    "street", "number", "world", "evening", "color", "animal", "mountain", "song", "door", "book",
];

/// A unique tag for one run, so repeated runs against a server with a prompt cache stay distinct.
pub fn run_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:08x}",
        (nanos ^ (nanos >> 32)) as u32 ^ std::process::id()
    )
}

/// The user message for request `index` of a run: a salt first (so even the first tokens after
/// the template header differ), then a question, or about `prompt_tokens` words of notes to
/// summarise when a long prompt is asked for.
pub fn user_message(salt: &str, index: usize, prompt_tokens: Option<usize>) -> String {
    let question = QUESTIONS[index % QUESTIONS.len()];
    match prompt_tokens {
        None => format!("Request {salt}. {question}"),
        Some(n) => {
            let header = format!("Request {salt}. Summarise these notes in one sentence:");
            // The salt, the header and the template take roughly 30 tokens of the budget.
            let words = n.saturating_sub(30).max(1);
            let mut text = String::with_capacity(header.len() + words * 7);
            text.push_str(&header);
            // A small LCG seeded by the salt: a different word sequence per request.
            let mut state = salt
                .bytes()
                .fold(index as u64 ^ 0x9e37_79b9_7f4a_7c15, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                });
            for _ in 0..words {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                text.push(' ');
                text.push_str(WORDS[(state >> 33) as usize % WORDS.len()]);
            }
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_distinct_and_long_ones_are_long() {
        let a = user_message("t-1-0", 0, None);
        let b = user_message("t-1-1", 1, None);
        assert_ne!(a, b);
        assert!(a.starts_with("Request t-1-0. "));
        let long_a = user_message("t-1-0", 0, Some(1000));
        let long_b = user_message("t-1-1", 0, Some(1000));
        assert_ne!(long_a, long_b);
        let words = long_a.split_whitespace().count();
        assert!((970..1000).contains(&words), "{words}");
        // Past the salt and header, the word sequences differ too.
        let tail = |s: &str| s.split_once(':').unwrap().1.to_string();
        assert_ne!(tail(&long_a), tail(&long_b));
    }

    #[test]
    fn run_tags_are_hex() {
        let tag = run_tag();
        assert_eq!(tag.len(), 8);
        assert!(tag.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
