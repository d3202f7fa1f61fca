//! The engine loop: one thread owns the model and every running sequence; each step runs one
//! forward pass over all of them (continuous batching: sequences join and leave between steps).
//!
//! Requests arrive over a channel; each carries the sending half of its own event stream. A
//! sequence whose receiver has been dropped is cancelled at the next step and its cache freed, so
//! a client that disconnects costs nothing more.
//!
//! Admission: a request is admitted while the requests in flight (running plus queued) are fewer
//! than `max_concurrent + max_queue`, so a burst fills every free slot before it takes a queue
//! place; beyond that `submit` refuses at once (the server's 429). The queue is ordered by
//! `priority` (0 first), first come first served within a priority.
//!
//! Failures: a step that fails or panics (in the model, the sampler or a grammar) ends the
//! sequences it touched with an error event, frees their caches, and the engine goes on serving.
//!
//! Files: `worker.rs` is the loop on the engine thread, `sequence.rs` one request's state and
//! what happens to it after each forward pass, `speculate.rs` the drafts a decode step verifies.

mod attribution;
mod sequence;
mod speculate;
#[cfg(test)]
mod tests;
mod worker;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use sampler::{Sampler, SamplingParams};
use tokio::sync::mpsc;

use crate::chat::ChatPrompt;
use crate::constraint::{
    compile_with_timeout, Constraint, ConstraintCompiler, ConstraintError, ConstraintSpec,
    COMPILE_TIMEOUT,
};
use crate::template::ChatTemplate;
use crate::tokenizer::TokenizerBundle;
use crate::LoadedModel;
pub use speculate::Speculation;
use worker::Worker;

/// What the server asks for: a tokenized prompt and how to continue it.
#[derive(Debug, Clone, Default)]
pub struct GenerateRequest {
    pub prompt: Vec<u32>,
    pub sampling: SamplingParams,
    /// Capped here to what the context leaves after the prompt.
    pub max_tokens: usize,
    /// Generation stops when the text contains one of these; it is cut before the match.
    pub stop_sequences: Vec<String>,
    /// Restricts every token to what this grammar allows (see [`EngineHandle::compile`]); the
    /// reply ends when the grammar is complete, and is steered to complete within `max_tokens`
    /// (see `constraint::closing`).
    pub constraint: Option<Constraint>,
    /// Queue order: 0 is served first; equal priorities keep their arrival order.
    pub priority: u32,
    /// Teacher forcing instead of sampling: these tokens follow the prompt, one per step, and
    /// the reply is their log-probabilities under the model ([`StreamEvent::Scores`]), no text.
    /// Used to score how well a text fits a context (model-scored citations).
    pub teacher: Option<Vec<u32>>,
    /// For a model that thinks ([`ModelInfo::thinking`]): at most this many thinking tokens;
    /// then the end of the thinking is forced and the answer follows.
    pub thinking_budget: Option<usize>,
    /// The prompt ends inside the thinking (its template opened it): the budget counts from
    /// the first generated token.
    pub thinking_opened: bool,
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
    Text {
        text: String,
        token_ids: Vec<u32>,
        logprobs: Vec<f32>,
    },
    Done {
        reason: FinishReason,
        prompt_tokens: usize,
        output_tokens: usize,
        /// Prompt tokens whose keys and values came from the prefix cache, not computed.
        cached_tokens: usize,
    },
    Error {
        message: String,
        kind: ErrorKind,
    },
    /// For a teacher-forced request: the natural log-probability of each given token, in order
    /// (raw softmax of the model's logits), sent once, just before `Done`.
    Scores(Vec<f32>),
}

/// Whose fault a failed generation is: it decides between a client error and a server error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request asked for something that cannot be generated (a grammar that fails or
    /// admits no token mid-reply); retrying it will fail again.
    Request,
    /// The server failed (the forward pass, a panic, the engine stopping).
    Server,
}

