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
//! A reply cut by `max_tokens` before its grammar completes ends with `MAX_TOKENS` like any other
//! and its text is a prefix of valid output; nothing is forced closed. Callers who want complete
//! JSON give a `max_tokens` that covers the bounds above.
//!
//! # Compile time
//! Compiling is bounded twice: llguidance's own limits on lexer work and grammar size
//! ([`ParserLimits`]) stop pathological schemas, and [`compile_with_timeout`] gives up after a
//! wall-clock limit. Failure is an error for the client, never a silent fall back to free text.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use llguidance::api::{ParserLimits, StopReason, TopLevelGrammar};
use llguidance::{Matcher, ParserFactory};
use serde_json::{json, Map, Value};

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
        Ok(Self {
            factory: Arc::new(factory),
            tokenizer,
            vocab_size,
        })
    }

    /// Compiles a spec into a fresh constraint for one sequence. Blocks for as long as
    /// compilation takes; see [`compile_with_timeout`].
    pub fn compile(&self, spec: &ConstraintSpec) -> Result<Constraint, ConstraintError> {
        let grammar = match spec {
            ConstraintSpec::JsonObject => TopLevelGrammar::from_json_schema(json_object_schema()),
            ConstraintSpec::JsonSchema(schema) => {
                TopLevelGrammar::from_json_schema(bounded_schema(schema))
            }
            ConstraintSpec::Tools(tools) => TopLevelGrammar::from_lark(self.tool_grammar(tools)?),
        };
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| ConstraintError::Compile(e.to_string()))?;
        let mut constraint = Constraint {
            matcher: Matcher::new(Ok(parser)),
            words: self.vocab_size.div_ceil(32),
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
            .map_err(|e| ConstraintError::Runtime(e.to_string()))
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
        Ok(result) => result,
        Err(mpsc::RecvTimeoutError::Timeout) => Err(ConstraintError::Timeout(timeout)),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(ConstraintError::Compile(
            "the compiler stopped without an answer".into(),
        )),
    }
}

/// llguidance's JSON options: compact, fixed separators, so no tokens go to whitespace.
fn json_options() -> Value {
    json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "})
}

/// The schema of one call object: `{"<name_key>": "<tool>", "<args_key>": {...}}`.
fn call_schema(markers: &CallMarkers, tool: &ToolSchema, strict: bool) -> Value {
    let arguments = if strict {
        bounded_node(&tool.parameters)
    } else {
        any_object(JSON_OBJECT_DEPTH - 1)
    };
    let mut properties = Map::new();
    properties.insert(markers.name_key.into(), json!({"const": tool.name}));
    properties.insert(markers.args_key.into(), arguments);
    json!({
        "x-guidance": json_options(),
        "type": "object",
        "properties": properties,
        "required": [markers.name_key, markers.args_key],
        "additionalProperties": false,
    })
}

/// `response_format: json_object`: an object whose values nest at most [`JSON_OBJECT_DEPTH`]
/// levels.
fn json_object_schema() -> Value {
    let mut schema = any_object(JSON_OBJECT_DEPTH - 1);
    if let Value::Object(map) = &mut schema {
        map.insert("x-guidance".into(), json_options());
    }
    schema
}

/// An object of at most [`DEFAULT_MAX_ITEMS`] members whose values nest `depth` more levels.
fn any_object(depth: usize) -> Value {
    json!({
        "type": "object",
        "additionalProperties": any_value(depth),
        "maxProperties": DEFAULT_MAX_ITEMS,
    })
}

fn any_value(depth: usize) -> Value {
    let scalar = json!({
        "type": ["string", "number", "boolean", "null"],
        "maxLength": DEFAULT_MAX_STRING,
        "minimum": -(NUMBER_LIMIT as f64),
        "maximum": NUMBER_LIMIT as f64,
    });
    if depth == 0 {
        return scalar;
    }
    json!({"anyOf": [
        scalar,
        {"type": "array", "items": any_value(depth - 1), "maxItems": DEFAULT_MAX_ITEMS},
        any_object(depth - 1),
    ]})
}

