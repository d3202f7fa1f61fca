//! The engine loop: one thread owns the model and every running sequence; each step runs one
//! forward pass over all of them (continuous batching: sequences join and leave between steps).
//!
//! Requests arrive over a channel; each carries the sending half of its own event stream. A
//! sequence whose receiver has been dropped is cancelled at the next step and its cache freed, so
//! a client that disconnects costs nothing more.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use sampler::{Sampler, SamplingParams};
use tokio::sync::mpsc;

use crate::chat::ChatPrompt;
use crate::constraint::{
    compile_with_timeout, Constraint, ConstraintCompiler, ConstraintError, ConstraintSpec,
    COMPILE_TIMEOUT,
};
use crate::detok::Detokenizer;
use crate::model::{BatchItem, BatchModel, SeqId};
use crate::stop::StopMatcher;
use crate::template::ChatTemplate;
use crate::tokenizer::TokenizerBundle;
use crate::LoadedModel;

/// What the server asks for: a tokenized prompt and how to continue it.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt: Vec<u32>,
    pub sampling: SamplingParams,
    /// Capped here to what the context leaves after the prompt.
    pub max_tokens: usize,
    /// Generation stops when the text contains one of these; it is cut before the match.
    pub stop_sequences: Vec<String>,
    /// Restricts every token to what this grammar allows (see [`EngineHandle::compile`]); the
    /// reply ends when the grammar is complete.
    pub constraint: Option<Constraint>,
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
    },
    Error {
        message: String,
    },
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
    /// Most prompt tokens run in one step, so that running streams keep moving while a long
    /// prompt is prefilled.
    pub prefill_chunk: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_concurrent: 16,
            max_queue: 64,
            context_length: 8192,
            prefill_chunk: 512,
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

/// Counters the server reads for health and overload decisions.
#[derive(Debug, Default)]
struct Load {
    /// Admitted requests not yet taken into a running slot.
    waiting: AtomicUsize,
    running: AtomicUsize,
}

/// Read-only state shared by every handle: the text side of the model.
struct Shared {
    info: ModelInfo,
    tokenizer: TokenizerBundle,
    template: ChatTemplate,
    config: EngineConfig,
    load: Load,
    end_tokens: Vec<u32>,
    /// Built at the first constrained request: most requests never need it.
    compiler: std::sync::OnceLock<Result<ConstraintCompiler, ConstraintError>>,
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
    let shared = Arc::new(Shared {
        info,
        tokenizer: loaded.tokenizer.clone(),
        template: loaded.template,
        config,
        load: Load::default(),
        end_tokens: loaded.end_token_ids.clone(),
        compiler: std::sync::OnceLock::new(),
    });
    let (tx, rx) = mpsc::unbounded_channel();
    let worker = Worker {
        shared: shared.clone(),
        model: loaded.model,
        tokenizer: loaded.tokenizer.tokenizer,
        end_tokens: loaded.end_token_ids,
        incoming: rx,
        queue: VecDeque::new(),
        running: Vec::new(),
        next_id: 0,
        logits: Vec::new(),
    };
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

    /// Requests waiting for a slot, and sequences running.
    pub fn load(&self) -> (usize, usize) {
        let load = &self.shared.load;
        (
            load.waiting.load(Ordering::Relaxed),
            load.running.load(Ordering::Relaxed),
        )
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
        request.max_tokens = request.max_tokens.min(context - request.prompt.len());
        let sampler = Sampler::new(request.sampling.clone(), shared.info.vocab_size)?;
        // Reserve a place in the queue before handing over, so concurrent submits cannot
        // overshoot the limit.
        let waiting = shared.load.waiting.fetch_add(1, Ordering::AcqRel);
        if waiting >= shared.config.max_queue {
            shared.load.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(SubmitError::QueueFull(waiting));
        }
        let (events, stream) = mpsc::unbounded_channel();
        let admitted = Admitted {
            request,
            sampler,
            events,
        };
        if self.requests.send(admitted).is_err() {
            shared.load.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(SubmitError::Stopped);
        }
        Ok(stream)
    }
}

/// One running request: its place in the prompt, its sampler and its text pipeline.
struct Sequence {
    id: SeqId,
    prompt: Vec<u32>,
    /// How many prompt tokens are already in the cache.
    prefilled: usize,
    sampler: Sampler,
    constraint: Option<Constraint>,
    /// The constraint's allowed tokens for this step (reused buffer).
    mask: Vec<u32>,
    detokenizer: Detokenizer,
    stop: StopMatcher,
    max_tokens: usize,
    output_tokens: usize,
    /// The token sampled last step, to feed in this step.
    next_input: Option<u32>,
    /// Tokens whose text has not been sent yet (held back by the detokenizer or stop matcher).
    pending_ids: Vec<u32>,
    pending_logprobs: Vec<f32>,
    events: mpsc::UnboundedSender<StreamEvent>,
}

