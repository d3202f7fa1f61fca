//! Constrained decoding: what a reply may look like (a JSON object, a JSON schema, tool calls in a
//! model's format), compiled with llguidance into a grammar that yields, before each token, the
//! set of tokens allowed next. The engine samples within that set, so the guarantee holds for any
//! model, however small.
//!
//! # Bounded outputs
//! A grammar alone does not make a reply end: a 135M model sampling at temperature 1 can write a
//! string forever. The grammars here keep every reply finite and short:
//! - JSON is written compactly (`", "` and `": "` separators, no other whitespace);
//! - strings without their own `maxLength`, `enum`, `const`, `pattern` or `format` get
//!   [`DEFAULT_MAX_STRING`] characters at most, arrays without `maxItems` get [`DEFAULT_MAX_ITEMS`]
//!   items, numbers without bounds stay within ±2^53, objects accept only their declared
//!   properties unless they say otherwise, and the schema-less JSON object nests at most [`JSON_OBJECT_DEPTH`] levels (as Cohere
//!   states); these only narrow what is allowed, so every output still validates against the
//!   caller's schema;
//! - the tool plan before a call block is at most [`MAX_PLAN_CHARS`] characters, and a reply
//!   makes at most [`MAX_CALLS`] calls.
//!
//! # At `max_tokens`
//! As the budget runs low the engine steers a reply to completion ([`closing`]): once the shortest
//! way to finish the grammar barely fits in the tokens left, those tokens are forced, and a
//! required call's plan is closed early enough to leave the call room. So a reply is valid
//! whenever `max_tokens` leaves room for its shortest completion; below that it is cut with
//! `MAX_TOKENS` and its text is a prefix of valid output.
//!
//! # Schemas with no finite value
//! A `$ref` cycle through required members with no way out admits only infinite JSON; such a
//! schema is refused at compile time (see `schema::finite_value_error`), never discovered
//! mid-reply.
//!
//! # Compile time
//! Compiling is bounded twice: llguidance's own limits on lexer work and grammar size
//! ([`ParserLimits`]) stop pathological schemas, and [`compile_with_timeout`] gives up after a
//! wall-clock limit. Failure is an error for the client, never a silent fall back to free text.

pub mod closing;
mod schema;

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use llguidance::api::{ParserLimits, StopReason, TopLevelGrammar};
use llguidance::toktrie::TokEnv;
use llguidance::{Matcher, ParserFactory};
use serde_json::Value;

pub use closing::ClosingPath;
use closing::{ClosingScores, JsonLex, PlanMarker, PlanState};
use schema::{bounded_schema, call_schema, finite_value_error, json_object_schema};

use crate::tools::{CallMarkers, CallShape};

/// Characters allowed in a JSON string whose schema sets no bound of its own.
pub const DEFAULT_MAX_STRING: u64 = 256;
/// Items allowed in a JSON array whose schema sets no `maxItems`.
pub const DEFAULT_MAX_ITEMS: u64 = 16;
/// Largest magnitude of a number whose schema sets no bound (exact in f64).
pub const NUMBER_LIMIT: i64 = 1 << 53;
/// Nesting levels of free members added to an object schema that declares no properties.
const FREE_OBJECT_DEPTH: usize = 2;
/// Nesting levels of the schema-less JSON object (`response_format: json_object`).
pub const JSON_OBJECT_DEPTH: usize = 5;
/// Characters of tool plan allowed before a call block.
pub const MAX_PLAN_CHARS: usize = 200;
/// Calls allowed in one reply.
pub const MAX_CALLS: usize = 4;
/// Longest a grammar may take to compile before the request is refused.
pub const COMPILE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a reply must look like.
#[derive(Debug, Clone, PartialEq)]
pub enum ConstraintSpec {
    /// Any JSON object (nesting bounded).
    JsonObject,
    /// A JSON value that validates against this schema (its top level is an object).
    JsonSchema(Value),
    /// Tool calls written in a model's call format.
    Tools(ToolConstraint),
}

