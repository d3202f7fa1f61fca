//! Cohere's Chat API v2 on the wire: the serde types of requests, responses and stream events,
//! with the exact field names and enum spellings of the spec (../shared/spec/cohere-v2-chat.md).
//!
//! Input types are liberal: every optional field is an `Option` so that `null` reads as absent,
//! unknown keys are ignored (serde's default), and enums also accept the lowercase spelling the
//! docs use. Output types are strict: UPPER-case enums, optional fields left out rather than null.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

// ---------------------------------------------------------------------------------------------
// Request
// ---------------------------------------------------------------------------------------------

/// `POST /v2/chat` body. Only `model` and `messages` are required by the spec; they are optional
/// here so that a missing one is reported by validation in Cohere's wording, not by serde.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ChatRequest {
    pub model: Option<String>,
    pub messages: Option<Vec<Message>>,
    pub stream: Option<bool>,
    pub tools: Option<Vec<ToolDefinition>>,
    pub strict_tools: Option<bool>,
    /// Strings or `{data, id?}` objects; kept as JSON so that validation can name what is wrong
    /// with an item (see `validate::documents`).
    pub documents: Option<Vec<Value>>,
    pub citation_options: Option<CitationOptions>,
    pub response_format: Option<ResponseFormat>,
    pub safety_mode: Option<SafetyMode>,
    pub max_tokens: Option<i64>,
    pub stop_sequences: Option<Vec<String>>,
    pub temperature: Option<f64>,
    /// A JSON number so that a negative or fractional seed gets a range message, not a serde one.
    pub seed: Option<serde_json::Number>,
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub k: Option<i64>,
    pub p: Option<f64>,
    pub logprobs: Option<bool>,
    pub tool_choice: Option<ToolChoice>,
    pub thinking: Option<Thinking>,
    pub priority: Option<i64>,
}

/// One turn, discriminated by `role`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum Message {
    System(SystemMessage),
    User(UserMessage),
    Assistant(AssistantMessage),
    Tool(ToolMessage),
}

