//! Tool calling on the model side: how each model family writes tool calls, how a chat with
//! tools is prepared for a template that does or does not render them, and an incremental parser
//! that turns generated text into plan, content and call events.
//!
//! Formats (one file each, one [`ToolFormat`] trait):
//! - [`generic`]: ours, for templates that do not render tools (SmolLM2, Gemma 3). The tools are
//!   described in the system turn and the model answers
//!   `plan text<tool_calls>[{"name": .., "arguments": {..}}, ..]</tool_calls>`.
//! - [`hermes`]: Hermes / Qwen 2.5, `<tool_call>{"name": .., "arguments": {..}}</tool_call>` per call.
//! - [`llama3`]: Llama 3.1+, a bare `{"name": .., "parameters": {..}}` object as the whole reply.
//! - [`mistral`]: `[TOOL_CALLS][{"name": .., "arguments": {..}}, ..]` up to the end of the turn.
//! - [`command`]: Cohere Command R7B / A, `<|START_THINKING|>plan<|END_THINKING|>` then
//!   `<|START_ACTION|>[{"tool_call_id": .., "tool_name": .., "parameters": {..}}]<|END_ACTION|>`.
//!
//! The format of a model is read from its chat template text ([`detect`]).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

pub mod command;
pub mod generic;
pub mod hermes;
pub mod llama3;
pub mod mistral;
mod parse;
mod prompt;

pub use parse::ToolParser;
pub use prompt::{prepare_prompt, tool_section, TOOL_RESULTS_CLOSE, TOOL_RESULTS_OPEN};

/// How the calls sit between the markers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallShape {
    /// One JSON array of call objects per block (generic, Mistral, Command).
    ArrayOfCalls,
    /// One call object per block; parallel calls repeat the block (Hermes, Llama 3).
    OneCallPerBlock,
}

/// The literal text around tool calls in a format, as data the grammar builder can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallMarkers {
    /// Text that opens a block of calls. Empty for Llama 3: the call object is the reply itself
    /// (after optional whitespace), so no plan text precedes it.
    pub open: &'static str,
    /// Text that closes a block; empty when the block runs to the end of the turn.
    pub close: &'static str,
    pub shape: CallShape,
    /// Key of the tool name in a call object.
    pub name_key: &'static str,
    /// Key of the arguments object in a call object.
    pub args_key: &'static str,
}

/// Which kind of text a marked section holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionKind {
    Plan,
    Content,
}

/// A span of the reply between two markers that is not a call (Command's thinking and response
/// sections); the markers are dropped and the text streams as its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    pub open: &'static str,
    pub close: &'static str,
    pub kind: SectionKind,
}

/// The tool-call formats cohost knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ToolFormatKind {
    Generic,
    Hermes,
    Llama3,
    Mistral,
    Command,
}

impl ToolFormatKind {
    pub fn name(self) -> &'static str {
        format(self).name()
    }
}

/// One model family's way of writing tool calls.
pub trait ToolFormat: Send + Sync {
    fn kind(&self) -> ToolFormatKind;

    fn name(&self) -> &'static str;

    /// The call markup, for parsing and for building grammars.
    fn markers(&self) -> CallMarkers;

    /// Marked non-call sections of a reply.
    fn sections(&self) -> &'static [Section] {
        &[]
    }

    /// Markup dropped wherever it appears outside calls (e.g. Llama's `<|python_tag|>`).
    fn strip(&self) -> &'static [&'static str] {
        &[]
    }

    /// Whether the model's own template renders `tools` and tool turns (all but the generic
    /// format); otherwise [`prepare_prompt`] describes them in the system turn.
    fn template_renders_tools(&self) -> bool {
        self.kind() != ToolFormatKind::Generic
    }

    /// Whether even a reply to a request without tools carries this format's markup (a
    /// Command answer sits in `<|START_RESPONSE|>` or `<|START_TEXT|>`), so that every reply
    /// needs the parser.
    fn wraps_every_reply(&self) -> bool {
        false
    }

    /// Whether the model marks its own citations in this format (`<co>` markup).
    fn cites_natively(&self) -> bool {
        false
    }

    /// A fresh streaming parser for one reply.
    fn parser(&self, options: ParseOptions) -> ToolParser {
        ToolParser::new(self.markers(), self.sections(), self.strip(), options)
    }

    /// The parser one reply needs: `tools` are the request's parse options when it has tools;
    /// a format that wraps every reply gets a parser that holds nothing back as a plan.
    fn reply_parser(&self, tools: Option<ParseOptions>) -> Option<ToolParser> {
        let plain = ParseOptions {
            plan_hold_bytes: 0,
            id_seed: None,
        };
        tools
            .or(self.wraps_every_reply().then_some(plain))
            .map(|options| self.parser(options))
    }
}

/// The format object of a kind.
pub fn format(kind: ToolFormatKind) -> &'static dyn ToolFormat {
    match kind {
        ToolFormatKind::Generic => &generic::Generic,
        ToolFormatKind::Hermes => &hermes::Hermes,
        ToolFormatKind::Llama3 => &llama3::Llama3,
        ToolFormatKind::Mistral => &mistral::Mistral,
        ToolFormatKind::Command => &command::Command,
    }
}

