//! Request -> validated chat: every rule of the spec checked before any work is done, each
//! failure an `ApiError::BadRequest` in Cohere's wording, and the Cohere messages mapped to the
//! chat the model's template renders.

use std::collections::HashSet;

use runner::chat::{ChatMessage, ChatPrompt, TemplateFunction, TemplateToolCall};
use runner::constraint::{ConstraintSpec, ToolConstraint, ToolMode, ToolSchema};
use runner::engine::ModelInfo;
use runner::grounding::{CitationMode, Source, SourceKind};
use runner::tools::{CallMarkers, ParseOptions, DEFAULT_PLAN_HOLD_BYTES};
use sampler::SamplingParams;
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::wire::{
    AssistantBlock, ChatRequest, Content, Document, DocumentData, Message, ResponseFormat,
    ResponseFormatType, TextBlock, ToolBlock, ToolCall, ToolChoice, ToolDefinition, UserBlock,
};

pub const MAX_STOP_SEQUENCES: usize = 5;
/// Cohere's limit on fields across all tools with `strict_tools`.
pub const MAX_STRICT_FIELDS: usize = 200;

/// A chat request that passed every check, in the runner's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidChat {
    pub stream: bool,
    pub prompt: ChatPrompt,
    pub sampling: SamplingParams,
    /// What the client asked for; the route caps it by the server ceiling and the context.
    pub max_tokens: Option<usize>,
    pub stop_sequences: Vec<String>,
    /// What the reply must look like (`response_format`, strict or forced tools); `None` for
    /// free text.
    pub constraint: Option<ConstraintSpec>,
    /// How to read tool calls out of the reply; `None` when the request has no tools.
    pub tool_parse: Option<ParseOptions>,
    /// Queue order, 0 first.
    pub priority: u32,
    /// What the reply may cite: the documents, then the tool results, in request order.
    pub sources: Vec<Source>,
    pub citation_mode: CitationMode,
    /// Most thinking tokens, for a model that thinks and a request with thinking enabled.
    pub thinking_budget: Option<usize>,
}