/// How tool calls are constrained.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolConstraint {
    pub markers: CallMarkers,
    pub tools: Vec<ToolSchema>,
    pub mode: ToolMode,
    /// Calls must name a defined tool and their arguments validate against its schema. Without
    /// it, a call still names a defined tool and its arguments are a JSON object.
    pub strict: bool,
}

/// One callable tool: its name and the JSON schema of its arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSchema {
    pub name: String,
    pub parameters: Value,
}

/// Whether a reply may, must or must not call tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolMode {
    /// Free text, or (optional plan text then) a call block.
    Auto,
    /// (Optional plan text then) a call block, nothing else.
    Required,
    /// Free text that never opens a call block.
    None,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ConstraintError {
    /// The grammar or schema was refused by the compiler; the message says why.
    #[error("the response grammar failed to compile: {0}")]
    Compile(String),
    #[error("the response grammar took longer than {0:?} to compile")]
    Timeout(Duration),
    /// The tokenizer could not be turned into llguidance's token trie.
    #[error("constrained decoding is not available for this model: {0}")]
    Unsupported(String),
    /// The grammar failed while generating (a bug, or a limit hit mid-reply).
    #[error("the response grammar failed during generation: {0}")]
    Runtime(String),
}

/// The per-model part of constrained decoding: the tokenizer as llguidance sees it. Built once,
/// shared by every compile.
#[derive(Clone)]
pub struct ConstraintCompiler {
    factory: Arc<ParserFactory>,
    tokenizer: Arc<tokenizers::Tokenizer>,
    vocab_size: usize,
    scores: Arc<ClosingScores>,
}

impl ConstraintCompiler {
    /// `end_tokens` are the tokens that end a reply (what a finished grammar allows);
    /// `vocab_size` is the width of the model's logits row, which may exceed the tokenizer's.
    pub fn new(
        tokenizer: Arc<tokenizers::Tokenizer>,
        end_tokens: &[u32],
        vocab_size: usize,
    ) -> Result<Self, ConstraintError> {
        let mut bytes = toktrie_hf_tokenizers::ByteTokenizer::from_tokenizer((*tokenizer).clone())
            .map_err(unsupported)?;
        let known = bytes.tokrx_info().vocab_size as usize;
        let ends: Vec<u32> = end_tokens
            .iter()
            .copied()
            .filter(|&t| (t as usize) < known)
            .collect();
        if ends.is_empty() {
            return Err(ConstraintError::Unsupported(
                "the model has no end-of-turn token".into(),
            ));
        }
        bytes.set_eos_tokens(&ends);
        let env = bytes
            .into_tok_env(Some(vocab_size.max(known)))
            .map_err(unsupported)?;
        let mut factory = ParserFactory::new_simple(&env).map_err(unsupported)?;
        factory.quiet();
        *factory.limits_mut() = ParserLimits {
            // Errors name the problem, not the whole parser state.
            verbose_errors: false,
            ..ParserLimits::default()
        };
        let scores = Arc::new(ClosingScores::new(factory.tok_env().tok_trie()));
        Ok(Self {
            factory: Arc::new(factory),
            tokenizer,
            vocab_size,
            scores,
        })
    }

    fn tok_env(&self) -> &TokEnv {
        self.factory.tok_env()
    }

