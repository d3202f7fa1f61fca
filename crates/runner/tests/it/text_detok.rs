//! Incremental detokenization over the real SmolLM2 and Gemma 3 tokenizers.

use super::text_support;

use runner::detok::Detokenizer;
use runner::tokenizer::TokenizerBundle;
use text_support::*;

/// Streams `ids` one at a time; returns every piece, the final flush last.
fn stream(bundle: &TokenizerBundle, ids: &[u32]) -> Vec<String> {
    let mut detok = Detokenizer::new(bundle.tokenizer.clone());
    let mut pieces: Vec<String> = ids.iter().map(|&id| detok.push(id).unwrap()).collect();
    pieces.push(detok.flush().unwrap());
    assert_eq!(detok.tokens(), ids);
    pieces
}

/// Pieces join to the full decode, and no piece carries a broken character that the full
/// decode does not have.
fn assert_streams_cleanly(bundle: &TokenizerBundle, ids: &[u32]) -> Vec<String> {
    let full = bundle.decode(ids).unwrap();
    let pieces = stream(bundle, ids);
    // A character left incomplete at the very end is dropped, never sent as U+FFFD.
    assert_eq!(
        pieces.concat(),
        full.trim_end_matches('\u{FFFD}'),
        "pieces {pieces:?}"
    );
    if !full.contains('\u{FFFD}') {
        assert!(
            pieces.iter().all(|p| !p.contains('\u{FFFD}')),
            "broken piece in {pieces:?}"
        );
    }
    pieces
}

fn streams_the_corpus(bundle: &TokenizerBundle, model_file: &str) -> usize {
    let mut held_back = 0;
    for case in tokenize_cases(model_file) {
        let pieces = assert_streams_cleanly(bundle, &case.ids);
        assert_eq!(pieces.concat(), case.detokenized);
        // A token that completes no character yields nothing until one does.
        held_back += pieces[..pieces.len() - 1]
            .iter()
            .filter(|p| p.is_empty())
            .count();
    }
    held_back
}

#[test]
fn smollm2_streams_multilingual_text() {
    let held = streams_the_corpus(smollm2(), SMOLLM2_FILE);
    assert!(
        held > 10,
        "byte-level tokens of CJK/emoji should have been held back ({held})"
    );
}

#[test]
fn gemma3_streams_multilingual_text() {
    let held = streams_the_corpus(gemma3(), GEMMA3_FILE);
    assert!(
        held > 0,
        "emoji built from byte-fallback tokens should have been held back ({held})"
    );
}

#[test]
fn greedy_outputs_stream_to_their_text() {
    for (bundle, file) in [
        (smollm2(), "greedy-SmolLM2-135M-Instruct.Q4_1.jsonl"),
        (gemma3(), "greedy-gemma-3-270m-q4_k_m.jsonl"),
    ] {
        for case in read_jsonl(file) {
            // llama.cpp's text leaves out the end-of-turn token it stopped on.
            let mut ids = ids(&case["greedy_ids"]);
            if case["stop_type"] == "eos" {
                assert!(bundle.is_end_of_turn(ids.pop().unwrap()));
            }
            let pieces = assert_streams_cleanly(bundle, &ids);
            assert_eq!(pieces.concat(), case["greedy_text"].as_str().unwrap());
        }
    }
}

/// Spaces between words survive streaming in both tokenizer styles (Ġ and ▁).
#[test]
fn word_boundaries_keep_their_spaces() {
    let text = "Hello world, ça va? 你好 世界 🎉 ok";
    for bundle in [smollm2(), gemma3()] {
        let ids = bundle.encode(text, false).unwrap();
        let pieces = assert_streams_cleanly(bundle, &ids);
        assert_eq!(pieces.concat(), text);
        assert!(pieces.iter().any(|p| p.starts_with(' ')), "{pieces:?}");
    }
}

/// A lone lead byte of a multi-byte character that never completes: held while it might, and
/// dropped by flush (a reply cut inside a character never ends in U+FFFD).
#[test]
fn an_incomplete_character_at_the_end_is_dropped_by_flush() {
    let gemma = gemma3();
    let lead = gemma.tokenizer.token_to_id("<0xE4>").unwrap();
    let mut ids = gemma.encode("ab", false).unwrap();
    ids.push(lead);
    let pieces = stream(gemma, &ids);
    assert_eq!(pieces[pieces.len() - 2], "", "the lead byte alone is held");
    assert_eq!(pieces.last().unwrap(), "");
    assert_eq!(gemma.decode(&ids).unwrap(), "ab\u{FFFD}");
    assert_eq!(pieces.concat(), "ab");

    // SmolLM2's byte-level tokens: an emoji cut after its first token.
    let smol = smollm2();
    let wave = smol.encode("🌊🌊", false).unwrap();
    assert!(wave.len() > 2, "an emoji spans tokens here: {wave:?}");
    let cut = &wave[..wave.len() - 1];
    let pieces = stream(smol, cut);
    assert_eq!(pieces.concat(), "🌊");
    assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{pieces:?}");

    // Completed by the next bytes (E4 BD A0 is 你), it streams as the character.
    let mut ids = vec![lead];
    ids.push(gemma.tokenizer.token_to_id("<0xBD>").unwrap());
    ids.push(gemma.tokenizer.token_to_id("<0xA0>").unwrap());
    assert_eq!(stream(gemma, &ids), vec!["", "", "你", ""]);
}
