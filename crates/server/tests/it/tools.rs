//! Tools end to end against the default model (SmolLM2, whose template does not render tools):
//! the tool section reaches the prompt, a tool round trip (call → result → answer) renders and
//! generates, and streamed and non-streamed replies agree and have the spec's shapes. Generation
//! here is free (no constraint): the model may or may not call a tool, and both must come out
//! well formed.

use super::common;

use std::sync::OnceLock;

use axum::http::StatusCode;
use axum::Router;
use common::{post_json, test_config, MODEL};
use runner::engine::EngineHandle;
use runner::tools::is_call_id;
use serde_json::{json, Value};
use server::AppState;

/// Tool prompts are longer than the shared tests' 512-token context.
fn engine() -> EngineHandle {
    static ENGINE: OnceLock<EngineHandle> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut config = test_config();
            config.context_length = Some(2048);
            server::cli::load_engine(&config).expect("default model loads")
        })
        .clone()
}

fn app() -> Router {
    let mut config = test_config();
    config.context_length = Some(2048);
    server::app(AppState::with_engine(config, engine()))
}

fn weather_tool() -> Value {
    json!({"type": "function", "function": {
        "name": "get_weather",
        "description": "Gets the current weather of a city.",
        "parameters": {"type": "object",
                       "properties": {"city": {"type": "string", "description": "The city name"}},
                       "required": ["city"]}}})
}

