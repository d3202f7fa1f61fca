//! Turns the engine's `StreamEvent`s into Cohere's server-sent events, byte for byte.
//!
//! Framing: `event: <type>\n`, ONE `data: <compact json>\n` line, a blank line; `data: [DONE]`
//! at the end. Inside JSON strings `[` is written `\u005b`: the TypeScript SDK ends a stream at
//! any data line containing the substring `[DONE]`, and the escape decodes the same everywhere.

use axum::body::Bytes;
use runner::engine::StreamEvent;
use runner::tools::{ToolEvent, ToolParser};
use serde::Serialize;

use crate::wire::{
    ArgumentsPiece, ChatStreamEvent, ContentDeltaDelta, ContentDeltaMessage, ContentStartDelta,
    ContentStartMessage, FinishReason, LogprobItem, MessageEndDelta, MessageStartBody,
    MessageStartDelta, ResponseContent, TextPiece, ToolCallArgumentsPiece, ToolCallDeltaDelta,
    ToolCallDeltaMessage, ToolCallOut, ToolCallStartDelta, ToolCallStartMessage,
    ToolPlanDeltaDelta, ToolPlanPiece, Usage,
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

pub fn map_finish_reason(reason: runner::engine::FinishReason) -> FinishReason {
    match reason {
        runner::engine::FinishReason::EndOfTurn => FinishReason::Complete,
        runner::engine::FinishReason::StopSequence => FinishReason::StopSequence,
        runner::engine::FinishReason::MaxTokens => FinishReason::MaxTokens,
    }
}

/// What a finished stream reports, for the request log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOutcome {
    pub finish_reason: FinishReason,
    pub input_tokens: usize,
    pub output_tokens: usize,
}

/// The state machine from engine events to Cohere events for one streamed chat.
///
/// The text block is opened lazily at the first piece (or at the end, for an answer that is
/// empty and made no tool call) so that every stream has at most one content-start/content-end
/// pair around its deltas, and a tool-call turn with no text has none (spec §5.4 b).
///
/// With tools, text goes through the model's [`ToolParser`] first: plan pieces become
/// tool-plan-delta, calls tool-call-start/-delta/-end, the rest content-delta; a turn that made
/// calls ends with `TOOL_CALL`.
#[derive(Debug)]
pub struct SseEncoder {
    logprobs: bool,
    prompt_tokens: usize,
    output_tokens: usize,
    content_open: bool,
    outcome: Option<StreamOutcome>,
    tools: Option<ToolParser>,
    /// Tokens (and log-probabilities) whose text the parser still holds: they ride on the next
    /// content delta, or are dropped when the text turns out to be plan or call.
    pending: LogprobItem,
}

impl SseEncoder {
    /// `prompt_tokens` is what the server counted; used for usage if the stream fails early.
    pub fn new(logprobs: bool, prompt_tokens: usize) -> Self {
        Self {
            logprobs,
            prompt_tokens,
            output_tokens: 0,
            content_open: false,
            outcome: None,
            tools: None,
            pending: LogprobItem {
                text: String::new(),
                token_ids: Vec::new(),
                logprobs: Vec::new(),
            },
        }
    }

    /// Routes the text through a tool-call parser (the request has tools).
    pub fn with_tool_parser(mut self, parser: ToolParser) -> Self {
        self.tools = Some(parser);
        self
    }

    pub fn start(&self, id: &str) -> Bytes {
        frame(&ChatStreamEvent::MessageStart {
            id: id.to_string(),
            delta: MessageStartDelta {
                message: MessageStartBody::assistant(),
            },
        })
    }

    /// Frames for one engine event, then `[DONE]` after the last one.
    pub fn event(&mut self, event: StreamEvent) -> Vec<Bytes> {
        let mut out = Vec::new();
        if self.outcome.is_some() {
            return out;
        }
        match event {
            StreamEvent::Text {
                text,
                token_ids,
                logprobs,
            } if self.tools.is_some() => {
                self.output_tokens += token_ids.len();
                self.pending.token_ids.extend(token_ids);
                self.pending.logprobs.extend(logprobs);
                let events = self.tools.as_mut().map(|p| p.push(&text));
                self.tool_events(&mut out, events.unwrap_or_default());
            }
            StreamEvent::Text {
                text,
                token_ids,
                logprobs,
            } => {
                self.output_tokens += token_ids.len();
                self.content_delta(&mut out, text, token_ids, logprobs);
            }
            StreamEvent::Done {
                reason,
                prompt_tokens,
                output_tokens,
            } => {
                let mut finish_reason = map_finish_reason(reason);
                if let Some(parser) = self.tools.as_mut() {
                    let events = parser.finish();
                    let calls = parser.calls();
                    self.tool_events(&mut out, events);
                    if calls > 0 {
                        finish_reason = FinishReason::ToolCall;
                    }
                }
                self.finish(&mut out, finish_reason, prompt_tokens, output_tokens, None);
            }
            StreamEvent::Error { message } => {
                let (input, output) = (self.prompt_tokens, self.output_tokens);
                self.finish(&mut out, FinishReason::Error, input, output, Some(message));
            }
        }
        out
    }

