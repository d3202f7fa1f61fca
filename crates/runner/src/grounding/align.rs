//! FAST citations: a deterministic alignment of answer spans to the sources' text. Words are
//! maximal runs of alphanumeric characters, compared lowercased. Walking the answer left to
//! right, the longest run of words that also appears, in order, in some source becomes a span
//! when it is long enough to be a quote rather than chance: three words, or two content words
//! (not stopwords). The span cites every source that holds that same run of words. Neighbouring
//! spans citing the same sources, with nothing but spaces and punctuation between them, merge.
//!
//! Cost: for each answer word, a scan of the positions where that word occurs in the sources
//! (an index built once per request): microseconds for a reply over a few documents.

use std::collections::HashMap;

/// A run of words a reply shares with some sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// Byte range in the aligned text.
    pub start: usize,
    pub end: usize,
    /// Indices of the sources that hold the run.
    pub sources: Vec<usize>,
}

/// Fewest words of a quote.
const MIN_WORDS: usize = 3;
/// Fewest content words of a two-word quote.
const MIN_CONTENT_WORDS: usize = 2;

/// Words too common to make a quote on their own.
const STOPWORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "an", "and", "any", "are", "as", "at", "be", "been",
    "but", "by", "can", "could", "did", "do", "does", "for", "from", "had", "has", "have", "he",
    "her", "his", "i", "if", "in", "into", "is", "it", "its", "may", "more", "most", "no", "not",
    "of", "on", "one", "or", "other", "our", "she", "so", "some", "such", "than", "that", "the",
    "their", "them", "then", "there", "these", "they", "this", "to", "very", "was", "we", "were",
    "what", "when", "where", "which", "who", "will", "with", "would", "you", "your",
];

/// The words of a text: lowercased, with their byte ranges.
#[derive(Debug, Clone, Default)]
pub struct Words {
    pub words: Vec<String>,
    pub spans: Vec<(usize, usize)>,
}

impl Words {
    pub fn of(text: &str) -> Self {
        let mut out = Words::default();
        let mut start = None;
        for (i, c) in text.char_indices() {
            match (c.is_alphanumeric(), start) {
                (true, None) => start = Some(i),
                (false, Some(s)) => {
                    out.push(text, s, i);
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            out.push(text, s, text.len());
        }
        out
    }

    fn push(&mut self, text: &str, start: usize, end: usize) {
        self.words.push(text[start..end].to_lowercase());
        self.spans.push((start, end));
    }

    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }
}

/// Whether a word carries meaning of its own: not a stopword, and a number or 3+ characters.
pub fn is_content_word(word: &str) -> bool {
    let numeric = word.chars().all(|c| c.is_numeric());
    (numeric || word.chars().count() >= 3) && !STOPWORDS.contains(&word)
}

/// The sources' words, indexed by word, built once per request.
#[derive(Debug, Default)]
pub struct SourceIndex {
    sources: Vec<Words>,
    /// word -> (source, position) of every occurrence.
    positions: HashMap<String, Vec<(usize, usize)>>,
}

impl SourceIndex {
    pub fn new<'a>(texts: impl IntoIterator<Item = &'a str>) -> Self {
        let mut index = SourceIndex::default();
        for (s, text) in texts.into_iter().enumerate() {
            let words = Words::of(text);
            for (p, w) in words.words.iter().enumerate() {
                index.positions.entry(w.clone()).or_default().push((s, p));
            }
            index.sources.push(words);
        }
        index
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The longest run of `answer` words from `i` found in any source, and which sources hold it.
    fn longest_from(&self, answer: &[String], i: usize) -> (usize, Vec<usize>) {
        let mut best = 0;
        let mut holders: Vec<usize> = Vec::new();
        for &(s, p) in self.positions.get(&answer[i]).into_iter().flatten() {
            let source = &self.sources[s].words;
            let len = answer[i..]
                .iter()
                .zip(&source[p..])
                .take_while(|(a, b)| a == b)
                .count();
            if len > best {
                best = len;
                holders.clear();
            }
            if len == best && !holders.contains(&s) {
                holders.push(s);
            }
        }
        holders.sort_unstable();
        (best, holders)
    }
}

/// The quotes of `text` from the indexed sources (see the module docs), in text order.
pub fn align(text: &str, index: &SourceIndex) -> Vec<Match> {
    let answer = Words::of(text);
    let mut out: Vec<Match> = Vec::new();
    let mut i = 0;
    while i < answer.len() {
        let (len, sources) = index.longest_from(&answer.words, i);
        let run = &answer.words[i..i + len];
        let content = run.iter().filter(|w| is_content_word(w)).count();
        let quote = len >= MIN_WORDS && content >= 1 || len >= 2 && content >= MIN_CONTENT_WORDS;
        if !quote {
            i += 1;
            continue;
        }
        let (start, end) = (answer.spans[i].0, answer.spans[i + len - 1].1);
        match out.last_mut() {
            Some(last)
                if last.sources == sources
                    && !text[last.end..start].chars().any(char::is_alphanumeric) =>
            {
                last.end = end;
            }
            _ => out.push(Match {
                start,
                end,
                sources,
            }),
        }
        i += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(text: &str, sources: &[&str]) -> Vec<(String, Vec<usize>)> {
        let index = SourceIndex::new(sources.iter().copied());
        align(text, &index)
            .into_iter()
            .map(|m| (text[m.start..m.end].to_string(), m.sources))
            .collect()
    }

    #[test]
    fn a_quote_is_cited_to_the_source_that_holds_it() {
        let docs = [
            "The capital of Vextor is Lumra, a city of 12,000 people.",
            "The capital of Zorblatt is Quenmoor, a city of 40,000 people.",
        ];
        assert_eq!(
            spans(
                "Quenmoor is the capital of Zorblatt; about 40,000 people live there.",
                &docs
            ),
            vec![
                ("the capital of Zorblatt".to_string(), vec![1]),
                ("40,000 people".to_string(), vec![1]),
            ]
        );
        // A run both hold cites both; the longer run wins over a shared prefix.
        assert_eq!(
            spans("The capital of Zorblatt is Quenmoor.", &docs),
            vec![("The capital of Zorblatt is Quenmoor".to_string(), vec![1])]
        );
    }

    #[test]
    fn chance_overlaps_are_not_quotes() {
        let docs = ["It was one of the best years in the history of the town."];
        assert!(spans("One of the questions is open.", &docs).is_empty());
        assert!(spans("History matters.", &docs).is_empty());
        assert_eq!(
            spans("It was the history of the town.", &docs),
            vec![("the history of the town".to_string(), vec![0])]
        );
    }

    #[test]
    fn words_are_unicode_and_case_blind() {
        let docs = ["Der Zürichsee liegt südlich von Zürich."];
        assert_eq!(
            spans("Wie gesagt: der ZÜRICHSEE liegt südlich.", &docs),
            vec![("der ZÜRICHSEE liegt südlich".to_string(), vec![0])]
        );
        let words = Words::of("naïve café, 40,000!");
        assert_eq!(words.words, ["naïve", "café", "40", "000"]);
    }
}
