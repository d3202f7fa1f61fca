//! Incremental detokenization: turns generated tokens into text as they come, one token at a time.
//!
//! Decoding each token alone is wrong in two ways: a character may span several tokens (byte
//! tokens, emoji, CJK), and decoders look at neighbours (a leading space may be stripped at the
//! start of a text). So, as TGI and vLLM do, each step decodes a short window of recent tokens
//! twice, without and with the new tokens, and releases only the difference; text that ends in
//! U+FFFD (an incomplete character) is held back until a later token completes it.

use std::sync::Arc;

use tokenizers::Tokenizer;

use crate::text_error::TextError;

const REPLACEMENT: char = '\u{FFFD}';

#[derive(Debug, Clone)]
pub struct Detokenizer {
    tokenizer: Arc<Tokenizer>,
    ids: Vec<u32>,
    /// Start of the window decoded for context; the text of `ids[prefix..read]` was released.
    prefix: usize,
    /// Tokens before this index have been released as text.
    read: usize,
}

impl Detokenizer {
    pub fn new(tokenizer: Arc<Tokenizer>) -> Self {
        Self {
            tokenizer,
            ids: Vec::new(),
            prefix: 0,
            read: 0,
        }
    }

    /// Adds one token and returns the text that is now final (possibly empty).
    pub fn push(&mut self, token: u32) -> Result<String, TextError> {
        self.ids.push(token);
        let before = self.decode(self.prefix, self.read)?;
        let after = self.decode(self.prefix, self.ids.len())?;
        if after.ends_with(REPLACEMENT) {
            return Ok(String::new());
        }
        // A window that decodes to a different beginning once it grows (rare; a decoder rule
        // that looks ahead) cannot be diffed yet: wait for more tokens.
        let Some(new) = after.strip_prefix(before.as_str()) else {
            return Ok(String::new());
        };
        let new = new.to_string();
        if new.is_empty() {
            return Ok(new);
        }
        self.prefix = self.read;
        self.read = self.ids.len();
        Ok(new)
    }

    /// Generation ended: releases the complete text still held back. An incomplete character at
    /// the end (the reply was cut between the tokens of one character) is dropped, never sent as
    /// U+FFFD: only held-back text can end in one, since complete text is released at once.
    pub fn flush(&mut self) -> Result<String, TextError> {
        let before = self.decode(self.prefix, self.read)?;
        let after = self.decode(self.prefix, self.ids.len())?;
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        let held = after
            .strip_prefix(before.as_str())
            .or_else(|| after.get(before.len()..))
            .unwrap_or_default();
        Ok(held.trim_end_matches(REPLACEMENT).to_string())
    }

    /// Every token pushed so far.
    pub fn tokens(&self) -> &[u32] {
        &self.ids
    }

    fn decode(&self, from: usize, to: usize) -> Result<String, TextError> {
        if from == to {
            return Ok(String::new());
        }
        self.tokenizer
            .decode(&self.ids[from..to], false)
            .map_err(|e| TextError::Tokenizer(e.to_string()))
    }
}