/// A string, or an array of typed blocks (what each role allows differs).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Content<B> {
    Text(String),
    Blocks(Vec<B>),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SystemMessage {
    pub content: Option<Content<TextBlock>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct UserMessage {
    pub content: Option<Content<UserBlock>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AssistantMessage {
    pub content: Option<Content<AssistantBlock>>,
    pub tool_plan: Option<String>,
    pub tool_calls: Option<Vec<ToolCall>>,
    /// Echoed back by clients; accepted and not used.
    pub citations: Option<Vec<Value>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ToolMessage {
    pub tool_call_id: Option<String>,
    pub content: Option<Content<ToolBlock>>,
}

/// `{"type": "text", "text": ...}`, the only block a system turn may hold.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TextBlock {
    Text { text: String },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum UserBlock {
    Text { text: String },
    ImageUrl { image_url: ImageUrl },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ImageUrl {
    pub url: String,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AssistantBlock {
    Text { text: String },
    Thinking { thinking: String },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToolBlock {
    Text { text: String },
    Document { document: Document },
}

/// A call an earlier assistant turn made, as the client echoes it back.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ToolCall {
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub function: Option<ToolCallFunction>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ToolCallFunction {
    pub name: Option<String>,
    /// A JSON-encoded string per the spec; an object is accepted too.
    pub arguments: Option<Value>,
}

/// `tools[]`: `{"type": "function", "function": {name, description?, parameters}}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ToolDefinition {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub function: Option<ToolFunction>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ToolFunction {
    pub name: Option<String>,
    pub description: Option<String>,
    pub parameters: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Document {
    pub data: DocumentData,
    pub id: Option<String>,
}

/// The spec says object; the official docs also send a string.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum DocumentData {
    Object(Map<String, Value>),
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CitationOptions {
    /// ACCURATE (also ENABLED), FAST, OFF (also DISABLED), in any case; checked by validation.
    pub mode: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ResponseFormat {
    #[serde(rename = "type")]
    pub kind: ResponseFormatType,
    pub json_schema: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormatType {
    Text,
    JsonObject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SafetyMode {
    #[serde(rename = "CONTEXTUAL", alias = "contextual")]
    Contextual,
    #[serde(rename = "STRICT", alias = "strict")]
    Strict,
    #[serde(rename = "OFF", alias = "off")]
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ToolChoice {
    #[serde(rename = "REQUIRED", alias = "required")]
    Required,
    #[serde(rename = "NONE", alias = "none")]
    None,
}

/// `{"type": "enabled"|"disabled", "token_budget"?}`; the docs omit `type`, meaning enabled.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Thinking {
    #[serde(rename = "type")]
    pub kind: Option<ThinkingType>,
    pub token_budget: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThinkingType {
    #[serde(alias = "ENABLED")]
    Enabled,
    #[serde(alias = "DISABLED")]
    Disabled,
}

// ---------------------------------------------------------------------------------------------
// Response
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FinishReason {
    Complete,
    StopSequence,
    MaxTokens,
    ToolCall,
    Error,
    Timeout,
}

/// Non-stream `POST /v2/chat` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    pub id: String,
    pub finish_reason: FinishReason,
    pub message: ResponseMessage,
    pub usage: Usage,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub logprobs: Option<Vec<LogprobItem>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseMessage {
    pub role: String,
    /// Left out on a tool-call turn with no text, as in the spec's example.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<ResponseContent>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tool_plan: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tool_calls: Option<Vec<ToolCallOut>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub citations: Option<Vec<CitationOut>>,
}

/// A span of a content block and the sources it comes from. `start`/`end` count Unicode code
/// points in that block's text (Python string indexing), and `text` is the block's text there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CitationOut {
    pub start: usize,
    pub end: usize,
    pub text: String,
    pub sources: Vec<SourceOut>,
    /// `TEXT_CONTENT` (a text block), `THINKING_CONTENT` or `PLAN`.
    #[serde(rename = "type")]
    pub kind: String,
    pub content_index: usize,
}

/// What a citation cites: a document (its fields, with its id) or a tool result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SourceOut {
    Document {
        id: String,
        document: Map<String, Value>,
    },
    Tool {
        id: String,
        tool_output: Map<String, Value>,
    },
}

impl From<runner::grounding::Citation> for CitationOut {
    fn from(c: runner::grounding::Citation) -> Self {
        use runner::grounding::SourceKind;
        Self {
            start: c.start,
            end: c.end,
            text: c.text,
            sources: c
                .sources
                .into_iter()
                .map(|s| match s.kind {
                    SourceKind::Document => SourceOut::Document {
                        id: s.id,
                        document: s.fields,
                    },
                    SourceKind::Tool => SourceOut::Tool {
                        id: s.id,
                        tool_output: s.fields,
                    },
                })
                .collect(),
            kind: "TEXT_CONTENT".into(),
            content_index: c.content_index,
        }
    }
}

/// A call the model made: `{"id", "type": "function", "function": {"name", "arguments"}}`, with
/// the arguments as a JSON-encoded string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallOut {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub function: ToolCallOutFunction,
}

impl ToolCallOut {
    /// A call of `name` whose arguments arrive later (streamed or gathered).
    pub fn function(id: String, name: String) -> Self {
        Self {
            id,
            kind: "function".into(),
            function: ToolCallOutFunction {
                name,
                arguments: String::new(),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallOutFunction {
    pub name: String,
    pub arguments: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseContent {
    Text { text: String },
    Thinking { thinking: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    pub billed_units: TokenCounts,
    pub tokens: TokenCounts,
    /// Prompt tokens served from the prefix cache (0 when cold).
    #[serde(default)]
    pub cached_tokens: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TokenCounts {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Usage {
    /// A self-hosted server bills what it processed: the real counts go in both places.
    pub fn real(input_tokens: usize, output_tokens: usize) -> Self {
        let counts = TokenCounts {
            input_tokens: input_tokens as u64,
            output_tokens: output_tokens as u64,
        };
        Self {
            billed_units: counts,
            tokens: counts,
            cached_tokens: 0,
        }
    }
}

impl From<runner::reply::Usage> for Usage {
    fn from(usage: runner::reply::Usage) -> Self {
        Self {
            cached_tokens: usage.cached_tokens as u64,
            ..Self::real(usage.input_tokens, usage.output_tokens)
        }
    }
}

impl From<runner::reply::Finish> for FinishReason {
    fn from(finish: runner::reply::Finish) -> Self {
        use runner::reply::Finish;
        match finish {
            Finish::Complete => Self::Complete,
            Finish::StopSequence => Self::StopSequence,
            Finish::MaxTokens => Self::MaxTokens,
            Finish::ToolCall => Self::ToolCall,
            Finish::Error => Self::Error,
        }
    }
}

/// One decoded piece: its text, the tokens it came from and their log-probabilities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogprobItem {
    pub text: String,
    pub token_ids: Vec<u32>,
    pub logprobs: Vec<f32>,
}

// ---------------------------------------------------------------------------------------------
// Stream events
// ---------------------------------------------------------------------------------------------

/// One server-sent event of a streamed chat; `type` is the discriminator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ChatStreamEvent {
    MessageStart {
        id: String,
        delta: MessageStartDelta,
    },
    ContentStart {
        index: usize,
        delta: ContentStartDelta,
    },
    ContentDelta {
        index: usize,
        delta: ContentDeltaDelta,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        logprobs: Option<LogprobItem>,
    },
    ContentEnd {
        index: usize,
    },
    /// A piece of the tool plan; no index.
    ToolPlanDelta {
        delta: ToolPlanDeltaDelta,
    },
    /// `delta.message.tool_calls` is ONE call object, not an array.
    ToolCallStart {
        index: usize,
        delta: ToolCallStartDelta,
    },
    ToolCallDelta {
        index: usize,
        delta: ToolCallDeltaDelta,
    },
    ToolCallEnd {
        index: usize,
    },
    /// `delta.message.citations` is ONE citation object, not an array.
    CitationStart {
        index: usize,
        delta: CitationStartDelta,
    },
    CitationEnd {
        index: usize,
    },
    MessageEnd {
        delta: MessageEndDelta,
    },
}

impl ChatStreamEvent {
    /// The `event:` name, the same string as `type`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::MessageStart { .. } => "message-start",
            Self::ContentStart { .. } => "content-start",
            Self::ContentDelta { .. } => "content-delta",
            Self::ContentEnd { .. } => "content-end",
            Self::ToolPlanDelta { .. } => "tool-plan-delta",
            Self::ToolCallStart { .. } => "tool-call-start",
            Self::ToolCallDelta { .. } => "tool-call-delta",
            Self::ToolCallEnd { .. } => "tool-call-end",
            Self::CitationStart { .. } => "citation-start",
            Self::CitationEnd { .. } => "citation-end",
            Self::MessageEnd { .. } => "message-end",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageStartDelta {
    pub message: MessageStartBody,
}

/// The empty message the real API announces (`content: []`, `tool_plan: ""`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageStartBody {
    pub role: String,
    pub content: Vec<Value>,
    pub tool_plan: String,
    pub tool_calls: Vec<Value>,
    pub citations: Vec<Value>,
}

impl MessageStartBody {
    pub fn assistant() -> Self {
        Self {
            role: "assistant".into(),
            content: Vec::new(),
            tool_plan: String::new(),
            tool_calls: Vec::new(),
            citations: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentStartDelta {
    pub message: ContentStartMessage,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentStartMessage {
    pub content: ResponseContent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentDeltaDelta {
    pub message: ContentDeltaMessage,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentDeltaMessage {
    pub content: TextPiece,
}

/// A content delta's piece: `{"text": ...}` in a text block, `{"thinking": ...}` in a thinking
/// block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TextPiece {
    Text { text: String },
    Thinking { thinking: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolPlanDeltaDelta {
    pub message: ToolPlanPiece,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolPlanPiece {
    pub tool_plan: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallStartDelta {
    pub message: ToolCallStartMessage,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallStartMessage {
    /// The call with `arguments: ""`; the arguments follow in tool-call-delta events.
    pub tool_calls: ToolCallOut,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallDeltaDelta {
    pub message: ToolCallDeltaMessage,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallDeltaMessage {
    pub tool_calls: ToolCallArgumentsPiece,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallArgumentsPiece {
    pub function: ArgumentsPiece,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArgumentsPiece {
    pub arguments: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CitationStartDelta {
    pub message: CitationStartMessage,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CitationStartMessage {
    pub citations: CitationOut,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageEndDelta {
    pub finish_reason: FinishReason,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub usage: Option<Usage>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Other endpoints
// ---------------------------------------------------------------------------------------------

/// Every error on every route: `{"id": "<uuid>", "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub id: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TokenizeRequest {
    pub text: Option<String>,
    pub model: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenizeResponse {
    pub tokens: Vec<u32>,
    pub token_strings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DetokenizeRequest {
    pub tokens: Option<Vec<i64>>,
    pub model: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetokenizeResponse {
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckApiKeyResponse {
    pub valid: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListModelsResponse {
    pub models: Vec<ModelDescription>,
}

/// `GetModelResponse`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelDescription {
    pub name: String,
    pub is_deprecated: bool,
    pub endpoints: Vec<String>,
    pub default_endpoints: Vec<String>,
    pub finetuned: bool,
    pub context_length: usize,
    pub tokenizer_url: String,
    pub features: Vec<String>,
    pub sampling_defaults: SamplingDefaults,
    /// Embedding models: the length of one float embedding (not in Cohere's schema; the SDKs
    /// keep unknown fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_dimension: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingDefaults {
    pub temperature: f32,
    pub k: usize,
    pub p: f32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
}

#[cfg(test)]
mod tests;