/// Checks everything but `model` (see `Registry::find`) and builds the template's chat.
pub fn validate_chat(req: ChatRequest, info: &ModelInfo) -> Result<ValidChat, ApiError> {
    let sampling = sampling_params(&req)?;
    let max_tokens = match req.max_tokens {
        None => None,
        Some(n) if n >= 1 => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        Some(n) => {
            return Err(ApiError::invalid(format!(
                "max_tokens must be a positive integer (received {n})."
            )))
        }
    };
    let stop_sequences = req.stop_sequences.clone().unwrap_or_default();
    if stop_sequences.len() > MAX_STOP_SEQUENCES {
        return Err(ApiError::invalid(format!(
            "stop_sequences can contain at most {MAX_STOP_SEQUENCES} sequences (received {}).",
            stop_sequences.len()
        )));
    }
    if stop_sequences.iter().any(String::is_empty) {
        return Err(ApiError::invalid(
            "stop_sequences must not contain empty strings.",
        ));
    }
    let priority = match req.priority {
        None => 0,
        Some(p) if (0..=999).contains(&p) => p as u32,
        Some(_) => {
            return Err(ApiError::invalid(
                "priority must be between 0 and 999 inclusive.",
            ))
        }
    };
    if let Some(budget) = req.thinking.as_ref().and_then(|t| t.token_budget) {
        if budget < 1 {
            return Err(ApiError::invalid(
                "thinking token_budget must be a positive integer.",
            ));
        }
    }
    // The template's switch (Qwen3's `enable_thinking`, Command's `reasoning`); a model that
    // cannot think ignores it (its /v1/models entry has no `thinking` feature).
    let thinking = req
        .thinking
        .as_ref()
        .map(|t| t.kind != Some(crate::wire::ThinkingType::Disabled));
    let thinking_budget = match (thinking, &info.thinking) {
        (Some(true), Some(_)) => req
            .thinking
            .as_ref()
            .and_then(|t| t.token_budget)
            .map(|b| usize::try_from(b).unwrap_or(usize::MAX)),
        _ => None,
    };

    let tools = req.tools.as_deref().unwrap_or_default();
    let tool_defs = validate_tools(tools, req.strict_tools.unwrap_or(false))?;
    if req.tool_choice == Some(ToolChoice::Required) && tools.is_empty() {
        return Err(ApiError::invalid(
            "tool_choice REQUIRED can only be used when tools are specified.",
        ));
    }
    let documents = validate_documents(req.documents.as_deref().unwrap_or_default())?;
    if req.response_format.is_some() && !documents.is_empty() {
        return Err(ApiError::invalid(
            "response_format is not supported with RAG.",
        ));
    }
    if let Some(format) = &req.response_format {
        validate_response_format(format, !documents.is_empty(), !tools.is_empty())?;
    }
    let citation_mode = citation_mode(req.citation_options.as_ref())?;
    let constraint = constraint_spec(&req, runner::tools::format(info.tool_format).markers());
    // Text before a call is a plan only if a call follows: hold it (see ParseOptions), all of it
    // when a call is certain, none when calls are ruled out.
    let tool_parse = (!tools.is_empty()).then_some(ParseOptions {
        plan_hold_bytes: match req.tool_choice {
            Some(ToolChoice::Required) => usize::MAX,
            Some(ToolChoice::None) => 0,
            None => DEFAULT_PLAN_HOLD_BYTES,
        },
        id_seed: None,
    });

    let messages = req.messages.unwrap_or_default();
    let (chat, tool_sources) = map_messages(messages, info)?;
    let mut sources: Vec<Source> = documents
        .iter()
        .map(|doc| {
            let id = doc["id"].as_str().unwrap_or_default().to_string();
            Source::new(id, SourceKind::Document, doc.clone())
        })
        .collect();
    sources.extend(tool_sources);
    let prompt = ChatPrompt {
        messages: chat,
        // Every template gets the definitions: the runner renders them through the template
        // or, when it cannot, as its own tool section (runner::tools::prepare_prompt).
        tools: tool_defs,
        // Through the template's `documents` when it renders them, else our grounding section
        // (runner::grounding::prepare_documents).
        documents: documents.into_iter().map(Value::Object).collect(),
        add_generation_prompt: true,
        thinking,
        // Command templates switch their safety preamble on it; others do not read it.
        safety_mode: req.safety_mode.map(|mode| match mode {
            crate::wire::SafetyMode::Contextual => runner::chat::SafetyMode::Contextual,
            crate::wire::SafetyMode::Strict => runner::chat::SafetyMode::Strict,
            crate::wire::SafetyMode::Off => runner::chat::SafetyMode::Off,
        }),
        ..ChatPrompt::default()
    };
    Ok(ValidChat {
        stream: req.stream.unwrap_or(false),
        prompt,
        sampling,
        max_tokens,
        stop_sequences,
        constraint,
        tool_parse,
        priority,
        sources,
        citation_mode,
        thinking_budget,
    })
}

/// The spec's largest seed, 18446744073709552000, is u64::MAX written through a double: it (and
/// any whole number written as a float) arrives as an f64. Whole values up to 2^64 are accepted,
/// the top one saturating to u64::MAX.
fn seed_value(n: &serde_json::Number) -> Option<u64> {
    n.as_u64().or_else(|| {
        let f = n.as_f64()?;
        (f.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(&f)).then_some(f as u64)
    })
}

