//! Tests of `wire`.

use super::*;
use serde_json::json;

fn parse(v: Value) -> ChatRequest {
    serde_json::from_value(v).expect("request parses")
}

#[test]
fn spec_tool_turns_parse_with_string_and_block_content() {
    let req = parse(json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "You are terse."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "Describe this image"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "auto"}}
            ]},
            {"role": "assistant",
             "tool_plan": "I will look up the weather.",
             "tool_calls": [{"id": "get_weather_p1t92w7gfgq7", "type": "function",
                             "function": {"name": "get_weather", "arguments": "{\"location\":\"Madrid\"}"}}],
             "content": [{"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "..."}],
             "citations": [{"start": 0, "end": 1, "text": ".", "sources": []}]},
            {"role": "tool", "tool_call_id": "get_weather_p1t92w7gfgq7",
             "content": [
                {"type": "text", "text": "24C"},
                {"type": "document", "document": {"data": {"temperature": "24C"}, "id": "optional-id"}},
                {"type": "document", "document": {"data": "{\"temperature\": \"24C\"}"}}
             ]},
            {"role": "tool", "tool_call_id": "x", "content": "{\"temperature\": \"24C\"}"}
        ]
    }));
    let messages = req.messages.unwrap();
    assert_eq!(messages.len(), 5);
    match &messages[1] {
        Message::User(UserMessage {
            content: Some(Content::Blocks(blocks)),
        }) => {
            assert!(
                matches!(&blocks[1], UserBlock::ImageUrl { image_url } if image_url.detail.as_deref() == Some("auto"))
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    match &messages[3] {
        Message::Tool(ToolMessage {
            content: Some(Content::Blocks(blocks)),
            ..
        }) => {
            assert!(
                matches!(&blocks[1], ToolBlock::Document { document } if matches!(document.data, DocumentData::Object(_)))
            );
            assert!(
                matches!(&blocks[2], ToolBlock::Document { document } if matches!(document.data, DocumentData::Text(_)))
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn null_reads_as_absent_and_unknown_keys_are_ignored() {
    let req = parse(json!({
        "model": "m", "messages": [{"role": "user", "content": "hi"}],
        "temperature": null, "tools": null, "seed": null, "stream": null,
        "some_future_field": {"x": 1}
    }));
    assert_eq!(req.temperature, None);
    assert_eq!(req.tools, None);
    assert_eq!(req.stream, None);
}

#[test]
fn enums_accept_lowercase_on_input() {
    let req = parse(json!({
        "model": "m", "messages": [],
        "citation_options": {"mode": "accurate"}, "safety_mode": "contextual", "tool_choice": "none",
        "thinking": {"token_budget": 500}, "response_format": {"type": "json_object"}
    }));
    assert_eq!(
        req.citation_options.unwrap().mode.as_deref(),
        Some("accurate")
    );
    assert_eq!(req.safety_mode, Some(SafetyMode::Contextual));
    assert_eq!(req.tool_choice, Some(ToolChoice::None));
    assert_eq!(req.thinking.unwrap().kind, None);
    assert_eq!(
        req.response_format.unwrap().kind,
        ResponseFormatType::JsonObject
    );
    let upper = parse(json!({"model": "m", "messages": [], "tool_choice": "REQUIRED"}));
    assert_eq!(upper.tool_choice, Some(ToolChoice::Required));
}

#[test]
fn unknown_role_is_a_data_error() {
    let err = serde_json::from_value::<ChatRequest>(
        json!({"messages": [{"role": "robot", "content": "x"}]}),
    )
    .unwrap_err();
    assert!(err.to_string().contains("robot"), "{err}");
}

#[test]
fn non_stream_response_round_trips_the_spec_example() {
    let spec = json!({
        "id": "c14c80c3-18eb-4519-9460-6c92edd8cfb4",
        "finish_reason": "COMPLETE",
        "message": {"role": "assistant", "content": [{"type": "text", "text": "Emperor penguins are the tallest."}]},
        "usage": {"billed_units": {"input_tokens": 5, "output_tokens": 418},
                  "tokens": {"input_tokens": 71, "output_tokens": 418},
                  "cached_tokens": 0},
        "logprobs": [{"text": "Emperor", "token_ids": [71834], "logprobs": [-0.0123]}]
    });
    let parsed: ChatResponse = serde_json::from_value(spec.clone()).unwrap();
    // Through text, as on the wire: f32 logprobs print as their shortest f32 form.
    let written: Value = serde_json::from_str(&serde_json::to_string(&parsed).unwrap()).unwrap();
    assert_eq!(written, spec);
}

#[test]
fn stream_events_serialize_as_the_spec_shows() {
    let start = ChatStreamEvent::ContentStart {
        index: 0,
        delta: ContentStartDelta {
            message: ContentStartMessage {
                content: ResponseContent::Text {
                    text: String::new(),
                },
            },
        },
    };
    assert_eq!(
        serde_json::to_string(&start).unwrap(),
        r#"{"type":"content-start","index":0,"delta":{"message":{"content":{"type":"text","text":""}}}}"#
    );
    let delta = ChatStreamEvent::ContentDelta {
        index: 1,
        delta: ContentDeltaDelta {
            message: ContentDeltaMessage {
                content: TextPiece::Text { text: "Hel".into() },
            },
        },
        logprobs: Some(LogprobItem {
            text: "Hel".into(),
            token_ids: vec![1, 2],
            logprobs: vec![-0.1, -0.2],
        }),
    };
    assert_eq!(
        serde_json::to_value(&delta).unwrap(),
        json!({"type":"content-delta","index":1,"delta":{"message":{"content":{"text":"Hel"}}},
               "logprobs":{"text":"Hel","token_ids":[1,2],"logprobs":[-0.1f32,-0.2f32]}})
    );
    let end = ChatStreamEvent::MessageEnd {
        delta: MessageEndDelta {
            finish_reason: FinishReason::MaxTokens,
            usage: Some(Usage::real(71, 2)),
            error: None,
        },
    };
    assert_eq!(
        serde_json::to_string(&end).unwrap(),
        r#"{"type":"message-end","delta":{"finish_reason":"MAX_TOKENS","usage":{"billed_units":{"input_tokens":71,"output_tokens":2},"tokens":{"input_tokens":71,"output_tokens":2},"cached_tokens":0}}}"#
    );
    assert_eq!(end.name(), "message-end");
}

#[test]
fn tool_events_and_response_serialize_as_the_spec_shows() {
    let call = |arguments: &str| ToolCallOut {
        id: "query_daily_sales_report_j3f0adww9pmr".into(),
        kind: "function".into(),
        function: ToolCallOutFunction {
            name: "query_daily_sales_report".into(),
            arguments: arguments.into(),
        },
    };
    let events = [
        ChatStreamEvent::ToolPlanDelta {
            delta: ToolPlanDeltaDelta {
                message: ToolPlanPiece {
                    tool_plan: " will".into(),
                },
            },
        },
        ChatStreamEvent::ToolCallStart {
            index: 0,
            delta: ToolCallStartDelta {
                message: ToolCallStartMessage {
                    tool_calls: call(""),
                },
            },
        },
        ChatStreamEvent::ToolCallDelta {
            index: 0,
            delta: ToolCallDeltaDelta {
                message: ToolCallDeltaMessage {
                    tool_calls: ToolCallArgumentsPiece {
                        function: ArgumentsPiece {
                            arguments: "{\"".into(),
                        },
                    },
                },
            },
        },
        ChatStreamEvent::ToolCallEnd { index: 0 },
    ];
    let spec = [
        r#"{"type":"tool-plan-delta","delta":{"message":{"tool_plan":" will"}}}"#,
        r#"{"type":"tool-call-start","index":0,"delta":{"message":{"tool_calls":{"id":"query_daily_sales_report_j3f0adww9pmr","type":"function","function":{"name":"query_daily_sales_report","arguments":""}}}}}"#,
        r#"{"type":"tool-call-delta","index":0,"delta":{"message":{"tool_calls":{"function":{"arguments":"{\""}}}}}"#,
        r#"{"type":"tool-call-end","index":0}"#,
    ];
    for (event, want) in events.iter().zip(spec) {
        assert_eq!(serde_json::to_string(event).unwrap(), want);
        let name = event.name();
        assert!(want.contains(&format!("\"type\":\"{name}\"")), "{name}");
    }
    let response = ChatResponse {
        id: "9e5f00aa".into(),
        finish_reason: FinishReason::ToolCall,
        message: ResponseMessage {
            role: "assistant".into(),
            content: Vec::new(),
            tool_plan: Some("I will first find the sales summary".into()),
            tool_calls: Some(vec![call("{\"day\": \"2023-09-29\"}")]),
            citations: None,
        },
        usage: Usage::real(127, 69),
        logprobs: None,
    };
    assert_eq!(
        serde_json::to_value(&response).unwrap(),
        json!({"id": "9e5f00aa", "finish_reason": "TOOL_CALL",
               "message": {"role": "assistant", "tool_plan": "I will first find the sales summary",
                           "tool_calls": [{"id": "query_daily_sales_report_j3f0adww9pmr", "type": "function",
                                           "function": {"name": "query_daily_sales_report", "arguments": "{\"day\": \"2023-09-29\"}"}}]},
               "usage": {"billed_units": {"input_tokens": 127, "output_tokens": 69},
                         "tokens": {"input_tokens": 127, "output_tokens": 69},
                         "cached_tokens": 0}})
    );
}
