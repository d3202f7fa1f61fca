//! Turns a reply's events into Cohere's server-sent events, byte for byte.
//!
//! Framing: `event: <type>\n`, ONE `data: <compact json>\n` line, a blank line; `data: [DONE]`
//! at the end. Inside JSON strings `[` is written `\u005b`: the TypeScript SDK ends a stream at
//! any data line containing the substring `[DONE]`, and the escape decodes the same everywhere.

use axum::body::Bytes;
use runner::reply::{BlockKind, ReplyEnd, ReplyEvent};
use serde::Serialize;

use crate::wire::{
    ArgumentsPiece, ChatStreamEvent, CitationStartDelta, CitationStartMessage, ContentDeltaDelta,
    ContentDeltaMessage, ContentStartDelta, ContentStartMessage, FinishReason, LogprobItem,
    MessageEndDelta, MessageStartBody, MessageStartDelta, TextPiece, ToolCallArgumentsPiece,
    ToolCallDeltaDelta, ToolCallDeltaMessage, ToolCallOut, ToolCallStartDelta,
    ToolCallStartMessage, ToolPlanDeltaDelta, ToolPlanPiece, Usage,
};

/// The stream terminator both SDKs look for.
pub const DONE: &[u8] = b"data: [DONE]\n\n";
/// Sent while a request waits (queued or between slow tokens) so proxies and clients keep the
/// connection; both SDKs skip comment lines.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// serde_json's compact output, except that `[` inside strings becomes `\u005b`.
struct BracketEscaping;

impl serde_json::ser::Formatter for BracketEscaping {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut rest = fragment;
        while let Some(at) = rest.find('[') {
            writer.write_all(&rest.as_bytes()[..at])?;
            writer.write_all(b"\\u005b")?;
            rest = &rest[at + 1..];
        }
        writer.write_all(rest.as_bytes())
    }
}

/// Compact JSON with `[` escaped inside strings; never contains a newline.
pub fn to_json_line<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, BracketEscaping);
    value
        .serialize(&mut ser)
        .expect("wire types always serialize");
    out
}

/// One complete SSE frame for an event.
pub fn frame(event: &ChatStreamEvent) -> Bytes {
    let json = to_json_line(event);
    let mut out = Vec::with_capacity(json.len() + 40);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.name().as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(&json);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// What a finished stream reports, for the request log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOutcome {
    pub finish_reason: FinishReason,
    pub input_tokens: usize,
    pub output_tokens: usize,
}

/// Cohere's server-sent events for one streamed reply: a plain map from [`ReplyEvent`]s (the
/// runner assembled the reply; block order, tool calls and the text block rules are its job),
/// plus `message-start` first and `[DONE]` after `message-end`.
#[derive(Debug)]
pub struct SseEncoder {
    logprobs: bool,
    outcome: Option<StreamOutcome>,
    /// Indices of the thinking blocks, whose deltas carry `thinking` instead of `text`.
    thinking_blocks: Vec<usize>,
}

impl SseEncoder {
    /// `logprobs`: whether each content delta carries its tokens' log-probabilities.
    pub fn new(logprobs: bool) -> Self {
        Self {
            logprobs,
            outcome: None,
            thinking_blocks: Vec::new(),
        }
    }

    pub fn start(&self, id: &str) -> Bytes {
        frame(&ChatStreamEvent::MessageStart {
            id: id.to_string(),
            delta: MessageStartDelta {
                message: MessageStartBody::assistant(),
            },
        })
    }