fn sampling_params(req: &ChatRequest) -> Result<SamplingParams, ApiError> {
    let defaults = SamplingParams::default();
    let in_range = |name: &str,
                    value: Option<f64>,
                    lo: f64,
                    hi: f64,
                    shown: &str|
     -> Result<Option<f32>, ApiError> {
        match value {
            Some(v) if !(lo..=hi).contains(&v) => Err(ApiError::invalid(format!(
                "{name} must be between {shown} inclusive."
            ))),
            other => Ok(other.map(|v| v as f32)),
        }
    };
    let temperature = in_range("temperature", req.temperature, 0.0, 1.0, "0 and 1.0")?;
    let p = in_range("p", req.p, 0.01, 0.99, "0.01 and 0.99")?;
    let frequency_penalty = in_range(
        "frequency_penalty",
        req.frequency_penalty,
        0.0,
        1.0,
        "0 and 1",
    )?;
    let presence_penalty = in_range(
        "presence_penalty",
        req.presence_penalty,
        0.0,
        1.0,
        "0 and 1",
    )?;
    let k = match req.k {
        Some(k) if !(0..=500).contains(&k) => {
            return Err(ApiError::invalid("k must be between 0 and 500 inclusive."))
        }
        other => other.map(|k| k as usize),
    };
    let seed = match &req.seed {
        None => None,
        Some(n) => Some(seed_value(n).ok_or_else(|| {
            ApiError::invalid(format!(
                "seed must be an integer between 0 and {} inclusive (received {n}).",
                u64::MAX
            ))
        })?),
    };
    Ok(SamplingParams {
        temperature: temperature.unwrap_or(defaults.temperature),
        k: k.unwrap_or(defaults.k),
        p: p.unwrap_or(defaults.p),
        frequency_penalty: frequency_penalty.unwrap_or(defaults.frequency_penalty),
        presence_penalty: presence_penalty.unwrap_or(defaults.presence_penalty),
        seed,
        logprobs: req.logprobs.unwrap_or(false),
    })
}

/// `[A-Za-z_][A-Za-z0-9_]*`, the rule behind Cohere's tool-name message.
fn valid_tool_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks tool definitions and returns them in the HF/OpenAI function shape for templates.
fn validate_tools(tools: &[ToolDefinition], strict: bool) -> Result<Vec<Value>, ApiError> {
    let mut names = HashSet::new();
    let mut out = Vec::with_capacity(tools.len());
    let mut fields = 0;
    for tool in tools {
        if tool.kind.as_deref().is_some_and(|k| k != "function") {
            return Err(ApiError::invalid("tool type must be function."));
        }
        let function = tool
            .function
            .as_ref()
            .ok_or_else(|| ApiError::invalid("tool function must be provided."))?;
        let name = function.name.as_deref().unwrap_or_default();
        if !valid_tool_name(name) {
            return Err(ApiError::invalid(format!(
                "tool names can only contain certain characters (A-Za-z0-9_) and can't begin with a digit (provided name: '{name}')."
            )));
        }
        if !names.insert(name.to_string()) {
            return Err(ApiError::invalid(format!("duplicate tool name '{name}'.")));
        }
        let parameters = function
            .parameters
            .clone()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        if !parameters.is_object() {
            return Err(ApiError::invalid(format!(
                "tool '{name}' parameters must be a JSON schema object."
            )));
        }
        if strict
            && parameters
                .get("required")
                .and_then(Value::as_array)
                .is_none_or(|r| r.is_empty())
        {
            return Err(ApiError::invalid(format!(
                "with strict_tools, tool '{name}' must have at least one required parameter."
            )));
        }
        if strict {
            fields += count_fields(&parameters);
            if fields > MAX_STRICT_FIELDS {
                return Err(ApiError::invalid(format!(
                    "with strict_tools, tools can declare at most {MAX_STRICT_FIELDS} fields in all."
                )));
            }
        }
        let mut def = Map::new();
        def.insert("name".into(), Value::String(name.to_string()));
        if let Some(d) = &function.description {
            def.insert("description".into(), Value::String(d.clone()));
        }
        def.insert("parameters".into(), parameters);
        out.push(json!({"type": "function", "function": Value::Object(def)}));
    }
    Ok(out)
}

