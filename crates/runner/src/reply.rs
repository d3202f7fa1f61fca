//! One reply, assembled once: the engine's events for a request (decoded text pieces with their
//! tokens, then an end) in, the typed events of a reply out: content blocks, tool plan, tool
//! calls, and the end with its usage. The server's JSON and SSE encoders only fold over these,
//! so every reply feature (tool parsing today; citations and thinking next) is written here, once.
//!
//! What the encoders may rely on, in any reply:
//! - a block's `ContentStart` comes before its deltas and its `ContentEnd`; blocks do not
//!   interleave and their indices count 0, 1, ... in order; a text block stays open until the
//!   end, so text around tool calls is one block;
//! - a call's `ToolCallStart`, deltas and `ToolCallEnd` come together, calls in index order;
//! - a reply that made no call has a text block, even an empty one (the SDKs expect it); a
//!   reply that made calls and wrote no text has none;
//! - a `Citation` comes after the text it covers and before its block's `ContentEnd` (FAST: after
//!   the delta that completes its sentence; ACCURATE: all after the block's last delta); the
//!   citations of a reply are the same however its text was chunked;
//! - exactly one `End` comes last, and nothing after it.
//!
//! Token ids and log-probabilities ride on the content delta whose text they produced. Text a
//! tool parser holds back (a possible plan) keeps its tokens pending: they go with the next
//! content delta, or are dropped when the text turns out to be plan or call.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use crate::engine::{ErrorKind, EventStream, FinishReason, StreamEvent};
use crate::grounding::accurate::{self, Attributor, Gains};
use crate::grounding::native::{NativeCitations, NativeEvent};
use crate::grounding::{Citation, CitationMode, Citer, Sentence, Source};
use crate::thinking::{Piece, ThinkingMarkers, ThinkingSplitter};
use crate::tools::{ToolEvent, ToolParser};

/// What a content block holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    Text,
    Thinking,
}

/// Why a reply ended, in the API's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Complete,
    StopSequence,
    MaxTokens,
    ToolCall,
    Error,
}

/// Tokens of a reply: the prompt's, the generated ones, and the prompt tokens served from a cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: usize,
    pub output_tokens: usize,
    pub cached_tokens: usize,
}

/// Why a reply failed, and whose fault it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyError {
    pub kind: ErrorKind,
    pub message: String,
}

/// The last event of every reply.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplyEnd {
    pub finish: Finish,
    pub usage: Usage,
    /// Set exactly when `finish` is [`Finish::Error`].
    pub error: Option<ReplyError>,
}

/// One event of a reply, in reply order (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyEvent {
    ContentStart {
        index: usize,
        kind: BlockKind,
    },
    /// A piece of block `index`, with the tokens it came from and their log-probabilities
    /// (empty unless the request asked for them).
    ContentDelta {
        index: usize,
        text: String,
        token_ids: Vec<u32>,
        logprobs: Vec<f32>,
    },
    ContentEnd {
        index: usize,
    },
    PlanDelta {
        text: String,
    },
    ToolCallStart {
        index: usize,
        id: String,
        name: String,
    },
    /// A piece of call `index`'s arguments; the pieces of a call concatenate to a JSON object.
    ToolCallDelta {
        index: usize,
        arguments: String,
    },
    ToolCallEnd {
        index: usize,
    },
    /// Citation `index` (0, 1, ... across the reply).
    Citation {
        index: usize,
        citation: Citation,
    },
    End(ReplyEnd),
}

/// How to read one reply.
#[derive(Debug, Default)]
pub struct ReplyOptions {
    /// The request has tools: the text goes through the model's tool-call parser.
    pub tools: Option<ToolParser>,
    /// What the reply may cite (documents, tool results) and how; no citations when empty or
    /// [`CitationMode::Off`].
    pub sources: Arc<[Source]>,
    pub citation_mode: CitationMode,
    /// The model marks its own citations (`<co>` markup of the Command formats): the markup is
    /// taken out of the text and its spans cited; FAST's alignment stands only for a reply
    /// that marks none.
    pub native_citations: bool,
    /// The model thinks before it answers, between these markers: the thinking becomes its own
    /// block (index 0) before the text block, and the markers never reach either.
    pub thinking: Option<ThinkingMarkers>,
    /// The prompt opened the thinking ([`ThinkingMarkers::opened_by`]): the reply starts in it.
    pub thinking_opened: bool,
}

