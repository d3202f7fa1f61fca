//! The incremental parser shared by every format: text pieces in, [`ToolEvent`]s out.
//!
//! Guarantees, in any chunking of the same text: the same events once adjacent deltas of one kind
//! are joined; no marker text (or a piece of one) ever reaches plan or content; call arguments
//! are emitted only after the call's JSON parsed, so the argument pieces of a call always
//! concatenate to a JSON object.
//!
//! Calls are found by scanning the JSON after an opening marker (strings and nesting tracked),
//! not by searching for the closing marker, so a closing marker inside a JSON string does not cut
//! a call short. Each call is reported when its object is complete: for an array of calls, call
//! 0 is out before call 1 is generated.
//!
//! Text outside calls: before the first call it is held as a possible plan (see
//! [`ParseOptions::plan_hold_bytes`]); it becomes one `PlanDelta` (trimmed) when a call opens, or
//! content at the end of the reply or past the hold limit. After calls, text is held until the
//! next call (dropped when only whitespace) or the end (content, trimmed). A block whose JSON is
//! not a call (bad JSON, no name) gives its text, without the markers, as content unless a call
//! of that block was already reported; then the rest is dropped.

use serde_json::{Map, Value};

use super::{CallIds, CallMarkers, ParseOptions, Section, SectionKind, ToolEvent};

/// Streaming tool-call parser for one reply. Feed text with [`ToolParser::push`], end with
/// [`ToolParser::finish`].
#[derive(Debug)]
pub struct ToolParser {
    markers: CallMarkers,
    sections: &'static [Section],
    strip: &'static [&'static str],
    options: ParseOptions,
    ids: CallIds,
    /// Received text not yet consumed.
    buf: String,
    state: State,
    /// Text outside calls not yet released (see the module docs).
    held: String,
    /// Past the hold limit (or inside a marked answer): text outside calls streams as content.
    streaming_content: bool,
    /// A format without an opening marker (Llama 3): a call object may start here.
    implicit_open: bool,
    /// Calls reported so far; the next call's index.
    calls: usize,
    /// Set by [`ToolParser::finish_cut`] when a call was certain: a cut block is dropped.
    cut_certain_call: bool,
    out: Vec<ToolEvent>,
}

#[derive(Debug)]
enum State {
    Text,
    Section(usize),
    Block(Block),
    /// The JSON of a block is complete; its closing marker may follow.
    AfterBlock,
}

/// The JSON scanner's state inside a block.
#[derive(Debug, Default)]
struct Block {
    /// Everything received after the opening marker.
    text: String,
    /// How far `text` has been scanned.
    pos: usize,
    /// Where the top-level JSON value starts, once seen.
    value_start: Option<usize>,
    /// The top-level value is an array of calls (else one call object).
    array: bool,
    depth: usize,
    in_string: bool,
    escape: bool,
    /// Start of the array element being scanned.
    element_start: Option<usize>,
    calls_made: usize,
    /// Not JSON: only the closing marker (or the end) is looked for.
    broken: bool,
}