impl Sequence {
    fn in_prefill(&self) -> bool {
        self.prefilled < self.prompt.len()
    }

    fn send_text(&mut self, text: String) {
        if text.is_empty() {
            return;
        }
        let _ = self.events.send(StreamEvent::Text {
            text,
            token_ids: std::mem::take(&mut self.pending_ids),
            logprobs: std::mem::take(&mut self.pending_logprobs),
        });
    }

    fn finish(&mut self, reason: FinishReason) {
        let _ = self.events.send(StreamEvent::Done {
            reason,
            prompt_tokens: self.prompt.len(),
            output_tokens: self.output_tokens,
        });
    }
}

/// The state owned by the engine thread.
struct Worker {
    shared: Arc<Shared>,
    model: Box<dyn BatchModel>,
    tokenizer: Arc<tokenizers::Tokenizer>,
    end_tokens: Vec<u32>,
    incoming: mpsc::UnboundedReceiver<Admitted>,
    queue: VecDeque<Admitted>,
    running: Vec<Sequence>,
    next_id: SeqId,
    logits: Vec<f32>,
}

/// What happened to one sequence in a step.
enum Outcome {
    Continue,
    Finished,
}

impl Worker {
    fn run(mut self) {
        loop {
            if self.running.is_empty() && self.queue.is_empty() {
                // Idle: sleep until a request arrives, or stop when every handle is gone.
                match self.incoming.blocking_recv() {
                    Some(admitted) => self.queue.push_back(admitted),
                    None => return,
                }
            }
            while let Ok(admitted) = self.incoming.try_recv() {
                self.queue.push_back(admitted);
            }
            self.drop_cancelled();
            self.admit();
            if !self.running.is_empty() {
                self.step();
            }
        }
    }

    /// Removes sequences (and queued requests) whose client has gone, freeing their caches.
    fn drop_cancelled(&mut self) {
        let before = self.queue.len();
        self.queue.retain(|a| !a.events.is_closed());
        let dropped = before - self.queue.len();
        self.shared
            .load
            .waiting
            .fetch_sub(dropped, Ordering::AcqRel);
        let model = &mut self.model;
        self.running.retain(|seq| {
            let keep = !seq.events.is_closed();
            if !keep {
                tracing::debug!(seq = seq.id, "client went away; sequence cancelled");
                model.release(seq.id);
            }
            keep
        });
        self.publish_running();
    }

    fn admit(&mut self) {
        while self.running.len() < self.shared.config.max_concurrent {
            let Some(admitted) = self.queue.pop_front() else {
                break;
            };
            self.shared.load.waiting.fetch_sub(1, Ordering::AcqRel);
            let Admitted {
                request,
                mut sampler,
                events,
            } = admitted;
            sampler.observe_all(&request.prompt);
            let id = self.next_id;
            self.next_id += 1;
            self.running.push(Sequence {
                id,
                prompt: request.prompt,
                prefilled: 0,
                sampler,
                constraint: request.constraint,
                mask: Vec::new(),
                detokenizer: Detokenizer::new(self.tokenizer.clone()),
                stop: StopMatcher::new(request.stop_sequences),
                max_tokens: request.max_tokens,
                output_tokens: 0,
                next_input: None,
                pending_ids: Vec::new(),
                pending_logprobs: Vec::new(),
                events,
            });
        }
        self.publish_running();
    }

    fn publish_running(&self) {
        self.shared
            .load
            .running
            .store(self.running.len(), Ordering::Relaxed);
    }