/// Why a request was not admitted.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum SubmitError {
    #[error("the request queue is full ({0} waiting)")]
    QueueFull(usize),
    /// The prompt leaves no room for output: it has at least as many tokens as the context.
    #[error("too many tokens: the prompt has {prompt} tokens, at least as many as the {context} tokens of context")]
    PromptTooLong { prompt: usize, context: usize },
    /// The prompt alone needs more KV memory than the whole pool has: it could never run.
    #[error("too many tokens: the prompt has {prompt} tokens, and the KV cache holds {capacity}")]
    TooBigForCache { prompt: usize, capacity: usize },
    #[error("invalid sampling parameters: {0}")]
    Sampling(#[from] sampler::SamplingError),
    #[error("invalid request: {0}")]
    Invalid(String),
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
    /// Most prompt tokens run in one step, so that running streams keep moving while a long
    /// prompt is prefilled.
    pub prefill_chunk: usize,
    /// Prompt-lookup speculative decoding (see `speculate`).
    pub speculation: Speculation,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_concurrent: 16,
            max_queue: 64,
            context_length: 8192,
            prefill_chunk: 512,
            speculation: Speculation::default(),
        }
    }
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
    /// How the model writes tool calls (read from its chat template).
    pub tool_format: crate::tools::ToolFormatKind,
    /// How the model marks its thinking, if its template is a thinking model's.
    pub thinking: Option<crate::thinking::ThinkingMarkers>,
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

/// What the engine reports as it works, to whoever watches it (the server's metrics); see
/// [`EngineHandle::observe`]. Reported from the engine thread, so an observer must be quick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EngineEvent {
    /// A request left the queue for a running slot after waiting this long since `submit`.
    Scheduled { queue_wait: std::time::Duration },
    /// One forward pass ran over `sequences` sequences and `tokens` input tokens. After it, the
    /// running sequences hold blocks of `cached_tokens` positions in the KV pool, of
    /// `cache_capacity` (a model without a pool: positions held, of every slot at the full
    /// context).
    Step {
        sequences: usize,
        tokens: usize,
        cached_tokens: usize,
        cache_capacity: usize,
    },
    /// The KV pool was full at a decode step: a running sequence of `tokens` positions gave
    /// its cache up, to resume later from the prefix cache.
    Preempted { tokens: usize },
    /// A step verified speculative drafts of `drafted` tokens in all, of which `accepted` were
    /// the tokens sampled (each one a token decoded without a step of its own).
    Drafted { drafted: usize, accepted: usize },
}

/// A function told of every [`EngineEvent`].
pub type Observer = Box<dyn Fn(&EngineEvent) + Send + Sync>;

/// Counters the server reads for health and overload decisions.
#[derive(Debug, Default)]
struct Load {
    /// Admitted requests not yet finished: queued, on their way to the engine, or running.
    in_flight: AtomicUsize,
    running: AtomicUsize,
}

/// One admitted request's place in [`Load::in_flight`], given back when it is dropped: however
/// a request ends (finished, failed, cancelled in the queue or while running), the place frees.
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.load.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Read-only state shared by every handle: the text side of the model.
struct Shared {
    info: ModelInfo,
    tokenizer: TokenizerBundle,
    template: ChatTemplate,
    config: EngineConfig,
    load: Load,
    end_tokens: Vec<u32>,
    /// Prompt text longer than this cannot fit in the context (see [`EngineHandle::max_prompt_bytes`]).
    max_prompt_bytes: usize,
    /// Positions the model's KV pool holds, if it has one.
    kv_tokens: Option<usize>,
    /// Built at the first constrained request: most requests never need it.
    compiler: std::sync::OnceLock<Result<ConstraintCompiler, ConstraintError>>,
    /// The thinking markers' token ids (open, close), for `GenerateRequest::thinking_budget`.
    thinking_ids: Option<(Vec<u32>, Vec<u32>)>,
    /// Told of each [`EngineEvent`] once set.
    observer: std::sync::RwLock<Option<Observer>>,
}

impl Shared {
    fn notify(&self, event: EngineEvent) {
        if let Some(observer) = &*self.observer.read().unwrap_or_else(|e| e.into_inner()) {
            observer(&event);
        }
    }
}

