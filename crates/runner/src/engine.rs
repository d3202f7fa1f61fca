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
pub type EventStream = mpsc::Receiver<StreamEvent>;
