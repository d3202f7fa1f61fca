//! The one error type of the text side of the runner: tokenizer construction, chat templates,
//! incremental detokenization.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("GGUF metadata has no `{key}`")]
    MissingMetadata { key: String },
    #[error("GGUF metadata `{key}` is malformed: {reason}")]
    BadMetadata { key: String, reason: String },
    #[error("unsupported tokenizer model `{model}` (supported: gpt2, llama)")]
    UnsupportedTokenizer { model: String },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid: {reason}")]
    BadFile { path: PathBuf, reason: String },
    /// Building, encoding or decoding with the `tokenizers` crate failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template does not compile.
    #[error("chat template does not compile: {0}")]
    TemplateSyntax(String),
    /// The template itself refused the chat through `raise_exception`: the message is the
    /// template's own, meant for the client (a 400, not a 500).
    #[error("{0}")]
    TemplateRaised(String),
    /// Rendering failed for another reason (a type error inside the template, say).
    #[error("chat template failed to render: {0}")]
    TemplateRender(String),
}