    /// One forward pass over every running sequence: decoding sequences feed their last token,
    /// prefilling ones a slice of their prompt within the step's prefill budget.
    fn step(&mut self) {
        let mut prefill_budget = self.shared.config.prefill_chunk;
        // (index into running, start, end) of the prompt slice, or the decode token.
        let mut plan: Vec<(usize, Input)> = Vec::with_capacity(self.running.len());
        for (i, seq) in self.running.iter().enumerate() {
            if seq.in_prefill() {
                if prefill_budget == 0 {
                    continue;
                }
                let take = (seq.prompt.len() - seq.prefilled).min(prefill_budget);
                prefill_budget -= take;
                plan.push((i, Input::Prompt(seq.prefilled, seq.prefilled + take)));
            } else if let Some(token) = seq.next_input {
                plan.push((i, Input::Token([token])));
            }
        }
        if plan.is_empty() {
            return;
        }
        let batch: Vec<BatchItem<'_>> = plan
            .iter()
            .map(|(i, input)| {
                let seq = &self.running[*i];
                let tokens: &[u32] = match input {
                    Input::Prompt(start, end) => &seq.prompt[*start..*end],
                    Input::Token(token) => token,
                };
                BatchItem {
                    seq: seq.id,
                    tokens,
                }
            })
            .collect();
        let result = self.model.forward(&batch, &mut self.logits);
        drop(batch);
        if let Err(error) = result {
            tracing::error!(%error, "forward pass failed");
            let message = format!("the model failed during generation: {error}");
            let mut failed: Vec<usize> = plan.iter().map(|(i, _)| *i).collect();
            failed.sort_unstable();
            for &i in failed.iter().rev() {
                let seq = self.running.remove(i);
                let _ = seq.events.send(StreamEvent::Error {
                    message: message.clone(),
                });
                self.model.release(seq.id);
            }
            self.publish_running();
            return;
        }
        let vocab = self.model.vocab_size();
        let mut finished = Vec::new();
        for (row, (i, input)) in plan.iter().enumerate() {
            let logits = &mut self.logits[row * vocab..(row + 1) * vocab];
            let seq = &mut self.running[*i];
            if let Input::Prompt(_, end) = input {
                seq.prefilled = *end;
                if seq.in_prefill() {
                    continue;
                }
            }
            match advance(seq, logits, &self.end_tokens) {
                Outcome::Continue => {}
                Outcome::Finished => finished.push(*i),
            }
        }
        finished.sort_unstable();
        for &i in finished.iter().rev() {
            let seq = self.running.remove(i);
            self.model.release(seq.id);
        }
        self.publish_running();
    }
}

/// The tokens one sequence feeds into a step.
enum Input {
    Prompt(usize, usize),
    Token([u32; 1]),
}

/// Samples the next token of one sequence from its logits row and pushes the resulting text
/// through the detokenizer and stop matcher.
fn advance(seq: &mut Sequence, logits: &mut [f32], end_tokens: &[u32]) -> Outcome {
    let sampled = match &mut seq.constraint {
        None => seq.sampler.sample(logits),
        Some(constraint) => match constraint.mask(&mut seq.mask) {
            Ok(()) => seq.sampler.sample_masked(logits, &seq.mask),
            Err(error) => return fail(seq, error.to_string()),
        },
    };
    let sampled = match sampled {
        Ok(sampled) => sampled,
        Err(error) => return fail(seq, format!("sampling failed: {error}")),
    };
    if end_tokens.contains(&sampled.token) {
        close(seq, FinishReason::EndOfTurn);
        return Outcome::Finished;
    }
    if let Some(constraint) = &mut seq.constraint {
        if let Err(error) = constraint.accept(sampled.token) {
            return fail(seq, error.to_string());
        }
    }
    seq.output_tokens += 1;
    seq.pending_ids.push(sampled.token);
    if let Some(logprob) = sampled.logprob {
        seq.pending_logprobs.push(logprob);
    }
    let piece = match seq.detokenizer.push(sampled.token) {
        Ok(piece) => piece,
        Err(error) => {
            let _ = seq.events.send(StreamEvent::Error {
                message: format!("decoding the output failed: {error}"),
            });
            return Outcome::Finished;
        }
    };
    let out = seq.stop.push(&piece);
    seq.send_text(out.emit);
    if out.stopped {
        seq.finish(FinishReason::StopSequence);
        return Outcome::Finished;
    }
    // A complete grammar allows only the end of the turn: end now, without another step.
    if seq.constraint.as_ref().is_some_and(Constraint::is_finished) {
        close(seq, FinishReason::EndOfTurn);
        return Outcome::Finished;
    }
    if seq.output_tokens >= seq.max_tokens {
        close(seq, FinishReason::MaxTokens);
        return Outcome::Finished;
    }
    seq.next_input = Some(sampled.token);
    Outcome::Continue
}

/// Ends a sequence with an error event.
fn fail(seq: &mut Sequence, message: String) -> Outcome {
    let _ = seq.events.send(StreamEvent::Error { message });
    Outcome::Finished
}

/// Ends a sequence that stopped for `reason`: text held back by the detokenizer and the stop
/// matcher is released first (it may still complete a stop sequence).
fn close(seq: &mut Sequence, reason: FinishReason) {
    // A flush failure only loses a trailing partial character; the sequence still ends cleanly.
    let rest = seq.detokenizer.flush().unwrap_or_default();
    let out = seq.stop.push(&rest);
    if out.stopped {
        seq.send_text(out.emit);
        seq.finish(FinishReason::StopSequence);
        return;
    }
    let mut text = out.emit;
    text.push_str(&seq.stop.finish());
    seq.send_text(text);
    seq.finish(reason);
}

