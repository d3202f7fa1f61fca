//! A chat with tools, made ready for the model's template.
//!
//! Templates that render tools (Hermes, Llama 3, Mistral, Command) get the tool definitions,
//! earlier calls and tool results as Hugging Face templates expect them. For every other template
//! (the generic format) nothing tool-shaped reaches the template:
//! - the tools are described in the system turn ([`tool_section`]), which is added when the chat
//!   has none;
//! - an earlier assistant call is written into that turn's text in the generic format,
//!   `plan<tool_calls>[{"name": .., "arguments": {..}}]</tool_calls>`, as the model would have
//!   written it;
//! - tool results become a user turn, `<tool_results>\n[{"tool_call_id": .., "name": ..,
//!   "result": ..}]\n</tool_results>` (consecutive results share one turn, and a user turn right
//!   after them joins it), so that templates with strict user/assistant alternation (Gemma) accept
//!   the chat.

use serde_json::{json, Map, Value};

use super::{generic, ToolFormatKind};
use crate::chat::{ChatMessage, ChatPrompt};
use crate::template::python_json;

pub const TOOL_RESULTS_OPEN: &str = "<tool_results>";
pub const TOOL_RESULTS_CLOSE: &str = "</tool_results>";

/// The chat as the template of a model with tool format `kind` should see it.
pub fn prepare_prompt(prompt: &ChatPrompt, kind: ToolFormatKind) -> ChatPrompt {
    match kind {
        ToolFormatKind::Generic => generic_prompt(prompt),
        ToolFormatKind::Mistral => mistral_prompt(prompt),
        ToolFormatKind::Hermes | ToolFormatKind::Llama3 | ToolFormatKind::Command => prompt.clone(),
    }
}

/// The system-turn text that describes `tools` (HF function shape,
/// `{"type": "function", "function": {name, description?, parameters}}`) and the generic call
/// format to a model whose template does not render tools.
pub fn tool_section(tools: &[Value]) -> String {
    let mut out = String::from(
        "# Tools\n\nYou can call these tools. Each line is one tool: its name, what it does, and a JSON schema of its arguments.\n",
    );
    for tool in tools {
        let function = tool.get("function").unwrap_or(tool);
        out.push_str(&python_json(function));
        out.push('\n');
    }
    let example = tools
        .first()
        .map(|tool| {
            let function = tool.get("function").unwrap_or(tool);
            let name = function.get("name").and_then(Value::as_str).unwrap_or("");
            let arguments = example_arguments(function.get("parameters"));
            python_json(&json!([{"name": name, "arguments": arguments}]))
        })
        .unwrap_or_default();
    out.push_str(&format!(
        "\nTo call tools, write one short sentence that says what you will do, then {open}, then a JSON array with one object per call, each {{\"name\": <tool name>, \"arguments\": <object that matches the tool's schema>}}, then {close}, and stop. For example:\nI will use the tool.{open}{example}{close}\n\nTool results come back between {results_open} and {results_close}. When no tool is needed, or once you have the results, answer directly without {open}.",
        open = generic::OPEN,
        close = generic::CLOSE,
        results_open = TOOL_RESULTS_OPEN,
        results_close = TOOL_RESULTS_CLOSE,
    ));
    out
}

