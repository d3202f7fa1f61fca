//! Tests of `reply`.

use super::*;
use crate::tools::{format, ParseOptions, ToolFormatKind};

fn text(t: &str, ids: &[u32]) -> StreamEvent {
    StreamEvent::Text {
        text: t.into(),
        token_ids: ids.to_vec(),
        logprobs: ids.iter().map(|&i| -(i as f32)).collect(),
    }
}

fn done(reason: FinishReason, output: usize) -> StreamEvent {
    StreamEvent::Done {
        reason,
        prompt_tokens: 7,
        output_tokens: output,
        cached_tokens: 0,
    }
}

fn run(options: ReplyOptions, events: Vec<StreamEvent>) -> Vec<ReplyEvent> {
    let mut assembler = ReplyAssembler::new(7, options);
    let mut out: Vec<ReplyEvent> = events.into_iter().flat_map(|e| assembler.push(e)).collect();
    assert!(assembler.is_over());
    assert!(assembler.push(text("late", &[1])).is_empty());
    out.extend(assembler.abort(ErrorKind::Server, "late"));
    out
}

fn tools(hold: usize) -> ReplyOptions {
    ReplyOptions {
        tools: Some(format(ToolFormatKind::Generic).parser(ParseOptions {
            plan_hold_bytes: hold,
            id_seed: Some(3),
        })),
        ..ReplyOptions::default()
    }
}

fn end(events: &[ReplyEvent]) -> &ReplyEnd {
    match events.last() {
        Some(ReplyEvent::End(end)) => end,
        other => panic!("no end: {other:?}"),
    }
}

/// A thinking model's reply: its thinking is block 0, the answer block 1, the markers in
/// neither, and every token is accounted for.
#[test]
fn thinking_is_its_own_block_before_the_text() {
    let options = ReplyOptions {
        thinking: crate::thinking::markers_of("<think></think>"),
        ..ReplyOptions::default()
    };
    let out = run(
        options,
        vec![
            text("<think>", &[1]),
            text("\nhm", &[2]),
            text("m</think>\n\n", &[3]),
            text("Yes.", &[4]),
            done(FinishReason::EndOfTurn, 4),
        ],
    );
    let mut blocks: Vec<(BlockKind, String)> = Vec::new();
    let mut ids: Vec<u32> = Vec::new();
    for event in &out {
        match event {
            ReplyEvent::ContentStart { index, kind } => {
                assert_eq!(*index, blocks.len());
                blocks.push((*kind, String::new()));
            }
            ReplyEvent::ContentDelta {
                index,
                text,
                token_ids,
                ..
            } => {
                blocks[*index].1.push_str(text);
                ids.extend(token_ids);
            }
            _ => {}
        }
    }
    assert_eq!(
        blocks,
        [
            (BlockKind::Thinking, "hmm".to_string()),
            (BlockKind::Text, "Yes.".to_string())
        ]
    );
    assert_eq!(ids, [1, 2, 3, 4]);
    assert_eq!(end(&out).usage.output_tokens, 4);
    // A reply cut while thinking still has its (empty) text block after the thinking.
    let options = ReplyOptions {
        thinking: crate::thinking::markers_of("<think></think>"),
        ..ReplyOptions::default()
    };
    let out = run(
        options,
        vec![text("<think>so", &[1]), done(FinishReason::MaxTokens, 1)],
    );
    let kinds: Vec<BlockKind> = out
        .iter()
        .filter_map(|e| match e {
            ReplyEvent::ContentStart { kind, .. } => Some(*kind),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, [BlockKind::Thinking, BlockKind::Text]);
}

/// The blocks of a reply, with their kinds and text.
fn blocks_of(out: &[ReplyEvent]) -> Vec<(BlockKind, String)> {
    let mut blocks: Vec<(BlockKind, String)> = Vec::new();
    for event in out {
        match event {
            ReplyEvent::ContentStart { kind, .. } => blocks.push((*kind, String::new())),
            ReplyEvent::ContentDelta { index, text, .. } => blocks[*index].1.push_str(text),
            ReplyEvent::PlanDelta { .. } | ReplyEvent::ToolCallStart { .. } => {
                panic!("a plain Command answer has no plan or call: {event:?}")
            }
            _ => {}
        }
    }
    blocks
}

/// Command with reasoning on: the prompt opened `<|START_THINKING|>`, the reply closes it and
/// answers inside `<|START_TEXT|>`; with the Command parser on a request without tools, no
/// marker reaches either block, however the text is chunked.
#[test]
fn a_command_reply_thinks_from_the_prompt_and_answers_without_markup() {
    let markers = crate::thinking::markers_of(
        "{% if reasoning %}<|START_THINKING|>{% else %}<|END_THINKING|>{% endif %}",
    );
    let reply = "Two and two.<|END_THINKING|><|START_TEXT|>It is 4.<|END_TEXT|>";
    let chars: Vec<char> = reply.chars().collect();
    for chunk in 1..=chars.len() {
        let options = ReplyOptions {
            // What the server gives a Command reply to a request without tools.
            tools: format(ToolFormatKind::Command).reply_parser(None),
            thinking: markers.clone(),
            thinking_opened: true,
            ..ReplyOptions::default()
        };
        let mut events: Vec<StreamEvent> = chars
            .chunks(chunk)
            .enumerate()
            .map(|(i, part)| text(&part.iter().collect::<String>(), &[i as u32]))
            .collect();
        let pieces = events.len();
        events.push(done(FinishReason::EndOfTurn, pieces));
        let out = run(options, events);
        assert_eq!(
            blocks_of(&out),
            [
                (BlockKind::Thinking, "Two and two.".to_string()),
                (BlockKind::Text, "It is 4.".to_string())
            ],
            "in {chunk}s"
        );
        assert_eq!(end(&out).finish, Finish::Complete);
    }
    // R7B's plain answer, without reasoning: only the text, unwrapped. Other formats need no
    // parser for a request without tools.
    assert!(format(ToolFormatKind::Hermes).reply_parser(None).is_none());
    let options = ReplyOptions {
        tools: format(ToolFormatKind::Command).reply_parser(None),
        ..ReplyOptions::default()
    };
    let out = run(
        options,
        vec![
            text("<|START_RESPONSE|>Hi", &[1]),
            text(" there.<|END_RESPONSE|>", &[2]),
            done(FinishReason::EndOfTurn, 2),
        ],
    );
    assert_eq!(
        blocks_of(&out),
        [(BlockKind::Text, "Hi there.".to_string())]
    );
}

fn documents(texts: &[&str]) -> Arc<[Source]> {
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let fields =
                serde_json::Map::from_iter([("snippet".to_string(), t.to_string().into())]);
            Source::new(
                format!("doc:{i}"),
                crate::grounding::SourceKind::Document,
                fields,
            )
        })
        .collect()
}