/// Reads the tool format from a chat template's text: a template that renders `tools` and
/// writes one family's call markup uses that family's format; anything else (no tool support,
/// or markup we do not know) gets the generic format, described in the system turn.
pub fn detect(template_source: &str) -> ToolFormatKind {
    if !template_source.contains("tools") {
        return ToolFormatKind::Generic;
    }
    if template_source.contains("<|START_ACTION|>") {
        ToolFormatKind::Command
    } else if template_source.contains("[TOOL_CALLS]") {
        ToolFormatKind::Mistral
    } else if template_source.contains("<tool_call>") {
        ToolFormatKind::Hermes
    } else if template_source.contains("<|python_tag|>") || template_source.contains("ipython") {
        ToolFormatKind::Llama3
    } else {
        ToolFormatKind::Generic
    }
}

/// How a parser treats text that comes before any call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseOptions {
    /// Bytes of leading text held back as a possible tool plan. Text is a plan only when a call
    /// follows (as in Cohere's streams), which is unknown until the call marker or the end of the
    /// reply; past this many bytes the held text is released as content and the rest streams as
    /// content (a call that still follows is parsed as a call). `0` streams all text as content
    /// at once (no tools, or `tool_choice: NONE`); `usize::MAX` holds everything (a call is
    /// certain, as with `tool_choice: REQUIRED`).
    pub plan_hold_bytes: usize,
    /// Seeds the call ids; `None` draws a random seed. Fixed seeds make tests reproducible.
    pub id_seed: Option<u64>,
}

/// Holding this much keeps a short plan ("I will look up the weather in Paris.") whole while a
/// plain answer starts streaming after a few dozen tokens.
pub const DEFAULT_PLAN_HOLD_BYTES: usize = 256;

impl Default for ParseOptions {
    fn default() -> Self {
        Self {
            plan_hold_bytes: DEFAULT_PLAN_HOLD_BYTES,
            id_seed: None,
        }
    }
}

/// What a parser reports, in reply order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolEvent {
    /// A piece of the tool plan (text before the calls).
    PlanDelta(String),
    /// A piece of the visible answer.
    Content(String),
    /// Call `index` (0, 1, ... across the reply) begins.
    CallStart {
        index: usize,
        id: String,
        name: String,
    },
    /// A piece of call `index`'s arguments as JSON text; the pieces of one call concatenate to
    /// a JSON object.
    CallArgsDelta {
        index: usize,
        text: String,
    },
    CallEnd {
        index: usize,
    },
}

/// Makes call ids of Cohere's observed form, `<name>_<12 lowercase alphanumerics>`.
#[derive(Debug, Clone)]
pub struct CallIds {
    state: u64,
}

impl CallIds {
    pub fn new(seed: Option<u64>) -> Self {
        // std's RandomState is seeded from the OS once per process and varied per instance.
        let state = seed.unwrap_or_else(|| RandomState::new().hash_one(0x5eed_u64));
        Self { state }
    }

    pub fn next(&mut self, name: &str) -> String {
        const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut id = String::with_capacity(name.len() + 13);
        id.push_str(name);
        id.push('_');
        let mut bits = self.splitmix();
        for _ in 0..12 {
            id.push(ALPHABET[(bits % 36) as usize] as char);
            bits /= 36;
        }
        id
    }

    fn splitmix(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Whether `id` has the form `<name>_<12 lowercase alphanumerics>`.
pub fn is_call_id(id: &str, name: &str) -> bool {
    id.strip_prefix(name)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|tail| {
            tail.len() == 12
                && tail
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_cohere_form_and_differ() {
        let mut ids = CallIds::new(None);
        let a = ids.next("get_weather");
        let b = ids.next("get_weather");
        assert!(is_call_id(&a, "get_weather"), "{a}");
        assert!(is_call_id(&b, "get_weather"), "{b}");
        assert_ne!(a, b);
        assert_ne!(CallIds::new(None).next("f"), CallIds::new(None).next("f"));
        assert_eq!(
            CallIds::new(Some(7)).next("f"),
            CallIds::new(Some(7)).next("f")
        );
        assert!(!is_call_id("f_ABCDEFGHIJKL", "f"));
        assert!(!is_call_id("f_abc", "f"));
    }

    #[test]
    fn detects_formats_from_template_text() {
        assert_eq!(detect("{{ messages }}"), ToolFormatKind::Generic);
        assert_eq!(
            detect("{% if tools %}<tool_call>{% endif %}"),
            ToolFormatKind::Hermes
        );
        assert_eq!(
            detect("{% if tools %}[TOOL_CALLS]{% endif %}"),
            ToolFormatKind::Mistral
        );
        assert_eq!(
            detect("{% if tools %}<|START_ACTION|>{% endif %}"),
            ToolFormatKind::Command
        );
        assert_eq!(
            detect("{% if tools %}<|start_header_id|>ipython{% endif %}"),
            ToolFormatKind::Llama3
        );
        // Mentions tools but writes no markup we know: described in the system turn instead.
        assert_eq!(
            detect("{% if tools %}{{ tools }}{% endif %}"),
            ToolFormatKind::Generic
        );
        // Markup without tool rendering.
        assert_eq!(detect("<tool_call>"), ToolFormatKind::Generic);
    }
}
