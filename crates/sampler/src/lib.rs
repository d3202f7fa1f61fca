//! sampler: turns one step's logits for one sequence into the next token, with Cohere's sampling
//! parameters (temperature, k, p, frequency/presence penalties, seed, logprobs).
//!
//! It works on one row of logits as `&mut [f32]` and knows no ML framework, so the runner, the
//! tests and the benchmarks all feed it directly.
//!
//! # One step, in order
//! 1. **Check** the row: its length is the vocabulary size, and no logit is NaN or +inf
//!    ([`SamplingError::InvalidLogit`]). -inf is allowed and means "never this token".
//! 2. **Logprob normaliser** (only with `logprobs`): log-sum-exp of the *raw* row.
//! 3. **Penalties**: for every token seen so far (prompt and accepted output, see
//!    [`Sampler::observe`]), `logit -= count * frequency_penalty + presence_penalty`. This
//!    touches only those tokens.
//! 4. **Mask** (only [`Sampler::sample_masked`]): disallowed tokens become -inf.
//! 5. **Choice**. Temperature 0 is greedy: the highest logit, ties to the lowest id.
//!    Otherwise the distribution is `softmax(logits / temperature)`; `k > 0` keeps the k most
//!    likely tokens; then `p` keeps the smallest set of most likely tokens whose mass, within
//!    what is left and renormalised, reaches `p`; one token is drawn from that set in proportion
//!    to its probability. Rank ties go to the lowest id. Temperature is applied before k and p,
//!    as in most servers; it changes which tokens p keeps but not which k keeps.
//! 6. The chosen token is **observed** (counted for the penalties of the following steps).
//!
//! # Logprobs
//! The reported log-probability is that of the chosen token under the model's own
//! distribution: `log_softmax(raw logits)[token]`, before penalties, mask, temperature, k and
//! p. That is what the model "thinks" of the token, comparable across requests with different
//! sampling settings, and it is what greedy decoding reports as well. It is not the probability
//! with which the token was drawn.
//!
//! # Determinism
//! Each [`Sampler`] owns its RNG (ChaCha8, seeded from `seed`, or from the OS when there is no
//! seed) and draws exactly one number per non-greedy step, so the same seed, parameters and
//! logits give the same tokens whatever else the server is doing.
//!
//! # Cost
//! No allocation per step once the candidate buffer has grown to its working size, and no sort
//! of the vocabulary. Greedy reads the row once (maximum, first index and the NaN/+inf check
//! in one pass); top-p reads it twice (that pass, then an exp-sum that also gathers the first
//! band of candidates); top-k twice (that pass, then a streaming selection); logprobs add one
//! exp-sum, and a mask, or penalties that lower the maximum itself, one more maximum pass.
//! Only candidates are sorted.

mod kernels;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::Ordering;
use std::fmt;

/// Largest `k` Cohere accepts.
pub const MAX_K: usize = 500;
/// Range of `p` Cohere accepts.
pub const P_RANGE: (f32, f32) = (0.01, 0.99);

/// Cohere's sampling parameters for one request, already defaulted.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy. Any finite value >= 0 is accepted here; the API layer enforces Cohere's 0..=1.
    pub temperature: f32,
    /// Top-k, 0..=500; 0 turns it off.
    pub k: usize,
    /// Top-p, 0.01..=0.99; always on.
    pub p: f32,
    /// 0..=1; subtracted from a token's logit once per occurrence.
    pub frequency_penalty: f32,
    /// 0..=1; subtracted once from the logit of every token that occurred at all.
    pub presence_penalty: f32,
    pub seed: Option<u64>,
    pub logprobs: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.3,
            k: 0,
            p: 0.75,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            seed: None,
            logprobs: false,
        }
    }
}

impl SamplingParams {
    /// Checks every parameter against its allowed range; NaN is never allowed.
    pub fn validate(&self) -> Result<(), SamplingError> {
        let check = |param: Param, value: f32, min: f32, max: f32| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(SamplingError::OutOfRange {
                    param,
                    value,
                    min,
                    max,
                })
            }
        };
        check(Param::Temperature, self.temperature, 0.0, f32::MAX)?;
        if self.k > MAX_K {
            return Err(SamplingError::OutOfRange {
                param: Param::K,
                value: self.k as f32,
                min: 0.0,
                max: MAX_K as f32,
            });
        }
        check(Param::P, self.p, P_RANGE.0, P_RANGE.1)?;
        check(Param::FrequencyPenalty, self.frequency_penalty, 0.0, 1.0)?;
        check(Param::PresencePenalty, self.presence_penalty, 0.0, 1.0)?;
        Ok(())
    }

    fn has_penalties(&self) -> bool {
        self.frequency_penalty > 0.0 || self.presence_penalty > 0.0
    }
}