/// A Command reply's `<co>` markup never reaches the content: its spans are cited, after
/// their text and before the block ends, and the markup's tokens travel with the next text.
#[test]
fn native_citation_markup_becomes_citations_in_every_mode_but_off() {
    let sources = documents(&[
        "Lumra is in Vextor.",
        "Quenmoor is the capital of Zorblatt.",
    ]);
    let pieces = [
        ("It is <c", 1),
        ("o>Quen", 2),
        ("moor</co: 0", 3),
        (":[1]>.", 4),
    ];
    for mode in [
        CitationMode::Fast,
        CitationMode::Accurate,
        CitationMode::Off,
    ] {
        let options = ReplyOptions {
            sources: sources.clone(),
            citation_mode: mode,
            native_citations: true,
            ..ReplyOptions::default()
        };
        let mut events: Vec<StreamEvent> = pieces.iter().map(|(t, id)| text(t, &[*id])).collect();
        events.push(done(FinishReason::EndOfTurn, 4));
        let out = run(options, events);
        let (mut content, mut ids, mut citations) = (String::new(), Vec::<u32>::new(), Vec::new());
        for event in &out {
            match event {
                ReplyEvent::ContentDelta {
                    text, token_ids, ..
                } => {
                    content.push_str(text);
                    ids.extend(token_ids);
                }
                ReplyEvent::Citation { citation, .. } => {
                    assert!(content.chars().count() >= citation.end);
                    citations.push(citation.clone());
                }
                _ => {}
            }
        }
        assert_eq!(content, "It is Quenmoor.", "{mode:?}");
        assert_eq!(ids, [1, 2, 3, 4], "{mode:?}");
        if mode == CitationMode::Off {
            assert!(citations.is_empty());
            continue;
        }
        assert_eq!(citations.len(), 1, "{mode:?}: {citations:?}");
        assert_eq!((citations[0].start, citations[0].end), (6, 14));
        assert_eq!(citations[0].text, "Quenmoor");
        assert_eq!(citations[0].sources[0].id, "doc:1");
    }
    // A Command reply that marks nothing gets FAST's alignment instead.
    let options = ReplyOptions {
        sources: sources.clone(),
        citation_mode: CitationMode::Fast,
        native_citations: true,
        ..ReplyOptions::default()
    };
    let out = run(
        options,
        vec![
            text("Quenmoor is the capital of Zorblatt.", &[1]),
            done(FinishReason::EndOfTurn, 1),
        ],
    );
    assert!(
        out.iter()
            .any(|e| matches!(e, ReplyEvent::Citation { citation, .. }
            if citation.sources[0].id == "doc:1")),
        "{out:?}"
    );
}

