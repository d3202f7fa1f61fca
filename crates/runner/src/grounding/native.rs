//! Command models' own citation markup, taken out of the text and turned into citations.
//!
//! Two documented forms (Cohere's `melody` library parses the same):
//! - Command R / R+: `<co: 0,2>span</co: 0,2>`: the numbers are documents in prompt order,
//!   which here is the order of the reply's sources.
//! - Command R7B / A ("Command 3"): `<co>span</co: 0:[1,2],1:[0]>`: `tool call:[results]`. The
//!   chat template shows documents as the results of tool call 0 (`direct-injected-document`)
//!   when there are any, and then each tool call whose results the chat holds, in order; a
//!   result index is the document's position or the tool result's block.
//!
//! The markup never reaches the content: text that could still become a tag is held (at most
//! [`MAX_TAG`] bytes) until it is known, and a tag that names no real source is dropped with
//! nothing cited. A span's offsets are code points of the clean text, as every citation's are.

use super::{Source, SourceKind};

/// Longest tag looked for; a `<` followed by more than this without closing is plain text.
pub const MAX_TAG: usize = 96;

/// What the parser makes of a piece of text.
#[derive(Debug, Clone, PartialEq)]
pub enum NativeEvent {
    /// Clean text, in order.
    Text(String),
    /// A cited span of the clean text so far: code points `start..end`, and the indices of its
    /// sources in the reply's source list.
    Cite {
        start: usize,
        end: usize,
        sources: Vec<usize>,
    },
}

/// Streams text through, taking out `<co ...>` markup.
#[derive(Debug)]
pub struct NativeCitations {
    /// For Command 3 references: `groups[tool call]` = the sources of its results, in order.
    groups: Vec<Vec<usize>>,
    /// Sources by their position (Command R references).
    count: usize,
    /// Text not yet known to be plain (it starts with `<` and may be a tag).
    held: String,
    /// Code points of clean text written so far.
    written: usize,
    /// Where the open span began (code points), and the sources its opening tag named.
    open: Option<(usize, Vec<usize>)>,
}

impl NativeCitations {
    pub fn new(sources: &[Source]) -> Self {
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let documents: Vec<usize> = (0..sources.len())
            .filter(|&i| sources[i].kind == SourceKind::Document)
            .collect();
        if !documents.is_empty() {
            groups.push(documents);
        }
        // Tool results are `<call id>:<block>`, grouped by call in the order they appear.
        let first_call = groups.len();
        let mut calls: Vec<&str> = Vec::new();
        for (i, source) in sources.iter().enumerate() {
            if source.kind != SourceKind::Tool {
                continue;
            }
            let call = source
                .id
                .rsplit_once(':')
                .map_or(source.id.as_str(), |c| c.0);
            let g = match calls.iter().position(|c| *c == call) {
                Some(g) => g,
                None => {
                    calls.push(call);
                    groups.push(Vec::new());
                    calls.len() - 1
                }
            };
            groups[first_call + g].push(i);
        }
        Self {
            groups,
            count: sources.len(),
            held: String::new(),
            written: 0,
            open: None,
        }
    }

    /// The events of the next piece of text.
    pub fn push(&mut self, text: &str) -> Vec<NativeEvent> {
        self.held.push_str(text);
        let mut out = Vec::new();
        let mut clean = String::new();
        loop {
            let Some(at) = self.held.find('<') else {
                clean.push_str(&self.held);
                self.held.clear();
                break;
            };
            clean.push_str(&self.held[..at]);
            self.held.drain(..at);
            match tag(&self.held) {
                TagScan::Partial => break,
                TagScan::NotATag => {
                    clean.push('<');
                    self.held.drain(..1);
                }
                TagScan::Tag { len, tag } => {
                    self.held.drain(..len);
                    self.flush(&mut out, &mut clean);
                    self.apply(&mut out, tag);
                }
            }
        }
        self.flush(&mut out, &mut clean);
        out
    }

    /// The end of the text: whatever is held is plain text; an open span cites nothing.
    pub fn finish(&mut self) -> Vec<NativeEvent> {
        let mut out = Vec::new();
        let mut clean = std::mem::take(&mut self.held);
        self.flush(&mut out, &mut clean);
        self.open = None;
        out
    }

    fn flush(&mut self, out: &mut Vec<NativeEvent>, clean: &mut String) {
        if !clean.is_empty() {
            self.written += clean.chars().count();
            out.push(NativeEvent::Text(std::mem::take(clean)));
        }
    }

    fn apply(&mut self, out: &mut Vec<NativeEvent>, tag: Tag) {
        match tag {
            Tag::Open(refs) => self.open = Some((self.written, self.resolve(&refs))),
            Tag::Close(refs) => {
                let Some((start, opened)) = self.open.take() else {
                    return;
                };
                let mut sources = self.resolve(&refs);
                if sources.is_empty() {
                    sources = opened;
                }
                sources.sort_unstable();
                sources.dedup();
                if !sources.is_empty() && self.written > start {
                    out.push(NativeEvent::Cite {
                        start,
                        end: self.written,
                        sources,
                    });
                }
            }
        }
    }

