//! Thinking: a reply's reasoning before its answer, kept apart from the answer.
//!
//! Models that think write their reasoning between two markers (Qwen3 and DeepSeek-style
//! templates: `<think>` and `</think>`), found from the chat template ([`markers_of`]). Two
//! pieces use them:
//! - [`ThinkingSplitter`] (reply side) takes the markers out of the text and says which text is
//!   thinking and which is the answer, however the text is chunked: only a thinking section that
//!   opens the reply counts, so a `<think>` later in an answer stays text.
//! - [`ThinkingBudget`] (engine side, on token ids) counts the thinking tokens and, once
//!   `token_budget` of them are spent, forces the end marker so that the answer follows.

use std::collections::VecDeque;

/// The text markers around a model's thinking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThinkingMarkers {
    pub open: String,
    pub close: String,
}

/// The markers a chat template writes, if it is a thinking model's.
pub fn markers_of(template_source: &str) -> Option<ThinkingMarkers> {
    (template_source.contains("<think>") && template_source.contains("</think>")).then(|| {
        ThinkingMarkers {
            open: "<think>".into(),
            close: "</think>".into(),
        }
    })
}

/// One piece of a reply's text, sorted.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Thinking(String),
    Answer(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Before any text: a reply may open with whitespace and then the open marker.
    Start,
    Thinking,
    /// Just after the close marker: the line breaks that follow it are markup too.
    AfterThinking,
    Answer,
}

/// Splits a streamed reply into thinking and answer (see the module docs).
#[derive(Debug)]
pub struct ThinkingSplitter {
    markers: ThinkingMarkers,
    phase: Phase,
    /// Text that may still be (the start of) a marker, or space next to one.
    held: String,
    /// The thinking has just opened: its leading space is still being skipped.
    opened: bool,
}

impl ThinkingSplitter {
    pub fn new(markers: ThinkingMarkers) -> Self {
        Self {
            markers,
            phase: Phase::Start,
            held: String::new(),
            opened: false,
        }
    }

    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        self.held.push_str(text);
        let mut out = Vec::new();
        loop {
            match self.phase {
                Phase::Start => {
                    let trimmed = self.held.trim_start();
                    if trimmed.is_empty() {
                        return out;
                    }
                    let open = &self.markers.open;
                    if let Some(rest) = trimmed.strip_prefix(open.as_str()) {
                        self.held = rest.to_string();
                        self.opened = true;
                        self.phase = Phase::Thinking;
                    } else if open.starts_with(trimmed) {
                        return out;
                    } else {
                        self.phase = Phase::Answer;
                    }
                }
                Phase::Thinking => {
                    // The line break after the open marker is markup, like the one before
                    // the close marker.
                    if self.opened {
                        self.held = self.held.trim_start().to_string();
                        if self.held.is_empty() {
                            return out;
                        }
                        self.opened = false;
                    }
                    let close = self.markers.close.clone();
                    match self.held.find(&close) {
                        Some(at) => {
                            let thinking: String = self.held.drain(..at).collect();
                            self.held.drain(..close.len());
                            push_piece(&mut out, Piece::Thinking(thinking.trim_end().into()));
                            self.phase = Phase::AfterThinking;
                        }
                        None => {
                            // Hold what may be the close marker, and the space before it.
                            let keep = partial_suffix(&self.held, &close);
                            let at = self.held[..self.held.len() - keep].trim_end().len();
                            let thinking: String = self.held.drain(..at).collect();
                            push_piece(&mut out, Piece::Thinking(thinking));
                            return out;
                        }
                    }
                }
                Phase::AfterThinking => {
                    let rest = self.held.trim_start();
                    if rest.is_empty() {
                        self.held.clear();
                        return out;
                    }
                    self.held = rest.to_string();
                    self.phase = Phase::Answer;
                }
                Phase::Answer => {
                    let answer = std::mem::take(&mut self.held);
                    push_piece(&mut out, Piece::Answer(answer));
                    return out;
                }
            }
        }
    }

    /// The end of the reply: what is held is released as what it was part of.
    pub fn finish(&mut self) -> Vec<Piece> {
        let held = std::mem::take(&mut self.held);
        let mut out = Vec::new();
        match self.phase {
            Phase::Thinking => push_piece(&mut out, Piece::Thinking(held)),
            Phase::AfterThinking => {}
            Phase::Start | Phase::Answer => push_piece(&mut out, Piece::Answer(held)),
        }
        out
    }
}

fn push_piece(out: &mut Vec<Piece>, piece: Piece) {
    match &piece {
        Piece::Thinking(t) | Piece::Answer(t) if t.is_empty() => {}
        _ => out.push(piece),
    }
}

/// Bytes at the end of `text` that are a proper prefix of `marker`.
fn partial_suffix(text: &str, marker: &str) -> usize {
    (1..marker.len().min(text.len() + 1))
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n) && marker.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