fn validate_response_format(
    format: &ResponseFormat,
    has_documents: bool,
    has_tools: bool,
) -> Result<(), ApiError> {
    match format.kind {
        ResponseFormatType::Text => {
            if format.json_schema.is_some() {
                return Err(ApiError::invalid(
                    "json_schema can only be used with response_format type json_object.",
                ));
            }
            Ok(())
        }
        ResponseFormatType::JsonObject => {
            if has_documents {
                return Err(ApiError::invalid(
                    "response_format is not supported with RAG.",
                ));
            }
            if has_tools {
                return Err(ApiError::invalid(
                    "response_format is not supported with tools.",
                ));
            }
            match &format.json_schema {
                None => Ok(()),
                Some(schema) => {
                    if schema.get("type").and_then(Value::as_str) != Some("object") {
                        return Err(ApiError::BadRequest("schema must be an object".into()));
                    }
                    check_schema_object(schema)
                }
            }
        }
    }
}

/// The cheap structural rules Cohere states for JSON schemas: objects list at least one
/// required field, required fields exist, and every property says its type.
fn check_schema_object(schema: &Value) -> Result<(), ApiError> {
    let properties = schema.get("properties").and_then(Value::as_object);
    let required = schema.get("required").and_then(Value::as_array);
    let Some(required) = required.filter(|r| !r.is_empty()) else {
        return Err(ApiError::BadRequest(
            "schema objects must have at least one required field".into(),
        ));
    };
    for field in required {
        let name = field.as_str().unwrap_or_default();
        if !properties.is_some_and(|p| p.contains_key(name)) {
            return Err(ApiError::BadRequest(format!(
                "required field {name} not found in properties"
            )));
        }
    }
    for (name, property) in properties.into_iter().flatten() {
        let typed = ["type", "$ref", "anyOf", "oneOf", "allOf", "enum", "const"]
            .iter()
            .any(|k| property.get(k).is_some());
        if !typed {
            return Err(ApiError::BadRequest(format!(
                "property {name} must have a type"
            )));
        }
        if property.get("type").and_then(Value::as_str) == Some("object") {
            check_schema_object(property)?;
        }
        if let Some(items) = property
            .get("items")
            .filter(|i| i.get("type").and_then(Value::as_str) == Some("object"))
        {
            check_schema_object(items)?;
        }
    }
    Ok(())
}

/// What the reply must look like, from `response_format`, `tools`, `tool_choice` and
/// `strict_tools`; `None` when free text is fine. Part of [`validate_chat`], on a request whose
/// fields passed their checks; the spec is compiled by the engine, and a spec that fails to
/// compile is a 400 there. `markers` is the call format of the served model.
///
/// - `json_object` gives any JSON object, with `json_schema` one that validates against it;
/// - with tools, `REQUIRED` forces one or more calls, `NONE` rules the call marker out, and
///   `strict_tools` (without a choice) leaves the model free to answer in text but makes any
///   call name a defined tool with arguments that validate against its schema. Without
///   `strict_tools`, REQUIRED calls still name a defined tool and carry an object of arguments.
fn constraint_spec(req: &ChatRequest, markers: CallMarkers) -> Option<ConstraintSpec> {
    if let Some(format) = &req.response_format {
        if format.kind == ResponseFormatType::JsonObject {
            return Some(match &format.json_schema {
                Some(schema) => ConstraintSpec::JsonSchema(schema.clone()),
                None => ConstraintSpec::JsonObject,
            });
        }
    }
    let tools = req.tools.as_deref().unwrap_or_default();
    if tools.is_empty() {
        return None;
    }
    let strict = req.strict_tools.unwrap_or(false);
    let mode = match req.tool_choice {
        Some(ToolChoice::Required) => ToolMode::Required,
        Some(ToolChoice::None) => ToolMode::None,
        None if strict => ToolMode::Auto,
        None => return None,
    };
    let tools = tools
        .iter()
        .filter_map(|tool| tool.function.as_ref())
        .map(|function| ToolSchema {
            name: function.name.clone().unwrap_or_default(),
            parameters: function
                .parameters
                .clone()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        })
        .collect();
    Some(ConstraintSpec::Tools(ToolConstraint {
        markers,
        tools,
        mode,
        strict,
    }))
}