/// A cheap, cloneable handle to the running engine: the server's only way in.
#[derive(Clone)]
pub struct EngineHandle {
    shared: Arc<Shared>,
    requests: mpsc::UnboundedSender<Admitted>,
}

/// A request that passed admission, on its way to the engine thread.
struct Admitted {
    request: GenerateRequest,
    sampler: Sampler,
    events: mpsc::UnboundedSender<StreamEvent>,
    place: InFlight,
    /// When `submit` took it: the start of its queue wait.
    submitted: std::time::Instant,
}

/// Starts the engine thread for a loaded model.
pub fn start(loaded: LoadedModel, config: EngineConfig) -> EngineHandle {
    let context_length = config.context_length.min(loaded.model.max_context()).max(1);
    let config = EngineConfig {
        context_length,
        max_concurrent: config.max_concurrent.max(1),
        prefill_chunk: config.prefill_chunk.max(1),
        ..config
    };
    let mut info = loaded.info;
    info.context_length = context_length;
    let thinking_ids = info.thinking.as_ref().and_then(|markers| {
        let ids = |text: &str| {
            loaded
                .tokenizer
                .encode(text, false)
                .ok()
                .filter(|ids| !ids.is_empty())
        };
        Some((ids(&markers.open)?, ids(&markers.close)?))
    });
    let max_prompt_bytes = loaded
        .tokenizer
        .max_token_bytes()
        .saturating_mul(context_length);
    let kv_tokens = loaded.model.kv_usage().map(|u| u.total * u.block_tokens);
    let shared = Arc::new(Shared {
        max_prompt_bytes,
        kv_tokens,
        info,
        tokenizer: loaded.tokenizer.clone(),
        template: loaded.template,
        config,
        load: Load::default(),
        end_tokens: loaded.end_token_ids.clone(),
        compiler: std::sync::OnceLock::new(),
        observer: std::sync::RwLock::new(None),
        thinking_ids,
    });
    let (tx, rx) = mpsc::unbounded_channel();
    let worker = Worker::new(
        shared.clone(),
        loaded.model,
        loaded.tokenizer.tokenizer,
        loaded.end_token_ids,
        rx,
    );
    std::thread::Builder::new()
        .name("cohost-engine".into())
        .spawn(move || worker.run())
        .expect("spawning the engine thread");
    EngineHandle {
        shared,
        requests: tx,
    }
}

