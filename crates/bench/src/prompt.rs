//! The texts the bench sends. The throughput workload's prompts are distinct: nothing one request
//! sends is a prefix another could reuse beyond the chat template's own header, so every request
//! pays its full prefill. The prompt-cache workloads repeat on purpose, and only where they mean
//! to: a conversation resends its own history (and nothing of another conversation's), and a
//! shared-prefix run sends one system message with every question. Every text starts with the
//! run's tag, so a second run against the same server finds nothing of the first in its cache.

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

/// What the throughput workload's prompts ask for.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum PromptSet {
    /// Short chat questions (or notes to summarise, with --prompt-tokens).
    #[default]
    Chat,
    /// "Rewrite this text": a passage to copy out, lightly edited (the reply repeats most of
    /// its prompt: where speculative decoding by prompt lookup helps most).
    Rewrite,
    /// A RAG-style question over a passage, answered by quoting its sentences.
    Quote,
}

impl PromptSet {
    pub fn name(self) -> &'static str {
        match self {
            PromptSet::Chat => "chat",
            PromptSet::Rewrite => "rewrite",
            PromptSet::Quote => "quote",
        }
    }
}

/// Passages for the rewrite and quote prompts: plain English, so that a small model copies
/// them faithfully.
const PASSAGES: &[(&str, &str)] = &[
    (
        "The old harbour town of Wellmouth sits where the river Aln meets the sea. Its first \
         houses were built by fishermen in the twelfth century, and the stone quay that still \
         stands was finished in 1742 after a storm destroyed the wooden one. Today the town has \
         about four thousand people. The market is held every Thursday in the square by the \
         church, and the lifeboat station, opened in 1866, is the oldest on this part of the \
         coast. In summer a ferry runs twice a day to the island of Farne, where visitors can \
         see puffins and grey seals from April to July.",
        "When was the stone quay finished, and why was it built?",
    ),
    (
        "The city library opens at nine in the morning and closes at six in the evening on \
         weekdays; on Saturdays it closes at one, and on Sundays it is closed. Members may \
         borrow up to eight books for three weeks, renew them twice online, and reserve titles \
         that are out. The reading room on the second floor is kept quiet, and the children's \
         corner hosts stories every Wednesday afternoon. A library card is free for anyone who \
         lives or works in the city, and a lost card costs two pounds to replace.",
        "How many books may a member borrow, and for how long?",
    ),
    (
        "To plant a young apple tree, dig a hole twice as wide as its roots and just as deep. \
         Loosen the soil at the bottom, set the tree so that the graft stays above the ground, \
         and fill the hole with the soil you took out, pressing it down gently. Water the tree \
         well, then again every week during its first dry summer. A stake on the side of the \
         prevailing wind keeps it straight for the first two years. Most apple trees need a \
         second variety nearby to bear fruit, because their flowers must be pollinated by bees \
         carrying pollen from another tree.",
        "Why do most apple trees need a second variety nearby?",
    ),
    (
        "The night train from the capital to the northern coast leaves at ten past eleven and \
         arrives at half past seven the next morning. It has sleeping cars with two beds in \
         each room, a seated coach, and a small bar that closes at midnight. Breakfast is \
         served in the rooms an hour before arrival. Bicycles travel free in the last carriage \
         if they are booked in advance, and dogs are allowed in the seated coach only. Tickets \
         go on sale three months before the day of travel.",
        "When does the train arrive, and where may dogs travel?",
    ),
];

/// The user message of request `index` of a rewrite or quote run; `salt` makes it distinct.
fn passage_message(set: PromptSet, salt: &str, index: usize) -> String {
    let (passage, question) = PASSAGES[index % PASSAGES.len()];
    match set {
        PromptSet::Rewrite => format!(
            "Request {salt}. Rewrite the following text with British spelling, keeping every \
             sentence as it is otherwise:\n\n{passage}"
        ),
        _ => format!(
            "Request {salt}. Here is a document:\n\n{passage}\n\n{question} Answer by quoting \
             the sentences of the document that say so, word for word."
        ),
    }
}

/// The user message for request `index` of a throughput run of prompt set `set` (see
/// [`user_message`] for the chat set).
pub fn throughput_message(
    set: PromptSet,
    salt: &str,
    index: usize,
    prompt_tokens: Option<usize>,
) -> String {
    match set {
        PromptSet::Chat => user_message(salt, index, prompt_tokens),
        _ => passage_message(set, salt, index),
    }
}

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
            let mut text = format!("Request {salt}. Summarise these notes in one sentence:");
            // The salt, the header and the template take roughly 30 tokens of the budget.
            push_filler(&mut text, salt, index, n.saturating_sub(30).max(1));
            text
        }
    }
}

/// Appends `words` filler words (each with a leading space), a sequence of its own for each
/// (`seed`, `index`): a small LCG seeded by them.
pub fn push_filler(text: &mut String, seed: &str, index: usize, words: usize) {
    text.reserve(words * 7);
    let mut state = seed
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
}

/// Tokens of a turn's header (the run tag, in hex, splits into many), taken off its budget so
/// that a turn adds about the asked-for number of tokens: 27 to 36 with SmolLM2's tokenizer,
/// whose filler words are one token each.
const TURN_OVERHEAD_TOKENS: usize = 30;