/// Placeholder values for the required arguments of a schema, to show the shape of a call.
fn example_arguments(parameters: Option<&Value>) -> Value {
    let mut out = Map::new();
    let Some(parameters) = parameters else {
        return Value::Object(out);
    };
    let properties = parameters.get("properties").and_then(Value::as_object);
    let required = parameters.get("required").and_then(Value::as_array);
    for name in required.into_iter().flatten().filter_map(Value::as_str) {
        let kind = properties
            .and_then(|p| p.get(name))
            .and_then(|p| p.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("string");
        let placeholder = match kind {
            "integer" | "number" => json!(1),
            "boolean" => json!(true),
            "array" => json!([]),
            "object" => json!({}),
            _ => json!("..."),
        };
        out.insert(name.to_string(), placeholder);
    }
    Value::Object(out)
}

fn generic_prompt(prompt: &ChatPrompt) -> ChatPrompt {
    let mut messages: Vec<ChatMessage> = Vec::with_capacity(prompt.messages.len() + 1);
    // Names of earlier calls, to label their results.
    let mut call_names: Vec<(String, String)> = Vec::new();
    // Results waiting to become one user turn.
    let mut results: Vec<Value> = Vec::new();
    for message in &prompt.messages {
        if message.role == "tool" {
            let id = message.tool_call_id.clone().unwrap_or_default();
            let name = call_names
                .iter()
                .find(|(call_id, _)| *call_id == id)
                .map(|(_, name)| name.clone())
                .unwrap_or_default();
            let result = serde_json::from_str::<Value>(&message.content)
                .unwrap_or_else(|_| Value::String(message.content.clone()));
            results.push(json!({"tool_call_id": id, "name": name, "result": result}));
            continue;
        }
        let pending = flush_results(&mut results);
        match (pending, message.role.as_str()) {
            (Some(text), "user") => messages.push(user(format!("{text}\n\n{}", message.content))),
            (Some(text), _) => {
                messages.push(user(text));
                messages.push(plain(message, &mut call_names));
            }
            (None, _) => messages.push(plain(message, &mut call_names)),
        }
    }
    if let Some(text) = flush_results(&mut results) {
        messages.push(user(text));
    }
    if !prompt.tools.is_empty() {
        let section = tool_section(&prompt.tools);
        match messages.first_mut() {
            Some(first) if first.role == "system" => {
                first.content.push_str("\n\n");
                first.content.push_str(&section);
            }
            _ => messages.insert(
                0,
                ChatMessage {
                    role: "system".into(),
                    content: section,
                    ..Default::default()
                },
            ),
        }
    }
    ChatPrompt {
        messages,
        tools: Vec::new(),
        ..prompt.clone()
    }
}

/// A message with any calls written into its text in the generic format.
fn plain(message: &ChatMessage, call_names: &mut Vec<(String, String)>) -> ChatMessage {
    let mut content = message.content.clone();
    if !message.tool_calls.is_empty() {
        let calls: Vec<Value> = message
            .tool_calls
            .iter()
            .map(|call| json!({"name": call.function.name, "arguments": call.function.arguments}))
            .collect();
        for call in &message.tool_calls {
            call_names.push((call.id.clone(), call.function.name.clone()));
        }
        content.push_str(generic::OPEN);
        content.push_str(&python_json(&Value::Array(calls)));
        content.push_str(generic::CLOSE);
    }
    ChatMessage {
        role: message.role.clone(),
        content,
        ..Default::default()
    }
}

fn flush_results(results: &mut Vec<Value>) -> Option<String> {
    if results.is_empty() {
        return None;
    }
    let list = Value::Array(std::mem::take(results));
    Some(format!(
        "{TOOL_RESULTS_OPEN}\n{}\n{TOOL_RESULTS_CLOSE}",
        python_json(&list)
    ))
}

fn user(content: String) -> ChatMessage {
    ChatMessage {
        role: "user".into(),
        content,
        ..Default::default()
    }
}

/// Mistral's templates require call ids of exactly nine alphanumerics; Cohere's ids are longer,
/// so each is replaced by a stable nine-character digest (the same id maps to the same digest in
/// the call and in its result).
fn mistral_prompt(prompt: &ChatPrompt) -> ChatPrompt {
    let mut out = prompt.clone();
    for message in &mut out.messages {
        for call in &mut message.tool_calls {
            call.id = nine_alnum(&call.id);
        }
        if let Some(id) = &mut message.tool_call_id {
            *id = nine_alnum(id);
        }
    }
    out
}

fn nine_alnum(id: &str) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    // FNV-1a: stable across runs and processes, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (0..9)
        .map(|_| {
            let c = ALPHABET[(hash % ALPHABET.len() as u64) as usize] as char;
            hash /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{TemplateFunction, TemplateToolCall};

    fn msg(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
            ..Default::default()
        }
    }

    fn weather_tool() -> Value {
        json!({"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                           "required": ["city", "days"]}}})
    }

    fn round_trip_chat() -> ChatPrompt {
        ChatPrompt {
            messages: vec![
                msg("user", "Weather in Paris?"),
                ChatMessage {
                    tool_calls: vec![TemplateToolCall {
                        id: "get_weather_abcdefghijkl".into(),
                        kind: "function".into(),
                        function: TemplateFunction {
                            name: "get_weather".into(),
                            arguments: json!({"city": "Paris", "days": 1}),
                        },
                    }],
                    ..msg("assistant", "I will look it up.")
                },
                ChatMessage {
                    tool_call_id: Some("get_weather_abcdefghijkl".into()),
                    ..msg("tool", "{\"temperature\": \"24C\"}")
                },
                ChatMessage {
                    tool_call_id: Some("get_weather_abcdefghijkl".into()),
                    ..msg("tool", "sunny")
                },
                msg("user", "Thanks. And tomorrow?"),
            ],
            tools: vec![weather_tool()],
            documents: Vec::new(),
            add_generation_prompt: true,
            ..ChatPrompt::default()
        }
    }

    #[test]
    fn generic_prompt_describes_tools_and_flattens_tool_turns() {
        let out = prepare_prompt(&round_trip_chat(), ToolFormatKind::Generic);
        assert!(out.tools.is_empty());
        let roles: Vec<_> = out.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "user"]);
        let system = &out.messages[0].content;
        assert!(system.starts_with("# Tools\n"), "{system}");
        assert!(system.contains(r#"{"name": "get_weather", "description": "Weather of a city", "parameters": {"type": "object""#), "{system}");
        assert!(system.contains(r#"<tool_calls>[{"name": "get_weather", "arguments": {"city": "...", "days": 1}}]</tool_calls>"#), "{system}");
        assert_eq!(
            out.messages[2].content,
            r#"I will look it up.<tool_calls>[{"name": "get_weather", "arguments": {"city": "Paris", "days": 1}}]</tool_calls>"#
        );
        assert!(out.messages[2].tool_calls.is_empty());
        assert_eq!(
            out.messages[3].content,
            "<tool_results>\n[{\"tool_call_id\": \"get_weather_abcdefghijkl\", \"name\": \"get_weather\", \"result\": {\"temperature\": \"24C\"}}, {\"tool_call_id\": \"get_weather_abcdefghijkl\", \"name\": \"get_weather\", \"result\": \"sunny\"}]\n</tool_results>\n\nThanks. And tomorrow?"
        );
        assert!(out.messages.iter().all(|m| m.tool_call_id.is_none()));
    }

    #[test]
    fn generic_prompt_appends_to_an_existing_system_turn_and_ends_with_results() {
        let mut chat = round_trip_chat();
        chat.messages.insert(0, msg("system", "Be brief."));
        chat.messages.pop();
        let out = prepare_prompt(&chat, ToolFormatKind::Generic);
        assert!(out.messages[0]
            .content
            .starts_with("Be brief.\n\n# Tools\n"));
        assert_eq!(out.messages.last().unwrap().role, "user");
        assert!(out
            .messages
            .last()
            .unwrap()
            .content
            .ends_with("</tool_results>"));
        // No tools now, history still flattened.
        chat.tools.clear();
        let out = prepare_prompt(&chat, ToolFormatKind::Generic);
        assert_eq!(out.messages[0].content, "Be brief.");
        assert!(out.messages.iter().all(|m| m.role != "tool"));
    }

    #[test]
    fn mistral_ids_become_nine_alphanumerics_consistently() {
        let out = prepare_prompt(&round_trip_chat(), ToolFormatKind::Mistral);
        let call_id = &out.messages[1].tool_calls[0].id;
        assert_eq!(call_id.len(), 9);
        assert!(call_id.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(out.messages[2].tool_call_id.as_ref(), Some(call_id));
        assert_eq!(out.tools.len(), 1);
        // Other template formats see the chat as it is.
        assert_eq!(
            prepare_prompt(&round_trip_chat(), ToolFormatKind::Hermes),
            round_trip_chat()
        );
    }
}
