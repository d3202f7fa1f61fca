//! Builds a `tokenizers::Tokenizer` from what a model declares: the tokenizer metadata inside a
//! GGUF file, or `tokenizer.json` + `tokenizer_config.json` beside safetensors weights.
//!
//! The GGUF path reproduces llama.cpp's tokenizers, which are the reference for those files:
//! - `gpt2`: byte-level BPE, with the pre-tokenizer regexes llama.cpp picks for `tokenizer.ggml.pre`;
//! - `llama`: SentencePiece-style BPE over characters, merging the highest-scoring pair first,
//!   with byte fallback. HF's BPE applies merges by rank, so the merges are derived from the
//!   scores (one merge per way of splitting a token into two tokens, ranked by the token's score),
//!   as HF's own SentencePiece conversion does.
//!
//! Control and user-defined tokens become added tokens, matched in raw text before the model
//! sees it, as llama.cpp does: `<|im_start|>` typed in a prompt is one token.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, NormalizerWrapper, SplitDelimiterBehavior, Tokenizer};

pub use crate::text_error::TextError;

/// A token the model gives a role to (BOS, EOS), by id and by its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialToken {
    pub id: u32,
    pub text: String,
}

/// A tokenizer together with what the model file says about its special tokens.
#[derive(Debug, Clone)]
pub struct TokenizerBundle {
    pub tokenizer: Arc<Tokenizer>,
    pub bos: Option<SpecialToken>,
    pub eos: Option<SpecialToken>,
    /// Whether the model expects BOS in front of a prompt (`add_bos_token`).
    pub add_bos: bool,
    /// Every token that ends the model's turn: the declared EOS/EOT plus well-known end tokens
    /// present in the vocabulary. Generation stops on any of them.
    pub end_of_turn: Vec<u32>,
    /// The chat template the tokenizer files carry, if any.
    pub chat_template: Option<String>,
}

impl TokenizerBundle {
    /// Tokenizes `text`; special-token strings in it are parsed as special tokens.
    /// `add_special` puts BOS in front where the model declares `add_bos_token`.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, TextError> {
        let encoding = self
            .tokenizer
            .encode_fast(text, false)
            .map_err(|e| TextError::Tokenizer(e.to_string()))?;
        let mut ids = Vec::with_capacity(encoding.len() + 1);
        if add_special && self.add_bos {
            if let Some(bos) = &self.bos {
                ids.push(bos.id);
            }
        }
        ids.extend_from_slice(encoding.get_ids());
        Ok(ids)
    }

    /// Tokenizes a rendered chat. Templates such as Gemma's write the BOS token themselves;
    /// adding a second one would change what the model sees, so BOS is added only when the
    /// model wants one and the text does not already start with it.
    pub fn encode_prompt(&self, rendered: &str) -> Result<Vec<u32>, TextError> {
        let already = self
            .bos
            .as_ref()
            .is_some_and(|bos| !bos.text.is_empty() && rendered.starts_with(&bos.text));
        self.encode(rendered, !already)
    }

    /// Decodes ids to text, special tokens included (as llama.cpp's `/detokenize` does).
    pub fn decode(&self, ids: &[u32]) -> Result<String, TextError> {
        self.tokenizer
            .decode(ids, false)
            .map_err(|e| TextError::Tokenizer(e.to_string()))
    }

    /// The most bytes of text one token can stand for, as an upper bound from the vocabulary
    /// (a byte-level or SentencePiece token's vocabulary string is at least as long as the text
    /// it decodes to), times 4 when a Unicode normalizer may shrink the text first (a 4-byte
    /// character can normalize to one byte). Text longer than this times the context cannot fit.
    pub fn max_token_bytes(&self) -> usize {
        let longest = self
            .tokenizer
            .get_vocab(true)
            .keys()
            .map(String::len)
            .max()
            .unwrap_or(1)
            .max(1);
        let shrink = if self.tokenizer.get_normalizer().is_some() {
            4
        } else {
            1
        };
        longest * shrink
    }

    pub fn is_end_of_turn(&self, id: u32) -> bool {
        self.end_of_turn.contains(&id)
    }
}

