//! Guarantees of constrained decoding, end to end against the default model (SmolLM2-135M):
//! N seeded requests at temperature 1 with `json_schema`, and with `tool_choice: REQUIRED` +
//! `strict_tools`, half of them streamed, must all produce output that parses and validates.
//! N is 16 in the suite, one full batch (`COHOST_CONSTRAINED_N=200` for a longer sweep); the
//! requests run concurrently so that the engine batches them. A smaller run on Gemma 3 270M
//! covers the other architecture, its built-in template and a 262,144-token vocabulary.

use super::common;

use std::sync::OnceLock;

use axum::http::StatusCode;
use axum::Router;
use runner::engine::EngineHandle;
use serde_json::{json, Value};
use server::{AppState, Config};

use common::{post_json, MODEL};

fn n() -> u64 {
    std::env::var("COHOST_CONSTRAINED_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16)
}

fn config() -> Config {
    let mut config = common::test_config();
    config.context_length = Some(1024);
    config.max_concurrent = 16;
    config.max_queue = 256;
    config
}

/// One engine for the binary, batching up to 16 sequences.
fn app() -> Router {
    static ENGINE: OnceLock<EngineHandle> = OnceLock::new();
    let engine = ENGINE
        .get_or_init(|| server::cli::load_engine(&config()).expect("default model loads"))
        .clone();
    server::app(AppState::with_engine(config(), engine))
}

const GEMMA: &str = "gemma-3-270m-q4_k_m";

fn gemma_app() -> Router {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../models/cache/{GEMMA}.gguf"));
    assert!(
        path.is_file(),
        "{} missing: run models/fetch-gemma3.sh",
        path.display()
    );
    let mut config = config();
    config.models = vec![path.display().to_string()];
    let engine = server::cli::load_engine(&config).expect("Gemma 3 loads");
    server::app(AppState::with_engine(config, engine))
}

/// What a reply said, from the JSON body or the SSE stream alike.
#[derive(Debug, Default)]
struct Outcome {
    content: String,
    calls: Vec<(String, String)>,
    finish_reason: String,
}

async fn ask(app: &Router, body: Value) -> Outcome {
    let stream = body["stream"].as_bool().unwrap_or(false);
    let reply = post_json(app, "/v2/chat", &body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let mut out = Outcome::default();
    if !stream {
        let v = reply.json();
        for block in v["message"]["content"].as_array().into_iter().flatten() {
            out.content
                .push_str(block["text"].as_str().unwrap_or_default());
        }
        for call in v["message"]["tool_calls"].as_array().into_iter().flatten() {
            out.calls.push((
                call["function"]["name"].as_str().unwrap().to_string(),
                call["function"]["arguments"].as_str().unwrap().to_string(),
            ));
        }
        out.finish_reason = v["finish_reason"].as_str().unwrap().to_string();
        return out;
    }
    let text = reply.text();
    for block in text.split("\n\n") {
        let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) else {
            continue;
        };
        if data == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        let delta = &v["delta"]["message"];
        match v["type"].as_str().unwrap() {
            "content-delta" => out
                .content
                .push_str(delta["content"]["text"].as_str().unwrap_or_default()),
            "tool-call-start" => out.calls.push((
                delta["tool_calls"]["function"]["name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                delta["tool_calls"]["function"]["arguments"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )),
            "tool-call-delta" => out.calls.last_mut().expect("delta after start").1.push_str(
                delta["tool_calls"]["function"]["arguments"]
                    .as_str()
                    .unwrap_or_default(),
            ),
            "message-end" => {
                out.finish_reason = v["delta"]["finish_reason"].as_str().unwrap().to_string()
            }
            _ => {}
        }
    }
    out
}

/// Sends all bodies at once to the default model and returns the outcomes in order.
async fn ask_all(bodies: Vec<Value>) -> Vec<Outcome> {
    ask_all_on(app(), bodies).await
}

async fn ask_all_on(app: Router, bodies: Vec<Value>) -> Vec<Outcome> {
    let handles: Vec<_> = bodies
        .into_iter()
        .map(|body| {
            let app = app.clone();
            tokio::spawn(async move { ask(&app, body).await })
        })
        .collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

fn validate(schema: &Value, text: &str) -> Result<(), String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON ({e}): {text}"))?;
    let validator = jsonschema::validator_for(schema).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| e.to_string())
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("{text}: {errors:?}"))
    }
}

/// Fails with every rejected reply (and how many of all) unless `check` passes each one.
fn assert_all_pass(outcomes: &[Outcome], check: impl Fn(&Outcome) -> Result<(), String>) {
    let failures: Vec<String> = outcomes.iter().filter_map(|o| check(o).err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {}: {failures:#?}",
        failures.len(),
        outcomes.len()
    );
}

/// A sampled request for one user message with a fixed seed (streamed for odd seeds), with the
/// fields of `extra` set on top.
fn seeded(seed: u64, user: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": user}],
        "temperature": 1.0,
        "p": 0.99,
        "seed": seed,
        "stream": seed % 2 == 1,
    });
    for (field, value) in extra.as_object().expect("extra is an object") {
        body[field] = value.clone();
    }
    body
}