/// The state machine from engine events to reply events for one request.
#[derive(Debug)]
pub struct ReplyAssembler {
    tools: Option<ToolParser>,
    usage: Usage,
    /// The open content block, if any.
    open_block: Option<usize>,
    next_block: usize,
    pending_ids: Vec<u32>,
    pending_logprobs: Vec<f32>,
    sources: Arc<[Source]>,
    citation_mode: CitationMode,
    /// Cites the text block (made when it opens).
    citer: Option<Citer>,
    citations: usize,
    /// ACCURATE: the text block's sentences, cited once the block is over.
    sentences: Vec<Sentence>,
    /// ACCURATE: the end, held while the model scores the sentences.
    held_end: Option<Finish>,
    /// Takes the model's own citation markup out of the text (Command formats).
    native: Option<NativeCitations>,
    /// Whether the model cited anything itself.
    native_cited: bool,
    /// With native citations: FAST's, for a reply that marks none.
    fallback: Vec<Citation>,
    /// Tokens of markup only, carried to the next text that is sent.
    markup_ids: Vec<u32>,
    markup_logprobs: Vec<f32>,
    /// Splits the model's thinking from its answer.
    thinking: Option<ThinkingSplitter>,
    /// The open block is the thinking block.
    thinking_open: bool,
    /// A text block has been opened.
    text_seen: bool,
    ended: bool,
}

/// What the model is asked to score before an ACCURATE reply can end.
#[derive(Debug, Clone)]
pub struct AttributionRequest {
    pub text: String,
    pub sentences: Vec<Range<usize>>,
    pub sources: Arc<[Source]>,
}

impl ReplyAssembler {
    /// `prompt_tokens` is what the server counted; the usage if the reply fails early.
    pub fn new(prompt_tokens: usize, options: ReplyOptions) -> Self {
        Self {
            tools: options.tools,
            usage: Usage {
                input_tokens: prompt_tokens,
                output_tokens: 0,
                cached_tokens: 0,
            },
            open_block: None,
            next_block: 0,
            pending_ids: Vec::new(),
            pending_logprobs: Vec::new(),
            sources: options.sources.clone(),
            citation_mode: options.citation_mode,
            citer: None,
            citations: 0,
            sentences: Vec::new(),
            held_end: None,
            native: options
                .native_citations
                .then(|| NativeCitations::new(&options.sources)),
            native_cited: false,
            fallback: Vec::new(),
            markup_ids: Vec::new(),
            markup_logprobs: Vec::new(),
            thinking: options
                .thinking
                .map(|markers| ThinkingSplitter::new(markers, options.thinking_opened)),
            thinking_open: false,
            text_seen: false,
            ended: false,
        }
    }

    /// Set while an ACCURATE reply waits for the model to score its sentences: what to score.
    /// Answer with [`ReplyAssembler::attributed`].
    pub fn attribution_request(&self) -> Option<AttributionRequest> {
        self.held_end?;
        let citer = self.citer.as_ref()?;
        Some(AttributionRequest {
            text: citer.text().to_string(),
            sentences: self
                .sentences
                .iter()
                .map(|s| s.offset..s.offset + s.text.len())
                .collect(),
            sources: self.sources.clone(),
        })
    }

    /// The model's scores for the held reply (`None`: scoring failed, FAST's citations stand);
    /// returns the citations and the end.
    pub fn attributed(&mut self, gains: Option<Gains>) -> Vec<ReplyEvent> {
        let mut out = Vec::new();
        let Some(finish) = self.held_end.take() else {
            return out;
        };
        if let Some(citer) = &self.citer {
            let citations = accurate::cite(citer, &self.sentences, gains.as_ref());
            self.emit_citations(&mut out, citations);
        }
        self.sentences.clear();
        self.end(&mut out, finish, None);
        out
    }

    /// The usage so far (the final one once the reply has ended).
    pub fn usage(&self) -> Usage {
        self.usage
    }

    pub fn is_over(&self) -> bool {
        self.ended
    }

    fn emit_citations(&mut self, out: &mut Vec<ReplyEvent>, citations: Vec<Citation>) {
        for citation in citations {
            out.push(ReplyEvent::Citation {
                index: self.citations,
                citation,
            });
            self.citations += 1;
        }
    }

