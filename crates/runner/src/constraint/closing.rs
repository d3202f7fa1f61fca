//! Finishing a constrained reply within its token budget.
//!
//! A grammar keeps a reply well-formed token by token but does not make it end: a small model can
//! write a string value (or a tool plan) until `max_tokens` cuts it, and the client gets broken
//! JSON or no call at all. So, as the budget runs low, the engine asks the constraint for a
//! *closing path*, a short sequence of allowed tokens after which the grammar may end, and
//! forces it once it barely fits in the tokens left (`engine::sequence`). A reply whose shortest
//! completion still fits in its budget therefore always completes.
//!
//! The path is found greedily on the live matcher (its tokens are consumed, then rolled back): at
//! each step the allowed token with the best closing score, until the grammar accepts the end.
//! The score depends on where the JSON stands, which [`JsonLex`] follows byte by byte: inside a
//! string, a token that closes it (the earlier its quote, the better), else the longest one
//! (progress through a `minLength`); outside, by its first byte: a closing bracket, then a
//! quote (a key or a string value), a scalar, a separator, and an opening bracket last; then by
//! length, so forced text such as a required key goes by in few tokens. Greedy is not the
//! shortest completion in general, but each JSON state closes in one or two tokens, so the path
//! stays short; when none is found within the limit, nothing is forced.
//!
//! A tool grammar's JSON starts after the call block's opening marker; a required call's plan
//! comes first, its path begins with that marker, and [`ClosingPath::plan_close`] tells how
//! many of its tokens end the plan, so the engine can close the plan early and leave the call
//! room for its values.
//!
//! Cost: one mask per path token (tens of microseconds to a millisecond each, depending on the
//! grammar), paid only on the steps where the engine looks (the last few dozen tokens).

use std::sync::Arc;

use llguidance::toktrie::TokTrie;

use super::{Constraint, ConstraintError};

/// Where a JSON text stands lexically: inside a string or not (and after a backslash there).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct JsonLex {
    in_string: bool,
    escape: bool,
}

impl JsonLex {
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.step(b);
        }
    }

    /// Follows one byte; true when it closed a string.
    fn step(&mut self, b: u8) -> bool {
        if self.in_string {
            if self.escape {
                self.escape = false;
            } else if b == b'\\' {
                self.escape = true;
            } else if b == b'"' {
                self.in_string = false;
                return true;
            }
        } else if b == b'"' {
            self.in_string = true;
        }
        false
    }
}

/// Every token's closing scores, computed once per model: outside strings, and inside a string
/// (no backslash pending), where the score says how soon the token closes it.
#[derive(Debug)]
pub(crate) struct ClosingScores {
    outside: Vec<i16>,
    inside: Vec<i16>,
}

impl ClosingScores {
    pub fn new(trie: &TokTrie) -> Self {
        let n = trie.vocab_size() as u32;
        let inside_string = JsonLex {
            in_string: true,
            escape: false,
        };
        Self {
            outside: (0..n)
                .map(|id| score(JsonLex::default(), trie.token(id)))
                .collect(),
            inside: (0..n)
                .map(|id| score(inside_string, trie.token(id)))
                .collect(),
        }
    }

    fn of(&self, lex: JsonLex, token: u32, bytes: &[u8]) -> i16 {
        let table = match (lex.in_string, lex.escape) {
            (false, _) => &self.outside,
            (true, false) => &self.inside,
            // Rare (a token boundary right after a backslash): scored on the spot.
            (true, true) => return score(lex, bytes),
        };
        table.get(token as usize).copied().unwrap_or(i16::MIN)
    }
}

/// See the module docs; special tokens (empty text here) score lowest.
fn score(lex: JsonLex, bytes: &[u8]) -> i16 {
    if bytes.is_empty() {
        return i16::MIN;
    }
    if lex.in_string {
        let mut l = lex;
        for (i, &b) in bytes.iter().enumerate().take(64) {
            if l.step(b) {
                return 2000 - 10 * i as i16 + structural(&bytes[i + 1..]).min(500);
            }
        }
        // Still inside: the longer, the more of a required length is written.
        return bytes.len().min(16) as i16;
    }
    structural(bytes)
}