fn request(messages: Value, extra: Value) -> Value {
    let mut body = json!({"model": MODEL, "messages": messages, "tools": [weather_tool()],
                          "temperature": 0, "max_tokens": 24});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

fn round_trip_messages() -> Value {
    json!([
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "tool_plan": "I will look it up.",
         "tool_calls": [{"id": "get_weather_p1t92w7gfgq7", "type": "function",
                         "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "get_weather_p1t92w7gfgq7",
         "content": [{"type": "text", "text": "24C and sunny"},
                     {"type": "document", "document": {"data": {"temperature": "24C"}}}]}
    ])
}

/// The prompt the server renders for a request, as the route builds it.
fn rendered(body: &Value) -> String {
    let engine = engine();
    let mut valid = server::validate::validate_chat(
        serde_json::from_value(body.clone()).unwrap(),
        engine.info(),
    )
    .unwrap();
    if valid.prompt.tools.is_empty() {
        valid.prompt.tools = body["tools"].as_array().cloned().unwrap_or_default();
    }
    engine.render_chat(&valid.prompt).unwrap()
}

/// A reply reduced to what stream and non-stream must agree on.
#[derive(Debug, PartialEq)]
struct Reply {
    finish_reason: String,
    tool_plan: String,
    content: String,
    calls: Vec<(String, Value)>,
    input_tokens: u64,
}

fn check_call(call: &Value) -> (String, Value) {
    assert_eq!(call["type"], "function", "{call}");
    let name = call["function"]["name"].as_str().unwrap().to_string();
    // Free generation may name any tool; only strict_tools (CONSTRAIN's tests) pins the names.
    assert!(is_call_id(call["id"].as_str().unwrap(), &name), "{call}");
    let arguments = call["function"]["arguments"]
        .as_str()
        .expect("arguments is a string");
    let parsed: Value = serde_json::from_str(arguments).expect("arguments are JSON");
    assert!(parsed.is_object());
    (name, parsed)
}

fn non_stream(v: &Value) -> Reply {
    let message = &v["message"];
    assert_eq!(message["role"], "assistant");
    let calls: Vec<_> = message["tool_calls"]
        .as_array()
        .map(|calls| calls.iter().map(check_call).collect())
        .unwrap_or_default();
    let content: String = message["content"]
        .as_array()
        .map(|blocks| blocks.iter().map(|b| b["text"].as_str().unwrap()).collect())
        .unwrap_or_default();
    if calls.is_empty() {
        assert!(message.get("tool_calls").is_none(), "{v}");
        assert_eq!(message["content"][0]["type"], "text", "{v}");
    }
    Reply {
        finish_reason: v["finish_reason"].as_str().unwrap().to_string(),
        tool_plan: message["tool_plan"].as_str().unwrap_or("").to_string(),
        content,
        calls,
        input_tokens: v["usage"]["tokens"]["input_tokens"].as_u64().unwrap(),
    }
}

/// Reads an SSE body, checking the event order of spec §5.4 on the way.
fn stream(sse: &str) -> Reply {
    assert!(sse.ends_with("\n\ndata: [DONE]\n\n"), "{sse}");
    let mut reply = Reply {
        finish_reason: String::new(),
        tool_plan: String::new(),
        content: String::new(),
        calls: Vec::new(),
        input_tokens: 0,
    };
    let mut calls: Vec<Value> = Vec::new();
    let mut open_call: Option<usize> = None;
    let mut seen = Vec::new();
    for block in sse
        .split("\n\n")
        .filter(|b| !b.is_empty() && !b.starts_with(':') && *b != "data: [DONE]")
    {
        let mut lines = block.lines();
        let event = lines
            .next()
            .unwrap()
            .strip_prefix("event: ")
            .unwrap()
            .to_string();
        let data: Value =
            serde_json::from_str(lines.next().unwrap().strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(data["type"], event.as_str());
        match event.as_str() {
            "tool-plan-delta" => {
                assert!(calls.is_empty() && !seen.contains(&"content-start".to_string()));
                reply
                    .tool_plan
                    .push_str(data["delta"]["message"]["tool_plan"].as_str().unwrap());
            }
            "tool-call-start" => {
                assert_eq!(open_call, None, "calls are not interleaved");
                let index = data["index"].as_u64().unwrap() as usize;
                assert_eq!(index, calls.len());
                let call = data["delta"]["message"]["tool_calls"].clone();
                assert_eq!(call["function"]["arguments"], "");
                calls.push(call);
                open_call = Some(index);
            }
            "tool-call-delta" => {
                let index = data["index"].as_u64().unwrap() as usize;
                assert_eq!(open_call, Some(index));
                let piece = data["delta"]["message"]["tool_calls"]["function"]["arguments"]
                    .as_str()
                    .unwrap()
                    .to_string();
                let arguments = calls[index]["function"]["arguments"]
                    .as_str()
                    .unwrap()
                    .to_string();
                calls[index]["function"]["arguments"] = Value::String(arguments + &piece);
            }
            "tool-call-end" => {
                assert_eq!(
                    open_call.take(),
                    Some(data["index"].as_u64().unwrap() as usize)
                );
            }
            "content-delta" => {
                assert_eq!(data["index"], 0);
                reply.content.push_str(
                    data["delta"]["message"]["content"]["text"]
                        .as_str()
                        .unwrap(),
                );
            }
            "message-end" => {
                reply.finish_reason = data["delta"]["finish_reason"].as_str().unwrap().to_string();
                reply.input_tokens = data["delta"]["usage"]["tokens"]["input_tokens"]
                    .as_u64()
                    .unwrap();
            }
            _ => {}
        }
        seen.push(event);
    }
    assert_eq!(seen.first().map(String::as_str), Some("message-start"));
    assert_eq!(seen.last().map(String::as_str), Some("message-end"));
    let starts = seen.iter().filter(|e| *e == "content-start").count();
    let ends = seen.iter().filter(|e| *e == "content-end").count();
    assert_eq!(starts, ends);
    assert!(starts <= 1);
    if calls.is_empty() {
        assert_eq!(
            starts, 1,
            "a reply without calls has its text block: {seen:?}"
        );
    }
    reply.calls = calls.iter().map(check_call).collect();
    reply
}

async fn both(body: Value) -> (Reply, Reply) {
    let app = app();
    let plain = post_json(&app, "/v2/chat", &body).await;
    assert_eq!(plain.status, StatusCode::OK, "{}", plain.text());
    let plain = non_stream(&plain.json());
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let sse = post_json(&app, "/v2/chat", &streamed).await;
    assert_eq!(sse.status, StatusCode::OK, "{}", sse.text());
    assert_eq!(sse.headers["content-type"], "text/event-stream");
    (plain, stream(&sse.text()))
}

fn check_finish(reply: &Reply) {
    let expected: &[&str] = if reply.calls.is_empty() {
        &["COMPLETE", "MAX_TOKENS"]
    } else {
        &["TOOL_CALL"]
    };
    assert!(
        expected.contains(&reply.finish_reason.as_str()),
        "{reply:?}"
    );
    if reply.calls.is_empty() {
        assert!(
            reply.tool_plan.is_empty(),
            "a plan only comes with calls: {reply:?}"
        );
    }
    for marker in ["<tool_calls>", "</tool_calls>"] {
        assert!(!reply.content.contains(marker), "{reply:?}");
        assert!(!reply.tool_plan.contains(marker), "{reply:?}");
    }
}

#[tokio::test]
async fn the_tool_section_reaches_the_prompt_and_replies_are_well_formed() {
    let body = request(
        json!([{"role": "user", "content": "What is the weather in Paris?"}]),
        json!({}),
    );
    let prompt = rendered(&body);
    assert!(
        prompt.starts_with("<|im_start|>system\n# Tools\n"),
        "{prompt}"
    );
    assert!(
        prompt.contains(r#"{"name": "get_weather", "description": "Gets the current weather of a city.", "parameters": {"type": "object""#),
        "{prompt}"
    );
    assert!(prompt.contains(
        r#"<tool_calls>[{"name": "get_weather", "arguments": {"city": "..."}}]</tool_calls>"#
    ));
    let prompt_tokens = engine().tokenize_prompt(&prompt).unwrap().len() as u64;

    let (plain, streamed) = both(body.clone()).await;
    assert_eq!(
        plain.input_tokens, prompt_tokens,
        "the route rendered the tool section"
    );
    assert_eq!(plain, streamed, "greedy stream and non-stream agree");
    check_finish(&plain);

    // The same chat without tools renders no section and is shorter.
    let mut bare = body;
    bare.as_object_mut().unwrap().remove("tools");
    assert!(!rendered(&bare).contains("# Tools"));
}

#[tokio::test]
async fn a_tool_round_trip_renders_and_generates() {
    let body = request(round_trip_messages(), json!({"max_tokens": 32}));
    let prompt = rendered(&body);
    assert!(
        prompt.contains("<|im_start|>assistant\nI will look it up.<tool_calls>[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]</tool_calls><|im_end|>"),
        "{prompt}"
    );
    assert!(
        prompt.contains("<|im_start|>user\n<tool_results>\n[{\"tool_call_id\": \"get_weather_p1t92w7gfgq7\", \"name\": \"get_weather\", \"result\": \"24C and sunny\\n{\\\"temperature\\\":\\\"24C\\\"}\"}]\n</tool_results><|im_end|>\n<|im_start|>assistant\n"),
        "{prompt}"
    );
    assert!(!prompt.contains("<|im_start|>tool"));

    let (plain, streamed) = both(body.clone()).await;
    assert_eq!(plain, streamed);
    check_finish(&plain);
    assert_eq!(
        plain.input_tokens,
        engine().tokenize_prompt(&prompt).unwrap().len() as u64
    );

    // The answer turn goes back in and the conversation continues.
    let mut messages = round_trip_messages();
    let answer = if plain.content.is_empty() {
        "It is 24C."
    } else {
        plain.content.as_str()
    };
    messages
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "assistant", "content": answer}));
    messages
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "user", "content": "And in Rome?"}));
    let next = post_json(
        &app(),
        "/v2/chat",
        &request(messages, json!({"max_tokens": 8})),
    )
    .await;
    assert_eq!(next.status, StatusCode::OK, "{}", next.text());
    check_finish(&non_stream(&next.json()));
}

#[tokio::test]
async fn tool_choice_none_and_required_still_answer_well_formed() {
    // Without the constraint (CONSTRAIN's grammar) the model is free; the reply must still be
    // one of the spec's shapes, streamed and not.
    for choice in ["NONE", "REQUIRED"] {
        let body = request(
            json!([{"role": "user", "content": "Weather in Oslo?"}]),
            json!({"tool_choice": choice, "max_tokens": 16}),
        );
        let (plain, streamed) = both(body).await;
        assert_eq!(plain, streamed, "{choice}");
        assert!(plain.content.len() + plain.tool_plan.len() + plain.calls.len() > 0);
    }
}