    /// Follows text of the text block: FAST cites each sentence as it completes; ACCURATE keeps
    /// the sentences for the end.
    fn cite(&mut self, out: &mut Vec<ReplyEvent>, text: Option<&str>) {
        let Some(citer) = self.citer.as_mut() else {
            return;
        };
        let sentences = match text {
            Some(text) => citer.push(text),
            None => citer.finish(),
        };
        match self.citation_mode {
            CitationMode::Off => {}
            // The model cites itself; the alignment waits in case it does not.
            _ if self.native.is_some() => self.fallback.extend(citer.fast(&sentences)),
            CitationMode::Fast => {
                let citations = citer.fast(&sentences);
                self.emit_citations(out, citations);
            }
            CitationMode::Accurate => self.sentences.extend(sentences),
        }
    }

    /// The reply events one engine event makes; nothing once the reply has ended.
    pub fn push(&mut self, event: StreamEvent) -> Vec<ReplyEvent> {
        let mut out = Vec::new();
        if self.ended {
            return out;
        }
        match event {
            StreamEvent::Text {
                text,
                token_ids,
                logprobs,
            } => {
                self.usage.output_tokens += token_ids.len();
                match self.thinking.as_mut() {
                    Some(splitter) => {
                        let pieces = splitter.push(&text);
                        self.pieces(&mut out, pieces, token_ids, logprobs);
                    }
                    None => self.answer(&mut out, text, token_ids, logprobs),
                }
            }
            StreamEvent::Done {
                reason,
                prompt_tokens,
                output_tokens,
                cached_tokens,
            } => {
                self.usage.input_tokens = prompt_tokens;
                self.usage.output_tokens = output_tokens;
                self.usage.cached_tokens = cached_tokens;
                let mut finish = match reason {
                    FinishReason::EndOfTurn => Finish::Complete,
                    FinishReason::StopSequence => Finish::StopSequence,
                    FinishReason::MaxTokens => Finish::MaxTokens,
                };
                if let Some(splitter) = self.thinking.as_mut() {
                    let pieces = splitter.finish();
                    self.pieces(&mut out, pieces, Vec::new(), Vec::new());
                }
                if let Some(parser) = self.tools.as_mut() {
                    let events = match reason {
                        FinishReason::MaxTokens => parser.finish_cut(),
                        _ => parser.finish(),
                    };
                    let calls = parser.calls();
                    self.tool_events(&mut out, events);
                    if calls > 0 {
                        finish = Finish::ToolCall;
                    }
                }
                if let Some(native) = self.native.as_mut() {
                    let events = native.finish();
                    self.native_events(&mut out, events, Vec::new(), Vec::new());
                }
                self.cite(&mut out, None);
                if !self.native_cited {
                    let fallback = std::mem::take(&mut self.fallback);
                    self.emit_citations(&mut out, fallback);
                }
                if self.citation_mode == CitationMode::Accurate && !self.sentences.is_empty() {
                    // The end waits for the model's scores (see `attributed`).
                    self.held_end = Some(finish);
                } else {
                    self.end(&mut out, finish, None);
                }
            }
            StreamEvent::Error { message, kind } => {
                self.end(&mut out, Finish::Error, Some(ReplyError { kind, message }));
            }
            // Teacher-forced requests are read by their caller, never assembled into a reply.
            StreamEvent::Scores(_) => {}
        }
        out
    }

    /// Ends the reply with an error that did not come from the engine (the engine went away,
    /// the server is shutting down); nothing if it has already ended.
    pub fn abort(&mut self, kind: ErrorKind, message: impl Into<String>) -> Vec<ReplyEvent> {
        let mut out = Vec::new();
        self.held_end = None;
        if !self.ended {
            let error = ReplyError {
                kind,
                message: message.into(),
            };
            self.end(&mut out, Finish::Error, Some(error));
        }
        out
    }