    /// The engine's channel closed without a final event: the engine failed under us.
    pub fn closed(&mut self) -> Vec<Bytes> {
        self.event(StreamEvent::Error {
            message: "the engine stopped before the reply was complete".into(),
        })
    }

    pub fn outcome(&self) -> Option<StreamOutcome> {
        self.outcome
    }

    /// Frames for what the tool parser reported.
    fn tool_events(&mut self, out: &mut Vec<Bytes>, events: Vec<ToolEvent>) {
        for event in events {
            match event {
                ToolEvent::Content(text) => {
                    let token_ids = std::mem::take(&mut self.pending.token_ids);
                    let logprobs = std::mem::take(&mut self.pending.logprobs);
                    self.content_delta(out, text, token_ids, logprobs);
                }
                ToolEvent::PlanDelta(tool_plan) => {
                    self.drop_pending();
                    out.push(frame(&ChatStreamEvent::ToolPlanDelta {
                        delta: ToolPlanDeltaDelta {
                            message: ToolPlanPiece { tool_plan },
                        },
                    }));
                }
                ToolEvent::CallStart { index, id, name } => {
                    self.drop_pending();
                    out.push(frame(&ChatStreamEvent::ToolCallStart {
                        index,
                        delta: ToolCallStartDelta {
                            message: ToolCallStartMessage {
                                tool_calls: ToolCallOut::function(id, name),
                            },
                        },
                    }));
                }
                ToolEvent::CallArgsDelta { index, text } => {
                    out.push(frame(&ChatStreamEvent::ToolCallDelta {
                        index,
                        delta: ToolCallDeltaDelta {
                            message: ToolCallDeltaMessage {
                                tool_calls: ToolCallArgumentsPiece {
                                    function: ArgumentsPiece { arguments: text },
                                },
                            },
                        },
                    }));
                }
                ToolEvent::CallEnd { index } => {
                    out.push(frame(&ChatStreamEvent::ToolCallEnd { index }));
                }
            }
        }
    }

    fn drop_pending(&mut self) {
        self.pending.token_ids.clear();
        self.pending.logprobs.clear();
    }

    /// A content-delta frame (after content-start if this is the first), with the tokens'
    /// logprobs when the request asked for them.
    fn content_delta(
        &mut self,
        out: &mut Vec<Bytes>,
        text: String,
        token_ids: Vec<u32>,
        logprobs: Vec<f32>,
    ) {
        self.open_content(out);
        let logprobs = self.logprobs.then(|| LogprobItem {
            text: text.clone(),
            token_ids,
            logprobs,
        });
        out.push(frame(&ChatStreamEvent::ContentDelta {
            index: 0,
            delta: ContentDeltaDelta {
                message: ContentDeltaMessage {
                    content: TextPiece { text },
                },
            },
            logprobs,
        }));
    }

    fn open_content(&mut self, out: &mut Vec<Bytes>) {
        if !self.content_open {
            self.content_open = true;
            out.push(frame(&ChatStreamEvent::ContentStart {
                index: 0,
                delta: ContentStartDelta {
                    message: ContentStartMessage {
                        content: ResponseContent::Text {
                            text: String::new(),
                        },
                    },
                },
            }));
        }
    }