/// Properties declared anywhere in a schema, for the strict-tools field limit.
fn count_fields(schema: &Value) -> usize {
    match schema {
        Value::Object(map) => {
            let own = map
                .get("properties")
                .and_then(Value::as_object)
                .map_or(0, Map::len);
            own + map.values().map(count_fields).sum::<usize>()
        }
        Value::Array(items) => items.iter().map(count_fields).sum(),
        _ => 0,
    }
}

const EMPTY_TURN: &str = "message must not be empty in a turn";

/// The template's turns, and the tool results as citation sources (`<tool_call_id>:<block>`).
fn map_messages(
    messages: Vec<Message>,
    info: &ModelInfo,
) -> Result<(Vec<ChatMessage>, Vec<Source>), ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid("messages must not be empty."));
    }
    let mut out: Vec<ChatMessage> = Vec::with_capacity(messages.len());
    let mut sources: Vec<Source> = Vec::new();
    let mut call_ids: HashSet<String> = HashSet::new();
    let mut seen_other = false;
    for message in messages {
        match message {
            Message::System(m) => {
                if seen_other {
                    return Err(ApiError::BadRequest(
                        "system turn must be the first in the list".into(),
                    ));
                }
                let text = match m.content {
                    Some(Content::Text(t)) => t,
                    Some(Content::Blocks(blocks)) => blocks
                        .into_iter()
                        .map(|TextBlock::Text { text }| text)
                        .collect::<Vec<_>>()
                        .join("\n"),
                    None => String::new(),
                };
                if text.is_empty() {
                    return Err(ApiError::BadRequest(EMPTY_TURN.into()));
                }
                // Several leading system turns become one: templates expect a single one first.
                match out.last_mut() {
                    Some(prev) => {
                        prev.content.push_str("\n\n");
                        prev.content.push_str(&text);
                    }
                    None => out.push(turn("system", text)),
                }
            }
            Message::User(m) => {
                seen_other = true;
                let text = match m.content {
                    Some(Content::Text(t)) => t,
                    Some(Content::Blocks(blocks)) => {
                        let mut parts = Vec::with_capacity(blocks.len());
                        for block in blocks {
                            match block {
                                UserBlock::Text { text } => parts.push(text),
                                UserBlock::ImageUrl { .. } => {
                                    return Err(ApiError::invalid(format!(
                                        "image content is not supported: the model '{}' accepts text only.",
                                        info.name
                                    )))
                                }
                            }
                        }
                        parts.join("\n")
                    }
                    None => String::new(),
                };
                if text.is_empty() {
                    return Err(ApiError::BadRequest(EMPTY_TURN.into()));
                }
                out.push(turn("user", text));
            }
            Message::Assistant(m) => {
                seen_other = true;
                // Thinking blocks a client echoes go to the template as the turn's reasoning,
                // which it renders where the model expects it (or leaves out).
                let mut reasoning: Vec<String> = Vec::new();
                let text = match m.content {
                    Some(Content::Text(t)) => t,
                    Some(Content::Blocks(blocks)) => blocks
                        .into_iter()
                        .filter_map(|b| match b {
                            AssistantBlock::Text { text } => Some(text),
                            AssistantBlock::Thinking { thinking } => {
                                reasoning.push(thinking);
                                None
                            }
                        })
                        .collect::<Vec<_>>()
                        .join("\n"),
                    None => String::new(),
                };
                let calls = m.tool_calls.unwrap_or_default();
                let mut template_calls = Vec::with_capacity(calls.len());
                for call in calls {
                    let call = map_tool_call(call)?;
                    if !call_ids.insert(call.id.clone()) {
                        return Err(ApiError::BadRequest(
                            "cannot have duplicate tool ids".into(),
                        ));
                    }
                    template_calls.push(call);
                }
                // A tool-calling turn's plan is its visible text when there is no other.
                let text = if text.is_empty() {
                    m.tool_plan.unwrap_or_default()
                } else {
                    text
                };
                if text.is_empty() && template_calls.is_empty() {
                    return Err(ApiError::BadRequest(EMPTY_TURN.into()));
                }
                out.push(ChatMessage {
                    tool_calls: template_calls,
                    reasoning_content: (!reasoning.is_empty()).then(|| reasoning.join("\n")),
                    ..turn("assistant", text)
                });
            }
            Message::Tool(m) => {
                seen_other = true;
                let id = m.tool_call_id.filter(|id| !id.is_empty()).ok_or_else(|| {
                    ApiError::BadRequest("tool call id must be provided with tool message".into())
                })?;
                if !call_ids.contains(&id) {
                    return Err(ApiError::BadRequest(
                        "tool call id not found in previous tool calls".into(),
                    ));
                }
                let text = match m.content {
                    Some(Content::Text(t)) => {
                        sources.push(tool_source(&id, 0, tool_output_of_text(&t)));
                        t
                    }
                    Some(Content::Blocks(blocks)) => {
                        let mut parts = Vec::with_capacity(blocks.len());
                        for (i, block) in blocks.into_iter().enumerate() {
                            let (text, output) = match block {
                                ToolBlock::Text { text } => {
                                    let output = tool_output_of_text(&text);
                                    (text, output)
                                }
                                // A tool's document whose `data` is a JSON object string (how
                                // Cohere's docs write tool results) shows the object's keys.
                                ToolBlock::Document { document } => match &document.data {
                                    DocumentData::Text(t) if document.id.is_none() => {
                                        (t.clone(), tool_output_of_text(t))
                                    }
                                    _ => (document_text(&document), document_fields(&document)),
                                },
                            };
                            sources.push(tool_source(&id, i, output));
                            parts.push(text);
                        }
                        parts.join("\n")
                    }
                    None => {
                        return Err(ApiError::invalid("tool message content must be provided."))
                    }
                };
                out.push(ChatMessage {
                    tool_call_id: Some(id),
                    ..turn("tool", text)
                });
            }
        }
    }
    Ok((out, sources))
}