    fn tool_events(&mut self, out: &mut Vec<ReplyEvent>, events: Vec<ToolEvent>) {
        for event in events {
            match event {
                ToolEvent::Content(text) => {
                    let token_ids = std::mem::take(&mut self.pending_ids);
                    let logprobs = std::mem::take(&mut self.pending_logprobs);
                    self.text(out, text, token_ids, logprobs);
                }
                ToolEvent::PlanDelta(text) => {
                    self.drop_pending();
                    out.push(ReplyEvent::PlanDelta { text });
                }
                ToolEvent::CallStart { index, id, name } => {
                    self.drop_pending();
                    out.push(ReplyEvent::ToolCallStart { index, id, name });
                }
                ToolEvent::CallArgsDelta { index, text } => {
                    out.push(ReplyEvent::ToolCallDelta {
                        index,
                        arguments: text,
                    });
                }
                ToolEvent::CallEnd { index } => out.push(ReplyEvent::ToolCallEnd { index }),
            }
        }
    }

    fn drop_pending(&mut self) {
        self.pending_ids.clear();
        self.pending_logprobs.clear();
    }

    /// Thinking and answer text, in order; the tokens go with the first piece (or the next
    /// one, when these tokens were only markup).
    fn pieces(
        &mut self,
        out: &mut Vec<ReplyEvent>,
        pieces: Vec<Piece>,
        ids: Vec<u32>,
        lps: Vec<f32>,
    ) {
        self.markup_ids.extend(ids);
        self.markup_logprobs.extend(lps);
        for piece in pieces {
            match piece {
                Piece::Thinking(text) => {
                    let index = self.open_thinking(out);
                    out.push(ReplyEvent::ContentDelta {
                        index,
                        text,
                        token_ids: std::mem::take(&mut self.markup_ids),
                        logprobs: std::mem::take(&mut self.markup_logprobs),
                    });
                }
                Piece::Answer(text) => {
                    self.close_thinking(out);
                    let ids = std::mem::take(&mut self.markup_ids);
                    let lps = std::mem::take(&mut self.markup_logprobs);
                    self.answer(out, text, ids, lps);
                }
            }
        }
    }

    /// Answer text: through the tool-call parser when the request has tools.
    fn answer(&mut self, out: &mut Vec<ReplyEvent>, text: String, ids: Vec<u32>, lps: Vec<f32>) {
        match self.tools.as_mut() {
            Some(parser) => {
                self.pending_ids.extend(ids);
                self.pending_logprobs.extend(lps);
                let events = parser.push(&text);
                self.tool_events(out, events);
            }
            None => self.text(out, text, ids, lps),
        }
    }

    fn open_thinking(&mut self, out: &mut Vec<ReplyEvent>) -> usize {
        if let (true, Some(index)) = (self.thinking_open, self.open_block) {
            return index;
        }
        self.thinking_open = true;
        self.start_block(out, BlockKind::Thinking)
    }

    /// Opens the next content block.
    fn start_block(&mut self, out: &mut Vec<ReplyEvent>, kind: BlockKind) -> usize {
        let index = self.next_block;
        self.next_block += 1;
        self.open_block = Some(index);
        out.push(ReplyEvent::ContentStart { index, kind });
        index
    }

    fn close_thinking(&mut self, out: &mut Vec<ReplyEvent>) {
        if self.thinking_open {
            self.thinking_open = false;
            self.close_block(out);
        }
    }

    /// A piece of the answer text, in the text block (opened first if need be).
    fn text(&mut self, out: &mut Vec<ReplyEvent>, text: String, ids: Vec<u32>, lps: Vec<f32>) {
        let events = match self.native.as_mut() {
            Some(native) => native.push(&text),
            None => vec![NativeEvent::Text(text)],
        };
        self.native_events(out, events, ids, lps);
    }

    /// Clean text and the model's own citations; the tokens go with the first text sent.
    fn native_events(
        &mut self,
        out: &mut Vec<ReplyEvent>,
        events: Vec<NativeEvent>,
        ids: Vec<u32>,
        lps: Vec<f32>,
    ) {
        self.markup_ids.extend(ids);
        self.markup_logprobs.extend(lps);
        for event in events {
            match event {
                NativeEvent::Text(text) => {
                    let index = self.open_text(out);
                    let cited = text.clone();
                    out.push(ReplyEvent::ContentDelta {
                        index,
                        text,
                        token_ids: std::mem::take(&mut self.markup_ids),
                        logprobs: std::mem::take(&mut self.markup_logprobs),
                    });
                    self.cite(out, Some(&cited));
                }
                NativeEvent::Cite {
                    start,
                    end,
                    sources,
                } => {
                    let citation = self.citer.as_ref().map(|c| c.span(start, end, &sources));
                    if let Some(citation) = citation {
                        self.native_cited = true;
                        self.emit_citations(out, vec![citation]);
                    }
                }
            }
        }
    }

