//! Turns the engine's `StreamEvent`s into Cohere's server-sent events, byte for byte.
//!
//! Framing: `event: <type>\n`, ONE `data: <compact json>\n` line, a blank line; `data: [DONE]`
//! at the end. Inside JSON strings `[` is written `\u005b`: the TypeScript SDK ends a stream at
//! any data line containing the substring `[DONE]`, and the escape decodes the same everywhere.

use axum::body::Bytes;
use runner::engine::StreamEvent;
use serde::Serialize;

use crate::wire::{
    ChatStreamEvent, ContentDeltaDelta, ContentDeltaMessage, ContentStartDelta,
    ContentStartMessage, FinishReason, LogprobItem, MessageEndDelta, MessageStartBody,
    MessageStartDelta, ResponseContent, TextPiece, Usage,
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
/// The text block is opened lazily at the first piece (or at the end, for an empty answer) so
/// that every stream has exactly one content-start/content-end pair around its deltas.
#[derive(Debug)]
pub struct SseEncoder {
    logprobs: bool,
    prompt_tokens: usize,
    output_tokens: usize,
    content_open: bool,
    outcome: Option<StreamOutcome>,
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
            } => {
                self.open_content(&mut out);
                self.output_tokens += token_ids.len();
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
            StreamEvent::Done {
                reason,
                prompt_tokens,
                output_tokens,
            } => {
                self.finish(
                    &mut out,
                    map_finish_reason(reason),
                    prompt_tokens,
                    output_tokens,
                    None,
                );
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
        self.open_content(out);
        out.push(frame(&ChatStreamEvent::ContentEnd { index: 0 }));
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