fn turn(role: &str, content: String) -> ChatMessage {
    ChatMessage {
        role: role.into(),
        content,
        ..Default::default()
    }
}

fn map_tool_call(call: ToolCall) -> Result<TemplateToolCall, ApiError> {
    if call.kind.as_deref().is_some_and(|k| k != "function") {
        return Err(ApiError::BadRequest(
            "tool call must be of type function".into(),
        ));
    }
    let id = call
        .id
        .filter(|id| !id.is_empty())
        .ok_or_else(|| ApiError::invalid("tool call id must be provided."))?;
    let function = call
        .function
        .ok_or_else(|| ApiError::invalid("tool call function must be provided."))?;
    let name = function.name.unwrap_or_default();
    // The wire carries arguments as a JSON string; templates want the object.
    let arguments = match function.arguments {
        None | Some(Value::Null) => json!({}),
        Some(Value::String(s)) if s.trim().is_empty() => json!({}),
        Some(Value::String(s)) => serde_json::from_str(&s).map_err(|e| {
            ApiError::invalid(format!(
                "tool call '{id}' arguments must be a JSON-encoded string: {e}"
            ))
        })?,
        Some(other) => other,
    };
    Ok(TemplateToolCall {
        id,
        kind: "function".into(),
        function: TemplateFunction { name, arguments },
    })
}