#[cfg(test)]
mod tests {
    //! The scheduling logic against a scripted model: each sequence's next token is its last
    //! token + 1, so every stream's content is known in advance.
    use super::*;
    use crate::model::ModelError;
    use crate::template::ChatTemplate;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Duration;

    const VOCAB: usize = 64;
    const EOS: u32 = 63;

    #[derive(Default)]
    struct Record {
        batch_sizes: Vec<usize>,
        released: Vec<SeqId>,
        live: HashMap<SeqId, usize>,
    }

    struct CountingModel {
        record: Arc<Mutex<Record>>,
        /// Slows each step down so that tests can observe sequences while they run.
        step_delay: Duration,
    }

    impl BatchModel for CountingModel {
        fn vocab_size(&self) -> usize {
            VOCAB
        }
        fn max_context(&self) -> usize {
            128
        }
        fn forward(
            &mut self,
            batch: &[BatchItem<'_>],
            logits: &mut Vec<f32>,
        ) -> Result<(), ModelError> {
            std::thread::sleep(self.step_delay);
            let mut record = self.record.lock().unwrap();
            record.batch_sizes.push(batch.len());
            logits.clear();
            logits.resize(batch.len() * VOCAB, 0.0);
            for (row, item) in batch.iter().enumerate() {
                *record.live.entry(item.seq).or_default() += item.tokens.len();
                let last = *item.tokens.last().unwrap() as usize;
                logits[row * VOCAB + (last + 1) % VOCAB] = 10.0;
            }
            Ok(())
        }
        fn release(&mut self, seq: SeqId) {
            let mut record = self.record.lock().unwrap();
            record.live.remove(&seq);
            record.released.push(seq);
        }
    }

    /// A word-level tokenizer whose token `i` is the word `t{i}`.
    fn tokenizer() -> TokenizerBundle {
        use tokenizers::models::wordlevel::WordLevel;
        let vocab = (0..VOCAB as u32).map(|i| (format!("t{i}"), i)).collect();
        let model = WordLevel::builder()
            .vocab(vocab)
            .unk_token("t0".into())
            .build()
            .unwrap();
        let mut tokenizer = tokenizers::Tokenizer::new(model);
        tokenizer.with_pre_tokenizer(Some(tokenizers::pre_tokenizers::whitespace::Whitespace {}));
        TokenizerBundle {
            tokenizer: Arc::new(tokenizer),
            bos: None,
            eos: None,
            add_bos: false,
            end_of_turn: vec![EOS],
            chat_template: None,
        }
    }

    fn engine(config: EngineConfig, step_delay: Duration) -> (EngineHandle, Arc<Mutex<Record>>) {
        let record = Arc::new(Mutex::new(Record::default()));
        let loaded = LoadedModel {
            info: ModelInfo {
                name: "counting".into(),
                architecture: "test".into(),
                context_length: 128,
                vocab_size: VOCAB,
                template_origin: "builtin:chatml".into(),
            },
            model: Box::new(CountingModel {
                record: record.clone(),
                step_delay,
            }),
            tokenizer: tokenizer(),
            template: ChatTemplate::fallback_for("llama", None, None).unwrap(),
            end_token_ids: vec![EOS],
        };
        (start(loaded, config), record)
    }

    fn greedy(prompt: Vec<u32>, max_tokens: usize) -> GenerateRequest {
        GenerateRequest {
            prompt,
            sampling: SamplingParams {
                temperature: 0.0,
                ..SamplingParams::default()
            },
            max_tokens,
            stop_sequences: Vec::new(),
            constraint: None,
        }
    }

    /// Collects a stream to its end: every token id sent, and the final event.
    async fn collect(mut stream: EventStream) -> (Vec<u32>, StreamEvent) {
        let mut ids = Vec::new();
        while let Some(event) = stream.recv().await {
            match event {
                StreamEvent::Text { token_ids, .. } => ids.extend(token_ids),
                last => return (ids, last),
            }
        }
        panic!("stream ended without a final event");
    }