/// Outside strings: by the first byte, then the closers that follow it (outside any string the
/// token opens), less what it writes inside a string it opens (content, when the aim is to close),
/// then length.
fn structural(bytes: &[u8]) -> i16 {
    // JSON here is written with ", " and ": ": a value's token often starts with a space.
    let Some(&first) = bytes.iter().find(|b| **b != b' ').or(bytes.first()) else {
        return 0;
    };
    let mut score: i16 = match first {
        b'}' | b']' => 600,
        b'"' => 400,
        b'0'..=b'9' | b't' | b'f' | b'n' => 300,
        b'-' => 250,
        b',' | b':' | b' ' => 200,
        b'{' | b'[' => -600,
        _ => 0,
    };
    let mut lex = JsonLex::default();
    for &b in bytes.iter().take(16) {
        let was_in = lex.in_string;
        let closed = lex.step(b);
        if !was_in && !lex.in_string && matches!(b, b'}' | b']') {
            score += 20;
        } else if was_in && !closed {
            score -= 10;
        }
    }
    score + bytes.len().min(8) as i16
}

/// The opening marker of a call block, for the plan (or free text) that comes before it.
#[derive(Debug, Clone)]
pub(crate) struct PlanMarker {
    /// The marker as tokens (one special token, or the text's greedy tokenization).
    pub tokens: Vec<u32>,
    /// The marker's text; empty for a special token, which is matched by id.
    pub text: Vec<u8>,
}

/// Where the text before a call block stands: a required call's plan, or the free text that
/// may precede a call. The block's JSON starts after the marker.
#[derive(Debug, Clone)]
pub(crate) struct PlanState {
    pub marker: PlanMarker,
    /// A call must follow, so the plan may be closed early to make room for it.
    pub required: bool,
    /// Bytes generated so far before the marker (the marker ends the text at its first
    /// occurrence).
    seen: Vec<u8>,
    pub open: bool,
}

impl PlanState {
    pub fn new(marker: PlanMarker, required: bool) -> Self {
        Self {
            marker,
            required,
            seen: Vec::new(),
            open: true,
        }
    }

    /// Follows a generated token; once the marker has appeared, returns how many of the token's
    /// bytes come after it (the start of the call's JSON).
    pub fn accept(&mut self, token: u32, bytes: &[u8]) -> Option<usize> {
        if !self.open {
            return None;
        }
        if self.marker.text.is_empty() {
            if self.marker.tokens.contains(&token) {
                self.open = false;
                return Some(0);
            }
            return None;
        }
        let before = self.seen.len();
        self.seen.extend_from_slice(bytes);
        let text = &self.marker.text;
        let at = self
            .seen
            .windows(text.len())
            .position(|w| w == text.as_slice())?;
        self.open = false;
        let end = at + text.len();
        self.seen = Vec::new();
        Some((before + bytes.len()).saturating_sub(end).min(bytes.len()))
    }
}

/// A way to complete the grammar from where the reply stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosingPath {
    pub tokens: Vec<u32>,
    /// How many leading tokens close a tool plan (the call's opening marker); 0 outside a plan.
    pub plan_close: usize,
}

impl Constraint {
    /// A path of at most `limit` tokens after which the grammar may end, or `None` when the
    /// greedy walk finds none within the limit. The constraint is left as it was.
    pub fn closing_path(&mut self, limit: usize) -> Result<Option<ClosingPath>, ConstraintError> {
        let mut consumed = 0;
        let walked = self.walk_closing(limit, &mut consumed);
        let rolled_back = self.matcher.rollback(consumed);
        let path = walked?;
        rolled_back.map_err(runtime)?;
        Ok(path)
    }