    fn resolve(&self, refs: &[Ref]) -> Vec<usize> {
        refs.iter()
            .filter_map(|r| match *r {
                Ref::Document(n) => (n < self.count).then_some(n),
                Ref::Result { call, result } => self.groups.get(call)?.get(result).copied(),
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Ref {
    /// Command R: a document (source) by position.
    Document(usize),
    /// Command 3: result `result` of tool call `call`.
    Result { call: usize, result: usize },
}

#[derive(Debug, PartialEq)]
enum Tag {
    Open(Vec<Ref>),
    Close(Vec<Ref>),
}

#[derive(Debug, PartialEq)]
enum TagScan {
    /// Could still become a tag: wait for more text.
    Partial,
    NotATag,
    Tag {
        len: usize,
        tag: Tag,
    },
}

/// Reads a tag at the start of `text` (which starts with `<`).
fn tag(text: &str) -> TagScan {
    let closing = text.starts_with("</");
    let name_at = if closing { 2 } else { 1 };
    let rest = &text[name_at..];
    // The tag name must be `co`, then `>` or `:`.
    for (i, want) in ["c", "o"].iter().enumerate() {
        match rest.get(i..i + 1) {
            None if rest.len() <= i => return TagScan::Partial,
            Some(c) if c == *want => {}
            _ => return TagScan::NotATag,
        }
    }
    let body = &rest[2..];
    let Some(end) = body.find('>') else {
        let plausible = body.len() + name_at + 2 <= MAX_TAG
            && body
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, ':' | ',' | '[' | ']' | ' '));
        return if plausible && (body.is_empty() || body.starts_with(':')) {
            TagScan::Partial
        } else {
            TagScan::NotATag
        };
    };
    let inner = &body[..end];
    let len = name_at + 2 + end + 1;
    let refs = if inner.is_empty() {
        Some(Vec::new())
    } else {
        inner.strip_prefix(':').and_then(parse_refs)
    };
    match refs {
        Some(refs) if closing => TagScan::Tag {
            len,
            tag: Tag::Close(refs),
        },
        Some(refs) => TagScan::Tag {
            len,
            tag: Tag::Open(refs),
        },
        None => TagScan::NotATag,
    }
}

/// ` 0,2` (Command R) or ` 0:[1,2],1:[0]` (Command 3).
fn parse_refs(text: &str) -> Option<Vec<Ref>> {
    let text = text.trim();
    if !text.contains('[') {
        return text
            .split(',')
            .map(|n| n.trim().parse().ok().map(Ref::Document))
            .collect();
    }
    let mut refs = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (call, after) = rest.split_once(":[")?;
        let (results, after) = after.split_once(']')?;
        let call: usize = call.trim().trim_start_matches(',').trim().parse().ok()?;
        for result in results.split(',').filter(|r| !r.trim().is_empty()) {
            refs.push(Ref::Result {
                call,
                result: result.trim().parse().ok()?,
            });
        }
        rest = after.trim_start_matches(',').trim();
    }
    Some(refs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn sources(kinds: &[(&str, SourceKind)]) -> Vec<Source> {
        kinds
            .iter()
            .map(|(id, kind)| Source::new(id.to_string(), *kind, Map::new()))
            .collect()
    }

    /// The text and citations of a reply fed in pieces of `chunk` bytes (at char boundaries).
    fn run(sources: &[Source], reply: &str, chunk: usize) -> (String, Vec<(String, Vec<usize>)>) {
        let mut parser = NativeCitations::new(sources);
        let mut events = Vec::new();
        let chars: Vec<char> = reply.chars().collect();
        for piece in chars.chunks(chunk) {
            events.extend(parser.push(&piece.iter().collect::<String>()));
        }
        events.extend(parser.finish());
        let mut text = String::new();
        let mut cites = Vec::new();
        for event in events {
            match event {
                NativeEvent::Text(t) => text.push_str(&t),
                NativeEvent::Cite {
                    start,
                    end,
                    sources,
                } => {
                    let span: String = text.chars().skip(start).take(end - start).collect();
                    cites.push((span, sources));
                }
            }
        }
        (text, cites)
    }

    #[test]
    fn command_3_spans_cite_documents_and_tool_results_at_every_split() {
        let srcs = sources(&[
            ("doc:0", SourceKind::Document),
            ("doc:1", SourceKind::Document),
            ("call_a:0", SourceKind::Tool),
            ("call_a:1", SourceKind::Tool),
            ("call_b:0", SourceKind::Tool),
        ]);
        let reply = "Quenmoor is <co>the capital 🌟</co: 0:[1]>, and <co>it is sunny</co: 1:[1],2:[0]>. a<b";
        for chunk in 1..=reply.chars().count() {
            let (text, cites) = run(&srcs, reply, chunk);
            assert_eq!(
                text, "Quenmoor is the capital 🌟, and it is sunny. a<b",
                "chunk {chunk}"
            );
            assert_eq!(
                cites,
                vec![
                    ("the capital 🌟".to_string(), vec![1]),
                    ("it is sunny".to_string(), vec![3, 4]),
                ],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn command_r_spans_cite_sources_by_position() {
        let srcs = sources(&[("a", SourceKind::Document), ("b", SourceKind::Document)]);
        let (text, cites) = run(&srcs, "It is <co: 1>Quenmoor</co: 1>.", 3);
        assert_eq!(text, "It is Quenmoor.");
        assert_eq!(cites, vec![("Quenmoor".to_string(), vec![1])]);
    }

    #[test]
    fn unknown_sources_and_unclosed_spans_cite_nothing_and_other_angles_stay_text() {
        let srcs = sources(&[("a", SourceKind::Document)]);
        let (text, cites) = run(&srcs, "x <co>y</co: 7:[3]> <b>z</b> <co>never closed", 2);
        assert_eq!(text, "x y <b>z</b> never closed");
        assert!(cites.is_empty(), "{cites:?}");
        // A `<co` that never becomes a tag is text once it cannot be one.
        let (text, _) = run(&srcs, "<cow> and <co:x>", 1);
        assert_eq!(text, "<cow> and <co:x>");
    }
}