    /// Compiles a spec into a fresh constraint for one sequence. Blocks for as long as
    /// compilation takes; see [`compile_with_timeout`].
    pub fn compile(&self, spec: &ConstraintSpec) -> Result<Constraint, ConstraintError> {
        let grammar = match spec {
            ConstraintSpec::JsonObject => TopLevelGrammar::from_json_schema(json_object_schema()),
            ConstraintSpec::JsonSchema(schema) => {
                if let Some(why) = finite_value_error(schema) {
                    return Err(ConstraintError::Compile(why));
                }
                TopLevelGrammar::from_json_schema(bounded_schema(schema))
            }
            ConstraintSpec::Tools(tools) => {
                if tools.strict {
                    for tool in &tools.tools {
                        if let Some(why) = finite_value_error(&tool.parameters) {
                            return Err(ConstraintError::Compile(format!(
                                "tool '{}': {why}",
                                tool.name
                            )));
                        }
                    }
                }
                TopLevelGrammar::from_lark(self.tool_grammar(tools)?)
            }
        };
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| ConstraintError::Compile(e.to_string()))?;
        // Text before a call block (a required call's plan, or free text that may lead to a
        // call), followed to know where the call's JSON starts.
        let plan = match spec {
            ConstraintSpec::Tools(tools) if tools.mode != ToolMode::None => self
                .plan_marker(tools.markers.open)
                .map(|m| PlanState::new(m, tools.mode == ToolMode::Required)),
            _ => None,
        };
        let mut constraint = Constraint {
            matcher: Matcher::new(Ok(parser)),
            words: self.vocab_size.div_ceil(32),
            scores: self.scores.clone(),
            plan,
            lex: JsonLex::default(),
            env: self.tok_env().clone(),
        };
        // The first mask builds the lexer's start state: a schema that admits nothing, or one
        // too complex for the limits, fails here rather than mid-reply.
        let mut mask = Vec::new();
        constraint.mask(&mut mask).map_err(|e| match e {
            ConstraintError::Runtime(m) => ConstraintError::Compile(m),
            other => other,
        })?;
        if mask.iter().all(|&w| w == 0) {
            return Err(ConstraintError::Compile(
                "the grammar allows no output".into(),
            ));
        }
        Ok(constraint)
    }

    /// The lark grammar for tool calls in the format of `tools.markers`.
    fn tool_grammar(&self, tools: &ToolConstraint) -> Result<String, ConstraintError> {
        let markers = &tools.markers;
        let open = self.marker(markers.open);
        let close = self.marker(markers.close);
        let mut g = String::new();
        if tools.mode == ToolMode::None {
            // Free text in which the opening marker never appears (a special-token marker
            // cannot appear in text at all).
            match &open {
                Marker::Text(text) if !text.is_empty() => {
                    g.push_str("start: FREE\n");
                    g.push_str(&format!(
                        "FREE: /(?s:.*)/ & ~/(?s:.*){}(?s:.*)/\n",
                        regex_escape(text)
                    ));
                }
                _ => g.push_str("start: FREE\nFREE: /(?s:.*)/\n"),
            }
            return Ok(g);
        }
        if tools.tools.is_empty() {
            return Err(ConstraintError::Compile("no tools are defined".into()));
        }
        // The call objects, one alternative per tool.
        let mut alternatives = Vec::with_capacity(tools.tools.len());
        for (i, tool) in tools.tools.iter().enumerate() {
            let schema = call_schema(markers, tool, tools.strict);
            let text = serde_json::to_string(&schema)
                .map_err(|e| ConstraintError::Compile(e.to_string()))?;
            g.push_str(&format!("call_{i}: %json {text}\n"));
            alternatives.push(format!("call_{i}"));
        }
        g.push_str(&format!("call: {}\n", alternatives.join(" | ")));
        // What follows the first opening marker.
        let (open_lark, close_lark) = (open.lark(), close.lark());
        let after_open = match markers.shape {
            CallShape::ArrayOfCalls => format!(
                "\"[\" call (\", \" call){{0,{}}} \"]\" {close_lark}",
                MAX_CALLS - 1
            ),
            // The call object is the reply itself (Llama 3): one call.
            CallShape::OneCallPerBlock if open.is_empty() => "call".to_string(),
            CallShape::OneCallPerBlock => format!(
                "call {close_lark} (\"\\n\"? {open_lark} call {close_lark}){{0,{}}}",
                MAX_CALLS - 1
            ),
        };
        let calls = format!("{open_lark} {after_open}");
        let plan = format!("/(?s:.{{1,{MAX_PLAN_CHARS}}})/");
        match (&open, tools.mode) {
            // No marker: the reply is the call, or (AUTO) text that does not start like one.
            (Marker::Text(""), mode) => {
                if mode == ToolMode::Auto {
                    g.push_str("start: calls | FREE\nFREE: /[^{ \\n](?s:.*)/\n");
                } else {
                    g.push_str("start: calls\n");
                }
            }
            // A text marker: the plan is lazy so that it ends at the first marker.
            (Marker::Text(t), mode) => {
                let escaped = regex_escape(t);
                g.push_str(&format!(
                    "plan_open[lazy]: /(?s:.{{0,{MAX_PLAN_CHARS}}}){escaped}/\n"
                ));
                // The marker is part of the lazy plan lexeme, so the calls rule starts after it.
                g.push_str(&format!("calls_after_open: {after_open}\n"));
                if mode == ToolMode::Auto {
                    g.push_str(&format!(
                        "start: plan_open calls_after_open | FREE\nFREE: /(?s:.*)/ & ~/(?s:.*){escaped}(?s:.*)/\n"
                    ));
                } else {
                    g.push_str("start: plan_open calls_after_open\n");
                }
            }
            // A special-token marker: plain text can never contain it.
            (Marker::Special(_), ToolMode::Auto) => {
                g.push_str(&format!(
                    "start: PLAN? calls | FREE\nPLAN: {plan}\nFREE: /(?s:.*)/\n"
                ));
            }
            (Marker::Special(_), _) => {
                g.push_str(&format!("start: PLAN? calls\nPLAN: {plan}\n"));
            }
        }
        g.push_str(&format!("calls: {calls}\n"));
        Ok(g)
    }

    /// The opening marker of a call block as tokens, for the text before it. None when the
    /// format has no marker (Llama 3: the call is the reply itself).
    fn plan_marker(&self, open: &'static str) -> Option<PlanMarker> {
        match self.marker(open) {
            Marker::Text("") => None,
            Marker::Special(id) => Some(PlanMarker {
                tokens: vec![id],
                text: Vec::new(),
            }),
            Marker::Text(text) => Some(PlanMarker {
                tokens: self.tok_env().tok_trie().greedy_tokenize(text.as_bytes()),
                text: text.as_bytes().to_vec(),
            }),
        }
    }

    /// A marker as the grammar writes it: a special token when the tokenizer has it as one.
    fn marker(&self, text: &'static str) -> Marker {
        if !text.is_empty() {
            if let Some(id) = self.tokenizer.token_to_id(text) {
                let special = self
                    .tokenizer
                    .get_added_tokens_decoder()
                    .get(&id)
                    .is_some_and(|t| t.special);
                if special {
                    return Marker::Special(id);
                }
            }
        }
        Marker::Text(text)
    }
}