/// End-of-turn tokens of the chat formats in common use; a model's own EOS may be another token
/// (SmolLM2's EOS is `<|im_end|>`, but Gemma's is `<eos>` while its turns end in `<end_of_turn>`).
const KNOWN_END_TOKENS: [&str; 4] = ["<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>"];

// llama.cpp's `llama_token_type` values in `tokenizer.ggml.token_type`.
const TOKEN_TYPE_NORMAL: i64 = 1;
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// GPT-2's split: contractions, letters, numbers, other symbols, whitespace.
const GPT2_REGEX: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
const LLAMA3_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The regexes llama.cpp applies, in order, for a `tokenizer.ggml.pre` value.
fn pre_tokenizer_regexes(pre: &str) -> Option<&'static [&'static str]> {
    Some(match pre {
        "default" | "gpt2" | "gpt-2" => &[GPT2_REGEX],
        // Digits are split one by one before the GPT-2 split.
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva" => {
            &[r"\p{N}", GPT2_REGEX]
        }
        "llama3" | "llama-bpe" | "llama-v3" | "falcon3" | "pixtral" => &[LLAMA3_REGEX],
        "qwen2" | "deepseek-r1-qwen" => &[QWEN2_REGEX],
        _ => return None,
    })
}

/// Builds the tokenizer a GGUF file declares.
pub fn tokenizer_from_gguf(content: &Content) -> Result<TokenizerBundle, TextError> {
    let meta = &content.metadata;
    let model = string_key(meta, "tokenizer.ggml.model")?;
    let tokens: Vec<String> = array_key(meta, "tokenizer.ggml.tokens")?
        .iter()
        .map(|v| value_string(v, "tokenizer.ggml.tokens").map(str::to_string))
        .collect::<Result<_, _>>()?;
    let token_types: Vec<i64> = match meta.get("tokenizer.ggml.token_type") {
        Some(v) => value_array(v, "tokenizer.ggml.token_type")?
            .iter()
            .map(|t| value_int(t, "tokenizer.ggml.token_type"))
            .collect::<Result<_, _>>()?,
        None => vec![TOKEN_TYPE_NORMAL; tokens.len()],
    };
    if token_types.len() != tokens.len() {
        return Err(bad(
            "tokenizer.ggml.token_type",
            format!("{} types for {} tokens", token_types.len(), tokens.len()),
        ));
    }
    let vocab = first_ids(&tokens);

    let mut tokenizer = match model.as_str() {
        "gpt2" => {
            let pre = optional_string(meta, "tokenizer.ggml.pre")?.unwrap_or("default".into());
            byte_level_bpe(meta, vocab, &pre)?
        }
        "llama" => {
            let scores: Vec<f32> = array_key(meta, "tokenizer.ggml.scores")?
                .iter()
                .map(|v| value_float(v, "tokenizer.ggml.scores"))
                .collect::<Result<_, _>>()?;
            if scores.len() != tokens.len() {
                return Err(bad(
                    "tokenizer.ggml.scores",
                    format!("{} scores for {} tokens", scores.len(), tokens.len()),
                ));
            }
            // llama.cpp's default for SentencePiece models is a space prefix.
            let add_space_prefix =
                optional_bool(meta, "tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
            sentencepiece_bpe(&tokens, &token_types, &scores, vocab, add_space_prefix)?
        }
        other => {
            return Err(TextError::UnsupportedTokenizer {
                model: other.to_string(),
            })
        }
    };

    let mut special = Vec::new();
    let mut user_defined = Vec::new();
    for (token, kind) in tokens.iter().zip(&token_types) {
        // Matched on raw text (normalized = false): `  ` must match before spaces become `▁`.
        match *kind {
            TOKEN_TYPE_CONTROL => {
                special.push(AddedToken::from(token.clone(), true).normalized(false))
            }
            TOKEN_TYPE_USER_DEFINED => {
                user_defined.push(AddedToken::from(token.clone(), false).normalized(false))
            }
            _ => {}
        }
    }
    tokenizer.add_special_tokens(&special);
    tokenizer.add_tokens(&user_defined);

    let token_at = |key: &str| -> Result<Option<SpecialToken>, TextError> {
        let Some(id) = optional_int(meta, key)? else {
            return Ok(None);
        };
        let text = usize::try_from(id)
            .ok()
            .and_then(|i| tokens.get(i))
            .ok_or_else(|| bad(key, format!("id {id} is outside the vocabulary")))?;
        Ok(Some(SpecialToken {
            id: id as u32,
            text: text.clone(),
        }))
    };
    let bos = token_at("tokenizer.ggml.bos_token_id")?;
    let eos = token_at("tokenizer.ggml.eos_token_id")?;
    let eot = token_at("tokenizer.ggml.eot_token_id")?;
    // llama.cpp adds BOS by default for SentencePiece models and not for byte-level BPE.
    let add_bos = optional_bool(meta, "tokenizer.ggml.add_bos_token")?.unwrap_or(model == "llama");
    let declared: Vec<u32> = [&eos, &eot].into_iter().flatten().map(|t| t.id).collect();
    let end_of_turn = end_of_turn_ids(&tokenizer, &declared);
    let chat_template = optional_string(meta, "tokenizer.chat_template")?;

    Ok(TokenizerBundle {
        tokenizer: Arc::new(tokenizer),
        bos,
        eos,
        add_bos,
        end_of_turn,
        chat_template,
    })
}

/// Loads `tokenizer.json` and `tokenizer_config.json` (and, when present,
/// `generation_config.json` for extra end tokens) from a model directory.
pub fn tokenizer_from_hf_dir(dir: &Path) -> Result<TokenizerBundle, TextError> {
    let tokenizer_path = dir.join("tokenizer.json");
    let bytes = std::fs::read(&tokenizer_path).map_err(|source| TextError::Io {
        path: tokenizer_path.clone(),
        source,
    })?;
    let tokenizer = Tokenizer::from_bytes(&bytes).map_err(|e| TextError::BadFile {
        path: tokenizer_path,
        reason: e.to_string(),
    })?;

    let config_path = dir.join("tokenizer_config.json");
    let config = read_json_if_present(&config_path)?.unwrap_or(serde_json::Value::Null);
    let special_from = |key: &str| -> Option<SpecialToken> {
        // Either "<s>" or {"content": "<s>", ...}.
        let text = match config.get(key)? {
            serde_json::Value::String(s) => s.clone(),
            other => other.get("content")?.as_str()?.to_string(),
        };
        let id = tokenizer.token_to_id(&text)?;
        Some(SpecialToken { id, text })
    };
    let bos = special_from("bos_token");
    let eos = special_from("eos_token");
    let add_bos = match config.get("add_bos_token").and_then(|v| v.as_bool()) {
        Some(flag) => flag,
        // No flag: the tokenizer's post-processor decides, as in transformers.
        None => match &bos {
            Some(bos) => {
                let with = tokenizer
                    .encode_fast("a", true)
                    .map_err(|e| TextError::Tokenizer(e.to_string()))?;
                with.get_ids().first() == Some(&bos.id)
            }
            None => false,
        },
    };
    let chat_template = match config.get("chat_template") {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        // A list of named templates: the one named "default" is the chat template.
        Some(serde_json::Value::Array(named)) => named
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
        _ => None,
    };

    let mut declared: Vec<u32> = eos.iter().map(|t| t.id).collect();
    let generation_config = read_json_if_present(&dir.join("generation_config.json"))?;
    if let Some(ids) = generation_config
        .as_ref()
        .and_then(|c| c.get("eos_token_id"))
    {
        match ids {
            serde_json::Value::Number(n) => declared.extend(n.as_u64().map(|n| n as u32)),
            serde_json::Value::Array(list) => {
                declared.extend(list.iter().filter_map(|n| n.as_u64()).map(|n| n as u32))
            }
            _ => {}
        }
    }
    let end_of_turn = end_of_turn_ids(&tokenizer, &declared);

    Ok(TokenizerBundle {
        tokenizer: Arc::new(tokenizer),
        bos,
        eos,
        add_bos,
        end_of_turn,
        chat_template,
    })
}

fn byte_level_bpe(
    meta: &HashMap<String, Value>,
    vocab: Vocab,
    pre: &str,
) -> Result<Tokenizer, TextError> {
    let merges = array_key(meta, "tokenizer.ggml.merges")?
        .iter()
        .map(|v| {
            let merge = value_string(v, "tokenizer.ggml.merges")?;
            merge
                .split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| bad("tokenizer.ggml.merges", format!("`{merge}` is not `a b`")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let regexes = pre_tokenizer_regexes(pre).ok_or_else(|| TextError::UnsupportedTokenizer {
        model: format!("gpt2 with pre-tokenizer `{pre}`"),
    })?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| TextError::Tokenizer(e.to_string()))?;

    let mut steps = Vec::new();
    for regex in regexes {
        let split = Split::new(
            SplitPattern::Regex(regex.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| TextError::Tokenizer(e.to_string()))?;
        steps.push(PreTokenizerWrapper::Split(split));
    }
    // The regexes above already split; ByteLevel only maps bytes to its printable alphabet.
    steps.push(PreTokenizerWrapper::ByteLevel(ByteLevel::new(
        false, false, false,
    )));

    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(PreTokenizerSequence::new(steps)));
    tokenizer.with_decoder(Some(ByteLevel::new(false, false, false)));
    Ok(tokenizer)
}

fn sentencepiece_bpe(
    tokens: &[String],
    token_types: &[i64],
    scores: &[f32],
    vocab: Vocab,
    add_space_prefix: bool,
) -> Result<Tokenizer, TextError> {
    let merges = merges_from_scores(tokens, token_types, scores, &vocab);
    let unk = tokens.iter().find(|t| t.as_str() == "<unk>").cloned();
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(unk);
    }
    let bpe = builder
        .build()
        .map_err(|e| TextError::Tokenizer(e.to_string()))?;

    let replace_space = Replace::new(" ", "▁").map_err(|e| TextError::Tokenizer(e.to_string()))?;
    let normalizer = if add_space_prefix {
        NormalizerWrapper::Sequence(NormalizerSequence::new(vec![
            NormalizerWrapper::Prepend(Prepend::new("▁".to_string())),
            NormalizerWrapper::Replace(replace_space),
        ]))
    } else {
        NormalizerWrapper::Replace(replace_space)
    };
    let mut decoders = vec![
        DecoderWrapper::Replace(
            Replace::new("▁", " ").map_err(|e| TextError::Tokenizer(e.to_string()))?,
        ),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ];
    if add_space_prefix {
        decoders.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
    }

    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_normalizer(Some(normalizer));
    tokenizer.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(tokenizer)
}

/// SentencePiece BPE (as llama.cpp runs it) repeatedly merges the adjacent pair whose
/// concatenation is the highest-scoring token. Every way of writing a token as two tokens is a
/// merge, ranked by that token's score; ties (the same token) keep the lower ids first.
fn merges_from_scores(
    tokens: &[String],
    token_types: &[i64],
    scores: &[f32],
    vocab: &Vocab,
) -> Vec<(String, String)> {
    let mut ranked: Vec<(f32, u32, u32, usize)> = Vec::new();
    for (id, token) in tokens.iter().enumerate() {
        if !matches!(token_types[id], TOKEN_TYPE_NORMAL | TOKEN_TYPE_USER_DEFINED) {
            continue;
        }
        for (split, _) in token.char_indices().skip(1) {
            let (left, right) = token.split_at(split);
            if let (Some(&l), Some(_)) = (vocab.get(left), vocab.get(right)) {
                ranked.push((scores[id], id as u32, l, split));
            }
        }
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    ranked
        .into_iter()
        .map(|(_, id, _, split)| {
            let (left, right) = tokens[id as usize].split_at(split);
            (left.to_string(), right.to_string())
        })
        .collect()
}

/// Token -> id, keeping the first id when a file lists a token twice.
fn first_ids(tokens: &[String]) -> Vocab {
    let mut vocab = Vocab::default();
    for (id, token) in tokens.iter().enumerate() {
        vocab.entry(token.clone()).or_insert(id as u32);
    }
    vocab
}

fn end_of_turn_ids(tokenizer: &Tokenizer, declared: &[u32]) -> Vec<u32> {
    let mut ids: Vec<u32> = Vec::new();
    let known = KNOWN_END_TOKENS
        .iter()
        .filter_map(|t| tokenizer.token_to_id(t));
    for id in declared.iter().copied().chain(known) {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

fn read_json_if_present(path: &Path) -> Result<Option<serde_json::Value>, TextError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(TextError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| TextError::BadFile {
            path: PathBuf::from(path),
            reason: e.to_string(),
        })
}

fn bad(key: &str, reason: impl Into<String>) -> TextError {
    TextError::BadMetadata {
        key: key.to_string(),
        reason: reason.into(),
    }
}

fn get<'a>(meta: &'a HashMap<String, Value>, key: &str) -> Result<&'a Value, TextError> {
    meta.get(key).ok_or_else(|| TextError::MissingMetadata {
        key: key.to_string(),
    })
}

fn string_key(meta: &HashMap<String, Value>, key: &str) -> Result<String, TextError> {
    value_string(get(meta, key)?, key).map(str::to_string)
}

fn array_key<'a>(meta: &'a HashMap<String, Value>, key: &str) -> Result<&'a [Value], TextError> {
    value_array(get(meta, key)?, key)
}

