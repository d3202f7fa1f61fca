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

/// Everything a chat template renders.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatPrompt {
    pub messages: Vec<ChatMessage>,
    /// Tool definitions in the HF/OpenAI function shape (`{"type":"function","function":{...}}`).
    pub tools: Vec<serde_json::Value>,
    /// Grounding documents, each an object of string fields.
    pub documents: Vec<serde_json::Value>,
    pub add_generation_prompt: bool,
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