    fn open_text(&mut self, out: &mut Vec<ReplyEvent>) -> usize {
        if let Some(index) = self.open_block {
            return index;
        }
        self.text_seen = true;
        let index = self.start_block(out, BlockKind::Text);
        if self.citation_mode != CitationMode::Off && !self.sources.is_empty() {
            self.citer = Some(Citer::new(self.sources.clone(), index));
        }
        index
    }

    fn close_block(&mut self, out: &mut Vec<ReplyEvent>) {
        if let Some(index) = self.open_block.take() {
            out.push(ReplyEvent::ContentEnd { index });
        }
    }

    fn end(&mut self, out: &mut Vec<ReplyEvent>, finish: Finish, error: Option<ReplyError>) {
        let made_calls = self.tools.as_ref().is_some_and(|p| p.calls() > 0);
        self.close_thinking(out);
        // A reply without calls always has its text block, even an empty one.
        if !made_calls && !self.text_seen {
            self.open_text(out);
        }
        self.close_block(out);
        out.push(ReplyEvent::End(ReplyEnd {
            finish,
            usage: self.usage,
            error,
        }));
        self.ended = true;
    }
}

/// The reply events of one request, read from its engine stream. Dropping it cancels the
/// generation (the engine sees its event channel closed).
pub struct ReplyStream {
    events: EventStream,
    assembler: ReplyAssembler,
    ready: VecDeque<ReplyEvent>,
    /// Scores ACCURATE citations (the engine); without one they fall back to FAST.
    attributor: Option<Arc<dyn Attributor>>,
    /// The scoring in progress, kept across cancelled calls of `next`.
    scoring: Option<accurate::GainsFuture>,
}

impl std::fmt::Debug for ReplyStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyStream")
            .field("assembler", &self.assembler)
            .field("ready", &self.ready.len())
            .field("scoring", &self.scoring.is_some())
            .finish()
    }
}

impl ReplyStream {
    pub fn new(events: EventStream, assembler: ReplyAssembler) -> Self {
        Self {
            events,
            assembler,
            ready: VecDeque::new(),
            attributor: None,
            scoring: None,
        }
    }

    /// Scores ACCURATE citations with `attributor` (the engine serving the reply).
    pub fn with_attributor(mut self, attributor: Arc<dyn Attributor>) -> Self {
        self.attributor = Some(attributor);
        self
    }

    /// The next event, or `None` after the `End`. Cancel-safe: an event is never lost when the
    /// future is dropped before it completes, and scoring in progress goes on at the next call.
    pub async fn next(&mut self) -> Option<ReplyEvent> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(event);
            }
            if self.assembler.is_over() {
                return None;
            }
            if let Some(scoring) = self.scoring.as_mut() {
                let gains = scoring.await;
                self.scoring = None;
                if let Err(error) = &gains {
                    tracing::warn!(%error, "citation scoring failed; quotes are cited as found");
                }
                let events = self.assembler.attributed(gains.ok());
                self.ready.extend(events);
                continue;
            }
            if let Some(request) = self.assembler.attribution_request() {
                match &self.attributor {
                    Some(attributor) => {
                        self.scoring = Some(attributor.gains(
                            request.text,
                            request.sentences,
                            request.sources,
                        ));
                    }
                    None => {
                        let events = self.assembler.attributed(None);
                        self.ready.extend(events);
                    }
                }
                continue;
            }
            let events = match self.events.recv().await {
                Some(event) => self.assembler.push(event),
                None => self.assembler.abort(
                    ErrorKind::Server,
                    "the engine stopped before the reply was complete",
                ),
            };
            self.ready.extend(events);
        }
    }

    /// Ends the reply now with an error (see [`ReplyAssembler::abort`]); the events come from
    /// [`ReplyStream::next`]. The generation is cancelled when the stream is dropped.
    pub fn abort(&mut self, kind: ErrorKind, message: impl Into<String>) {
        self.scoring = None;
        let events = self.assembler.abort(kind, message);
        self.ready.extend(events);
    }

    /// The usage so far: what a request log reports for a reply that did not finish.
    pub fn usage(&self) -> Usage {
        self.assembler.usage()
    }
}

#[cfg(test)]
mod tests;
