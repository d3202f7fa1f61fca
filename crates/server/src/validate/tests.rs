//! Tests of `validate`.

use super::*;
use axum::http::StatusCode;

fn info() -> ModelInfo {
    ModelInfo {
        name: "SmolLM2-135M-Instruct.Q4_1".into(),
        architecture: "llama".into(),
        context_length: 8192,
        vocab_size: 49152,
        template_origin: "gguf".into(),
        tool_format: runner::tools::ToolFormatKind::Generic,
        thinking: None,
    }
}

fn request(extra: Value) -> ChatRequest {
    let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    serde_json::from_value(body).unwrap()
}

fn reject(extra: Value) -> String {
    match validate_chat(request(extra.clone()), &info()) {
        Ok(v) => panic!("accepted {extra}: {v:?}"),
        Err(e) => {
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{e}");
            e.to_string()
        }
    }
}

fn accept(extra: Value) -> ValidChat {
    validate_chat(request(extra.clone()), &info())
        .unwrap_or_else(|e| panic!("rejected {extra}: {e}"))
}

#[test]
fn defaults_fill_sampling_and_user_turn_maps_through() {
    let v = accept(json!({}));
    assert_eq!(v.sampling, SamplingParams::default());
    assert!(!v.stream);
    assert_eq!(v.prompt.messages, vec![turn("user", "hi".into())]);
    assert!(v.prompt.add_generation_prompt);
}

#[test]
fn sampling_ranges_are_enforced_with_cohere_wording() {
    assert_eq!(
        reject(json!({"temperature": 1.5})),
        "invalid request: temperature must be between 0 and 1.0 inclusive."
    );
    assert_eq!(
        reject(json!({"temperature": -0.1})),
        "invalid request: temperature must be between 0 and 1.0 inclusive."
    );
    assert_eq!(
        reject(json!({"p": 1.0})),
        "invalid request: p must be between 0.01 and 0.99 inclusive."
    );
    assert_eq!(
        reject(json!({"p": 0.0})),
        "invalid request: p must be between 0.01 and 0.99 inclusive."
    );
    assert_eq!(
        reject(json!({"k": 501})),
        "invalid request: k must be between 0 and 500 inclusive."
    );
    assert_eq!(
        reject(json!({"k": -1})),
        "invalid request: k must be between 0 and 500 inclusive."
    );
    assert_eq!(
        reject(json!({"presence_penalty": 2})),
        "invalid request: presence_penalty must be between 0 and 1 inclusive."
    );
    assert_eq!(
        reject(json!({"frequency_penalty": -1})),
        "invalid request: frequency_penalty must be between 0 and 1 inclusive."
    );
    assert!(reject(json!({"seed": -1}))
        .starts_with("invalid request: seed must be an integer between 0 and"));
    assert!(reject(json!({"seed": 1.5})).starts_with("invalid request: seed must be an integer"));
    // The spec's own maximum (found by schemathesis) and whole numbers written as floats.
    let top: Value = serde_json::from_str(r#"{"seed": 18446744073709552000}"#).unwrap();
    assert_eq!(accept(top).sampling.seed, Some(u64::MAX));
    assert_eq!(accept(json!({"seed": 7.0})).sampling.seed, Some(7));
    assert!(reject(json!({"seed": 1.9e19})).starts_with("invalid request: seed"));
    let v = accept(
        json!({"temperature": 0, "p": 0.99, "k": 500, "seed": u64::MAX, "frequency_penalty": 1,
                          "presence_penalty": 0.5, "logprobs": true}),
    );
    assert_eq!(
        v.sampling,
        SamplingParams {
            temperature: 0.0,
            k: 500,
            p: 0.99,
            frequency_penalty: 1.0,
            presence_penalty: 0.5,
            seed: Some(u64::MAX),
            logprobs: true
        }
    );
}

#[test]
fn stop_sequences_max_tokens_priority_and_thinking() {
    let six = json!(["a", "b", "c", "d", "e", "f"]);
    assert_eq!(
        reject(json!({"stop_sequences": six})),
        "invalid request: stop_sequences can contain at most 5 sequences (received 6)."
    );
    assert!(reject(json!({"stop_sequences": [""]})).contains("empty"));
    assert_eq!(
        accept(json!({"stop_sequences": ["a", "b", "c", "d", "e"]}))
            .stop_sequences
            .len(),
        5
    );
    assert!(reject(json!({"max_tokens": 0})).contains("max_tokens"));
    assert_eq!(
        accept(json!({"max_tokens": 100000})).max_tokens,
        Some(100000),
        "capped later, never rejected"
    );
    assert!(reject(json!({"priority": 1000})).contains("priority"));
    assert!(
        reject(json!({"thinking": {"type": "enabled", "token_budget": 0}}))
            .contains("token_budget")
    );
    accept(
        json!({"thinking": {"token_budget": 500}, "priority": 0, "safety_mode": "OFF",
                  "citation_options": {"mode": "fast"}, "stream": true}),
    );
}

#[test]
fn message_list_rules() {
    assert_eq!(
        reject(json!({"messages": []})),
        "invalid request: messages must not be empty."
    );
    assert_eq!(
        reject(
            json!({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]})
        ),
        "system turn must be the first in the list"
    );
    assert_eq!(
        reject(json!({"messages": [{"role": "user", "content": ""}]})),
        EMPTY_TURN
    );
    assert_eq!(
        reject(json!({"messages": [{"role": "user", "content": []}]})),
        EMPTY_TURN
    );
    assert_eq!(reject(json!({"messages": [{"role": "user"}]})), EMPTY_TURN);
    assert_eq!(
        reject(json!({"messages": [{"role": "user", "content": "x"}, {"role": "assistant"}]})),
        EMPTY_TURN
    );
    let v = accept(json!({"messages": [
        {"role": "system", "content": "A"}, {"role": "system", "content": [{"type": "text", "text": "B"}]},
        {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "secret"}, {"type": "text", "text": "ok"}]},
        {"role": "user", "content": "again"}
    ]}));
    let roles: Vec<_> = v.prompt.messages.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert_eq!(v.prompt.messages[0].content, "A\n\nB");
    assert_eq!(v.prompt.messages[1].content, "one\ntwo");
    assert_eq!(v.prompt.messages[2].content, "ok");
}

