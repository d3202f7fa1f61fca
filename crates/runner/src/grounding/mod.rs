//! Grounded answers: the sources a reply may cite (documents and tool results), how documents
//! reach a model whose template does not render them, and the citations of a reply's text.
//!
//! Citations are computed sentence by sentence as the text arrives ([`Citer`]): a sentence's
//! citations depend only on its own text and the sources, never on how the text was chunked, so
//! a stream carries exactly the citations of the same reply unstreamed, each after the text it
//! covers. Offsets count Unicode code points in the text block (Python string indexing).
//! - FAST ([`align`]): spans of the reply that quote a source, by word alignment.
//! - ACCURATE ([`accurate`]): FAST's spans, with the sources of each decided by how much each
//!   source raises the model's own likelihood of the sentence (model-scored attribution), and
//!   sentences that paraphrase a source cited to it when the model's evidence is clear.

pub mod accurate;
pub mod align;
pub mod native;

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::chat::{ChatMessage, ChatPrompt};
use align::{Match, SourceIndex};

/// What a source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Document,
    Tool,
}

/// Something a reply may cite.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// The document's id (`doc:<n>` by position when it has none), or `<tool_call_id>:<block>`.
    pub id: String,
    pub kind: SourceKind,
    /// What a citation shows of it: the document's fields with its id, or the tool's output.
    pub fields: Map<String, Value>,
    /// The text the model was shown, which citations are matched against.
    pub text: String,
}

impl Source {
    /// A source whose fields are shown as given and whose text is their values, one per line.
    pub fn new(id: String, kind: SourceKind, fields: Map<String, Value>) -> Self {
        let text = fields
            .iter()
            .filter(|(k, _)| k.as_str() != "id")
            .map(|(_, v)| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        Self {
            id,
            kind,
            fields,
            text,
        }
    }
}

/// How a reply is cited (`citation_options.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CitationMode {
    Off,
    Fast,
    #[default]
    Accurate,
}

/// A span of a text block and the sources it comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Citation {
    /// Code points into the block's text, `start..end`.
    pub start: usize,
    pub end: usize,
    /// The block's text in that range.
    pub text: String,
    pub sources: Vec<Source>,
    /// The content block the citation belongs to.
    pub content_index: usize,
}

/// Where a sentence ends, if `text` holds a whole one: after `.`, `!` or `?` followed by
/// whitespace, or after a line break. Returns the byte length of the sentence.
fn sentence_end(text: &str) -> Option<usize> {
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\n' {
            return Some(i + 1);
        }
        if matches!(c, '.' | '!' | '?') {
            if let Some(&(j, next)) = chars.peek() {
                if next.is_whitespace() {
                    return Some(j);
                }
            }
        }
    }
    None
}

/// The citations of one text block, found sentence by sentence as its text arrives.
#[derive(Debug)]
pub struct Citer {
    sources: Arc<[Source]>,
    index: Arc<SourceIndex>,
    content_index: usize,
    /// The block's text so far.
    text: String,
    /// Bytes of `text` already cut into sentences.
    done: usize,
}

/// A sentence of a text block with its FAST quotes, as the ACCURATE pass refines it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sentence {
    /// Byte offset of the sentence in the block, and its text.
    pub offset: usize,
    pub text: String,
    /// Quotes with byte ranges relative to `text`.
    pub quotes: Vec<Match>,
}

impl Citer {
    pub fn new(sources: Arc<[Source]>, content_index: usize) -> Self {
        let index = Arc::new(SourceIndex::new(sources.iter().map(|s| s.text.as_str())));
        Self {
            sources,
            index,
            content_index,
            text: String::new(),
            done: 0,
        }
    }

    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    /// The block's text so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Adds text; returns the sentences it completed, with their quotes.
    pub fn push(&mut self, text: &str) -> Vec<Sentence> {
        self.text.push_str(text);
        let mut out = Vec::new();
        while let Some(len) = sentence_end(&self.text[self.done..]) {
            out.push(self.take(len));
        }
        out
    }

    /// The block is over: the sentence still open, if any.
    pub fn finish(&mut self) -> Vec<Sentence> {
        let rest = self.text.len() - self.done;
        if rest == 0 {
            return Vec::new();
        }
        vec![self.take(rest)]
    }

    fn take(&mut self, len: usize) -> Sentence {
        let offset = self.done;
        let text = self.text[offset..offset + len].to_string();
        self.done += len;
        let quotes = align::align(&text, &self.index);
        Sentence {
            offset,
            text,
            quotes,
        }
    }

    /// The citation of bytes `start..end` of `sentence` for the sources at `sources`.
    pub fn citation(
        &self,
        sentence: &Sentence,
        start: usize,
        end: usize,
        sources: &[usize],
    ) -> Citation {
        let chars_start = self.text[..sentence.offset + start].chars().count();
        let text = sentence.text[start..end].to_string();
        Citation {
            start: chars_start,
            end: chars_start + text.chars().count(),
            text,
            sources: sources.iter().map(|&i| self.sources[i].clone()).collect(),
            content_index: self.content_index,
        }
    }

    /// A citation of code points `start..end` of the block's text so far (a span the model
    /// marked itself, see [`native`]).
    pub fn span(&self, start: usize, end: usize, sources: &[usize]) -> Citation {
        Citation {
            start,
            end,
            text: self.text.chars().skip(start).take(end - start).collect(),
            sources: sources.iter().map(|&i| self.sources[i].clone()).collect(),
            content_index: self.content_index,
        }
    }

    /// FAST citations of sentences: each quote, citing the sources that hold it.
    pub fn fast(&self, sentences: &[Sentence]) -> Vec<Citation> {
        let mut out = Vec::new();
        for sentence in sentences {
            for quote in &sentence.quotes {
                out.push(self.citation(sentence, quote.start, quote.end, &quote.sources));
            }
        }
        out
    }
}

/// Whether a template renders the `documents` variable itself (Command R / R7B / A,
/// Hermes-style RAG templates); otherwise [`prepare_documents`] writes our grounding section.
pub fn template_renders_documents(source: &str) -> bool {
    source.contains("documents")
}

/// The system-turn section that shows documents to a model whose template does not render them:
/// each document under its id, one `field: value` line per field.
pub fn document_section(documents: &[Value]) -> String {
    let mut out = String::from(
        "# Documents\n\nAnswer from the documents below when they hold the answer, and use their own words.\n",
    );
    for doc in documents {
        let Some(fields) = doc.as_object() else {
            continue;
        };
        let id = fields.get("id").and_then(Value::as_str).unwrap_or("");
        out.push_str(&format!("\nDocument {id}\n"));
        for (key, value) in fields.iter().filter(|(k, _)| k.as_str() != "id") {
            let value = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.push_str(&format!("{key}: {value}\n"));
        }
    }
    out
}

/// A chat ready for a template: documents stay in `documents` when the template renders them,
/// else they move into the system turn as [`document_section`].
pub fn prepare_documents(prompt: &ChatPrompt, template_renders: bool) -> ChatPrompt {
    if prompt.documents.is_empty() || template_renders {
        return prompt.clone();
    }
    let mut out = prompt.clone();
    let section = document_section(&out.documents);
    out.documents.clear();
    match out.messages.first_mut() {
        Some(first) if first.role == "system" => {
            first.content.push_str("\n\n");
            first.content.push_str(&section);
        }
        _ => out.messages.insert(
            0,
            ChatMessage {
                role: "system".into(),
                content: section,
                ..ChatMessage::default()
            },
        ),
    }
    out
}