/// A sampling parameter, named as on Cohere's wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    Temperature,
    K,
    P,
    FrequencyPenalty,
    PresencePenalty,
}

impl Param {
    /// The JSON field name.
    pub fn as_str(self) -> &'static str {
        match self {
            Param::Temperature => "temperature",
            Param::K => "k",
            Param::P => "p",
            Param::FrequencyPenalty => "frequency_penalty",
            Param::PresencePenalty => "presence_penalty",
        }
    }
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn describe_range(min: f32, max: f32) -> String {
    if max == f32::MAX {
        format!("a finite number of at least {min}")
    } else {
        format!("between {min} and {max} inclusive")
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum SamplingError {
    /// A parameter outside its range (or NaN). `max` is `f32::MAX` when there is no upper bound.
    /// The server turns this into a 400.
    #[error("{param} must be {}, got {value}", describe_range(*.min, *.max))]
    OutOfRange {
        param: Param,
        value: f32,
        min: f32,
        max: f32,
    },
    #[error("vocabulary size must be between 1 and 2^32, got {0}")]
    VocabSize(usize),
    #[error("logits row has {got} entries but the vocabulary has {expected}")]
    LogitsLength { expected: usize, got: usize },
    /// The model produced NaN or +inf: a bug or an overflow upstream, never sampled around.
    #[error("logit of token {index} is {value}; logits must be finite or -inf")]
    InvalidLogit { index: usize, value: f32 },
    #[error("allowed-token mask has {got} words but the vocabulary needs {expected}")]
    MaskLength { expected: usize, got: usize },
    /// Every token's logit is -inf (after the mask, if any): nothing can be chosen.
    #[error("no token can be chosen: every logit is -inf or masked out")]
    NoCandidate,
    #[error("cannot seed the sampler from the operating system: {0}")]
    Entropy(String),
}

/// The chosen token and, when asked, its log-probability (see the crate docs for which one).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampled {
    pub token: u32,
    pub logprob: Option<f32>,
}

/// A token still in the running at the choice step. `weight` is `exp((logit - max) / T)`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    pub(crate) logit: f32,
    pub(crate) id: u32,
    pub(crate) weight: f32,
}

impl Candidate {
    pub(crate) fn new(id: u32, logit: f32) -> Self {
        Self {
            logit,
            id,
            weight: 0.0,
        }
    }

    /// Most likely first; equal logits by lowest id. Candidates are never NaN.
    pub(crate) fn rank(a: &Candidate, b: &Candidate) -> Ordering {
        b.logit
            .partial_cmp(&a.logit)
            .unwrap_or(Ordering::Equal)
            .then(a.id.cmp(&b.id))
    }
}

/// Per-sequence sampling state: parameters, RNG, token counts for penalties, scratch buffers.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    vocab_size: usize,
    rng: ChaCha8Rng,
    /// Occurrences of each token in the context so far.
    counts: Vec<u32>,
    /// Ids with a non-zero count, so penalties and reset cost O(distinct tokens), not O(vocab).
    seen: Vec<u32>,
    /// Raw logits of `seen` before this step's penalties, kept for the logprob.
    raw_of_seen: Vec<f32>,
    candidates: Vec<Candidate>,
}