    async fn wait_until(condition: impl Fn() -> bool) {
        for _ in 0..1000 {
            if condition() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("condition not reached within 2 s");
    }

    #[tokio::test]
    async fn generates_until_max_tokens_and_counts() {
        let (engine, record) = engine(EngineConfig::default(), Duration::ZERO);
        let stream = engine.submit(greedy(vec![1, 2, 3], 5)).unwrap();
        let (ids, last) = collect(stream).await;
        assert_eq!(ids, vec![4, 5, 6, 7, 8]);
        assert_eq!(
            last,
            StreamEvent::Done {
                reason: FinishReason::MaxTokens,
                prompt_tokens: 3,
                output_tokens: 5
            }
        );
        wait_until(|| record.lock().unwrap().live.is_empty()).await;
    }

    #[tokio::test]
    async fn stops_at_end_of_turn_without_emitting_it() {
        let (engine, _) = engine(EngineConfig::default(), Duration::ZERO);
        let (ids, last) = collect(engine.submit(greedy(vec![59], 50)).unwrap()).await;
        assert_eq!(ids, vec![60, 61, 62]);
        assert!(matches!(
            last,
            StreamEvent::Done {
                reason: FinishReason::EndOfTurn,
                output_tokens: 3,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn stop_sequence_cuts_the_text() {
        let (engine, _) = engine(EngineConfig::default(), Duration::ZERO);
        let mut request = greedy(vec![1], 20);
        request.stop_sequences = vec!["t5".into()];
        let mut stream = engine.submit(request).unwrap();
        let mut text = String::new();
        let last = loop {
            match stream.recv().await.unwrap() {
                StreamEvent::Text { text: piece, .. } => text.push_str(&piece),
                last => break last,
            }
        };
        assert!(!text.contains("t5"), "{text:?}");
        assert!(text.contains("t4"), "{text:?}");
        assert!(matches!(
            last,
            StreamEvent::Done {
                reason: FinishReason::StopSequence,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn concurrent_requests_share_forward_passes() {
        let (engine, record) = engine(EngineConfig::default(), Duration::from_millis(2));
        let streams: Vec<_> = (0..4)
            .map(|i| engine.submit(greedy(vec![i * 10], 8)).unwrap())
            .collect();
        for (i, stream) in streams.into_iter().enumerate() {
            let (ids, _) = collect(stream).await;
            let first = i as u32 * 10 + 1;
            assert_eq!(ids, (first..first + 8).collect::<Vec<_>>());
        }
        let record = record.lock().unwrap();
        assert!(
            record.batch_sizes.contains(&4),
            "never batched all four: {:?}",
            record.batch_sizes
        );
    }

    #[tokio::test]
    async fn dropping_the_stream_cancels_and_frees_the_slot() {
        let config = EngineConfig {
            max_concurrent: 1,
            ..EngineConfig::default()
        };
        let (engine, record) = engine(config, Duration::from_millis(5));
        let mut first = engine.submit(greedy(vec![1], 100)).unwrap();
        assert!(matches!(first.recv().await, Some(StreamEvent::Text { .. })));
        drop(first);
        // The only slot must come free for the next request.
        let (ids, last) = collect(engine.submit(greedy(vec![1], 3)).unwrap()).await;
        assert_eq!(ids, vec![2, 3, 4]);
        assert!(matches!(last, StreamEvent::Done { .. }));
        // The cache is freed right after the final event is sent.
        wait_until(|| record.lock().unwrap().live.is_empty()).await;
        assert!(
            record.lock().unwrap().released.contains(&0),
            "first sequence not released"
        );
    }

    #[tokio::test]
    async fn full_queue_and_long_prompts_are_refused_up_front() {
        let config = EngineConfig {
            max_concurrent: 1,
            max_queue: 1,
            ..EngineConfig::default()
        };
        let (engine, _) = engine(config, Duration::from_millis(20));
        let _running = engine.submit(greedy(vec![1], 100)).unwrap();
        // Let the engine take the first request into its slot.
        while engine.load().1 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let _queued = engine.submit(greedy(vec![1], 100)).unwrap();
        assert_eq!(
            engine.submit(greedy(vec![1], 100)).unwrap_err(),
            SubmitError::QueueFull(1)
        );
        assert_eq!(
            engine.submit(greedy(vec![1; 128], 1)).unwrap_err(),
            SubmitError::PromptTooLong {
                prompt: 128,
                context: 128
            }
        );
    }

    #[tokio::test]
    async fn long_prompts_are_prefilled_in_chunks_while_others_decode() {
        let config = EngineConfig {
            prefill_chunk: 8,
            ..EngineConfig::default()
        };
        let (engine, record) = engine(config, Duration::from_millis(1));
        let (ids, _) = collect(engine.submit(greedy((0..40).collect(), 2)).unwrap()).await;
        assert_eq!(ids, vec![40, 41]);
        // 40 prompt tokens in chunks of 8: five prefill steps, then one decode step.
        assert_eq!(record.lock().unwrap().batch_sizes.len(), 6);
    }
}