fn optional_string(meta: &HashMap<String, Value>, key: &str) -> Result<Option<String>, TextError> {
    meta.get(key)
        .map(|v| value_string(v, key).map(str::to_string))
        .transpose()
}

fn optional_int(meta: &HashMap<String, Value>, key: &str) -> Result<Option<i64>, TextError> {
    meta.get(key).map(|v| value_int(v, key)).transpose()
}

fn optional_bool(meta: &HashMap<String, Value>, key: &str) -> Result<Option<bool>, TextError> {
    meta.get(key)
        .map(|v| match v {
            Value::Bool(b) => Ok(*b),
            other => Err(bad(key, format!("expected a bool, found {other:?}"))),
        })
        .transpose()
}

fn value_string<'a>(v: &'a Value, key: &str) -> Result<&'a str, TextError> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(bad(
            key,
            format!("expected a string, found {:?}", other.value_type()),
        )),
    }
}

fn value_array<'a>(v: &'a Value, key: &str) -> Result<&'a [Value], TextError> {
    match v {
        Value::Array(a) => Ok(a),
        other => Err(bad(
            key,
            format!("expected an array, found {:?}", other.value_type()),
        )),
    }
}

/// Writers disagree on integer widths (u32, i32, u64 ...): accept any.
fn value_int(v: &Value, key: &str) -> Result<i64, TextError> {
    Ok(match v {
        Value::U8(n) => *n as i64,
        Value::I8(n) => *n as i64,
        Value::U16(n) => *n as i64,
        Value::I16(n) => *n as i64,
        Value::U32(n) => *n as i64,
        Value::I32(n) => *n as i64,
        Value::U64(n) => *n as i64,
        Value::I64(n) => *n,
        other => {
            return Err(bad(
                key,
                format!("expected an integer, found {:?}", other.value_type()),
            ))
        }
    })
}

fn value_float(v: &Value, key: &str) -> Result<f32, TextError> {
    match v {
        Value::F32(x) => Ok(*x),
        Value::F64(x) => Ok(*x as f32),
        other => Err(bad(
            key,
            format!("expected a float, found {:?}", other.value_type()),
        )),
    }
}
