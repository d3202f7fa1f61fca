//! Stop sequences over text split every possible way.

use proptest::prelude::*;
use runner::stop::StopMatcher;

/// The obvious, non-streaming answer: scan the whole text for the stop sequence that completes
/// first (at equal ends, the longer one), and cut before it.
fn reference(text: &str, stops: &[&str]) -> (String, bool) {
    for end in 1..=text.len() {
        if !text.is_char_boundary(end) {
            continue;
        }
        let done = &text[..end];
        let best = stops
            .iter()
            .filter(|s| !s.is_empty() && done.ends_with(*s))
            .max_by_key(|s| s.len());
        if let Some(stop) = best {
            return (done[..end - stop.len()].to_string(), true);
        }
    }
    (text.to_string(), false)
}

/// Feeds `pieces` in order; returns everything emitted (plus `finish` if no stop) and whether
/// a stop sequence ended it.
fn run(pieces: &[&str], stops: &[&str]) -> (String, bool) {
    let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
    let mut out = String::new();
    for piece in pieces {
        let o = m.push(piece);
        out.push_str(&o.emit);
        if o.stopped {
            assert!(m.is_stopped());
            return (out, true);
        }
    }
    out.push_str(&m.finish());
    (out, false)
}

fn char_boundaries(text: &str) -> Vec<usize> {
    (0..=text.len())
        .filter(|&i| text.is_char_boundary(i))
        .collect()
}

/// (text, stops, expected emitted text, stopped)
const CASES: &[(&str, &[&str], &str, bool)] = &[
    ("Hello world", &["world"], "Hello ", true),
    ("Hello world", &["xyz"], "Hello world", false),
    ("Hello world", &[], "Hello world", false),
    ("Hello world", &[""], "Hello world", false),
    (
        "no stop at the end: wor",
        &["world"],
        "no stop at the end: wor",
        false,
    ),
    ("stop at start", &["stop"], "", true),
    ("a\n\nb", &["\n\n"], "a", true),
    // Overlapping stop sequences: the one that completes first wins.
    ("xabcd", &["abcd", "bc"], "xa", true),
    ("xabcd", &["bcd", "abc"], "x", true),
    ("aaab", &["aab", "ab"], "a", true),
    ("ababac", &["abac"], "ab", true),
    ("aaaa", &["aaa"], "", true),
    // A partial match that fails, then a real one later.
    ("<|im_<|im_end|>", &["<|im_end|>"], "<|im_", true),
    // Multi-byte characters in text and stops.
    ("naïve café 👋 bye", &["👋"], "naïve café ", true),
    ("日本語のテキスト", &["テキ", "のテ"], "日本語", true),
    ("éèê", &["èê"], "é", true),
];

#[test]
fn golden_cases_whole_and_split_at_every_boundary() {
    for &(text, stops, want, stopped) in CASES {
        assert_eq!(
            reference(text, stops),
            (want.to_string(), stopped),
            "reference disagrees on {text:?}"
        );
        assert_eq!(
            run(&[text], stops),
            (want.to_string(), stopped),
            "{text:?} {stops:?} in one piece"
        );
        let cuts = char_boundaries(text);
        for &i in &cuts {
            let pieces = [&text[..i], &text[i..]];
            assert_eq!(
                run(&pieces, stops),
                (want.to_string(), stopped),
                "{pieces:?} {stops:?}"
            );
            for &j in cuts.iter().filter(|&&j| j >= i) {
                let pieces = [&text[..i], &text[i..j], &text[j..]];
                assert_eq!(
                    run(&pieces, stops),
                    (want.to_string(), stopped),
                    "{pieces:?} {stops:?}"
                );
            }
        }
        // One character at a time, as a detokenizer often delivers text.
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let pieces: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(
            run(&pieces, stops),
            (want.to_string(), stopped),
            "char by char {text:?}"
        );
    }
}

#[test]
fn nothing_that_could_start_a_stop_is_emitted_early() {
    let mut m = StopMatcher::new(vec!["END".into(), "</tool>".into()]);
    assert_eq!(m.push("result <").emit, "result ");
    assert_eq!(m.push("/to").emit, "");
    assert_eq!(m.push("ol").emit, "");
    let out = m.push("> E");
    assert!(out.stopped);
    assert_eq!(out.emit, "");
}

#[test]
fn finish_releases_what_was_held() {
    let mut m = StopMatcher::new(vec!["STOP".into()]);
    assert_eq!(m.push("almost ST").emit, "almost ");
    assert_eq!(m.finish(), "ST");
    assert_eq!(m.finish(), "");
}

proptest! {
    /// Random text over a tiny alphabet (so stops overlap and recur), random stop sequences,
    /// random splits: streaming always equals the non-streaming answer.
    #[test]
    fn streaming_equals_reference(
        text in "[abcé\n]{0,24}",
        stops in prop::collection::vec("[abcé\n]{1,4}", 0..4),
        cuts in prop::collection::vec(0usize..40, 0..8),
    ) {
        let stops: Vec<&str> = stops.iter().map(String::as_str).collect();
        let bounds = char_boundaries(&text);
        let mut at: Vec<usize> = cuts.iter().map(|c| bounds[c % bounds.len()]).collect();
        at.push(0);
        at.push(text.len());
        at.sort_unstable();
        let pieces: Vec<&str> = at.windows(2).map(|w| &text[w[0]..w[1]]).collect();
        prop_assert_eq!(run(&pieces, &stops), reference(&text, &stops));
    }
}