    /// The frames of one reply event; `message-end` is followed by `[DONE]`, and nothing comes
    /// after that.
    pub fn event(&mut self, event: ReplyEvent) -> Vec<Bytes> {
        if self.outcome.is_some() {
            return Vec::new();
        }
        let event = match event {
            ReplyEvent::ContentStart { index, kind } => {
                if kind == BlockKind::Thinking {
                    self.thinking_blocks.push(index);
                }
                ChatStreamEvent::ContentStart {
                    index,
                    delta: ContentStartDelta {
                        message: ContentStartMessage {
                            content: crate::response::empty_block(kind),
                        },
                    },
                }
            }
            ReplyEvent::ContentDelta {
                index,
                text,
                token_ids,
                logprobs,
            } => {
                let logprobs = self.logprobs.then(|| LogprobItem {
                    text: text.clone(),
                    token_ids,
                    logprobs,
                });
                ChatStreamEvent::ContentDelta {
                    index,
                    delta: ContentDeltaDelta {
                        message: ContentDeltaMessage {
                            content: if self.thinking_blocks.contains(&index) {
                                TextPiece::Thinking { thinking: text }
                            } else {
                                TextPiece::Text { text }
                            },
                        },
                    },
                    logprobs,
                }
            }
            ReplyEvent::ContentEnd { index } => ChatStreamEvent::ContentEnd { index },
            ReplyEvent::PlanDelta { text } => ChatStreamEvent::ToolPlanDelta {
                delta: ToolPlanDeltaDelta {
                    message: ToolPlanPiece { tool_plan: text },
                },
            },
            ReplyEvent::ToolCallStart { index, id, name } => ChatStreamEvent::ToolCallStart {
                index,
                delta: ToolCallStartDelta {
                    message: ToolCallStartMessage {
                        tool_calls: ToolCallOut::function(id, name),
                    },
                },
            },
            ReplyEvent::ToolCallDelta { index, arguments } => ChatStreamEvent::ToolCallDelta {
                index,
                delta: ToolCallDeltaDelta {
                    message: ToolCallDeltaMessage {
                        tool_calls: ToolCallArgumentsPiece {
                            function: ArgumentsPiece { arguments },
                        },
                    },
                },
            },
            ReplyEvent::ToolCallEnd { index } => ChatStreamEvent::ToolCallEnd { index },
            // One start and one end per citation, right after each other: the text it covers
            // is already out.
            ReplyEvent::Citation { index, citation } => {
                let start = ChatStreamEvent::CitationStart {
                    index,
                    delta: CitationStartDelta {
                        message: CitationStartMessage {
                            citations: citation.into(),
                        },
                    },
                };
                return vec![
                    frame(&start),
                    frame(&ChatStreamEvent::CitationEnd { index }),
                ];
            }
            ReplyEvent::End(end) => return self.end(end),
        };
        vec![frame(&event)]
    }

    pub fn outcome(&self) -> Option<StreamOutcome> {
        self.outcome
    }