fn unsupported(e: impl std::fmt::Display) -> ConstraintError {
    ConstraintError::Unsupported(e.to_string())
}

/// A call-format marker in a grammar.
enum Marker {
    Text(&'static str),
    Special(u32),
}

impl Marker {
    fn is_empty(&self) -> bool {
        matches!(self, Marker::Text(t) if t.is_empty())
    }

    fn lark(&self) -> String {
        match self {
            Marker::Text("") => String::new(),
            Marker::Text(t) => serde_json::to_string(t).unwrap_or_default(),
            Marker::Special(id) => format!("<[{id}]>"),
        }
    }
}

/// A compiled grammar driving one sequence: the mask before each token, then the token taken.
#[derive(Clone)]
pub struct Constraint {
    matcher: Matcher,
    words: usize,
    scores: Arc<ClosingScores>,
    /// The text before a call block, while it may still be open.
    plan: Option<PlanState>,
    /// Where the reply's JSON stands lexically (after the call marker, for tool grammars).
    lex: JsonLex,
    env: TokEnv,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("words", &self.words)
            .field("stopped", &self.matcher.is_stopped())
            .finish()
    }
}

impl Constraint {
    /// Writes the allowed next tokens into `out` as the sampler's bitset (`vocab.div_ceil(32)`
    /// words; token `t` allowed when bit `t % 32` of word `t / 32` is set). A finished grammar
    /// allows only the end tokens.
    pub fn mask(&mut self, out: &mut Vec<u32>) -> Result<(), ConstraintError> {
        let vob = self
            .matcher
            .compute_mask_or_eos()
            .map_err(|e| ConstraintError::Runtime(e.to_string()))?;
        let words = vob.as_slice();
        out.clear();
        out.extend_from_slice(&words[..words.len().min(self.words)]);
        out.resize(self.words, 0);
        Ok(())
    }

