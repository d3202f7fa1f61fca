//! Golden tests of the tool-call parsers: for each format, generated text in, events out; and the
//! same events for every way of cutting the text into pieces (at every char boundary, and one
//! char at a time), once adjacent deltas of one kind are joined.

use runner::tools::{format, is_call_id, ParseOptions, ToolEvent, ToolFormatKind};

use ToolFormatKind::{Command, Generic, Hermes, Llama3, Mistral};

/// What a test expects: like `ToolEvent`, with the call id checked for form only.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Want {
    Plan(&'static str),
    Content(&'static str),
    Call(usize, &'static str, &'static str),
}

use Want::{Call, Content, Plan};

struct Case {
    name: &'static str,
    format: ToolFormatKind,
    hold: usize,
    text: &'static str,
    want: Vec<Want>,
}

fn case(name: &'static str, format: ToolFormatKind, text: &'static str, want: Vec<Want>) -> Case {
    Case {
        name,
        format,
        hold: runner::tools::DEFAULT_PLAN_HOLD_BYTES,
        text,
        want,
    }
}

fn cases() -> Vec<Case> {
    let long_answer: &'static str = Box::leak(
        format!(
            "{}<tool_calls>[{{\"name\": \"f\", \"arguments\": {{}}}}]</tool_calls>",
            "word ".repeat(60)
        )
        .into_boxed_str(),
    );
    let long_answer_content: &'static str = Box::leak("word ".repeat(60).into_boxed_str());
    vec![
        // --- generic ---
        case("generic/answer", Generic, "Hello there! 2 < 3 and <tool_call> is not ours.", vec![
            Content("Hello there! 2 < 3 and <tool_call> is not ours."),
        ]),
        case(
            "generic/plan+call",
            Generic,
            "I will check the weather.\n<tool_calls>[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 2}}]</tool_calls>",
            vec![
                Plan("I will check the weather."),
                Call(0, "get_weather", r#"{"city":"Paris","days":2}"#),
            ],
        ),
        case(
            "generic/parallel",
            Generic,
            "<tool_calls>[\n {\"name\": \"a\", \"arguments\": {\"x\": [1, {\"y\": null}]}},\n {\"name\": \"b\", \"arguments\": {}}\n]</tool_calls>",
            vec![Call(0, "a", r#"{"x":[1,{"y":null}]}"#), Call(1, "b", "{}")],
        ),
        case(
            "generic/cut-inside-the-closing-marker",
            Generic,
            "<tool_calls>[{\"name\": \"f\", \"arguments\": {\"a\": 1}}]</tool_calls",
            vec![Call(0, "f", r#"{"a":1}"#)],
        ),
        case(
            "generic/marker-inside-string",
            Generic,
            "<tool_calls>[{\"name\": \"search\", \"arguments\": {\"q\": \"</tool_calls> \\\"]}\\\" [x]\"}}]</tool_calls>",
            vec![Call(0, "search", r#"{"q":"</tool_calls> \"]}\" [x]"}"#)],
        ),
        case(
            "generic/arguments-as-string",
            Generic,
            "<tool_calls>[{\"name\": \"f\", \"arguments\": \"{\\\"a\\\": 1}\"}]</tool_calls>",
            vec![Call(0, "f", r#"{"a":1}"#)],
        ),
        case(
            "generic/unicode",
            Generic,
            "Voilà 🎉 je cherche.<tool_calls>[{\"name\": \"f\", \"arguments\": {\"s\": \"é漢\"}}]</tool_calls>",
            vec![Plan("Voilà 🎉 je cherche."), Call(0, "f", r#"{"s":"é漢"}"#)],
        ),
        case(
            "generic/bad-json-is-content-without-markers",
            Generic,
            "Plan.<tool_calls>[{\"name\": oops}]</tool_calls>",
            vec![Plan("Plan."), Content("[{\"name\": oops}]")],
        ),
        case(
            "generic/no-name-is-content",
            Generic,
            "<tool_calls>[{\"arguments\": {}}]</tool_calls>",
            vec![Content("[{\"arguments\": {}}]")],
        ),
        case(
            "generic/cut-off-call",
            Generic,
            "Plan<tool_calls>[{\"name\": \"f\", \"argu",
            vec![Plan("Plan"), Content("[{\"name\": \"f\", \"argu")],
        ),
        case(
            "generic/cut-off-second-call-keeps-first",
            Generic,
            "<tool_calls>[{\"name\": \"f\", \"arguments\": {}}, {\"name\": \"g\", \"argu",
            vec![Call(0, "f", "{}")],
        ),
        case(
            "generic/text-after-calls",
            Generic,
            "<tool_calls>[{\"name\": \"f\", \"arguments\": {\"k\": 1}}]</tool_calls>\n  Done.  ",
            vec![Call(0, "f", r#"{"k":1}"#), Content("Done.")],
        ),
        case(
            "generic/lone-object",
            Generic,
            "<tool_calls>{\"name\": \"f\", \"arguments\": {\"k\": true}}</tool_calls>",
            vec![Call(0, "f", r#"{"k":true}"#)],
        ),
        case(
            "generic/marker-prefix-at-end-is-text",
            Generic,
            "The tag is <tool_cal",
            vec![Content("The tag is <tool_cal")],
        ),
        case("generic/long-text-then-call", Generic, long_answer, vec![
            Content(long_answer_content),
            Call(0, "f", "{}"),
        ]),
        Case {
            name: "generic/no-hold-streams-content",
            format: Generic,
            hold: 0,
            text: "Sure.<tool_calls>[{\"name\": \"f\", \"arguments\": {}}]</tool_calls>",
            want: vec![Content("Sure."), Call(0, "f", "{}")],
        },
        Case {
            name: "generic/hold-all",
            format: Generic,
            hold: usize::MAX,
            text: long_answer,
            want: vec![Plan(long_answer_content.trim_end()), Call(0, "f", "{}")],
        },
        // --- hermes / qwen ---
        case(
            "hermes/call",
            Hermes,
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"location\": \"Madrid\"}}\n</tool_call>",
            vec![Call(0, "get_weather", r#"{"location":"Madrid"}"#)],
        ),
        case(
            "hermes/plan+parallel",
            Hermes,
            "Let me look both up.\n<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n{\"arguments\": {\"z\": \"</tool_call>\"}, \"name\": \"b\"}\n</tool_call>",
            vec![Plan("Let me look both up."), Call(0, "a", "{}"), Call(1, "b", r#"{"z":"</tool_call>"}"#)],
        ),
        case("hermes/answer", Hermes, "It is 24C in <b>Madrid</b>.", vec![
            Content("It is 24C in <b>Madrid</b>."),
        ]),
        // --- llama 3 ---
        case(
            "llama3/call",
            Llama3,
            "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}",
            vec![Call(0, "get_weather", r#"{"city":"Paris"}"#)],
        ),
        case(
            "llama3/python-tag-and-two-calls",
            Llama3,
            " <|python_tag|>{\"type\": \"function\", \"name\": \"a\", \"parameters\": {\"q\": \"{x}\"}}; {\"name\": \"b\", \"arguments\": {}}",
            vec![Call(0, "a", r#"{"q":"{x}"}"#), Call(1, "b", "{}")],
        ),
        case("llama3/answer", Llama3, "The answer is {4}.", vec![Content("The answer is {4}.")]),
        case("llama3/spaced-answer", Llama3, "\n  Four.", vec![Content("\n  Four.")]),
        case("llama3/json-answer", Llama3, "{\"answer\": 4}", vec![Content("{\"answer\": 4}")]),
        // --- mistral ---
        case(
            "mistral/parallel",
            Mistral,
            "[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {\"a\": 1}}, {\"name\": \"g\", \"arguments\": {}}]",
            vec![Call(0, "f", r#"{"a":1}"#), Call(1, "g", "{}")],
        ),
        case("mistral/answer", Mistral, "Bonjour [TOOL] !", vec![Content("Bonjour [TOOL] !")]),
        // --- command ---
        case(
            "command/plan+call",
            Command,
            "<|START_THINKING|>I will search for it.<|END_THINKING|><|START_ACTION|>[\n    {\"tool_call_id\": \"0\", \"tool_name\": \"search\", \"parameters\": {\"q\": \"penguins\"}}\n]<|END_ACTION|>",
            vec![Plan("I will search for it."), Call(0, "search", r#"{"q":"penguins"}"#)],
        ),
        case(
            "command/response",
            Command,
            "<|START_RESPONSE|>Emperor penguins are the tallest.<|END_RESPONSE|>",
            vec![Content("Emperor penguins are the tallest.")],
        ),
    ]
}

fn parse_pieces(case: &Case, pieces: &[&str]) -> Vec<ToolEvent> {
    let options = ParseOptions {
        plan_hold_bytes: case.hold,
        id_seed: Some(42),
    };
    let mut parser = format(case.format).parser(options);
    let mut events = Vec::new();
    for piece in pieces {
        events.extend(parser.push(piece));
    }
    events.extend(parser.finish());
    events
}

/// Joins adjacent deltas of one kind (chunking changes how text is split, nothing else).
fn coalesce(events: Vec<ToolEvent>) -> Vec<ToolEvent> {
    let mut out: Vec<ToolEvent> = Vec::new();
    for event in events {
        match (out.last_mut(), event) {
            (Some(ToolEvent::PlanDelta(a)), ToolEvent::PlanDelta(b)) => a.push_str(&b),
            (Some(ToolEvent::Content(a)), ToolEvent::Content(b)) => a.push_str(&b),
            (
                Some(ToolEvent::CallArgsDelta { index: i, text: a }),
                ToolEvent::CallArgsDelta { index: j, text: b },
            ) if *i == j => a.push_str(&b),
            (_, event) => out.push(event),
        }
    }
    out
}

fn to_want(events: &[ToolEvent]) -> Vec<(String, String, String)> {
    // (kind, name or index, text) triples; ids are checked separately.
    let mut out = Vec::new();
    let mut i = 0;
    while i < events.len() {
        match &events[i] {
            ToolEvent::PlanDelta(t) => out.push(("plan".into(), String::new(), t.clone())),
            ToolEvent::Content(t) => out.push(("content".into(), String::new(), t.clone())),
            ToolEvent::CallStart { index, id, name } => {
                assert!(is_call_id(id, name), "bad id {id} for {name}");
                let args = match events.get(i + 1) {
                    Some(ToolEvent::CallArgsDelta { index: j, text }) if j == index => {
                        i += 1;
                        text.clone()
                    }
                    _ => String::new(),
                };
                assert_eq!(
                    events.get(i + 1),
                    Some(&ToolEvent::CallEnd { index: *index }),
                    "call {index} not ended right after its arguments: {events:?}"
                );
                i += 1;
                out.push((format!("call {index}"), name.clone(), args));
            }
            other => panic!("unexpected event order at {i}: {other:?} in {events:?}"),
        }
        i += 1;
    }
    out
}

fn want_triples(want: &[Want]) -> Vec<(String, String, String)> {
    want.iter()
        .map(|w| match w {
            Plan(t) => ("plan".into(), String::new(), t.to_string()),
            Content(t) => ("content".into(), String::new(), t.to_string()),
            Call(i, name, args) => (format!("call {i}"), name.to_string(), args.to_string()),
        })
        .collect()
}

#[test]
fn golden_replies_give_the_expected_events() {
    for case in cases() {
        let events = coalesce(parse_pieces(&case, &[case.text]));
        assert_eq!(
            to_want(&events),
            want_triples(&case.want),
            "case {}",
            case.name
        );
        for event in &events {
            if let ToolEvent::CallArgsDelta { text, .. } = event {
                let value: serde_json::Value = serde_json::from_str(text).unwrap();
                assert!(value.is_object(), "{}: {text}", case.name);
            }
        }
    }
}

#[test]
fn every_split_gives_the_same_events() {
    for case in cases() {
        let whole = coalesce(parse_pieces(&case, &[case.text]));
        let text = case.text;
        for at in (1..text.len()).filter(|&i| text.is_char_boundary(i)) {
            let split = coalesce(parse_pieces(&case, &[&text[..at], &text[at..]]));
            assert_eq!(split, whole, "case {} split at byte {at}", case.name);
        }
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let pieces: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(
            coalesce(parse_pieces(&case, &pieces)),
            whole,
            "case {} one char at a time",
            case.name
        );
        // Three pieces of varying size as well.
        for step in [2usize, 3, 5, 7] {
            let mut pieces = Vec::new();
            let mut start = 0;
            let mut n = 0;
            while start < text.len() {
                let mut end = (start + step + n % 3).min(text.len());
                while !text.is_char_boundary(end) {
                    end += 1;
                }
                pieces.push(&text[start..end]);
                start = end;
                n += 1;
            }
            assert_eq!(
                coalesce(parse_pieces(&case, &pieces)),
                whole,
                "case {} in pieces of ~{step}",
                case.name
            );
        }
    }
}

#[test]
fn markup_never_reaches_plan_or_content_in_any_piece() {
    let markers = [
        "<tool_calls>",
        "</tool_calls>",
        "<tool_call>",
        "</tool_call>",
        "[TOOL_CALLS]",
        "<|START_ACTION|>",
        "<|END_ACTION|>",
        "<|START_THINKING|>",
        "<|END_THINKING|>",
        "<|START_RESPONSE|>",
        "<|END_RESPONSE|>",
        "<|python_tag|>",
    ];
    for case in cases() {
        let chars: Vec<String> = case.text.chars().map(String::from).collect();
        let pieces: Vec<&str> = chars.iter().map(String::as_str).collect();
        for event in coalesce(parse_pieces(&case, &pieces)) {
            let text = match &event {
                ToolEvent::PlanDelta(t) | ToolEvent::Content(t) => t,
                _ => continue,
            };
            // Only the format's own markers are markup (generic answers may mention others).
            let own = format(case.format);
            let own_markers = [own.markers().open, own.markers().close];
            for m in markers.iter().filter(|m| {
                own_markers.contains(m)
                    || own
                        .sections()
                        .iter()
                        .any(|s| s.open == **m || s.close == **m)
            }) {
                assert!(
                    !text.contains(m),
                    "case {}: {m} leaked into {event:?}",
                    case.name
                );
            }
        }
    }
}

#[test]
fn ids_differ_between_calls_and_parsers() {
    let text = "<tool_calls>[{\"name\": \"f\", \"arguments\": {}}, {\"name\": \"f\", \"arguments\": {}}]</tool_calls>";
    let ids = |seed: Option<u64>| -> Vec<String> {
        let mut parser = format(Generic).parser(ParseOptions {
            id_seed: seed,
            ..ParseOptions::default()
        });
        let mut events = parser.push(text);
        events.extend(parser.finish());
        events
            .into_iter()
            .filter_map(|e| match e {
                ToolEvent::CallStart { id, .. } => Some(id),
                _ => None,
            })
            .collect()
    };
    let a = ids(None);
    let b = ids(None);
    assert_eq!(a.len(), 2);
    assert_ne!(a[0], a[1]);
    assert_ne!(a, b);
    assert!(a.iter().all(|id| is_call_id(id, "f")));
}
