//! Thinking: a reply's reasoning before its answer, kept apart from the answer.
//!
//! Models that think write their reasoning between two markers (Qwen3 and DeepSeek-style
//! templates: `<think>` and `</think>`; Command's reasoning templates: the special tokens
//! `<|START_THINKING|>` and `<|END_THINKING|>`), found from the chat template ([`markers_of`]).
//! Some templates open the thinking in the prompt themselves (Command with `reasoning` on,
//! DeepSeek R1): then the reply starts inside it ([`ThinkingMarkers::opened_by`]). Two pieces
//! use the markers:
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

impl ThinkingMarkers {
    /// Whether a rendered prompt ends inside the thinking: its template wrote the open marker
    /// as the start of the reply.
    pub fn opened_by(&self, prompt: &str) -> bool {
        prompt.trim_end().ends_with(&self.open)
    }
}

/// The markers a chat template writes, if it is a thinking model's. Command's markers count
/// only in a template with a reasoning switch (`{% if reasoning %}`): Command R7B's tool-use
/// template writes the same tokens around tool plans, which are not thinking (the tool-call
/// parser reads them as `tool_plan`).
pub fn markers_of(template_source: &str) -> Option<ThinkingMarkers> {
    let pair = |open: &str, close: &str| {
        (template_source.contains(open) && template_source.contains(close)).then(|| {
            ThinkingMarkers {
                open: open.into(),
                close: close.into(),
            }
        })
    };
    pair("<think>", "</think>").or_else(|| {
        pair("<|START_THINKING|>", "<|END_THINKING|>")
            .filter(|_| has_reasoning_switch(template_source))
    })
}

/// `{% if reasoning %}` or `{%- if reasoning -%}`, not `reasoning_content` and the like.
fn has_reasoning_switch(source: &str) -> bool {
    source.match_indices("if reasoning").any(|(at, found)| {
        source[at + found.len()..]
            .trim_start_matches([' ', '-'])
            .starts_with("%}")
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
    /// `opened`: the prompt opened the thinking ([`ThinkingMarkers::opened_by`]), so the reply
    /// starts inside it.
    pub fn new(markers: ThinkingMarkers, opened: bool) -> Self {
        Self {
            markers,
            phase: if opened {
                Phase::Thinking
            } else {
                Phase::Start
            },
            held: String::new(),
            opened,
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
    /// `open` and `close` are the markers' token ids; `budget` thinking tokens at most;
    /// `opened`: the prompt opened the thinking, so the reply starts inside it.
    pub fn new(open: Vec<u32>, close: Vec<u32>, budget: usize, opened: bool) -> Self {
        Self {
            open,
            close,
            budget,
            inside: opened,
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
        split_with(markers(), false, reply, chunk)
    }

    fn split_with(
        markers: ThinkingMarkers,
        opened: bool,
        reply: &str,
        chunk: usize,
    ) -> (String, String) {
        let mut splitter = ThinkingSplitter::new(markers, opened);
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
        let mut budget = ThinkingBudget::new(open, close, 3, false);
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
        let mut budget = ThinkingBudget::new(vec![1], vec![2], 1, false);
        for (i, token) in [5, 6, 7, 8, 1, 9, 9].into_iter().enumerate() {
            budget.accept(token, i + 1);
            assert_eq!(budget.forced(), None);
        }
        // A prompt that opened the thinking: the first generated token already counts.
        let mut budget = ThinkingBudget::new(vec![1], vec![2], 2, true);
        budget.accept(7, 1);
        assert_eq!(budget.forced(), None);
        budget.accept(8, 2);
        assert_eq!(budget.forced(), Some(2));
        budget.accept(2, 3);
        assert_eq!(budget.forced(), None);
        budget.accept(9, 4);
        assert_eq!(budget.forced(), None);
    }

    #[test]
    fn command_reasoning_templates_think_and_tool_use_templates_do_not() {
        let templates = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/text/templates");
        let read = |name: &str| std::fs::read_to_string(format!("{templates}/{name}")).unwrap();
        let north = markers_of(&read("cohere-north.jinja")).expect("Command 4 reasons");
        assert_eq!(
            (north.open.as_str(), north.close.as_str()),
            ("<|START_THINKING|>", "<|END_THINKING|>")
        );
        // R7B's markers are its tool plans.
        assert_eq!(markers_of(&read("command-r7b-tool_use.jinja")), None);
        assert_eq!(markers_of(&read("qwen3.jinja")), Some(markers()));
        assert!(!has_reasoning_switch("{% if message.reasoning_content %}"));
        assert!(has_reasoning_switch("{%- if reasoning -%}"));
    }

    #[test]
    fn a_prompt_that_opens_the_thinking_starts_the_reply_inside_it() {
        let command =
            markers_of("{% if reasoning %}<|START_THINKING|>{% endif %}<|END_THINKING|>").unwrap();
        assert!(command.opened_by("<|CHATBOT_TOKEN|><|START_THINKING|>"));
        assert!(!command.opened_by("<|CHATBOT_TOKEN|><|START_THINKING|><|END_THINKING|>"));
        assert!(markers().opened_by("<|im_start|>assistant\n<think>\n"));
        let cases = [
            (
                "First, 2 + 2.<|END_THINKING|><|START_TEXT|>4<|END_TEXT|>",
                "First, 2 + 2.",
                "<|START_TEXT|>4<|END_TEXT|>",
            ),
            ("\nstill thinking", "still thinking", ""),
            ("<|END_THINKING|>At once.", "", "At once."),
        ];
        for (reply, thinking, answer) in cases {
            for chunk in 1..=reply.chars().count() {
                assert_eq!(
                    split_with(command.clone(), true, reply, chunk),
                    (thinking.into(), answer.into()),
                    "{reply:?} in {chunk}s"
                );
            }
        }
    }
}
