//! Texts to token ids, the way sentence-transformers and `transformers` tokenize them for these
//! models: the model's own `tokenizer.json`, with its padding turned off (all-MiniLM-L6-v2's
//! file pads everything to 128 tokens; here a sequence is exactly its tokens) and truncation
//! applied per request.
//!
//! - A text for embedding is `prompt + text` (sentence-transformers prepends the prompt string),
//!   with the special tokens the model's post-processor adds. Too long: an error
//!   ([`Truncate::None`]), the end dropped ([`Truncate::End`], what sentence-transformers does),
//!   or the start of the text dropped ([`Truncate::Start`]; the prompt is kept, so there the
//!   prompt and the text are tokenized separately).
//! - A (query, document) pair for a cross-encoder: the document first cut to a caller's token
//!   budget, then the pair cut longest-first to the model's window, as `transformers` does with
//!   `truncation=True`.

use std::path::Path;

use tokenizers::{Encoding, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// One tokenized input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    /// Leading tokens that belong to the prompt (its special tokens included), for models that
    /// leave the prompt out of the pooling.
    pub prompt_tokens: usize,
}

impl Encoded {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// What to do with an input longer than the model's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Truncate {
    /// Refuse it.
    None,
    /// Drop tokens from the start of the text.
    Start,
    /// Drop tokens from the end.
    #[default]
    End,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TextError {
    #[error("the input has {tokens} tokens, more than the model's {max}")]
    TooLong { tokens: usize, max: usize },
    #[error("{0}")]
    Tokenizer(String),
}

fn tok_err(e: impl std::fmt::Display) -> TextError {
    TextError::Tokenizer(e.to_string())
}

/// The model's tokenizer, set up for single texts and pairs.
pub struct TextEncoder {
    /// No padding, no truncation.
    plain: Tokenizer,
    /// Cuts pairs longest-first to `max_tokens`.
    cut: Tokenizer,
    max_tokens: usize,
    vocab_size: usize,
}

impl std::fmt::Debug for TextEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextEncoder")
            .field("max_tokens", &self.max_tokens)
            .finish_non_exhaustive()
    }
}

impl TextEncoder {
    /// Loads `tokenizer.json` for a model with a window of `max_tokens` tokens (special tokens
    /// included) and `vocab_size` embeddings.
    pub fn load(path: &Path, max_tokens: usize, vocab_size: usize) -> Result<Self, TextError> {
        let mut plain = Tokenizer::from_file(path)
            .map_err(|e| TextError::Tokenizer(format!("{}: {e}", path.display())))?;
        plain.with_padding(None);
        plain.with_truncation(None).map_err(tok_err)?;
        let mut cut = plain.clone();
        cut.with_truncation(Some(TruncationParams {
            max_length: max_tokens,
            strategy: TruncationStrategy::LongestFirst,
            direction: TruncationDirection::Right,
            stride: 0,
        }))
        .map_err(tok_err)?;
        Ok(Self {
            cut,
            plain,
            max_tokens,
            vocab_size,
        })
    }

    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// The tokenizer as a `tokenizer.json` document (padding and truncation off).
    pub fn tokenizer_json(&self) -> String {
        self.plain
            .to_string(false)
            .unwrap_or_else(|_| "{}".to_string())
    }

    /// Tokens the post-processor adds around one text (`pair`: around two).
    pub fn special_tokens(&self, pair: bool) -> usize {
        self.specials(pair)
    }

    fn specials(&self, pair: bool) -> usize {
        self.plain
            .get_post_processor()
            .map_or(0, |p| tokenizers::PostProcessor::added_tokens(p, pair))
    }

