//! Chats with tools through real templates: the built-in Gemma format (which refuses `tool`
//! turns on its own) and SmolLM2's get the generic tool section and flattened tool turns; Qwen
//! 2.5's template renders tools itself.

use runner::chat::{ChatMessage, ChatPrompt, TemplateFunction, TemplateToolCall};
use runner::template::{ChatTemplate, TemplateOrigin};
use runner::tools::ToolFormatKind;
use serde_json::json;

fn template_file(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/text/templates")
        .join(name);
    std::fs::read_to_string(path).unwrap()
}

fn msg(role: &str, content: &str) -> ChatMessage {
    ChatMessage {
        role: role.into(),
        content: content.into(),
        ..Default::default()
    }
}

fn round_trip() -> ChatPrompt {
    ChatPrompt {
        messages: vec![
            msg("system", "Be brief."),
            msg("user", "Weather in Paris?"),
            ChatMessage {
                tool_calls: vec![TemplateToolCall {
                    id: "get_weather_p1t92w7gfgq7".into(),
                    kind: "function".into(),
                    function: TemplateFunction {
                        name: "get_weather".into(),
                        arguments: json!({"city": "Paris"}),
                    },
                }],
                ..msg("assistant", "")
            },
            ChatMessage {
                tool_call_id: Some("get_weather_p1t92w7gfgq7".into()),
                ..msg("tool", "{\"temperature\": \"24C\"}")
            },
        ],
        tools: vec![
            json!({"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}),
        ],
        documents: Vec::new(),
        add_generation_prompt: true,
        ..ChatPrompt::default()
    }
}

#[test]
fn gemma_builtin_renders_a_tool_round_trip() {
    let gemma =
        ChatTemplate::fallback_for("gemma3", Some("<bos>".into()), Some("<eos>".into())).unwrap();
    assert_eq!(gemma.tool_format(), ToolFormatKind::Generic);
    assert!(!gemma.template_renders_tools());
    // The bare template refuses the tool turn; the tool-aware render does not.
    assert!(gemma.render(&round_trip()).is_err());
    let text = gemma.render_chat(&round_trip()).unwrap();
    assert!(
        text.starts_with("<bos><start_of_turn>user\nBe brief.\n\n# Tools\n"),
        "{text}"
    );
    assert!(text.contains(
        "<start_of_turn>model\n<tool_calls>[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]</tool_calls><end_of_turn>\n"
    ), "{text}");
    assert!(text.ends_with(
        "<start_of_turn>user\n<tool_results>\n[{\"tool_call_id\": \"get_weather_p1t92w7gfgq7\", \"name\": \"get_weather\", \"result\": {\"temperature\": \"24C\"}}]\n</tool_results><end_of_turn>\n<start_of_turn>model\n"
    ), "{text}");
}

#[test]
fn smollm2_gets_the_section_in_its_system_turn() {
    let smol = ChatTemplate::new(
        template_file("smollm2.jinja"),
        None,
        None,
        TemplateOrigin::Gguf,
    )
    .unwrap();
    assert_eq!(smol.tool_format(), ToolFormatKind::Generic);
    let text = smol.render_chat(&round_trip()).unwrap();
    assert!(
        text.starts_with("<|im_start|>system\nBe brief.\n\n# Tools\n"),
        "{text}"
    );
    assert!(!text.contains("<|im_start|>tool"));
    // Without tools or tool turns the render is exactly the template's own.
    let plain = ChatPrompt {
        messages: vec![msg("user", "Hi")],
        add_generation_prompt: true,
        ..Default::default()
    };
    assert_eq!(
        smol.render_chat(&plain).unwrap(),
        smol.render(&plain).unwrap()
    );
}

#[test]
fn qwen_renders_tools_itself() {
    let qwen = ChatTemplate::new(
        template_file("qwen2.5.jinja"),
        None,
        None,
        TemplateOrigin::TokenizerConfig,
    )
    .unwrap();
    assert_eq!(qwen.tool_format(), ToolFormatKind::Hermes);
    assert!(qwen.template_renders_tools());
    let text = qwen.render_chat(&round_trip()).unwrap();
    assert_eq!(text, qwen.render(&round_trip()).unwrap());
    assert!(text.contains("<tools>\n{\"type\": \"function\""), "{text}");
    assert!(text.contains(
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"
    ));
    assert!(text.contains("<tool_response>\n{\"temperature\": \"24C\"}\n</tool_response>"));
    // Qwen's own tool text, not cohost's generic section.
    assert!(!text.contains("You can call these tools."));
}
