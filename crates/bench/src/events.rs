//! Reading the two streaming formats the bench drives: Cohere v2 chat events and llama-server's
//! `/completion` chunks. Both are server-sent events; only the JSON inside differs.

use serde_json::Value;

/// One server-sent event: its `event:` name (if any) and its `data:` lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Splits a byte stream into events, whatever the chunk boundaries: lines may arrive split in
/// two, several events may share a chunk, and `\r\n` line ends are accepted.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
}

impl SseParser {
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) {
        for &b in bytes {
            if b == b'\n' {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.line_done(&line, out);
            } else {
                self.line.push(b);
            }
        }
    }

    /// The stream closed: an event not yet ended by a blank line still counts.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, out);
        }
        self.dispatch(out);
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        let line = String::from_utf8_lossy(line);
        if line.starts_with(':') {
            return; // comment (keep-alive)
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = self.event.take();
        if let Some(data) = self.data.take() {
            out.push(SseEvent { event, data });
        }
    }
}

/// The end of a stream as the server reported it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamEnd {
    pub output_tokens: Option<usize>,
    pub prompt_tokens: Option<usize>,
    /// Prompt tokens the server took from its prompt cache, where it says (Cohere's
    /// `usage.cached_tokens`, llama-server's `timings.cache_n`).
    pub cached_tokens: Option<usize>,
    /// The server ended the stream with an error.
    pub error: Option<String>,
}

/// What one event means to the bench.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// A piece of generated output arrived, with its reply text (empty for output that is not
    /// reply text, such as thinking, or a token that ends inside a UTF-8 character).
    Content(String),
    /// The stream is over (possibly with a last piece of content in the same event).
    End {
        content: Option<String>,
        end: StreamEnd,
    },
    /// Framing and bookkeeping events (message-start, content-start, `[DONE]`, ...).
    Other,
}

