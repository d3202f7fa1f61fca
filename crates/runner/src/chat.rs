//! A chat as the model's template sees it (Hugging Face message conventions), independent of any
//! wire format.

use serde::Serialize;

/// One turn, in the shape Hugging Face chat templates expect.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChatMessage {
    /// "system", "user", "assistant" or "tool".
    pub role: String,
    pub content: String,
    /// Calls an assistant turn made, rendered by templates that know tools.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<TemplateToolCall>,
    /// On a "tool" turn: which call this result answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// On an assistant turn: the thinking that preceded its answer, which templates render back
    /// where the model expects it (Qwen3's `<think>`, Command's thinking section).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// On an assistant turn that called tools: the plan written before the calls (Cohere's
    /// `tool_plan`, which Command templates render in their thinking section).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_plan: Option<String>,
}

/// `{"id", "type": "function", "function": {"name", "arguments"}}` as HF templates read it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TemplateToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub function: TemplateFunction,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TemplateFunction {
    pub name: String,
    /// Templates differ: most want an object here; it is kept as parsed JSON.
    pub arguments: serde_json::Value,
}

/// Cohere's safety modes, which Command templates render as their safety preamble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SafetyMode {
    Contextual,
    Strict,
    Off,
}

impl SafetyMode {
    /// The spelling templates receive in `safety_mode`: the API's, except that off is `NONE`,
    /// which is what Cohere's Command templates test for (`safety_mode != "NONE"` writes a
    /// preamble, STRICT's or else CONTEXTUAL's; an undefined mode means CONTEXTUAL).
    pub fn as_str(self) -> &'static str {
        match self {
            SafetyMode::Contextual => "CONTEXTUAL",
            SafetyMode::Strict => "STRICT",
            SafetyMode::Off => "NONE",
        }
    }
}

/// Everything a chat template renders. The optional switches reach the template only when set,
/// so that a template's own default applies otherwise (templates test `is defined`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatPrompt {
    pub messages: Vec<ChatMessage>,
    /// Tool definitions in the HF/OpenAI function shape (`{"type":"function","function":{...}}`).
    pub tools: Vec<serde_json::Value>,
    /// Grounding documents, each an object of string fields.
    pub documents: Vec<serde_json::Value>,
    pub add_generation_prompt: bool,
    /// Whether the model should think before answering: rendered as both `enable_thinking`
    /// (Qwen3) and `reasoning` (Command A Reasoning, Cohere's later templates).
    pub thinking: Option<bool>,
    /// Rendered as `safety_mode` (`CONTEXTUAL`, `STRICT`, `NONE`; see [`SafetyMode::as_str`]).
    pub safety_mode: Option<SafetyMode>,
    /// Whether answers should cite documents and tool results: `enable_citations` (Command R7B).
    pub citations: Option<bool>,
}

impl ChatPrompt {
    /// Bytes of text the chat carries (contents, call arguments, tool definitions, documents):
    /// a lower bound on the rendered prompt's length, which templates only add to. Cheap, so a
    /// prompt far too long for the context is refused before any tokenizer work.
    pub fn text_bytes(&self) -> usize {
        let json_len = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => s.len(),
            other => other.to_string().len(),
        };
        let messages: usize = self
            .messages
            .iter()
            .map(|m| {
                m.content.len()
                    + m.tool_calls
                        .iter()
                        .map(|c| c.function.name.len() + json_len(&c.function.arguments))
                        .sum::<usize>()
            })
            .sum();
        messages
            + self.tools.iter().map(json_len).sum::<usize>()
            + self.documents.iter().map(json_len).sum::<usize>()
    }
}