    fn finish(&self, enc: Encoding, prompt_tokens: usize) -> Result<Encoded, TextError> {
        if let Some(bad) = enc
            .get_ids()
            .iter()
            .find(|&&id| id as usize >= self.vocab_size)
        {
            return Err(TextError::Tokenizer(format!(
                "the tokenizer produced id {bad}, outside the model's {} embeddings",
                self.vocab_size
            )));
        }
        if enc.is_empty() {
            return Err(TextError::Tokenizer(
                "the tokenizer produced no tokens (and adds no special tokens)".into(),
            ));
        }
        Ok(Encoded {
            ids: enc.get_ids().to_vec(),
            type_ids: enc.get_type_ids().to_vec(),
            prompt_tokens,
        })
    }

    /// Tokenizes `prompt + text` for embedding, within the model's window.
    pub fn encode(
        &self,
        prompt: &str,
        text: &str,
        truncate: Truncate,
    ) -> Result<Encoded, TextError> {
        self.encode_limited(prompt, text, truncate, None)
    }

    /// [`TextEncoder::encode`] within `max_tokens` (special tokens included) when that is less
    /// than the model's window.
    pub fn encode_limited(
        &self,
        prompt: &str,
        text: &str,
        truncate: Truncate,
        max_tokens: Option<usize>,
    ) -> Result<Encoded, TextError> {
        let limit = max_tokens.map_or(self.max_tokens, |m| m.min(self.max_tokens));
        let specials = self.specials(false);
        let prompt_tokens = if prompt.is_empty() {
            0
        } else {
            // As sentence-transformers counts it: the prompt with its special tokens, less a
            // trailing one (the separator).
            let p = self.plain.encode(prompt, true).map_err(tok_err)?;
            let trailing = p.get_special_tokens_mask().last() == Some(&1);
            p.len() - usize::from(trailing)
        };
        let joined = format!("{prompt}{text}");
        // Special tokens are added after cutting, as `transformers` does with truncation on.
        let mut body = self.plain.encode(joined.as_str(), false).map_err(tok_err)?;
        let tokens = body.len() + specials;
        let too_long = TextError::TooLong { tokens, max: limit };
        if tokens > limit {
            let room = limit.checked_sub(specials).filter(|&r| r > 0);
            match truncate {
                Truncate::None => return Err(too_long),
                Truncate::End => {
                    body.truncate(room.ok_or(too_long)?, 0, TruncationDirection::Right)
                }
                Truncate::Start => {
                    // The prompt stays whole: the text is cut on its own, then joined to it.
                    let mut p = self.plain.encode(prompt, false).map_err(tok_err)?;
                    let mut t = self.plain.encode(text, false).map_err(tok_err)?;
                    let room = room
                        .and_then(|r| r.checked_sub(p.len()))
                        .filter(|&r| r > 0)
                        .ok_or(too_long)?;
                    t.truncate(room, 0, TruncationDirection::Left);
                    p.merge_with(t, false);
                    body = p;
                }
            }
        }
        let enc = self.plain.post_process(body, None, true).map_err(tok_err)?;
        self.finish(enc, prompt_tokens)
    }

    /// Tokenizes a (query, document) pair for a cross-encoder, the document first cut to
    /// `max_document_tokens` (its own tokens, no special ones).
    pub fn encode_pair(
        &self,
        query: &str,
        document: &str,
        max_document_tokens: Option<usize>,
    ) -> Result<Encoded, TextError> {
        let q = self.plain.encode(query, false).map_err(tok_err)?;
        let mut d = self.plain.encode(document, false).map_err(tok_err)?;
        if let Some(m) = max_document_tokens {
            d.truncate(m, 0, TruncationDirection::Right);
        }
        if self.specials(true) >= self.max_tokens {
            return Err(TextError::Tokenizer(format!(
                "a window of {} tokens leaves no room for a pair",
                self.max_tokens
            )));
        }
        let enc = self.cut.post_process(q, Some(d), true).map_err(tok_err)?;
        self.finish(enc, 0)
    }

    /// The number of tokens of `text` alone, without special tokens.
    pub fn count(&self, text: &str) -> Result<usize, TextError> {
        Ok(self.plain.encode(text, false).map_err(tok_err)?.len())
    }
}