#[test]
fn thinking_reaches_the_template_and_its_budget_only_a_thinking_model() {
    let thinker = ModelInfo {
        thinking: runner::thinking::markers_of("<think></think>"),
        ..info()
    };
    let enabled =
        json!({"thinking": {"type": "enabled", "token_budget": 64}, "safety_mode": "STRICT"});
    let v = validate_chat(request(enabled.clone()), &thinker).unwrap();
    assert_eq!(v.prompt.thinking, Some(true));
    assert_eq!(v.thinking_budget, Some(64));
    assert_eq!(v.prompt.safety_mode, Some(runner::chat::SafetyMode::Strict));
    let v = accept(enabled);
    assert_eq!(
        v.thinking_budget, None,
        "a model that cannot think has no budget"
    );
    let v = validate_chat(
        request(json!({"thinking": {"type": "disabled", "token_budget": 9}})),
        &thinker,
    )
    .unwrap();
    assert_eq!((v.prompt.thinking, v.thinking_budget), (Some(false), None));
    assert_eq!(accept(json!({})).prompt.thinking, None);
    let v = accept(json!({"messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "because"}, {"type": "text", "text": "a"}]},
        {"role": "user", "content": "again"}
    ]}));
    assert_eq!(
        v.prompt.messages[1].reasoning_content.as_deref(),
        Some("because")
    );
}

#[test]
fn images_are_refused_by_a_text_only_model() {
    let msg = reject(json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}));
    assert_eq!(msg, "invalid request: image content is not supported: the model 'SmolLM2-135M-Instruct.Q4_1' accepts text only.");
}

fn tool_turns(call_id: &str, result_id: Value) -> Value {
    json!({"messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "tool_plan": "I will look it up.",
         "tool_calls": [{"id": call_id, "type": "function",
                         "function": {"name": "get_weather", "arguments": "{\"location\":\"Madrid\"}"}}]},
        {"role": "tool", "tool_call_id": result_id, "content": [
            {"type": "text", "text": "24C"},
            {"type": "document", "document": {"data": {"temperature": "24C"}}}]}
    ]})
}