    fn finish(
        &mut self,
        out: &mut Vec<Bytes>,
        finish_reason: FinishReason,
        input_tokens: usize,
        output_tokens: usize,
        error: Option<String>,
    ) {
        let made_calls = self.tools.as_ref().is_some_and(|p| p.calls() > 0);
        if !made_calls {
            self.open_content(out);
        }
        if self.content_open {
            out.push(frame(&ChatStreamEvent::ContentEnd { index: 0 }));
        }
        out.push(frame(&ChatStreamEvent::MessageEnd {
            delta: MessageEndDelta {
                finish_reason,
                usage: Some(Usage::real(input_tokens, output_tokens)),
                error,
            },
        }));
        out.push(Bytes::from_static(DONE));
        self.outcome = Some(StreamOutcome {
            finish_reason,
            input_tokens,
            output_tokens,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runner::engine::FinishReason as EngineFinish;

    fn text(t: &str, ids: &[u32], lp: &[f32]) -> StreamEvent {
        StreamEvent::Text {
            text: t.into(),
            token_ids: ids.to_vec(),
            logprobs: lp.to_vec(),
        }
    }

    fn concat(frames: &[Bytes]) -> String {
        frames
            .iter()
            .map(|b| std::str::from_utf8(b).unwrap())
            .collect()
    }

    #[test]
    fn fixed_event_list_encodes_to_exact_bytes() {
        let mut enc = SseEncoder::new(false, 71);
        let mut frames = vec![enc.start("29f14a5a-11de-4cae-9800-25e4747408ea")];
        frames.extend(enc.event(text("LL", &[5], &[])));
        frames.extend(enc.event(text("Ms", &[6], &[])));
        frames.extend(enc.event(StreamEvent::Done {
            reason: EngineFinish::EndOfTurn,
            prompt_tokens: 71,
            output_tokens: 2,
        }));
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
            r#"data: {"type":"message-end","delta":{"finish_reason":"COMPLETE","usage":{"billed_units":{"input_tokens":71,"output_tokens":2},"tokens":{"input_tokens":71,"output_tokens":2}}}}"#,
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
        assert!(enc.event(text("late", &[1], &[])).is_empty());
    }

    #[test]
    fn brackets_in_strings_are_escaped_and_decode_back() {
        let mut enc = SseEncoder::new(false, 1);
        let frames = enc.event(text("say [DONE] now", &[1], &[]));
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
        let mut enc = SseEncoder::new(false, 1);
        let frames = enc.event(text("a\nb\r\nc", &[1, 2], &[]));
        let delta = std::str::from_utf8(frames.last().unwrap()).unwrap();
        assert_eq!(
            delta.matches('\n').count(),
            3,
            "event line, data line, blank line: {delta:?}"
        );
    }

    #[test]
    fn logprobs_ride_on_each_delta_when_asked() {
        let mut enc = SseEncoder::new(true, 3);
        let frames = enc.event(text("Hel", &[1, 2], &[-0.5, -0.25]));
        let delta = std::str::from_utf8(&frames[1]).unwrap();
        assert!(
            delta.ends_with("\"logprobs\":{\"text\":\"Hel\",\"token_ids\":[1,2],\"logprobs\":[-0.5,-0.25]}}\n\n"),
            "{delta}"
        );
        let mut without = SseEncoder::new(false, 3);
        let frames = without.event(text("Hel", &[1, 2], &[]));
        assert!(!std::str::from_utf8(&frames[1])
            .unwrap()
            .contains("logprobs"));
    }

    #[test]
    fn error_after_headers_ends_with_error_message_end_and_done() {
        let mut enc = SseEncoder::new(false, 10);
        let _ = enc.event(text("partial", &[1, 2, 3], &[]));
        let frames = enc.event(StreamEvent::Error {
            message: "forward pass failed".into(),
        });
        let all = concat(&frames);
        assert!(all.starts_with("event: content-end\n"));
        assert!(all.contains(r#"{"type":"message-end","delta":{"finish_reason":"ERROR","usage":{"billed_units":{"input_tokens":10,"output_tokens":3},"tokens":{"input_tokens":10,"output_tokens":3}},"error":"forward pass failed"}}"#), "{all}");
        assert!(all.ends_with("data: [DONE]\n\n"));
    }

    #[test]
    fn engine_vanishing_is_an_error_end_and_empty_answers_still_have_a_block() {
        let mut enc = SseEncoder::new(false, 4);
        let all = concat(&enc.closed());
        assert!(all.starts_with("event: content-start\n"), "{all}");
        assert!(all.contains(r#""finish_reason":"ERROR""#));
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

    fn tool_encoder(hold: usize, logprobs: bool) -> SseEncoder {
        use runner::tools::{format, ParseOptions, ToolFormatKind};
        let parser = format(ToolFormatKind::Generic).parser(ParseOptions {
            plan_hold_bytes: hold,
            id_seed: Some(1),
        });
        SseEncoder::new(logprobs, 9).with_tool_parser(parser)
    }

    #[test]
    fn tool_call_stream_is_plan_then_calls_then_tool_call_end() {
        let mut enc = tool_encoder(256, true);
        let mut frames = vec![enc.start("r")];
        for piece in [
            "I will",
            " look.<tool",
            "_calls>[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"[Paris]\"}},",
            " {\"name\": \"now\", \"arguments\": {}}]</tool_calls>",
        ] {
            frames.extend(enc.event(text(piece, &[1, 2], &[-0.5, -0.5])));
        }
        frames.extend(enc.event(StreamEvent::Done {
            reason: EngineFinish::EndOfTurn,
            prompt_tokens: 9,
            output_tokens: 8,
        }));
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
        let mut enc = tool_encoder(4, true);
        let mut frames = Vec::new();
        frames.extend(enc.event(text("Hel", &[1], &[-0.1])));
        frames.extend(enc.event(text("lo there", &[2, 3], &[-0.2, -0.3])));
        frames.extend(enc.event(text(" <tool", &[4], &[-0.4])));
        frames.extend(enc.event(StreamEvent::Done {
            reason: EngineFinish::EndOfTurn,
            prompt_tokens: 9,
            output_tokens: 4,
        }));
        let events = events(&frames);
        let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(types[0], "content-start");
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

    #[test]
    fn finish_reasons_map_to_cohere_names() {
        assert_eq!(
            map_finish_reason(EngineFinish::EndOfTurn),
            FinishReason::Complete
        );
        assert_eq!(
            map_finish_reason(EngineFinish::StopSequence),
            FinishReason::StopSequence
        );
        assert_eq!(
            map_finish_reason(EngineFinish::MaxTokens),
            FinishReason::MaxTokens
        );
    }
}