impl ToolParser {
    pub fn new(
        markers: CallMarkers,
        sections: &'static [Section],
        strip: &'static [&'static str],
        options: ParseOptions,
    ) -> Self {
        Self {
            markers,
            sections,
            strip,
            options,
            ids: CallIds::new(options.id_seed),
            buf: String::new(),
            state: State::Text,
            held: String::new(),
            streaming_content: false,
            implicit_open: markers.open.is_empty(),
            calls: 0,
            cut_certain_call: false,
            out: Vec::new(),
        }
    }

    /// Calls reported so far.
    pub fn calls(&self) -> usize {
        self.calls
    }

    /// Feeds the next piece of generated text.
    pub fn push(&mut self, text: &str) -> Vec<ToolEvent> {
        self.buf.push_str(text);
        self.run(false);
        std::mem::take(&mut self.out)
    }

    /// The reply is over: releases everything held back.
    pub fn finish(&mut self) -> Vec<ToolEvent> {
        self.finish_reply(false)
    }

    /// The reply was cut by its token budget. When a call was certain (everything held, as with
    /// `tool_choice: REQUIRED`), text before any call is the plan that ran out of room, so it is
    /// reported as plan, and a call block cut short is dropped rather than shown as content.
    pub fn finish_cut(&mut self) -> Vec<ToolEvent> {
        self.finish_reply(self.options.plan_hold_bytes == usize::MAX)
    }

    fn finish_reply(&mut self, cut_certain_call: bool) -> Vec<ToolEvent> {
        self.cut_certain_call = cut_certain_call;
        self.run(true);
        let held = std::mem::take(&mut self.held);
        if self.calls == 0 {
            if cut_certain_call {
                if !held.trim().is_empty() {
                    self.out.push(ToolEvent::PlanDelta(held.trim().to_string()));
                }
            } else if !held.is_empty() {
                self.out.push(ToolEvent::Content(held));
            }
        } else if !held.trim().is_empty() {
            self.out.push(ToolEvent::Content(held.trim().to_string()));
        }
        std::mem::take(&mut self.out)
    }

    fn run(&mut self, at_end: bool) {
        loop {
            let progressed = match self.state {
                State::Text => self.step_text(at_end),
                State::Section(i) => self.step_section(i, at_end),
                State::Block(_) => self.step_block(at_end),
                State::AfterBlock => self.step_after_block(at_end),
            };
            if !progressed {
                break;
            }
        }
    }

    fn step_text(&mut self, at_end: bool) -> bool {
        if self.buf.is_empty() {
            return false;
        }
        if self.implicit_open {
            return self.step_implicit_open(at_end);
        }
        // The earliest marker of interest in the buffer.
        let mut found: Option<(usize, usize, Marker)> = None;
        let mut consider = |at: Option<usize>, len: usize, marker: Marker| {
            if let Some(at) = at {
                if found.is_none_or(|(best, _, _)| at < best) {
                    found = Some((at, len, marker));
                }
            }
        };
        if !self.markers.open.is_empty() {
            let open = self.markers.open;
            consider(self.buf.find(open), open.len(), Marker::Open);
        }
        for (i, section) in self.sections.iter().enumerate() {
            consider(
                self.buf.find(section.open),
                section.open.len(),
                Marker::Section(i),
            );
        }
        for strip in self.strip {
            consider(self.buf.find(strip), strip.len(), Marker::Strip);
        }
        match found {
            Some((at, len, marker)) => {
                let before = self.buf[..at].to_string();
                self.buf.drain(..at + len);
                self.outside(&before);
                match marker {
                    Marker::Open => {
                        self.release_held_as(SectionKind::Plan);
                        self.state = State::Block(Block::default());
                    }
                    Marker::Section(i) => {
                        let kind = self.sections[i].kind;
                        self.release_held_as(kind);
                        if kind == SectionKind::Content {
                            self.streaming_content = true;
                        }
                        self.state = State::Section(i);
                    }
                    Marker::Strip => {}
                }
                true
            }
            None => {
                let keep = if at_end {
                    0
                } else {
                    let markers = std::iter::once(self.markers.open)
                        .chain(self.sections.iter().map(|s| s.open))
                        .chain(self.strip.iter().copied());
                    partial_marker_suffix(&self.buf, markers)
                };
                let emit: String = self.buf.drain(..self.buf.len() - keep).collect();
                self.outside(&emit);
                false
            }
        }
    }

    /// Llama 3: at the start of the reply or after a call, `{` opens a call.
    fn step_implicit_open(&mut self, at_end: bool) -> bool {
        let ws = self.buf.len() - self.buf.trim_start().len();
        let rest = &self.buf[ws..];
        if rest.is_empty() {
            let blank = std::mem::take(&mut self.buf);
            self.outside(&blank);
            return false;
        }
        if rest.starts_with('{') {
            let blank: String = self.buf.drain(..ws).collect();
            self.outside(&blank);
            self.release_held_as(SectionKind::Plan);
            self.state = State::Block(Block::default());
            return true;
        }
        if self.calls > 0 && rest.starts_with(';') {
            self.buf.drain(..ws + 1);
            return true;
        }
        for strip in self.strip {
            if rest.starts_with(strip) {
                self.buf.drain(..ws + strip.len());
                return true;
            }
            if strip.starts_with(rest) && !at_end {
                return false;
            }
        }
        // Not a call: this reply (or its tail) is an answer, leading whitespace included.
        self.implicit_open = false;
        if self.calls == 0 {
            self.streaming_content = true;
            let held = std::mem::take(&mut self.held);
            if !held.is_empty() {
                self.out.push(ToolEvent::Content(held));
            }
        }
        true
    }

    fn step_section(&mut self, i: usize, at_end: bool) -> bool {
        let section = self.sections[i];
        if let Some(at) = self.buf.find(section.close) {
            let text = self.buf[..at].to_string();
            self.buf.drain(..at + section.close.len());
            self.section_text(section.kind, text);
            self.state = State::Text;
            return true;
        }
        let keep = if at_end {
            0
        } else {
            partial_marker_suffix(&self.buf, std::iter::once(section.close))
        };
        let text: String = self.buf.drain(..self.buf.len() - keep).collect();
        self.section_text(section.kind, text);
        false
    }

    fn section_text(&mut self, kind: SectionKind, text: String) {
        if text.is_empty() {
            return;
        }
        self.out.push(match kind {
            SectionKind::Plan => ToolEvent::PlanDelta(text),
            SectionKind::Content => ToolEvent::Content(text),
        });
    }

    fn step_block(&mut self, at_end: bool) -> bool {
        let State::Block(block) = &mut self.state else {
            return false;
        };
        block.text.push_str(&self.buf);
        self.buf.clear();
        let close = self.markers.close;
        let mut found_close: Option<usize> = None;
        let mut complete: Option<usize> = None;
        let mut elements: Vec<(usize, usize)> = Vec::new();
        let mut waiting = false;
        let text = block.text.as_str();
        for (offset, c) in text[block.pos..].char_indices() {
            let at = block.pos + offset;
            if !block.in_string && !close.is_empty() && c == close.as_bytes()[0] as char {
                let tail = &text[at..];
                if tail.starts_with(close) {
                    found_close = Some(at);
                    break;
                }
                if close.starts_with(tail) && !at_end {
                    block.pos = at;
                    waiting = true;
                    break;
                }
            }
            if block.broken {
                continue;
            }
            if block.in_string {
                if block.escape {
                    block.escape = false;
                } else if c == '\\' {
                    block.escape = true;
                } else if c == '"' {
                    block.in_string = false;
                }
                continue;
            }
            if block.value_start.is_none() {
                match c {
                    c if c.is_whitespace() => {}
                    '{' | '[' => {
                        block.value_start = Some(at);
                        block.array = c == '[';
                        block.depth = 1;
                    }
                    _ => block.broken = true,
                }
                continue;
            }
            match c {
                '"' => block.in_string = true,
                '{' | '[' => {
                    block.depth += 1;
                    if block.array && block.depth == 2 {
                        block.element_start = Some(at);
                    }
                }
                '}' | ']' => {
                    block.depth -= 1;
                    if block.array && block.depth == 1 {
                        if let Some(start) = block.element_start.take() {
                            elements.push((start, at + 1));
                        }
                    }
                    if block.depth == 0 {
                        complete = Some(at + 1);
                        break;
                    }
                }
                _ => {}
            }
        }
        if !waiting && found_close.is_none() && complete.is_none() {
            block.pos = block.text.len();
        }

        // Report the calls found in this scan, in order.
        let block_text = std::mem::take(&mut block.text);
        let array = block.array;
        let value_start = block.value_start;
        let before = self.calls;
        for (start, end) in elements {
            self.report_call(&block_text[start..end]);
        }
        if let (Some(end), false, Some(start)) = (complete, array, value_start) {
            self.report_call(&block_text[start..end]);
        }
        let reported = self.calls - before;
        if let State::Block(block) = &mut self.state {
            block.calls_made += reported;
            block.text = block_text;
        }

        if let Some(end) = complete {
            let block = self.take_block();
            if block.calls_made == 0 {
                self.fallback_content(block.text[..end].trim());
            } else if self.markers.open.is_empty() {
                self.implicit_open = true;
            }
            self.buf = format!("{}{}", &block.text[end..], self.buf);
            self.state = State::AfterBlock;
            return true;
        }
        if let Some(at) = found_close {
            let block = self.take_block();
            if block.calls_made == 0 {
                self.fallback_content(block.text[..at].trim());
            }
            self.buf = format!("{}{}", &block.text[at + close.len()..], self.buf);
            self.state = State::Text;
            return true;
        }
        if at_end {
            let block = self.take_block();
            if block.calls_made == 0 && !self.cut_certain_call {
                self.fallback_content(block.text.trim());
            }
            self.state = State::Text;
            return false;
        }
        false
    }

    fn take_block(&mut self) -> Block {
        match std::mem::replace(&mut self.state, State::Text) {
            State::Block(block) => block,
            _ => Block::default(),
        }
    }

    fn step_after_block(&mut self, at_end: bool) -> bool {
        let ws = self.buf.len() - self.buf.trim_start().len();
        if ws == self.buf.len() {
            self.buf.clear();
            if at_end {
                self.state = State::Text;
            }
            return false;
        }
        let close = self.markers.close;
        let rest = &self.buf[ws..];
        if !close.is_empty() {
            if rest.starts_with(close) {
                self.buf.drain(..ws + close.len());
                self.state = State::Text;
                return true;
            }
            if close.starts_with(rest) {
                if at_end {
                    // The reply stopped inside the closing marker (max_tokens): it is markup,
                    // not content.
                    self.buf.clear();
                    self.state = State::Text;
                }
                return false;
            }
        }
        // No closing marker (it is optional at the end of the turn, or the model skipped it).
        self.buf.drain(..ws);
        self.state = State::Text;
        true
    }

    /// Parses one call object and reports it; anything else is skipped.
    fn report_call(&mut self, json: &str) {
        let Some((name, arguments)) = decode_call(json, &self.markers) else {
            return;
        };
        let index = self.calls;
        self.calls += 1;
        let id = self.ids.next(&name);
        self.out.push(ToolEvent::CallStart { index, id, name });
        self.out.push(ToolEvent::CallArgsDelta {
            index,
            text: arguments,
        });
        self.out.push(ToolEvent::CallEnd { index });
    }

    fn fallback_content(&mut self, text: &str) {
        if !text.is_empty() {
            self.out.push(ToolEvent::Content(text.to_string()));
        }
    }

    /// Text outside calls and sections.
    fn outside(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        if self.calls == 0 && self.streaming_content {
            self.out.push(ToolEvent::Content(text.to_string()));
            return;
        }
        self.held.push_str(text);
        if self.calls == 0 && self.held.len() > self.options.plan_hold_bytes {
            self.streaming_content = true;
            let held = std::mem::take(&mut self.held);
            self.out.push(ToolEvent::Content(held));
        }
    }

    /// Releases held text at a marker: before the first call as `kind` (a plan is trimmed),
    /// after calls as content when it is more than whitespace.
    fn release_held_as(&mut self, kind: SectionKind) {
        let held = std::mem::take(&mut self.held);
        if held.trim().is_empty() {
            return;
        }
        let event = match (self.calls, kind) {
            (0, SectionKind::Plan) => ToolEvent::PlanDelta(held.trim().to_string()),
            (0, SectionKind::Content) => ToolEvent::Content(held),
            _ => ToolEvent::Content(held.trim().to_string()),
        };
        self.out.push(event);
    }
}

