//! The engine loop: one thread owns the model and every running sequence; each step runs one
//! forward pass over all of them.
//!
//! INTERFACE CONTRACT (the server relies on these names; the loop itself is filled in later).

use sampler::SamplingParams;
use tokio::sync::mpsc;

/// What the server asks for: a tokenized prompt and how to continue it.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt: Vec<u32>,
    pub sampling: SamplingParams,
    /// Already capped by the server to what the context allows.
    pub max_tokens: usize,
    /// Generation stops when the text contains one of these; it is cut before the match.
    pub stop_sequences: Vec<String>,
}

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced an end-of-turn / EOS token.
    EndOfTurn,
    StopSequence,
    MaxTokens,
}

/// What a request's stream carries, in order: any number of `Text`, then exactly one of `Done`
/// or `Error`.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// A decoded piece of text (never a broken UTF-8 sequence, never part of a stop sequence),
    /// with the tokens it came from and, when asked, their log-probabilities.
    Text { text: String, token_ids: Vec<u32>, logprobs: Vec<f32> },
    Done { reason: FinishReason, prompt_tokens: usize, output_tokens: usize },
    Error { message: String },
}

/// Why a request was not admitted.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum SubmitError {
    #[error("the request queue is full ({0} waiting)")]
    QueueFull(usize),
    #[error("too many tokens: the prompt has {prompt} tokens, the context holds {context}")]
    PromptTooLong { prompt: usize, context: usize },
    #[error("invalid sampling parameters: {0}")]
    Sampling(#[from] sampler::SamplingError),
    #[error("the engine has stopped")]
    Stopped,
}

/// Limits of the engine, set once from the command line.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub max_concurrent: usize,
    pub max_queue: usize,
    /// Context length actually served (<= the model's own).
    pub context_length: usize,
    /// Longest slice of a prompt run in one step, so that running streams keep moving.
    pub prefill_chunk: usize,
}

/// The receiving end of one request; dropping it cancels the request.
pub type EventStream = mpsc::UnboundedReceiver<StreamEvent>;

/// What the server needs to know about the loaded model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// The name the model is served under by default (file stem or Hugging Face id).
    pub name: String,
    /// `general.architecture` or `config.json` model_type, e.g. "llama", "gemma3".
    pub architecture: String,
    /// Context length served (tokens, prompt + output).
    pub context_length: usize,
    pub vocab_size: usize,
    /// Where the chat template came from, e.g. "gguf", "tokenizer_config.json", "builtin:gemma".
    pub template_origin: String,
    /// Whether the chat template itself renders `tools` (otherwise the server injects a tool section).
    pub template_renders_tools: bool,
}

/// Errors of the text helpers exposed through the handle.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum TextOpError {
    /// The chat template refused the chat (e.g. its `raise_exception`), or failed to render.
    #[error("{0}")]
    Template(String),
    #[error("{0}")]
    Tokenizer(String),
}

/// A cheap, cloneable handle to the running engine: the server's only way in.
#[derive(Clone)]
pub struct EngineHandle {
    _private: (),
}

impl EngineHandle {
    pub fn info(&self) -> &ModelInfo {
        todo!()
    }
    /// Renders a chat through the model's template, ready to tokenize.
    pub fn render_chat(&self, _prompt: &crate::chat::ChatPrompt) -> Result<String, TextOpError> {
        todo!()
    }
    /// Tokenizes text; `add_special` adds the BOS token where the model declares one.
    pub fn tokenize(&self, _text: &str, _add_special: bool) -> Result<Vec<u32>, TextOpError> {
        todo!()
    }
    pub fn detokenize(&self, _ids: &[u32]) -> Result<String, TextOpError> {
        todo!()
    }
    /// The vocabulary as `id -> token string`, for a `tokenizer.json` the server can hand to SDKs.
    pub fn tokenizer_json(&self) -> String {
        todo!()
    }
    /// Admits a request or says at once why not (full queue, prompt too long, bad parameters).
    pub fn submit(&self, _req: GenerateRequest) -> Result<EventStream, SubmitError> {
        todo!()
    }
}