/// The caller's schema with the compact-JSON options and default bounds added.
fn bounded_schema(schema: &Value) -> Value {
    let mut schema = bounded_node(schema);
    if let Value::Object(map) = &mut schema {
        map.insert("x-guidance".into(), json_options());
    }
    schema
}

/// Adds `maxLength` / `maxItems` where a (sub)schema sets none. Walks every place a schema can
/// nest; keys that hold maps of schemas (`properties`, `$defs`, ...) are walked by value.
fn bounded_node(node: &Value) -> Value {
    let Value::Object(map) = node else {
        return node.clone();
    };
    let mut out = Map::with_capacity(map.len() + 1);
    for (key, value) in map {
        let walked = match key.as_str() {
            "properties" | "patternProperties" | "$defs" | "definitions" | "dependentSchemas" => {
                match value {
                    Value::Object(children) => Value::Object(
                        children
                            .iter()
                            .map(|(k, v)| (k.clone(), bounded_node(v)))
                            .collect(),
                    ),
                    other => other.clone(),
                }
            }
            "items"
            | "additionalProperties"
            | "additionalItems"
            | "not"
            | "if"
            | "then"
            | "else"
            | "contains"
            | "unevaluatedItems"
            | "unevaluatedProperties" => bounded_node(value),
            "anyOf" | "oneOf" | "allOf" | "prefixItems" => match value {
                Value::Array(items) => Value::Array(items.iter().map(bounded_node).collect()),
                other => bounded_node(other),
            },
            _ => value.clone(),
        };
        out.insert(key.clone(), walked);
    }
    let has_type = |t: &str| match map.get("type") {
        Some(Value::String(s)) => s == t,
        Some(Value::Array(types)) => types.iter().any(|v| v.as_str() == Some(t)),
        _ => false,
    };
    let fixed = ["enum", "const"].iter().any(|k| map.contains_key(*k));
    if has_type("string")
        && !fixed
        && !["maxLength", "pattern", "format"]
            .iter()
            .any(|k| map.contains_key(*k))
    {
        let min = map.get("minLength").and_then(Value::as_u64).unwrap_or(0);
        out.insert("maxLength".into(), json!(DEFAULT_MAX_STRING.max(min)));
    }
    if has_type("object") && !fixed && !map.contains_key("additionalProperties") {
        // Members beyond the declared ones would be unbounded free JSON: declared-only when
        // properties are declared, else bounded free members.
        let declared = map.contains_key("properties") || map.contains_key("patternProperties");
        let extra = if declared {
            json!(false)
        } else {
            any_value(FREE_OBJECT_DEPTH)
        };
        out.insert("additionalProperties".into(), extra);
        if !declared && !map.contains_key("maxProperties") {
            out.insert("maxProperties".into(), json!(DEFAULT_MAX_ITEMS));
        }
    }
    // Unbounded numbers let a model write digits (or exponents) without end, and serde and
    // most parsers refuse numbers past f64.
    if (has_type("integer") || has_type("number")) && !fixed {
        let limit = if has_type("number") && !has_type("integer") {
            json!(NUMBER_LIMIT as f64)
        } else {
            json!(NUMBER_LIMIT)
        };
        let negative = match &limit {
            Value::Number(n) if n.is_f64() => json!(-(NUMBER_LIMIT as f64)),
            _ => json!(-NUMBER_LIMIT),
        };
        let bounded = |k: &str, k2: &str| map.contains_key(k) || map.contains_key(k2);
        if !bounded("minimum", "exclusiveMinimum") {
            out.insert("minimum".into(), negative);
        }
        if !bounded("maximum", "exclusiveMaximum") {
            out.insert("maximum".into(), limit);
        }
    }
    if has_type("array") && !fixed && !map.contains_key("maxItems") {
        let min = map.get("minItems").and_then(Value::as_u64).unwrap_or(0);
        out.insert("maxItems".into(), json!(DEFAULT_MAX_ITEMS.max(min)));
    }
    Value::Object(out)
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
