//! sampler: turns one step's logits for one sequence into the next token, with Cohere's sampling
//! parameters (temperature, k, p, frequency/presence penalties, seed, logprobs).
//!
//! INTERFACE CONTRACT (the engine relies on these names; the implementation replaces the bodies).

/// Cohere's sampling parameters for one request, already defaulted.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    pub k: usize,
    pub p: f32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    pub seed: Option<u64>,
    pub logprobs: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self { temperature: 0.3, k: 0, p: 0.75, frequency_penalty: 0.0, presence_penalty: 0.0, seed: None, logprobs: false }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SamplingError {
    #[error("placeholder")]
    Placeholder,
}

/// The chosen token and, when asked, its log-probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampled {
    pub token: u32,
    pub logprob: Option<f32>,
}

/// Per-sequence sampling state: parameters, RNG, token counts for penalties, scratch buffers.
pub struct Sampler {}

impl Sampler {
    /// Validates the parameters; vocab_size sizes the scratch buffers once.
    pub fn new(_params: SamplingParams, _vocab_size: usize) -> Result<Self, SamplingError> {
        todo!()
    }
    /// Records a token already in the context (prompt or accepted output) for the penalties.
    pub fn observe(&mut self, _token: u32) {
        todo!()
    }
    /// Picks the next token from one row of logits (may be modified in place) and observes it.
    pub fn sample(&mut self, _logits: &mut [f32]) -> Result<Sampled, SamplingError> {
        todo!()
    }
}
