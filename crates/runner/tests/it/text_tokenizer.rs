//! Tokenizers built from GGUF metadata against llama.cpp's tokenizations of the same files.

use super::text_support;

use runner::tokenizer::{tokenizer_from_hf_dir, TokenizerBundle};
use text_support::*;

/// Every case must give llama.cpp's ids (no BOS: `add_special` false) and decode back to
/// llama.cpp's text; all mismatches are listed, not just the first.
fn assert_matches_llama_cpp(bundle: &TokenizerBundle, model_file: &str) {
    let cases = tokenize_cases(model_file);
    assert!(cases.len() > 20, "golden corpus is too small");
    let mut failures = Vec::new();
    for case in &cases {
        let ids = bundle.encode(&case.text, false).unwrap();
        if ids != case.ids {
            failures.push(format!(
                "encode {:?}\n  got  {ids:?}\n  want {:?}",
                case.text, case.ids
            ));
        }
        let text = bundle.decode(&case.ids).unwrap();
        if text != case.detokenized {
            failures.push(format!(
                "decode {:?}\n  got  {text:?}\n  want {:?}",
                case.ids, case.detokenized
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn smollm2_tokenizes_like_llama_cpp() {
    assert_matches_llama_cpp(smollm2(), SMOLLM2_FILE);
}

#[test]
fn gemma3_tokenizes_like_llama_cpp() {
    assert_matches_llama_cpp(gemma3(), GEMMA3_FILE);
}

#[test]
fn smollm2_special_tokens_come_from_the_file() {
    let t = smollm2();
    assert_eq!(
        t.bos.as_ref().map(|b| (b.id, b.text.as_str())),
        Some((1, "<|im_start|>"))
    );
    assert_eq!(
        t.eos.as_ref().map(|e| (e.id, e.text.as_str())),
        Some((2, "<|im_end|>"))
    );
    assert!(!t.add_bos);
    // EOS first, then <|endoftext|> (id 0), which the vocabulary also holds.
    assert_eq!(t.end_of_turn, vec![2, 0]);
    assert!(t.chat_template.as_deref().unwrap().contains("<|im_start|>"));
    // Control tokens written in text are single tokens; the rest of the text is not glued to them.
    let ids = t.encode("<|im_start|>user\nHi<|im_end|>", false).unwrap();
    assert_eq!((ids[0], ids[ids.len() - 1]), (1, 2), "{ids:?}");
    assert_eq!(
        t.encode("Hi", true).unwrap(),
        t.encode("Hi", false).unwrap()
    );
}

#[test]
fn gemma3_special_tokens_come_from_the_file() {
    let t = gemma3();
    assert_eq!(
        t.bos.as_ref().map(|b| (b.id, b.text.as_str())),
        Some((2, "<bos>"))
    );
    assert_eq!(
        t.eos.as_ref().map(|e| (e.id, e.text.as_str())),
        Some((1, "<eos>"))
    );
    assert!(t.add_bos);
    assert!(
        t.is_end_of_turn(1) && t.is_end_of_turn(106),
        "{:?}",
        t.end_of_turn
    );
    assert!(!t.is_end_of_turn(2));
    assert_eq!(
        t.chat_template, None,
        "the base model's GGUF has no template"
    );
    assert_eq!(t.encode("<start_of_turn>", false).unwrap(), vec![105]);
    let plain = t.encode("Hello", false).unwrap();
    assert_eq!(
        t.encode("Hello", true).unwrap(),
        [vec![2], plain.clone()].concat()
    );
    // A rendered chat that already starts with BOS does not get a second one.
    assert_eq!(
        t.encode_prompt("<bos>Hello").unwrap(),
        [vec![2], plain.clone()].concat()
    );
    assert_eq!(t.encode_prompt("Hello").unwrap(), [vec![2], plain].concat());
}

/// llama.cpp's prompts for the greedy goldens, tokenized with the BOS handling each file
/// declares.
#[test]
fn rendered_prompts_tokenize_like_llama_cpp() {
    for (bundle, file) in [
        (smollm2(), "greedy-SmolLM2-135M-Instruct.Q4_1.jsonl"),
        (gemma3(), "greedy-gemma-3-270m-q4_k_m.jsonl"),
    ] {
        for case in read_jsonl(file) {
            let prompt = case["rendered_prompt"].as_str().unwrap();
            assert_eq!(
                bundle.encode_prompt(prompt).unwrap(),
                ids(&case["prompt_ids"]),
                "{file}: {prompt:?}"
            );
            // llama.cpp's text leaves out the end-of-turn token it stopped on.
            let mut greedy = ids(&case["greedy_ids"]);
            if case["stop_type"] == "eos" {
                greedy.pop();
            }
            assert_eq!(
                bundle.decode(&greedy).unwrap(),
                case["greedy_text"].as_str().unwrap()
            );
        }
    }
}

/// A safetensors-style directory (tokenizer.json + tokenizer_config.json + generation_config.json)
/// loads into the same tokenizer. The directory is written from the GGUF-built tokenizer.
#[test]
fn hf_directory_round_trips() {
    let gguf = smollm2();
    let dir = std::env::temp_dir().join(format!("cohost-text-hf-dir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("tokenizer.json"),
        gguf.tokenizer.to_string(false).unwrap(),
    )
    .unwrap();
    let config = serde_json::json!({
        "bos_token": {"content": "<|im_start|>", "lstrip": false},
        "eos_token": "<|im_end|>",
        "add_bos_token": false,
        "chat_template": gguf.chat_template,
    });
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    std::fs::write(
        dir.join("generation_config.json"),
        r#"{"eos_token_id": [2, 5]}"#,
    )
    .unwrap();

    let hf = tokenizer_from_hf_dir(&dir).unwrap();
    std::fs::remove_dir_all(&dir).ok();

    assert_eq!(hf.bos, gguf.bos);
    assert_eq!(hf.eos, gguf.eos);
    assert_eq!(hf.add_bos, gguf.add_bos);
    assert_eq!(hf.chat_template, gguf.chat_template);
    // generation_config's extra id (5) joins the declared EOS; <|endoftext|> is found by name.
    assert_eq!(hf.end_of_turn, vec![2, 5, 0]);
    for case in tokenize_cases(SMOLLM2_FILE) {
        assert_eq!(
            hf.encode(&case.text, false).unwrap(),
            case.ids,
            "{:?}",
            case.text
        );
    }
}

#[test]
fn hf_directory_without_tokenizer_json_is_an_io_error() {
    let err = tokenizer_from_hf_dir(std::path::Path::new("/nonexistent/cohost")).unwrap_err();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
}