    /// Advances past a sampled token (one the last mask allowed).
    pub fn accept(&mut self, token: u32) -> Result<(), ConstraintError> {
        self.matcher
            .consume_token(token)
            .map_err(|e| ConstraintError::Runtime(e.to_string()))?;
        let bytes = self.env.tok_trie().token(token);
        match self.plan.as_mut().filter(|p| p.open) {
            Some(plan) => {
                if let Some(after) = plan.accept(token, bytes) {
                    self.lex = JsonLex::default();
                    self.lex.feed(&bytes[bytes.len() - after..]);
                }
            }
            None => self.lex.feed(bytes),
        }
        Ok(())
    }

    /// The grammar may end here (the end token is allowed).
    pub fn is_accepting(&mut self) -> Result<bool, ConstraintError> {
        if self.is_finished() {
            return Ok(true);
        }
        self.matcher
            .is_accepting()
            .map_err(|e| ConstraintError::Runtime(e.to_string()))
    }

    /// A required call's plan is still being written (its call block has not opened).
    pub fn in_plan(&self) -> bool {
        self.plan.as_ref().is_some_and(|p| p.open && p.required)
    }

    /// The tokens that end a required call's plan (its call block's opening marker); empty when
    /// no plan is open.
    pub fn plan_marker_tokens(&self) -> Vec<u32> {
        match &self.plan {
            Some(plan) if plan.open && plan.required => plan.marker.tokens.clone(),
            _ => Vec::new(),
        }
    }

    /// The grammar is complete and admits nothing more: the reply is over.
    pub fn is_finished(&self) -> bool {
        matches!(
            self.matcher.stop_reason(),
            StopReason::NoExtension | StopReason::NoExtensionBias | StopReason::EndOfSentence
        )
    }

    /// The grammar stopped for a reason other than completion (limits, internal error).
    pub fn error(&self) -> Option<String> {
        if !self.matcher.is_stopped() || self.is_finished() {
            return None;
        }
        Some(
            self.matcher
                .get_error()
                .unwrap_or_else(|| self.matcher.stop_reason().to_string()),
        )
    }
}

/// Compiles on a helper thread and gives up after `timeout`. llguidance's limits end the
/// abandoned work soon after; the caller is answered in time either way.
pub fn compile_with_timeout(
    compiler: &ConstraintCompiler,
    spec: &ConstraintSpec,
    timeout: Duration,
) -> Result<Constraint, ConstraintError> {
    let started = std::time::Instant::now();
    let (tx, rx) = mpsc::channel();
    let compiler = compiler.clone();
    let spec = spec.clone();
    std::thread::Builder::new()
        .name("cohost-grammar".into())
        .spawn(move || {
            let _ = tx.send(compiler.compile(&spec));
        })
        .map_err(|e| ConstraintError::Compile(format!("cannot start the compiler: {e}")))?;
    match rx.recv_timeout(timeout) {
        // A result that arrived while this thread was descheduled past the deadline still took
        // longer than allowed: the limit holds however the threads were scheduled.
        Ok(_) if started.elapsed() > timeout => Err(ConstraintError::Timeout(timeout)),
        Ok(result) => result,
        Err(mpsc::RecvTimeoutError::Timeout) => Err(ConstraintError::Timeout(timeout)),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(ConstraintError::Compile(
            "the compiler stopped without an answer".into(),
        )),
    }
}

/// Escapes text for a regex inside a lark `/.../` literal.
fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if "\\.+*?()|[]{}^$#&-~/".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