fn person_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 24},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "city": {"type": "string", "enum": ["Paris", "Lima", "Oslo", "Other"]}
        },
        "required": ["name", "age", "city"]
    })
}

#[tokio::test]
async fn json_schema_replies_always_validate() {
    let schema = person_schema();
    let bodies = (0..n())
        .map(|seed| {
            seeded(
                seed,
                "Invent a person. Answer in JSON.",
                json!({
                    "response_format": {"type": "json_object", "json_schema": schema},
                    "max_tokens": 80
                }),
            )
        })
        .collect();
    let outcomes = ask_all(bodies).await;
    assert_all_pass(&outcomes, |o| validate(&schema, &o.content));
    assert!(outcomes.iter().all(|o| o.finish_reason == "COMPLETE"));
}

fn weather_tools() -> Value {
    json!([
        {"type": "function", "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {"type": "object", "properties": {
                "city": {"type": "string", "maxLength": 20},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
            }, "required": ["city"]}
        }},
        {"type": "function", "function": {
            "name": "add",
            "description": "Adds two integers",
            "parameters": {"type": "object", "properties": {
                "a": {"type": "integer", "minimum": -1000, "maximum": 1000},
                "b": {"type": "integer", "minimum": -1000, "maximum": 1000}
            }, "required": ["a", "b"], "additionalProperties": false}
        }}
    ])
}

fn check_calls(outcome: &Outcome, tools: &Value) -> Result<(), String> {
    if outcome.calls.is_empty() {
        return Err(format!("no tool call: {outcome:?}"));
    }
    for (name, arguments) in &outcome.calls {
        let tool = tools
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["function"]["name"] == name.as_str())
            .ok_or_else(|| format!("unknown tool {name}"))?;
        validate(&tool["function"]["parameters"], arguments)?;
    }
    Ok(())
}

#[tokio::test]
async fn required_strict_tool_calls_always_validate() {
    let tools = weather_tools();
    let bodies = (0..n())
        .map(|seed| {
            seeded(
                seed,
                "What is the weather in Paris, and what is 2 + 3?",
                json!({
                    "tools": tools,
                    "tool_choice": "REQUIRED",
                    "strict_tools": true,
                    "max_tokens": 200
                }),
            )
        })
        .collect();
    let outcomes = ask_all(bodies).await;
    assert_all_pass(&outcomes, |o| check_calls(o, &tools));
    for outcome in &outcomes {
        assert_eq!(outcome.finish_reason, "TOOL_CALL", "{outcome:?}");
        assert!(outcome.content.is_empty(), "{outcome:?}");
    }
}

/// The small budgets of issue 12: a required strict call with `max_tokens: 48` at temperature
/// 0.7, and a JSON string with no length bound in 24 tokens. A plan or a string that would eat
/// the budget is closed in time, so every reply carries a valid call or valid JSON.
#[tokio::test]
async fn small_budgets_still_give_a_valid_call_and_valid_json() {
    let tool = json!([{"type": "function", "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
        }, "required": ["city", "unit"]}
    }}]);
    let schema = json!({
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"]
    });
    let half = n().div_ceil(2);
    let mut bodies: Vec<Value> = (0..half)
        .map(|seed| {
            let mut body = seeded(
                seed,
                "Tell me about the weather in Paris in great detail, then check it.",
                json!({"tools": tool, "tool_choice": "REQUIRED", "strict_tools": true,
                       "max_tokens": 48}),
            );
            body["temperature"] = json!(0.7);
            body
        })
        .collect();
    bodies.extend((0..half).map(|seed| {
        seeded(
            seed,
            "Invent a person with a very long name. Answer in JSON.",
            json!({"response_format": {"type": "json_object", "json_schema": schema},
                   "max_tokens": 24}),
        )
    }));
    let outcomes = ask_all(bodies).await;
    let (calls, json) = outcomes.split_at(half as usize);
    assert_all_pass(calls, |o| {
        check_calls(o, &tool)?;
        (o.finish_reason == "TOOL_CALL" && o.content.is_empty())
            .then_some(())
            .ok_or_else(|| format!("{o:?}"))
    });
    assert_all_pass(json, |o| validate(&schema, &o.content));
}