impl Sampler {
    /// Validates the parameters; vocab_size sizes the scratch buffers once.
    pub fn new(params: SamplingParams, vocab_size: usize) -> Result<Self, SamplingError> {
        params.validate()?;
        if vocab_size == 0 || u32::try_from(vocab_size - 1).is_err() {
            return Err(SamplingError::VocabSize(vocab_size));
        }
        let rng = seeded_rng(params.seed)?;
        Ok(Self {
            params,
            vocab_size,
            rng,
            counts: vec![0; vocab_size],
            seen: Vec::with_capacity(1024),
            raw_of_seen: Vec::with_capacity(1024),
            candidates: Vec::with_capacity(vocab_size.min(4096)),
        })
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Records a token already in the context (prompt or accepted output) for the penalties.
    /// Ids outside the vocabulary cannot be sampled and are ignored.
    pub fn observe(&mut self, token: u32) {
        let Some(count) = self.counts.get_mut(token as usize) else {
            return;
        };
        if *count == 0 {
            self.seen.push(token);
        }
        *count = count.saturating_add(1);
    }

    /// [`observe`](Self::observe) for each token, e.g. the whole prompt.
    pub fn observe_all(&mut self, tokens: &[u32]) {
        for &token in tokens {
            self.observe(token);
        }
    }

    /// How many times `token` has been observed.
    pub fn count(&self, token: u32) -> u32 {
        self.counts.get(token as usize).copied().unwrap_or(0)
    }

    /// Forgets every observed token and restarts the RNG from the seed (from the OS when there
    /// is none), so the sampler behaves as a new one with the same parameters.
    pub fn reset(&mut self) -> Result<(), SamplingError> {
        for &token in &self.seen {
            self.counts[token as usize] = 0;
        }
        self.seen.clear();
        self.rng = seeded_rng(self.params.seed)?;
        Ok(())
    }

    /// Picks the next token from one row of logits (may be modified in place) and observes it.
    pub fn sample(&mut self, logits: &mut [f32]) -> Result<Sampled, SamplingError> {
        self.step(logits, None)
    }

    /// Like [`sample`](Self::sample), restricted to the tokens set in `allowed`: a bitset of
    /// `vocab_size.div_ceil(32)` words where token `t` is allowed when bit `t % 32` of word
    /// `t / 32` is 1 (the layout of llguidance's token masks). Disallowed tokens get -inf before
    /// anything else looks at the row (except the logprob, which stays that of the raw logits).
    pub fn sample_masked(
        &mut self,
        logits: &mut [f32],
        allowed: &[u32],
    ) -> Result<Sampled, SamplingError> {
        let expected = self.vocab_size.div_ceil(32);
        if allowed.len() != expected {
            return Err(SamplingError::MaskLength {
                expected,
                got: allowed.len(),
            });
        }
        self.step(logits, Some(allowed))
    }

    fn step(&mut self, logits: &mut [f32], mask: Option<&[u32]>) -> Result<Sampled, SamplingError> {
        if logits.len() != self.vocab_size {
            return Err(SamplingError::LogitsLength {
                expected: self.vocab_size,
                got: logits.len(),
            });
        }
        let (raw_max, raw_argmax) =
            kernels::argmax(logits).map_err(|index| SamplingError::InvalidLogit {
                index,
                value: logits[index],
            })?;
        if raw_max == f32::NEG_INFINITY {
            return Err(SamplingError::NoCandidate);
        }
        let log_normaliser = self
            .params
            .logprobs
            .then(|| raw_max + (kernels::sum_exp(logits, raw_max, 1.0).ln() as f32));

        let penalised = self.apply_penalties(logits);
        if let Some(mask) = mask {
            apply_mask(logits, mask);
        }
        // Penalties only lower logits: unless they lowered the first raw maximum itself, it is
        // still the first maximum. A mask can remove it, so then the row is read again.
        let stale = mask.is_some() || (penalised && self.counts[raw_argmax] > 0);

        let inv_temperature = 1.0 / self.params.temperature;
        // A temperature so small that 1/T overflows is greedy for every practical purpose.
        let greedy = !inv_temperature.is_finite();
        let token = if !greedy && self.params.k > 0 {
            // Top-k finds its own maximum; it comes back empty only when every logit is -inf.
            self.choose_top_k(logits, inv_temperature)
                .ok_or(SamplingError::NoCandidate)?
        } else {
            let (max, argmax) = if stale {
                // Neither step adds NaN or +inf, so this cannot fail.
                kernels::argmax(logits).unwrap_or((f32::NEG_INFINITY, 0))
            } else {
                (raw_max, raw_argmax)
            };
            if max == f32::NEG_INFINITY {
                return Err(SamplingError::NoCandidate);
            }
            if greedy {
                argmax
            } else {
                self.choose_top_p(logits, max, inv_temperature)
            }
        };

        let logprob = log_normaliser.map(|norm| self.raw_logit(logits, token, penalised) - norm);
        self.observe(token as u32);
        Ok(Sampled {
            token: token as u32,
            logprob,
        })
    }

    /// Subtracts the penalties from the tokens seen so far; returns whether anything changed.
    fn apply_penalties(&mut self, logits: &mut [f32]) -> bool {
        if !self.params.has_penalties() || self.seen.is_empty() {
            return false;
        }
        let (frequency, presence) = (self.params.frequency_penalty, self.params.presence_penalty);
        self.raw_of_seen.clear();
        for &token in &self.seen {
            let logit = &mut logits[token as usize];
            if self.params.logprobs {
                self.raw_of_seen.push(*logit);
            }
            *logit -= self.counts[token as usize] as f32 * frequency + presence;
        }
        true
    }

    /// The logit the model gave `token`, before this step's penalties.
    fn raw_logit(&self, logits: &[f32], token: usize, penalised: bool) -> f32 {
        if penalised && self.counts[token] > 0 {
            if let Some(i) = self.seen.iter().position(|&t| t as usize == token) {
                return self.raw_of_seen[i];
            }
        }
        logits[token]
    }

    fn choose_top_k(&mut self, logits: &[f32], inv_temperature: f32) -> Option<usize> {
        if kernels::top_k(logits, self.params.k, &mut self.candidates) == 0 {
            return None;
        }
        let max = self
            .candidates
            .iter()
            .fold(f32::NEG_INFINITY, |m, c| m.max(c.logit));
        let mut total = 0.0f64;
        for c in &mut self.candidates {
            c.weight = kernels::exp_nonpositive((c.logit - max) * inv_temperature);
            total += c.weight as f64;
        }
        let kept = nucleus(&mut self.candidates, self.params.p as f64 * total);
        Some(draw(&mut self.rng, &self.candidates[..kept]))
    }

    /// Top-p over the whole vocabulary without sorting it: the normaliser comes from one exp
    /// pass, which also gathers the first band of candidates; further bands of decreasing logit
    /// are gathered only while the candidates hold less than mass p.
    fn choose_top_p(&mut self, logits: &[f32], max: f32, inv_temperature: f32) -> usize {
        let temperature = self.params.temperature;
        self.candidates.clear();
        // Band edges in units of the scaled logit: weight >= e^-8, then e^-16, ... Past
        // e^-87 weights are 0 and further bands cannot add mass.
        let mut depth = 8.0f32;
        let mut lower = max - depth * temperature;
        let total =
            kernels::sum_exp_gather(logits, max, inv_temperature, lower, &mut self.candidates);
        let target = self.params.p as f64 * total;
        let mut mass = 0.0f64;
        let mut start = 0;
        loop {
            for c in &mut self.candidates[start..] {
                c.weight = kernels::exp_nonpositive((c.logit - max) * inv_temperature);
                mass += c.weight as f64;
            }
            if mass >= target || depth > 88.0 || lower == f32::NEG_INFINITY {
                break;
            }
            let upper = lower;
            depth *= 2.0;
            lower = max - depth * temperature;
            start = self.candidates.len();
            kernels::gather_band(logits, lower, upper, &mut self.candidates);
        }
        let kept = nucleus(&mut self.candidates, target);
        draw(&mut self.rng, &self.candidates[..kept])
    }
}

fn seeded_rng(seed: Option<u64>) -> Result<ChaCha8Rng, SamplingError> {
    match seed {
        Some(seed) => Ok(ChaCha8Rng::seed_from_u64(seed)),
        None => ChaCha8Rng::try_from_os_rng().map_err(|e| SamplingError::Entropy(e.to_string())),
    }
}

/// Sets every token not allowed by the bitset to -inf.
fn apply_mask(logits: &mut [f32], allowed: &[u32]) {
    for (chunk, &word) in logits.chunks_mut(32).zip(allowed) {
        match word {
            u32::MAX => {}
            0 => chunk.fill(f32::NEG_INFINITY),
            _ => {
                for (bit, logit) in chunk.iter_mut().enumerate() {
                    if word >> bit & 1 == 0 {
                        *logit = f32::NEG_INFINITY;
                    }
                }
            }
        }
    }
}

/// Moves to the front the smallest set of highest-ranked candidates whose weight reaches
/// `target` and returns its size (all of them if rounding leaves the target out of reach).
///
/// Expected O(n): each round partitions the range around its middle with a selection and keeps
/// the half where the boundary lies; only the last few candidates are sorted.
fn nucleus(cands: &mut [Candidate], target: f64) -> usize {
    let (mut lo, mut hi) = (0, cands.len());
    let mut need = target;
    while hi - lo > 32 {
        let mid = lo + (hi - lo) / 2;
        cands[lo..hi].select_nth_unstable_by(mid - lo, Candidate::rank);
        let mass: f64 = cands[lo..=mid].iter().map(|c| c.weight as f64).sum();
        if mass >= need {
            hi = mid + 1;
        } else {
            need -= mass;
            lo = mid + 1;
        }
    }
    cands[lo..hi].sort_unstable_by(Candidate::rank);
    let mut acc = 0.0f64;
    for (i, c) in cands[lo..hi].iter().enumerate() {
        acc += c.weight as f64;
        if acc >= need {
            return lo + i + 1;
        }
    }
    hi
}

/// Draws one candidate with probability proportional to its weight.
fn draw(rng: &mut ChaCha8Rng, kept: &[Candidate]) -> usize {
    let total: f64 = kept.iter().map(|c| c.weight as f64).sum();
    // 53 random bits: a uniform f64 in [0, 1).
    let u = (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64) * total;
    let mut acc = 0.0f64;
    for c in kept {
        acc += c.weight as f64;
        if u < acc {
            return c.id as usize;
        }
    }
    // Only reachable through rounding: the last token that has any weight.
    kept.iter()
        .rev()
        .find(|c| c.weight > 0.0)
        .unwrap_or(&kept[0])
        .id as usize
}