    fn end(&mut self, end: ReplyEnd) -> Vec<Bytes> {
        let finish_reason = FinishReason::from(end.finish);
        self.outcome = Some(StreamOutcome {
            finish_reason,
            input_tokens: end.usage.input_tokens,
            output_tokens: end.usage.output_tokens,
        });
        vec![
            frame(&ChatStreamEvent::MessageEnd {
                delta: MessageEndDelta {
                    finish_reason,
                    usage: Some(Usage::from(end.usage)),
                    error: end.error.map(|e| e.message),
                },
            }),
            Bytes::from_static(DONE),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runner::engine::{ErrorKind, FinishReason as EngineFinish, StreamEvent};
    use runner::reply::{ReplyAssembler, ReplyOptions};

    fn text(t: &str, ids: &[u32], lp: &[f32]) -> StreamEvent {
        StreamEvent::Text {
            text: t.into(),
            token_ids: ids.to_vec(),
            logprobs: lp.to_vec(),
        }
    }

    /// Engine events through the runner's assembler, then this encoder.
    fn encode(
        logprobs: bool,
        options: ReplyOptions,
        events: Vec<StreamEvent>,
    ) -> (SseEncoder, Vec<Bytes>) {
        let mut assembler = ReplyAssembler::new(71, options);
        let mut enc = SseEncoder::new(logprobs);
        let mut frames = vec![enc.start("29f14a5a-11de-4cae-9800-25e4747408ea")];
        for event in events {
            for reply_event in assembler.push(event) {
                frames.extend(enc.event(reply_event));
            }
        }
        (enc, frames)
    }

    fn concat(frames: &[Bytes]) -> String {
        frames
            .iter()
            .map(|b| std::str::from_utf8(b).unwrap())
            .collect()
    }

    #[test]
    fn fixed_event_list_encodes_to_exact_bytes() {
        let (mut enc, frames) = encode(
            false,
            ReplyOptions::default(),
            vec![
                text("LL", &[5], &[]),
                text("Ms", &[6], &[]),
                StreamEvent::Done {
                    reason: EngineFinish::EndOfTurn,
                    prompt_tokens: 71,
                    output_tokens: 2,
                    cached_tokens: 0,
                },
            ],
        );
        let expected = concat!(
            "event: message-start\n",
            r#"data: {"type":"message-start","id":"29f14a5a-11de-4cae-9800-25e4747408ea","delta":{"message":{"role":"assistant","content":[],"tool_plan":"","tool_calls":[],"citations":[]}}}"#,
            "\n\n",
            "event: content-start\n",
            r#"data: {"type":"content-start","index":0,"delta":{"message":{"content":{"type":"text","text":""}}}}"#,
            "\n\n",
            "event: content-delta\n",
            r#"data: {"type":"content-delta","index":0,"delta":{"message":{"content":{"text":"LL"}}}}"#,
            "\n\n",
            "event: content-delta\n",
            r#"data: {"type":"content-delta","index":0,"delta":{"message":{"content":{"text":"Ms"}}}}"#,
            "\n\n",
            "event: content-end\n",
            r#"data: {"type":"content-end","index":0}"#,
            "\n\n",
            "event: message-end\n",
            r#"data: {"type":"message-end","delta":{"finish_reason":"COMPLETE","usage":{"billed_units":{"input_tokens":71,"output_tokens":2},"tokens":{"input_tokens":71,"output_tokens":2},"cached_tokens":0}}}"#,
            "\n\n",
            "data: [DONE]\n\n",
        );
        assert_eq!(concat(&frames), expected);
        assert_eq!(
            enc.outcome(),
            Some(StreamOutcome {
                finish_reason: FinishReason::Complete,
                input_tokens: 71,
                output_tokens: 2
            })
        );
        // Nothing after the end.
        assert!(enc.event(ReplyEvent::ContentEnd { index: 0 }).is_empty());
    }

    /// A thinking model's stream: block 0 is thinking (its deltas carry `thinking`), block 1
    /// the text, as the spec orders them.
    #[test]
    fn thinking_streams_as_block_0_with_thinking_deltas_then_the_text() {
        let options = ReplyOptions {
            thinking: runner::thinking::markers_of("<think></think>"),
            ..ReplyOptions::default()
        };
        let (_, frames) = encode(
            false,
            options,
            vec![
                text("<think>hm", &[5], &[]),
                text("</think>Yes", &[6], &[]),
                StreamEvent::Done {
                    reason: EngineFinish::EndOfTurn,
                    prompt_tokens: 71,
                    output_tokens: 2,
                    cached_tokens: 0,
                },
            ],
        );
        let all = concat(&frames);
        let expected = [
            r#"{"type":"content-start","index":0,"delta":{"message":{"content":{"type":"thinking","thinking":""}}}}"#,
            r#"{"type":"content-delta","index":0,"delta":{"message":{"content":{"thinking":"hm"}}}}"#,
            r#"{"type":"content-end","index":0}"#,
            r#"{"type":"content-start","index":1,"delta":{"message":{"content":{"type":"text","text":""}}}}"#,
            r#"{"type":"content-delta","index":1,"delta":{"message":{"content":{"text":"Yes"}}}}"#,
            r#"{"type":"content-end","index":1}"#,
        ];
        let mut at = 0;
        for frame in expected {
            let found = all[at..]
                .find(frame)
                .unwrap_or_else(|| panic!("{frame} in order in:\n{all}"));
            at += found + frame.len();
        }
        assert!(!all.contains("think>"), "{all}");
    }

    #[test]
    fn brackets_in_strings_are_escaped_and_decode_back() {
        let (_, frames) = encode(
            false,
            ReplyOptions::default(),
            vec![text("say [DONE] now", &[1], &[])],
        );
        let all = concat(&frames);
        assert!(!all.contains("[DONE]"), "{all}");
        assert!(all.contains(r"say \u005bDONE] now"));
        let data_line = all
            .lines()
            .find(|l| l.starts_with("data: {\"type\":\"content-delta\""))
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&data_line["data: ".len()..]).unwrap();
        assert_eq!(v["delta"]["message"]["content"]["text"], "say [DONE] now");
    }

    #[test]
    fn newlines_in_text_stay_on_one_data_line() {
        let (_, frames) = encode(
            false,
            ReplyOptions::default(),
            vec![text("a\nb\r\nc", &[1, 2], &[])],
        );
        let delta = std::str::from_utf8(frames.last().unwrap()).unwrap();
        assert_eq!(
            delta.matches('\n').count(),
            3,
            "event line, data line, blank line: {delta:?}"
        );
    }

    #[test]
    fn logprobs_ride_on_each_delta_when_asked() {
        let (_, frames) = encode(
            true,
            ReplyOptions::default(),
            vec![text("Hel", &[1, 2], &[-0.5, -0.25])],
        );
        let delta = std::str::from_utf8(&frames[2]).unwrap();
        assert!(
            delta.ends_with("\"logprobs\":{\"text\":\"Hel\",\"token_ids\":[1,2],\"logprobs\":[-0.5,-0.25]}}\n\n"),
            "{delta}"
        );
        let (_, frames) = encode(
            false,
            ReplyOptions::default(),
            vec![text("Hel", &[1, 2], &[])],
        );
        assert!(!std::str::from_utf8(&frames[2])
            .unwrap()
            .contains("logprobs"));
    }

    #[test]
    fn error_after_headers_ends_with_error_message_end_and_done() {
        let (enc, frames) = encode(
            false,
            ReplyOptions::default(),
            vec![
                text("partial", &[1, 2, 3], &[]),
                StreamEvent::Error {
                    message: "forward pass failed".into(),
                    kind: ErrorKind::Server,
                },
            ],
        );
        let all = concat(&frames[3..]);
        assert!(all.starts_with("event: content-end\n"), "{all}");
        assert!(all.contains(r#"{"type":"message-end","delta":{"finish_reason":"ERROR","usage":{"billed_units":{"input_tokens":71,"output_tokens":3},"tokens":{"input_tokens":71,"output_tokens":3},"cached_tokens":0},"error":"forward pass failed"}}"#), "{all}");
        assert!(all.ends_with("data: [DONE]\n\n"));
        assert_eq!(enc.outcome().unwrap().finish_reason, FinishReason::Error);
    }

    /// (type, data) of every JSON event in the frames.
    fn events(frames: &[Bytes]) -> Vec<(String, serde_json::Value)> {
        concat(frames)
            .split("\n\n")
            .filter_map(|block| block.lines().nth(1)?.strip_prefix("data: "))
            .filter(|data| *data != "[DONE]")
            .map(|data| {
                let v: serde_json::Value = serde_json::from_str(data).unwrap();
                (v["type"].as_str().unwrap().to_string(), v)
            })
            .collect()
    }

    fn tool_options(hold: usize) -> ReplyOptions {
        use runner::tools::{format, ParseOptions, ToolFormatKind};
        ReplyOptions {
            tools: Some(format(ToolFormatKind::Generic).parser(ParseOptions {
                plan_hold_bytes: hold,
                id_seed: Some(1),
            })),
            ..ReplyOptions::default()
        }
    }

    #[test]
    fn tool_call_stream_is_plan_then_calls_then_tool_call_end() {
        let pieces = [
            "I will",
            " look.<tool",
            "_calls>[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"[Paris]\"}},",
            " {\"name\": \"now\", \"arguments\": {}}]</tool_calls>",
        ];
        let mut input: Vec<StreamEvent> = pieces
            .iter()
            .map(|p| text(p, &[1, 2], &[-0.5, -0.5]))
            .collect();
        input.push(StreamEvent::Done {
            reason: EngineFinish::EndOfTurn,
            prompt_tokens: 9,
            output_tokens: 8,
            cached_tokens: 0,
        });
        let (enc, frames) = encode(true, tool_options(256), input);
        assert!(concat(&frames).ends_with("data: [DONE]\n\n"));
        let events = events(&frames);
        let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            types,
            [
                "message-start",
                "tool-plan-delta",
                "tool-call-start",
                "tool-call-delta",
                "tool-call-end",
                "tool-call-start",
                "tool-call-delta",
                "tool-call-end",
                "message-end"
            ]
        );
        assert_eq!(events[1].1["delta"]["message"]["tool_plan"], "I will look.");
        assert!(events[1].1.get("index").is_none());
        let start = &events[2].1;
        assert_eq!(start["index"], 0);
        let call = &start["delta"]["message"]["tool_calls"];
        assert!(call.is_object(), "one call object, not an array");
        assert!(runner::tools::is_call_id(
            call["id"].as_str().unwrap(),
            "get_weather"
        ));
        assert_eq!(call["type"], "function");
        assert_eq!(call["function"]["name"], "get_weather");
        assert_eq!(call["function"]["arguments"], "");
        assert_eq!(
            events[3].1["delta"]["message"]["tool_calls"]["function"]["arguments"],
            r#"{"city":"[Paris]"}"#
        );
        assert_eq!(
            events[4].1,
            serde_json::json!({"type": "tool-call-end", "index": 0})
        );
        assert_eq!(events[5].1["index"], 1);
        assert_eq!(
            events[5].1["delta"]["message"]["tool_calls"]["function"]["name"],
            "now"
        );
        assert_eq!(events[8].1["delta"]["finish_reason"], "TOOL_CALL");
        assert_eq!(events[8].1["delta"]["usage"]["tokens"]["output_tokens"], 8);
        assert_eq!(enc.outcome().unwrap().finish_reason, FinishReason::ToolCall);
    }

    #[test]
    fn with_tools_a_plain_answer_streams_as_content_with_its_logprobs() {
        let (_, frames) = encode(
            true,
            tool_options(4),
            vec![
                text("Hel", &[1], &[-0.1]),
                text("lo there", &[2, 3], &[-0.2, -0.3]),
                text(" <tool", &[4], &[-0.4]),
                StreamEvent::Done {
                    reason: EngineFinish::EndOfTurn,
                    prompt_tokens: 9,
                    output_tokens: 4,
                    cached_tokens: 0,
                },
            ],
        );
        let events = events(&frames);
        let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(types[1], "content-start");
        assert_eq!(types[types.len() - 2..], ["content-end", "message-end"]);
        let mut text_out = String::new();
        let mut token_ids = 0;
        for (kind, v) in &events {
            if kind == "content-delta" {
                let piece = v["delta"]["message"]["content"]["text"].as_str().unwrap();
                assert_eq!(v["logprobs"]["text"], piece);
                token_ids += v["logprobs"]["token_ids"].as_array().unwrap().len();
                text_out.push_str(piece);
            }
        }
        assert_eq!(text_out, "Hello there <tool");
        assert_eq!(token_ids, 4, "every token's logprob rides on some delta");
        assert_eq!(
            events.last().unwrap().1["delta"]["finish_reason"],
            "COMPLETE"
        );
    }
}