/// A thinking model's marker tokens and a request's budget of thinking tokens.
#[derive(Debug, Clone)]
pub struct ThinkingBudget {
    open: Vec<u32>,
    close: Vec<u32>,
    budget: usize,
    inside: bool,
    over: bool,
    spent: usize,
    /// The generated tokens so far, as far back as the longest marker.
    recent: VecDeque<u32>,
    forced: VecDeque<u32>,
}

impl ThinkingBudget {
    /// `open` and `close` are the markers' token ids; `budget` thinking tokens at most.
    pub fn new(open: Vec<u32>, close: Vec<u32>, budget: usize) -> Self {
        Self {
            open,
            close,
            budget,
            inside: false,
            over: false,
            spent: 0,
            recent: VecDeque::new(),
            forced: VecDeque::new(),
        }
    }

    /// The token the next step must produce, if the budget has run out.
    pub fn forced(&self) -> Option<u32> {
        self.forced.front().copied()
    }

    /// Follows one generated token.
    pub fn accept(&mut self, token: u32, output_tokens: usize) {
        if self.over {
            return;
        }
        if self.forced.front() == Some(&token) {
            self.forced.pop_front();
        }
        self.recent.push_back(token);
        if self.recent.len() > self.open.len().max(self.close.len()) {
            self.recent.pop_front();
        }
        let ends_with = |marker: &[u32], recent: &VecDeque<u32>| {
            !marker.is_empty()
                && recent.len() >= marker.len()
                && recent
                    .iter()
                    .skip(recent.len() - marker.len())
                    .eq(marker.iter())
        };
        if !self.inside {
            if ends_with(&self.open, &self.recent) {
                self.inside = true;
            } else if output_tokens > self.open.len() + 2 {
                // The reply did not open with thinking: nothing to count.
                self.over = true;
            }
            return;
        }
        if ends_with(&self.close, &self.recent) {
            self.inside = false;
            self.over = true;
            self.forced.clear();
            return;
        }
        self.spent += 1;
        if self.spent >= self.budget && self.forced.is_empty() {
            self.forced.extend(&self.close);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn markers() -> ThinkingMarkers {
        markers_of("{% if x %}<think>\n{{ r }}\n</think>{% endif %}").unwrap()
    }

    fn split(reply: &str, chunk: usize) -> (String, String) {
        let mut splitter = ThinkingSplitter::new(markers());
        let chars: Vec<char> = reply.chars().collect();
        let mut pieces = Vec::new();
        for part in chars.chunks(chunk) {
            pieces.extend(splitter.push(&part.iter().collect::<String>()));
        }
        pieces.extend(splitter.finish());
        let (mut thinking, mut answer) = (String::new(), String::new());
        for piece in pieces {
            match piece {
                Piece::Thinking(t) => {
                    assert!(answer.is_empty(), "thinking after the answer began");
                    thinking.push_str(&t)
                }
                Piece::Answer(a) => answer.push_str(&a),
            }
        }
        (thinking, answer)
    }

    #[test]
    fn thinking_and_answer_split_the_same_at_every_chunking() {
        let cases = [
            (
                "<think>\nLet me see: 2 + 2.\n</think>\n\nIt is 4.",
                "Let me see: 2 + 2.",
                "It is 4.",
            ),
            ("<think>\n\n</think>\n\nNo thought.", "", "No thought."),
            ("<think> a \n b </think>c", "a \n b", "c"),
            (
                "\n<think>é <b></think>Answer <think> stays",
                "é <b>",
                "Answer <think> stays",
            ),
            (
                "No thinking here. </think>",
                "",
                "No thinking here. </think>",
            ),
            ("<think>cut before the end", "cut before the end", ""),
            ("<thin", "", "<thin"),
            ("", "", ""),
        ];
        for (reply, thinking, answer) in cases {
            for chunk in 1..=reply.chars().count().max(1) {
                assert_eq!(
                    split(reply, chunk),
                    (thinking.into(), answer.into()),
                    "{reply:?} in {chunk}s"
                );
            }
        }
        assert!(markers_of("no markers {{ x }}").is_none());
    }

    #[test]
    fn the_budget_forces_the_close_marker_once_spent() {
        let (open, close) = (vec![1], vec![2, 3]);
        let mut budget = ThinkingBudget::new(open, close, 3);
        let mut generated = Vec::new();
        let mut next = 10;
        // A model that would think forever: it only ever proposes token `next`.
        for output in 1..=12 {
            let token = match (output, budget.forced()) {
                (1, _) => 1,
                (_, Some(forced)) => forced,
                _ => {
                    next += 1;
                    next
                }
            };
            generated.push(token);
            budget.accept(token, output);
        }
        assert_eq!(generated[..7], [1, 11, 12, 13, 2, 3, 14]);
        assert_eq!(budget.forced(), None);
        // A reply that does not open with the marker is left alone.
        let mut budget = ThinkingBudget::new(vec![1], vec![2], 1);
        for (i, token) in [5, 6, 7, 8, 1, 9, 9].into_iter().enumerate() {
            budget.accept(token, i + 1);
            assert_eq!(budget.forced(), None);
        }
    }
}