#[derive(Debug, Clone, Copy)]
enum Marker {
    Open,
    Section(usize),
    Strip,
}

/// The length of the longest tail of `text` that is the start (not the whole) of a marker: text
/// that must wait for the next piece before it can be released.
fn partial_marker_suffix<'a>(text: &str, markers: impl Iterator<Item = &'a str> + Clone) -> usize {
    let longest = markers.clone().map(str::len).max().unwrap_or(0);
    let mut k = longest.saturating_sub(1).min(text.len());
    while k > 0 {
        let start = text.len() - k;
        if text.is_char_boundary(start) {
            let tail = &text[start..];
            if markers.clone().any(|m| m.len() > k && m.starts_with(tail)) {
                return k;
            }
        }
        k -= 1;
    }
    0
}

/// `(name, arguments as compact JSON)` from one call object, or `None` when it is not a call.
/// Arguments given as a JSON string (some models do) are unwrapped; missing ones are `{}`.
fn decode_call(json: &str, markers: &CallMarkers) -> Option<(String, String)> {
    let value: Value = serde_json::from_str(json).ok()?;
    let object = value.as_object()?;
    let name = object
        .get(markers.name_key)
        .or_else(|| object.get("name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())?;
    let arguments = object
        .get(markers.args_key)
        .or_else(|| object.get("arguments"))
        .or_else(|| object.get("parameters"));
    let arguments = match arguments {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(Value::String(s)) => {
            let inner: Value = serde_json::from_str(s).ok()?;
            inner.is_object().then_some(inner)?
        }
        Some(object @ Value::Object(_)) => object.clone(),
        Some(_) => return None,
    };
    Some((name.to_string(), arguments.to_string()))
}