fn document_text(document: &Document) -> String {
    match &document.data {
        DocumentData::Text(t) => t.clone(),
        DocumentData::Object(map) => serde_json::to_string(map).expect("a JSON map serializes"),
    }
}

/// A tool result's source: its id is `<tool_call_id>:<index of the block>`.
fn tool_source(call_id: &str, block: usize, output: Map<String, Value>) -> Source {
    Source::new(format!("{call_id}:{block}"), SourceKind::Tool, output)
}

/// A tool result given as text: its JSON object when it is one (the docs ask for a JSON object
/// string), else `{"text": ...}`.
fn tool_output_of_text(text: &str) -> Map<String, Value> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => map,
        _ => Map::from_iter([("text".to_string(), Value::String(text.to_string()))]),
    }
}

/// A document block's fields (a string `data` becomes `{"text": ...}`), with its id if given.
fn document_fields(document: &Document) -> Map<String, Value> {
    let mut fields = Map::new();
    if let Some(id) = &document.id {
        fields.insert("id".into(), Value::String(id.clone()));
    }
    match &document.data {
        DocumentData::Text(t) => {
            fields.insert("text".into(), Value::String(t.clone()));
        }
        DocumentData::Object(map) => fields.extend(map.clone()),
    }
    fields
}

/// `documents[]` as the flat objects Cohere cites (`{"id": "doc:0", ...fields}`): each item a
/// string (`{"text": ...}`) or `{data, id?}` with `data` an object or a string. Ids default to
/// `doc:<position>` and must be unique.
pub fn validate_documents(items: &[Value]) -> Result<Vec<Map<String, Value>>, ApiError> {
    let mut out = Vec::with_capacity(items.len());
    let mut ids = HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let (id, data) = match item {
            Value::String(text) => (None, Value::String(text.clone())),
            Value::Object(object) => {
                let id = match object.get("id") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(id)) if !id.is_empty() => Some(id.clone()),
                    Some(other) => {
                        return Err(ApiError::invalid(format!(
                            "documents[{i}].id must be a non-empty string (received {other})."
                        )))
                    }
                };
                let data = object.get("data").cloned().ok_or_else(|| {
                    ApiError::invalid(format!("documents[{i}] must have a data field."))
                })?;
                (id, data)
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "documents[{i}] must be a string or an object with data (received {}).",
                    json_kind(other)
                )))
            }
        };
        let id = id.unwrap_or_else(|| format!("doc:{i}"));
        if !ids.insert(id.clone()) {
            return Err(ApiError::invalid(format!("duplicate document id '{id}'.")));
        }
        let mut fields = Map::new();
        fields.insert("id".into(), Value::String(id));
        match data {
            Value::String(text) => {
                fields.insert("text".into(), Value::String(text));
            }
            Value::Object(map) => fields.extend(map.into_iter().filter(|(k, _)| k != "id")),
            other => {
                return Err(ApiError::invalid(format!(
                    "documents[{i}].data must be an object or a string (received {}).",
                    json_kind(&other)
                )))
            }
        }
        out.push(fields);
    }
    Ok(out)
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `citation_options.mode`, in any case: ACCURATE (the default, also ENABLED), FAST, OFF (also
/// DISABLED).
fn citation_mode(options: Option<&crate::wire::CitationOptions>) -> Result<CitationMode, ApiError> {
    let Some(mode) = options.and_then(|o| o.mode.as_deref()) else {
        return Ok(CitationMode::Accurate);
    };
    match mode.to_ascii_uppercase().as_str() {
        "ACCURATE" | "ENABLED" => Ok(CitationMode::Accurate),
        "FAST" => Ok(CitationMode::Fast),
        "OFF" | "DISABLED" => Ok(CitationMode::Off),
        _ => Err(ApiError::invalid(format!(
            "citation_options.mode must be one of ACCURATE, FAST, OFF, ENABLED, DISABLED (received '{mode}')."
        ))),
    }
}

#[cfg(test)]
mod tests;