#[test]
fn tool_turns_map_to_template_shape() {
    let v = accept(tool_turns("call_1", json!("call_1")));
    let assistant = &v.prompt.messages[1];
    assert_eq!(assistant.content, "I will look it up.");
    assert_eq!(
        assistant.tool_calls,
        vec![TemplateToolCall {
            id: "call_1".into(),
            kind: "function".into(),
            function: TemplateFunction {
                name: "get_weather".into(),
                arguments: json!({"location": "Madrid"})
            },
        }]
    );
    let tool = &v.prompt.messages[2];
    assert_eq!(tool.role, "tool");
    assert_eq!(tool.tool_call_id.as_deref(), Some("call_1"));
    assert_eq!(tool.content, "24C\n{\"temperature\":\"24C\"}");
}

#[test]
fn tool_call_id_rules() {
    assert_eq!(
        reject(tool_turns("call_1", json!("other"))),
        "tool call id not found in previous tool calls"
    );
    assert_eq!(
        reject(tool_turns("call_1", Value::Null)),
        "tool call id must be provided with tool message"
    );
    let dup = json!({"messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]});
    assert_eq!(reject(dup), "cannot have duplicate tool ids");
    let bad_type = json!({"messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "tool_calls": [{"id": "a", "type": "magic", "function": {"name": "f"}}]}]});
    assert_eq!(reject(bad_type), "tool call must be of type function");
    let bad_args = json!({"messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "{nope"}}]}]});
    assert!(reject(bad_args).contains("arguments must be a JSON-encoded string"));
}

fn tool(name: &str) -> Value {
    json!({"type": "function", "function": {"name": name, "description": "d",
           "parameters": {"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]}}})
}

#[test]
fn tool_definitions_rules() {
    assert_eq!(
        reject(json!({"tools": [tool("1abc")]})),
        "invalid request: tool names can only contain certain characters (A-Za-z0-9_) and can't begin with a digit (provided name: '1abc')."
    );
    assert!(reject(json!({"tools": [tool("has-dash")]})).contains("(provided name: 'has-dash')"));
    assert!(reject(json!({"tools": [tool("f"), tool("f")]})).contains("duplicate tool name 'f'"));
    assert_eq!(
        reject(json!({"tool_choice": "REQUIRED"})),
        "invalid request: tool_choice REQUIRED can only be used when tools are specified."
    );
    assert!(
        reject(json!({"tools": [{"type": "retrieval", "function": {"name": "f"}}]}))
            .contains("function")
    );
    let no_required = json!({"type": "function", "function": {"name": "g", "parameters": {"type": "object", "properties": {}}}});
    assert!(
        reject(json!({"strict_tools": true, "tools": [no_required.clone()]}))
            .contains("strict_tools")
    );
    let v =
        accept(json!({"tools": [tool("_get_weather2"), no_required], "tool_choice": "REQUIRED"}));
    assert_eq!(v.prompt.tools.len(), 2);
    assert_eq!(v.prompt.tools[0]["function"]["name"], "_get_weather2");
}

#[test]
fn response_format_rules() {
    let schema = json!({"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]});
    accept(json!({"response_format": {"type": "json_object", "json_schema": schema}}));
    accept(json!({"response_format": {"type": "json_object"}}));
    assert!(
        reject(json!({"response_format": {"type": "text", "json_schema": schema}}))
            .contains("json_object")
    );
    assert_eq!(
        reject(json!({"response_format": {"type": "json_object"}, "documents": ["d"]})),
        "invalid request: response_format is not supported with RAG."
    );
    assert!(
        reject(json!({"response_format": {"type": "json_object"}, "tools": [tool("f")]}))
            .contains("tools")
    );
    assert_eq!(
        reject(
            json!({"response_format": {"type": "json_object", "json_schema": {"type": "array"}}})
        ),
        "schema must be an object"
    );
    assert_eq!(
        reject(
            json!({"response_format": {"type": "json_object", "json_schema":
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["name"]}}})
        ),
        "required field name not found in properties"
    );
    assert_eq!(
        reject(
            json!({"response_format": {"type": "json_object", "json_schema":
            {"type": "object", "properties": {"title": {"description": "x"}}, "required": ["title"]}}})
        ),
        "property title must have a type"
    );
    assert!(reject(json!({"response_format": {"type": "json_object", "json_schema":
            {"type": "object", "properties": {"inner": {"type": "object", "properties": {}}}, "required": ["inner"]}}}))
        .contains("required"));
}

#[test]
fn documents_get_ids_and_become_sources() {
    let docs = validate_documents(&[
        json!("plain text"),
        json!({"data": {"title": "T", "snippet": "S"}}),
        json!({"id": "mine", "data": "str data"}),
    ])
    .unwrap();
    let docs: Vec<Value> = docs.into_iter().map(Value::Object).collect();
    assert_eq!(
        docs,
        vec![
            json!({"id": "doc:0", "text": "plain text"}),
            json!({"id": "doc:1", "title": "T", "snippet": "S"}),
            json!({"id": "mine", "text": "str data"}),
        ]
    );
    let v = accept(json!({"documents": ["Emperor penguins are the tallest."]}));
    assert_eq!(
        v.prompt.documents,
        vec![json!({"id": "doc:0", "text": "Emperor penguins are the tallest."})]
    );
    assert_eq!(v.sources.len(), 1);
    assert_eq!(v.sources[0].id, "doc:0");
    assert_eq!(v.sources[0].text, "Emperor penguins are the tallest.");
    assert_eq!(v.citation_mode, CitationMode::Accurate);
}

#[test]
fn tool_results_are_sources_by_call_id_and_block() {
    let v = accept(json!({"messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "tool_calls": [{"id": "w_1", "type": "function",
            "function": {"name": "w", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "w_1", "content": [
            {"type": "text", "text": "{\"temperature\": \"24C\"}"},
            {"type": "document", "document": {"data": {"sky": "clear"}, "id": "d"}}
        ]},
        {"role": "tool", "tool_call_id": "w_1", "content": "plain result"}
    ]}));
    let ids: Vec<&str> = v.sources.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["w_1:0", "w_1:1", "w_1:0"]);
    assert_eq!(
        v.sources[0].fields,
        json!({"temperature": "24C"}).as_object().unwrap().clone()
    );
    assert_eq!(
        v.sources[1].fields,
        json!({"id": "d", "sky": "clear"})
            .as_object()
            .unwrap()
            .clone()
    );
    assert_eq!(
        v.sources[2].fields,
        json!({"text": "plain result"}).as_object().unwrap().clone()
    );
    assert!(v.sources.iter().all(|s| s.kind == SourceKind::Tool));
}

#[test]
fn bad_documents_and_citation_modes_are_named() {
    assert_eq!(
        reject(json!({"documents": ["a", 7]})),
        "invalid request: documents[1] must be a string or an object with data (received a number)."
    );
    assert_eq!(
        reject(json!({"documents": [{"data": [1, 2]}]})),
        "invalid request: documents[0].data must be an object or a string (received an array)."
    );
    assert_eq!(
        reject(json!({"documents": [{"id": "x"}]})),
        "invalid request: documents[0] must have a data field."
    );
    assert_eq!(
        reject(json!({"documents": [{"id": "x", "data": "a"}, {"id": "x", "data": "b"}]})),
        "invalid request: duplicate document id 'x'."
    );
    assert_eq!(
        reject(json!({"documents": ["a", {"id": "doc:0", "data": "b"}]})),
        "invalid request: duplicate document id 'doc:0'."
    );
    assert!(reject(json!({"citation_options": {"mode": "precise"}}))
        .contains("citation_options.mode must be one of"));
    assert_eq!(
        reject(json!({"documents": ["a"], "response_format": {"type": "text"}})),
        "invalid request: response_format is not supported with RAG."
    );
    for (mode, want) in [
        ("fast", CitationMode::Fast),
        ("Accurate", CitationMode::Accurate),
        ("ENABLED", CitationMode::Accurate),
        ("disabled", CitationMode::Off),
        ("OFF", CitationMode::Off),
    ] {
        let v = accept(json!({"citation_options": {"mode": mode}}));
        assert_eq!(v.citation_mode, want, "{mode}");
    }
}