    fn walk_closing(
        &mut self,
        limit: usize,
        consumed: &mut usize,
    ) -> Result<Option<ClosingPath>, ConstraintError> {
        let mut path = ClosingPath {
            tokens: Vec::new(),
            plan_close: 0,
        };
        let mut lex = self.lex;
        if let Some(plan) = self.plan.as_ref().filter(|p| p.open) {
            if !plan.required {
                // Free text may end anywhere: nothing to close.
                return Ok(Some(path));
            }
            let marker = plan.marker.tokens.clone();
            if marker.len() > limit {
                return Ok(None);
            }
            let taken = self.matcher.try_consume_tokens(&marker).map_err(runtime)?;
            *consumed += taken;
            if taken < marker.len() {
                return Ok(None);
            }
            path.plan_close = marker.len();
            path.tokens = marker;
            lex = JsonLex::default();
        }
        let scores = Arc::clone(&self.scores);
        let env = self.env.clone();
        let trie = env.tok_trie();
        loop {
            if self.matcher.is_error() {
                return Err(runtime(self.matcher.get_error().unwrap_or_default()));
            }
            if self.matcher.is_stopped() || self.matcher.is_accepting().map_err(runtime)? {
                return Ok(Some(path));
            }
            if path.tokens.len() >= limit {
                return Ok(None);
            }
            let mask = self.matcher.compute_mask().map_err(runtime)?;
            let mut best: Option<(i16, u32)> = None;
            mask.iter_set_entries(|t| {
                let t = t as u32;
                let s = scores.of(lex, t, trie.token(t));
                if best.is_none_or(|(b, _)| s > b) {
                    best = Some((s, t));
                }
            });
            let Some((_, token)) = best else {
                return Ok(None);
            };
            self.matcher.consume_token(token).map_err(runtime)?;
            *consumed += 1;
            lex.feed(trie.token(token));
            path.tokens.push(token);
        }
    }
}

fn runtime(e: impl std::fmt::Display) -> ConstraintError {
    ConstraintError::Runtime(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::{score, JsonLex, PlanMarker, PlanState};

    fn inside() -> JsonLex {
        let mut lex = JsonLex::default();
        lex.feed(b"{\"name\": \"Pri");
        lex
    }

    #[test]
    fn outside_strings_closers_beat_members_and_openers_lose() {
        let out = JsonLex::default();
        assert!(
            score(out, b"}") > score(out, b", \""),
            "close rather than add a member"
        );
        assert!(
            score(out, b" \"") > score(out, b" \"{}"),
            "a string it opens is not closed by brackets"
        );
        assert!(score(out, b"0") > score(out, b","));
        assert!(score(out, b"{") < score(out, b"0"));
        assert_eq!(score(out, b""), i16::MIN);
    }

    #[test]
    fn inside_a_string_the_token_that_closes_it_wins() {
        let lex = inside();
        assert!(
            score(lex, b"\"") > score(lex, b"}}}}"),
            "brackets in a string close nothing"
        );
        assert!(score(lex, b"\",") > score(lex, b"athana"));
        assert!(score(lex, b"\"}") > score(lex, b"\""));
        assert!(
            score(lex, b"a\"") < score(lex, b"\""),
            "the earlier the quote, the better"
        );
        assert!(
            score(lex, b"athana") > score(lex, b"a"),
            "longer is more progress"
        );
        let mut escaped = lex;
        escaped.feed(b"\\");
        assert!(
            score(escaped, b"\"") < 100,
            "an escaped quote does not close"
        );
    }

    #[test]
    fn a_plan_ends_at_its_marker_and_the_json_starts_after_it() {
        let marker = PlanMarker {
            tokens: vec![1, 2],
            text: b"<tool_calls>".to_vec(),
        };
        let mut plan = PlanState::new(marker, true);
        assert_eq!(plan.accept(7, b"I will <tool"), None);
        assert!(plan.open);
        assert_eq!(plan.accept(8, b"_calls>[{\""), Some(3));
        assert!(!plan.open);
        let special = PlanMarker {
            tokens: vec![99],
            text: Vec::new(),
        };
        let mut plan = PlanState::new(special, false);
        assert_eq!(plan.accept(5, b"text"), None);
        assert_eq!(plan.accept(99, b""), Some(0));
    }
}