/// Reads a Cohere v2 chat stream event. `Err` for data that is not the documented JSON.
pub fn read_cohere(event: &SseEvent) -> Result<Reading, String> {
    if event.data.trim() == "[DONE]" {
        return Ok(Reading::Other);
    }
    let v: Value = serde_json::from_str(&event.data)
        .map_err(|e| format!("unreadable stream event ({e}): {}", clip(&event.data)))?;
    let kind = v["type"].as_str().or(event.event.as_deref()).unwrap_or("");
    match kind {
        "content-delta" => Ok(Reading::Content(
            v["delta"]["message"]["content"]["text"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )),
        "message-end" => {
            let delta = &v["delta"];
            let usage = &delta["usage"];
            let count = |field: &str| {
                usage["tokens"][field]
                    .as_u64()
                    .or_else(|| usage["billed_units"][field].as_u64())
                    .map(|n| n as usize)
            };
            let error = (delta["finish_reason"] == "ERROR").then(|| {
                delta["error"]
                    .as_str()
                    .unwrap_or("the stream ended with finish_reason ERROR")
                    .to_string()
            });
            Ok(Reading::End {
                content: None,
                end: StreamEnd {
                    output_tokens: count("output_tokens"),
                    prompt_tokens: count("input_tokens"),
                    // Cohere's `Usage.cached_tokens`: next to `billed_units` and `tokens`.
                    cached_tokens: usage["cached_tokens"].as_u64().map(|n| n as usize),
                    error,
                },
            })
        }
        _ => Ok(Reading::Other),
    }
}

/// Reads a llama-server `/completion` stream chunk: `{"content": "...", "stop": false, ...}`,
/// the last one with `"stop": true` and the server's token counts.
pub fn read_llama(event: &SseEvent) -> Result<Reading, String> {
    if event.data.trim() == "[DONE]" {
        return Ok(Reading::Other);
    }
    let v: Value = serde_json::from_str(&event.data)
        .map_err(|e| format!("unreadable stream chunk ({e}): {}", clip(&event.data)))?;
    if let Some(error) = v.get("error") {
        let message = error["message"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| error.to_string());
        return Ok(Reading::End {
            content: None,
            end: StreamEnd {
                error: Some(message),
                ..StreamEnd::default()
            },
        });
    }
    let text = v["content"].as_str().unwrap_or_default().to_string();
    if v["stop"].as_bool() == Some(true) {
        let count = |field: &str, timing: &str| {
            v[field]
                .as_u64()
                .or_else(|| v["timings"][timing].as_u64())
                .map(|n| n as usize)
        };
        return Ok(Reading::End {
            content: (!text.is_empty()).then_some(text),
            end: StreamEnd {
                output_tokens: count("tokens_predicted", "predicted_n"),
                // `tokens_evaluated` is the whole prompt; `timings.prompt_n` only the part the
                // server computed (the rest, `cache_n`, came from its prompt cache).
                prompt_tokens: count("tokens_evaluated", "prompt_n"),
                cached_tokens: v["timings"]["cache_n"].as_u64().map(|n| n as usize),
                error: None,
            },
        });
    }
    // llama-server sends one chunk per generated token; a token that ends inside a UTF-8
    // character has empty content but is still a token.
    Ok(Reading::Content(text))
}

fn clip(s: &str) -> &str {
    match s.char_indices().nth(200) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(stream: &str, piece: usize) -> Vec<SseEvent> {
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        for chunk in stream.as_bytes().chunks(piece) {
            parser.push(chunk, &mut out);
        }
        parser.finish(&mut out);
        out
    }

    const COHERE: &str = concat!(
        "event: message-start\n",
        r#"data: {"type":"message-start","id":"x","delta":{"message":{"role":"assistant"}}}"#,
        "\n\n: keep-alive\n\n",
        "event: content-start\n",
        r#"data: {"type":"content-start","index":0,"delta":{"message":{"content":{"type":"text","text":""}}}}"#,
        "\n\n",
        "event: content-delta\n",
        r#"data: {"type":"content-delta","index":0,"delta":{"message":{"content":{"text":"Hi \u005bthere]"}}}}"#,
        "\n\n",
        "event: content-delta\n",
        r#"data: {"type":"content-delta","index":0,"delta":{"message":{"content":{"text":"!"}}}}"#,
        "\n\n",
        "event: content-end\n",
        r#"data: {"type":"content-end","index":0}"#,
        "\n\n",
        "event: message-end\n",
        r#"data: {"type":"message-end","delta":{"finish_reason":"MAX_TOKENS","usage":{"billed_units":{"input_tokens":7,"output_tokens":3},"tokens":{"input_tokens":31,"output_tokens":3}}}}"#,
        "\n\n",
        "data: [DONE]\n\n",
    );

    #[test]
    fn events_survive_any_chunking() {
        let whole = parse_in_pieces(COHERE, COHERE.len());
        assert_eq!(whole.len(), 7, "{whole:?}");
        assert_eq!(whole[0].event.as_deref(), Some("message-start"));
        assert_eq!(whole[6].data, "[DONE]");
        for piece in [1, 2, 3, 7, 64] {
            assert_eq!(parse_in_pieces(COHERE, piece), whole, "piece size {piece}");
        }
        let crlf = COHERE.replace('\n', "\r\n");
        assert_eq!(parse_in_pieces(&crlf, 5), whole);
    }

    #[test]
    fn multi_line_data_and_an_unterminated_last_event() {
        let events = parse_in_pieces("data: a\ndata: b\n\ndata:c", 3);
        assert_eq!(
            events,
            vec![
                SseEvent {
                    event: None,
                    data: "a\nb".into()
                },
                SseEvent {
                    event: None,
                    data: "c".into()
                }
            ]
        );
    }

    #[test]
    fn cohere_stream_reads_as_two_contents_and_an_end_with_usage() {
        let readings: Vec<Reading> = parse_in_pieces(COHERE, 10)
            .iter()
            .map(|e| read_cohere(e).unwrap())
            .collect();
        let contents: Vec<&str> = readings
            .iter()
            .filter_map(|r| match r {
                Reading::Content(text) => Some(text.as_str()),
                _ => None,
            })
            .collect();
        // The reply text as sent, `\u005b` unescaped by the JSON parser.
        assert_eq!(contents, ["Hi [there]", "!"]);
        let ends: Vec<&Reading> = readings
            .iter()
            .filter(|r| matches!(r, Reading::End { .. }))
            .collect();
        assert_eq!(
            ends,
            [&Reading::End {
                content: None,
                end: StreamEnd {
                    output_tokens: Some(3),
                    prompt_tokens: Some(31),
                    cached_tokens: None,
                    error: None
                }
            }]
        );
    }

    #[test]
    fn cohere_cached_tokens_are_read_from_usage_when_present() {
        let end = |usage: &str| {
            let e = SseEvent {
                event: Some("message-end".into()),
                data: format!(
                    r#"{{"type":"message-end","delta":{{"finish_reason":"COMPLETE","usage":{usage}}}}}"#
                ),
            };
            match read_cohere(&e).unwrap() {
                Reading::End { end, .. } => end,
                other => panic!("{other:?}"),
            }
        };
        let hit = end(
            r#"{"billed_units":{"input_tokens":7,"output_tokens":3},"tokens":{"input_tokens":1200,"output_tokens":3},"cached_tokens":1152}"#,
        );
        assert_eq!(
            (hit.prompt_tokens, hit.cached_tokens, hit.output_tokens),
            (Some(1200), Some(1152), Some(3))
        );
        let cold = end(r#"{"tokens":{"input_tokens":40,"output_tokens":2},"cached_tokens":0}"#);
        assert_eq!(cold.cached_tokens, Some(0));
        // A server without a prompt cache leaves the field out: nothing to report, not zero.
        let absent = end(r#"{"tokens":{"input_tokens":40,"output_tokens":2}}"#);
        assert_eq!(absent.cached_tokens, None);
    }

    #[test]
    fn cohere_error_end_and_garbage() {
        let e = SseEvent {
            event: Some("message-end".into()),
            data: r#"{"type":"message-end","delta":{"finish_reason":"ERROR","error":"forward pass failed","usage":{"billed_units":{"input_tokens":1,"output_tokens":0}}}}"#.into(),
        };
        match read_cohere(&e).unwrap() {
            Reading::End { end, .. } => {
                assert_eq!(end.error.as_deref(), Some("forward pass failed"));
                assert_eq!(end.output_tokens, Some(0));
            }
            other => panic!("{other:?}"),
        }
        let bad = SseEvent {
            event: None,
            data: "{not json".into(),
        };
        assert!(read_cohere(&bad).unwrap_err().contains("unreadable"));
    }

    #[test]
    fn llama_chunks_and_final_counts() {
        let stream = concat!(
            r#"data: {"index":0,"content":" The","tokens":[],"stop":false,"id_slot":-1}"#,
            "\n\n",
            r#"data: {"index":0,"content":"","tokens":[],"stop":false,"id_slot":-1}"#,
            "\n\n",
            r#"data: {"index":0,"content":"","stop":true,"tokens_predicted":2,"tokens_evaluated":30,"timings":{"prompt_n":30,"predicted_n":2}}"#,
            "\n\n",
        );
        let readings: Vec<Reading> = parse_in_pieces(stream, 4)
            .iter()
            .map(|e| read_llama(e).unwrap())
            .collect();
        assert_eq!(
            readings,
            vec![
                Reading::Content(" The".into()),
                Reading::Content(String::new()),
                Reading::End {
                    content: None,
                    end: StreamEnd {
                        output_tokens: Some(2),
                        prompt_tokens: Some(30),
                        cached_tokens: None,
                        error: None
                    }
                }
            ]
        );
        // Older servers report the counts only in timings; a last chunk may carry text.
        let e = SseEvent {
            event: None,
            data: r#"{"content":"!","stop":true,"timings":{"prompt_n":5,"predicted_n":9}}"#.into(),
        };
        assert_eq!(
            read_llama(&e).unwrap(),
            Reading::End {
                content: Some("!".into()),
                end: StreamEnd {
                    output_tokens: Some(9),
                    prompt_tokens: Some(5),
                    cached_tokens: None,
                    error: None
                }
            }
        );
        // With cache_prompt: the whole prompt in tokens_evaluated, the reused part in cache_n.
        let e = SseEvent {
            event: None,
            data: r#"{"content":"","stop":true,"tokens_predicted":4,"tokens_evaluated":900,"timings":{"cache_n":870,"prompt_n":30,"predicted_n":4}}"#.into(),
        };
        match read_llama(&e).unwrap() {
            Reading::End { end, .. } => assert_eq!(
                (end.prompt_tokens, end.cached_tokens),
                (Some(900), Some(870))
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn llama_error_chunk_is_an_error_end() {
        let e = SseEvent {
            event: None,
            data: r#"{"error":{"code":500,"message":"context full","type":"server_error"}}"#.into(),
        };
        match read_llama(&e).unwrap() {
            Reading::End { end, .. } => assert_eq!(end.error.as_deref(), Some("context full")),
            other => panic!("{other:?}"),
        }
        assert!(read_llama(&SseEvent {
            event: None,
            data: "oops".into()
        })
        .is_err());
    }
}