impl EngineHandle {
    pub fn info(&self) -> &ModelInfo {
        &self.shared.info
    }

    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }

    /// A cheap bound on prompt text: a prompt of more bytes than this has more tokens than the
    /// context holds, whatever its content, so it can be refused without tokenizing it.
    pub fn max_prompt_bytes(&self) -> usize {
        self.shared.max_prompt_bytes
    }

    /// Sets the function told of every [`EngineEvent`], in place of any earlier one.
    pub fn observe(&self, observer: impl Fn(&EngineEvent) + Send + Sync + 'static) {
        let mut slot = self
            .shared
            .observer
            .write()
            .unwrap_or_else(|e| e.into_inner());
        *slot = Some(Box::new(observer));
    }

    /// Requests waiting for a slot, and sequences running.
    pub fn load(&self) -> (usize, usize) {
        let load = &self.shared.load;
        let running = load.running.load(Ordering::Relaxed);
        let in_flight = load.in_flight.load(Ordering::Relaxed);
        (in_flight.saturating_sub(running), running)
    }

    /// Renders a chat through the model's template, ready to tokenize; tools and tool turns
    /// are prepared for the template first (see `tools::prepare_prompt`).
    pub fn render_chat(&self, prompt: &ChatPrompt) -> Result<String, TextOpError> {
        self.shared
            .template
            .render_chat(prompt)
            .map_err(|e| TextOpError::Template(e.to_string()))
    }

    /// How the model writes tool calls (read from its chat template).
    pub fn tool_format(&self) -> crate::tools::ToolFormatKind {
        self.shared.template.tool_format()
    }

    /// Tokenizes text; `add_special` adds the BOS token where the model declares one. Special
    /// token strings in the text (e.g. `<|im_start|>`) are parsed as those tokens, which is what a
    /// rendered chat template relies on.
    pub fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<u32>, TextOpError> {
        self.shared
            .tokenizer
            .encode(text, add_special)
            .map_err(|e| TextOpError::Tokenizer(e.to_string()))
    }

    /// Tokenizes a rendered chat, adding BOS only where the model wants it and the template
    /// did not write it already.
    pub fn tokenize_prompt(&self, rendered: &str) -> Result<Vec<u32>, TextOpError> {
        self.shared
            .tokenizer
            .encode_prompt(rendered)
            .map_err(|e| TextOpError::Tokenizer(e.to_string()))
    }

    pub fn detokenize(&self, ids: &[u32]) -> Result<String, TextOpError> {
        let vocab = self.shared.info.vocab_size;
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(TextOpError::Tokenizer(format!(
                "token id {bad} is out of range: the vocabulary has {vocab} tokens"
            )));
        }
        self.shared
            .tokenizer
            .decode(ids)
            .map_err(|e| TextOpError::Tokenizer(e.to_string()))
    }

    /// The tokenizer as a `tokenizer.json` document, which SDKs load to tokenize offline.
    pub fn tokenizer_json(&self) -> String {
        self.shared
            .tokenizer
            .tokenizer
            .to_string(false)
            .unwrap_or_else(|_| "{}".to_string())
    }

    /// Compiles what a reply must look like into a constraint for one request. Blocks for up to
    /// [`COMPILE_TIMEOUT`] (plus, the first time, building the tokenizer's trie), so async
    /// callers run it on a blocking thread. A failure is the client's problem to fix (a schema
    /// or grammar that cannot compile), never a reason to generate unconstrained.
    pub fn compile(&self, spec: &ConstraintSpec) -> Result<Constraint, ConstraintError> {
        let shared = &self.shared;
        let compiler = shared.compiler.get_or_init(|| {
            ConstraintCompiler::new(
                shared.tokenizer.tokenizer.clone(),
                &shared.end_tokens,
                shared.info.vocab_size,
            )
        });
        compile_with_timeout(
            compiler.as_ref().map_err(Clone::clone)?,
            spec,
            COMPILE_TIMEOUT,
        )
    }

    /// Admits a request or says at once why not (full queue, prompt too long, bad parameters).
    pub fn submit(&self, mut request: GenerateRequest) -> Result<EventStream, SubmitError> {
        let shared = &self.shared;
        let context = shared.config.context_length;
        if request.prompt.len() >= context {
            return Err(SubmitError::PromptTooLong {
                prompt: request.prompt.len(),
                context,
            });
        }
        if let Some(teacher) = &request.teacher {
            if teacher.is_empty() || request.prompt.is_empty() {
                return Err(SubmitError::Invalid(
                    "a teacher-forced request needs a prompt and tokens to score".into(),
                ));
            }
            request.max_tokens = teacher.len();
        }
        if let Some(capacity) = shared.kv_tokens {
            if request.prompt.len() >= capacity {
                return Err(SubmitError::TooBigForCache {
                    prompt: request.prompt.len(),
                    capacity,
                });
            }
            request.max_tokens = request.max_tokens.min(capacity - request.prompt.len());
        }
        request.max_tokens = request.max_tokens.min(context - request.prompt.len());
        let sampler = Sampler::new(request.sampling.clone(), shared.info.vocab_size)?;
        // Take a place before handing over, so concurrent submits cannot overshoot the limit.
        // Free slots count first: only requests beyond `max_concurrent` occupy the queue.
        let config = &shared.config;
        let before = shared.load.in_flight.fetch_add(1, Ordering::AcqRel);
        let place = InFlight(shared.clone());
        if before >= config.max_concurrent + config.max_queue {
            return Err(SubmitError::QueueFull(before - config.max_concurrent));
        }
        let (events, stream) = mpsc::unbounded_channel();
        let admitted = Admitted {
            request,
            sampler,
            events,
            place,
            submitted: std::time::Instant::now(),
        };
        if self.requests.send(admitted).is_err() {
            return Err(SubmitError::Stopped);
        }
        Ok(stream)
    }
}