#[tokio::test]
async fn tool_choice_none_and_auto_strict() {
    let tools = weather_tools();
    let bodies = (0..8)
        .map(|seed| {
            let extra = if seed < 4 {
                json!({"tools": tools, "max_tokens": 60, "tool_choice": "NONE"})
            } else {
                json!({"tools": tools, "max_tokens": 60, "strict_tools": true})
            };
            seeded(seed, "What is the weather in Paris?", extra)
        })
        .collect();
    let outcomes = ask_all(bodies).await;
    for (seed, outcome) in outcomes.iter().enumerate() {
        if seed < 4 {
            assert!(outcome.calls.is_empty(), "NONE made a call: {outcome:?}");
            assert!(!outcome.content.contains("<tool_calls>"), "{outcome:?}");
        } else if !outcome.calls.is_empty() {
            check_calls(outcome, &tools).unwrap();
        }
    }
}

#[tokio::test]
async fn schemas_that_cannot_compile_are_400() {
    let app = app();
    let mut body = seeded(0, "hi", json!({}));
    body["response_format"] = json!({"type": "json_object", "json_schema": {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 5, "maximum": 1}},
        "required": ["n"]
    }});
    let reply = post_json(&app, "/v2/chat", &body).await;
    let message = reply.error_message(StatusCode::BAD_REQUEST);
    assert!(message.contains("grammar"), "{message}");
    // Structural rules are checked before any compiling, with Cohere's wording.
    body["response_format"] = json!({"type": "json_object", "json_schema": {"type": "array"}});
    let reply = post_json(&app, "/v2/chat", &body).await;
    assert_eq!(
        reply.error_message(StatusCode::BAD_REQUEST),
        "schema must be an object"
    );
}

#[tokio::test]
async fn json_object_mode_gives_an_object_with_logprobs() {
    let app = app();
    let body = seeded(
        3,
        "Describe a cat in JSON.",
        json!({
            "stream": false,
            "response_format": {"type": "json_object"},
            "logprobs": true,
            "max_tokens": 120
        }),
    );
    let reply = post_json(&app, "/v2/chat", &body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let v = reply.json();
    let text = v["message"]["content"][0]["text"].as_str().unwrap();
    if v["finish_reason"] == "COMPLETE" {
        let value: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert!(value.is_object());
    } else {
        assert!(text.starts_with('{'), "{text}");
    }
    let logprobs = v["logprobs"].as_array().unwrap();
    assert!(!logprobs.is_empty());
    assert!(logprobs.iter().all(|item| item["logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l.as_f64().unwrap() <= 0.0)));
}

#[tokio::test]
async fn gemma_tool_calls_and_json_schema_validate_too() {
    let (tools, schema) = (weather_tools(), person_schema());
    let bodies = (0..8)
        .map(|seed| {
            if seed < 4 {
                seeded(
                    seed,
                    "What is the weather in Paris, and what is 2 + 3?",
                    json!({
                        "model": GEMMA,
                        "tools": tools,
                        "tool_choice": "REQUIRED",
                        "strict_tools": true,
                        "max_tokens": 200
                    }),
                )
            } else {
                seeded(
                    seed,
                    "Invent a person. Answer in JSON.",
                    json!({
                        "model": GEMMA,
                        "response_format": {"type": "json_object", "json_schema": schema},
                        "max_tokens": 80
                    }),
                )
            }
        })
        .collect();
    let outcomes = ask_all_on(gemma_app(), bodies).await;
    for (seed, outcome) in outcomes.iter().enumerate() {
        if seed < 4 {
            check_calls(outcome, &tools).unwrap();
            assert_eq!(outcome.finish_reason, "TOOL_CALL", "{outcome:?}");
        } else {
            validate(&schema, &outcome.content).unwrap();
            assert_eq!(outcome.finish_reason, "COMPLETE", "{outcome:?}");
        }
    }
}