/// The user message of turn `turn` (1-based) of conversation `conversation`, about `tokens`
/// tokens: the first turn opens the conversation with a question of its own, every turn brings
/// notes no other turn or conversation has. Later turns ask for a long answer, so that with short
/// turns and a large `--max-tokens` a history grows mostly by its replies, as a chat's does.
pub fn turn_message(tag: &str, conversation: usize, turn: usize, tokens: usize) -> String {
    let mut text = if turn == 1 {
        let question = QUESTIONS[conversation % QUESTIONS.len()];
        format!("Conversation {tag}-{conversation}, turn 1. {question} First, my notes:")
    } else {
        format!("Conversation {tag}-{conversation}, turn {turn}. More notes; go on, in detail:")
    };
    let seed = format!("{tag}-c{conversation}-t{turn}");
    push_filler(
        &mut text,
        &seed,
        conversation,
        tokens.saturating_sub(TURN_OVERHEAD_TOKENS).max(1),
    );
    text
}

/// Documents in the shared system message.
const DOCUMENTS: usize = 4;

const DOCUMENT_TITLES: [&str; DOCUMENTS] = [
    "Travel notes from the river towns",
    "Minutes of the garden society",
    "A history of the old market",
    "Letters about the winter train",
];

/// The system message every request of a shared-prefix run sends, about `tokens` tokens: a
/// preamble and a few documents of filler text, the same for every request of the run.
pub fn shared_system_message(tag: &str, tokens: usize) -> String {
    let mut text = format!(
        "You are the archive assistant of session {tag}. Answer the user's question from the \
         documents below. Quote the document you use by its number, keep answers short, and say \
         so when the documents do not answer the question."
    );
    // The preamble and the document headers take about 105 tokens (SmolLM2's tokenizer).
    let words = tokens.saturating_sub(105).max(DOCUMENTS);
    for (i, title) in DOCUMENT_TITLES.iter().enumerate() {
        text.push_str(&format!("\n\nDocument {}: {title}.", i + 1));
        let share = words / DOCUMENTS + usize::from(i < words % DOCUMENTS);
        push_filler(&mut text, tag, 1000 + i, share);
    }
    text
}

/// Request `index`'s question in round `round` (0-based) of a shared-prefix run: short, and
/// different for every request of the run.
pub fn shared_question(tag: &str, round: usize, index: usize) -> String {
    let question = QUESTIONS[(round * 7 + index) % QUESTIONS.len()];
    format!("Question {tag}-{round}-{index}: according to the documents, {question}")
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
    fn turns_add_about_their_budget_and_differ_everywhere() {
        let words = |s: &str| s.split_whitespace().count();
        // 270 filler words (one token each) and a header of 8 to 16 words (27 to 36 tokens,
        // the tag splitting into many): ~300 tokens a turn.
        for turn in 1..=6 {
            let n = words(&turn_message("tag", 3, turn, 300));
            assert!((278..=290).contains(&n), "turn {turn}: {n} words");
        }
        let history: usize = (1..=6)
            .map(|t| words(&turn_message("tag", 0, t, 300)))
            .sum();
        // Six turns of ~300 tokens, five replies of up to 32 and the template: ~2,050 tokens by
        // turn 6.
        assert!((1_650..=1_750).contains(&history), "{history}");
        // Turn 1 opens with the conversation's own question.
        assert!(turn_message("tag", 1, 1, 300).contains(QUESTIONS[1]));
        // No two turns anywhere share their notes.
        let notes = |c, t| {
            turn_message("tag", c, t, 300)
                .split_once(':')
                .unwrap()
                .1
                .to_string()
        };
        let mut seen = std::collections::HashSet::new();
        for c in 0..8 {
            for t in 1..=6 {
                assert!(
                    seen.insert(notes(c, t)),
                    "conversation {c} turn {t} repeats"
                );
            }
        }
        // Another run's texts are other texts.
        assert_ne!(turn_message("a", 0, 2, 300), turn_message("b", 0, 2, 300));
        assert_eq!(turn_message("a", 0, 2, 300), turn_message("a", 0, 2, 300));
    }

    #[test]
    fn the_shared_system_message_is_one_text_of_about_its_budget() {
        let a = shared_system_message("tag", 1_500);
        assert_eq!(a, shared_system_message("tag", 1_500));
        assert_ne!(a, shared_system_message("other", 1_500));
        let words = a.split_whitespace().count();
        assert!((1_420..=1_500).contains(&words), "{words}");
        assert_eq!(a.matches("\n\nDocument ").count(), DOCUMENTS);
        assert!(shared_system_message("tag", 10).contains("Document 4:"));
        // Questions: short, and no two alike within a run.
        let mut seen = std::collections::HashSet::new();
        for round in 0..3 {
            for i in 0..16 {
                let q = shared_question("tag", round, i);
                assert!(q.split_whitespace().count() < 30, "{q}");
                assert!(seen.insert(q));
            }
        }
    }

    #[test]
    fn rewrite_and_quote_prompts_carry_a_passage_and_differ_by_salt() {
        let a = throughput_message(PromptSet::Rewrite, "s-1", 0, None);
        assert!(a.contains("Rewrite") && a.contains("Wellmouth"), "{a}");
        assert_ne!(a, throughput_message(PromptSet::Rewrite, "s-2", 0, None));
        let q = throughput_message(PromptSet::Quote, "s-1", 1, None);
        assert!(q.contains("eight books") && q.contains("quoting"), "{q}");
        assert_eq!(
            throughput_message(PromptSet::Chat, "s", 2, None),
            user_message("s", 2, None)
        );
    }

    #[test]
    fn run_tags_are_hex() {
        let tag = run_tag();
        assert_eq!(tag.len(), 8);
        assert!(tag.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