#[test]
fn plain_text_is_one_block_and_an_end() {
    let events = run(
        ReplyOptions::default(),
        vec![
            text("Hel", &[1]),
            text("lo", &[2]),
            done(FinishReason::EndOfTurn, 2),
        ],
    );
    assert_eq!(
        events[..4],
        [
            ReplyEvent::ContentStart {
                index: 0,
                kind: BlockKind::Text
            },
            ReplyEvent::ContentDelta {
                index: 0,
                text: "Hel".into(),
                token_ids: vec![1],
                logprobs: vec![-1.0]
            },
            ReplyEvent::ContentDelta {
                index: 0,
                text: "lo".into(),
                token_ids: vec![2],
                logprobs: vec![-2.0]
            },
            ReplyEvent::ContentEnd { index: 0 },
        ]
    );
    let end = end(&events);
    assert_eq!(end.finish, Finish::Complete);
    assert_eq!(end.usage.output_tokens, 2);
    assert_eq!(events.len(), 5, "nothing after the end");
}

#[test]
fn an_empty_answer_still_has_a_block_and_an_error_closes_it() {
    let events = run(
        ReplyOptions::default(),
        vec![done(FinishReason::MaxTokens, 0)],
    );
    assert!(matches!(
        events[0],
        ReplyEvent::ContentStart { index: 0, .. }
    ));
    assert_eq!(events[1], ReplyEvent::ContentEnd { index: 0 });
    let events = run(
        ReplyOptions::default(),
        vec![
            text("par", &[4, 5]),
            StreamEvent::Error {
                message: "boom".into(),
                kind: ErrorKind::Server,
            },
        ],
    );
    let end = end(&events);
    assert_eq!(end.finish, Finish::Error);
    assert_eq!(end.usage.output_tokens, 2, "counted from the text events");
    assert_eq!(end.error.as_ref().unwrap().message, "boom");
    assert_eq!(
        events[events.len() - 2],
        ReplyEvent::ContentEnd { index: 0 }
    );
}

#[test]
fn tool_calls_come_without_a_text_block_and_end_with_tool_call() {
    let events = run(
        tools(256),
        vec![
            text("I will look.<tool_calls>", &[1, 2, 3]),
            text(
                "[{\"name\": \"f\", \"arguments\": {\"a\": 1}}]</tool_calls>",
                &[4],
            ),
            done(FinishReason::EndOfTurn, 4),
        ],
    );
    assert_eq!(
        events[0],
        ReplyEvent::PlanDelta {
            text: "I will look.".into()
        }
    );
    assert!(matches!(&events[1], ReplyEvent::ToolCallStart { index: 0, name, .. } if name == "f"));
    assert_eq!(
        events[2],
        ReplyEvent::ToolCallDelta {
            index: 0,
            arguments: "{\"a\":1}".into()
        }
    );
    assert_eq!(events[3], ReplyEvent::ToolCallEnd { index: 0 });
    assert_eq!(end(&events).finish, Finish::ToolCall);
    assert!(!events
        .iter()
        .any(|e| matches!(e, ReplyEvent::ContentStart { .. })));
}

#[test]
fn a_required_call_cut_in_its_plan_reports_the_plan() {
    let events = run(
        tools(usize::MAX),
        vec![
            text("I will look up the weather in", &[1, 2, 3]),
            done(FinishReason::MaxTokens, 3),
        ],
    );
    assert_eq!(
        events[0],
        ReplyEvent::PlanDelta {
            text: "I will look up the weather in".into()
        }
    );
    assert_eq!(end(&events).finish, Finish::MaxTokens);
    // A block cut short is dropped, not shown as content.
    let events = run(
        tools(usize::MAX),
        vec![
            text("Plan.<tool_calls>[{\"name\": \"f\", \"argu", &[1, 2]),
            done(FinishReason::MaxTokens, 2),
        ],
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, ReplyEvent::ContentDelta { text, .. } if !text.is_empty())),
        "{events:?}"
    );
    // Without a certain call, held text at a cut is the answer.
    let events = run(
        tools(256),
        vec![text("Just text", &[1]), done(FinishReason::MaxTokens, 1)],
    );
    assert!(events.iter().any(
        |e| matches!(e, ReplyEvent::ContentDelta { text, token_ids, .. } if text == "Just text" && token_ids == &[1])
    ));
}

#[tokio::test]
async fn the_stream_reads_events_in_order_and_a_vanished_engine_is_an_error() {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tx.send(text("a", &[1])).unwrap();
    drop(tx);
    let mut stream = ReplyStream::new(rx, ReplyAssembler::new(3, ReplyOptions::default()));
    let mut events = Vec::new();
    while let Some(event) = stream.next().await {
        events.push(event);
    }
    let end = end(&events);
    assert_eq!(end.finish, Finish::Error);
    assert_eq!(end.error.as_ref().unwrap().kind, ErrorKind::Server);
    assert_eq!(stream.usage().output_tokens, 1);
}
