//! One engine thread per encoder model, with its own compute pool and a bounded queue.
//!
//! A request (up to a few hundred tokenized inputs) is admitted or refused at once
//! ([`EngineError::QueueFull`]); admitted requests wait on the engine thread, which packs inputs
//! into forward passes of at most `max_batch_tokens` tokens, taking one input from each waiting
//! request in turn, so a short query is never stuck behind a large document batch for more than
//! one pass. A request whose caller has gone away (its reply receiver dropped) is dropped before
//! its next input runs. The model has its own [`kernels::Threads`], separate from any chat
//! engine's, so embedding work never holds a chat step's pool; on a shared CPU the OS divides
//! the cores between them, and [`EngineConfig::nice`] lowers this model's threads' priority so
//! that latency-bound work (chat streams) goes first.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use kernels::Threads;
use tokio::sync::oneshot;

use crate::config::{EncoderKind, EncoderSpec};
use crate::model::{Model, Scratch};
use crate::text::{Encoded, TextEncoder};
use crate::Precision;

/// Limits of one encoder engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Compute threads of this model's pool.
    pub threads: usize,
    /// Most tokens in one forward pass (an input longer than this runs alone).
    pub max_batch_tokens: usize,
    /// Most requests admitted and not yet answered.
    pub max_queue: usize,
    /// Added to the OS scheduling priority (Linux `nice`, 0 to 19) of the engine thread and its
    /// pool: with a chat model in the same process, its streams keep their pace during an
    /// embedding burst. 0 leaves the priority alone; ignored where unsupported.
    pub nice: i32,
    /// What the matrix products run at (resolved at load: the handle's config never says
    /// `Auto`).
    pub precision: Precision,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_batch_tokens: 2048,
            max_queue: 64,
            nice: 0,
            precision: Precision::Auto,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    #[error("the request queue is full ({0} waiting)")]
    QueueFull(usize),
    #[error("the encoder engine has stopped")]
    Stopped,
    #[error("the model failed on this input: {0}")]
    Failed(String),
}

/// A request's result: one vector per input (embedders) or one logit per input (cross-encoders).
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Embeddings(Vec<Vec<f32>>),
    Logits(Vec<f32>),
}

/// Where a request's result arrives; dropping it cancels the request.
pub type Pending = oneshot::Receiver<Result<Output, EngineError>>;

struct Shared {
    spec: EncoderSpec,
    text: TextEncoder,
    config: EngineConfig,
    /// Requests admitted and not yet answered.
    waiting: AtomicUsize,
}

/// A cheap, cloneable handle to one running encoder.
#[derive(Clone)]
pub struct EncoderHandle {
    shared: Arc<Shared>,
    jobs: mpsc::Sender<Job>,
}

struct Job {
    inputs: Vec<Encoded>,
    /// Results so far, in input order.
    vectors: Vec<Vec<f32>>,
    logits: Vec<f32>,
    next: usize,
    done: usize,
    reply: Option<oneshot::Sender<Result<Output, EngineError>>>,
}

/// Starts the engine thread for a loaded model.
pub fn start(model: Model, text: TextEncoder, config: EngineConfig) -> EncoderHandle {
    let config = EngineConfig {
        threads: config.threads.max(1),
        max_batch_tokens: config.max_batch_tokens.max(1),
        max_queue: config.max_queue.max(1),
        nice: config.nice.clamp(0, 19),
        precision: model.precision(),
    };
    let shared = Arc::new(Shared {
        spec: model.spec().clone(),
        text,
        config: config.clone(),
        waiting: AtomicUsize::new(0),
    });
    let (tx, rx) = mpsc::channel();
    let worker_shared = shared.clone();
    std::thread::Builder::new()
        .name("cohost-encoder".into())
        .spawn(move || {
            // Before the pool exists: its threads inherit this thread's priority.
            lower_priority(config.nice);
            let worker = Worker {
                shared: worker_shared,
                model,
                threads: Threads::new(config.threads),
                scratch: Scratch::default(),
                incoming: rx,
                jobs: VecDeque::new(),
            };
            worker.run()
        })
        .expect("spawning the encoder engine thread");
    EncoderHandle { shared, jobs: tx }
}

impl EncoderHandle {
    pub fn spec(&self) -> &EncoderSpec {
        &self.shared.spec
    }

    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }

    pub fn text(&self) -> &TextEncoder {
        &self.shared.text
    }

    /// Requests admitted and not yet answered.
    pub fn waiting(&self) -> usize {
        self.shared.waiting.load(Ordering::Relaxed)
    }

    /// Admits a request or says at once why not. Every input must fit the model's window
    /// (the text side guarantees it).
    pub fn submit(&self, inputs: Vec<Encoded>) -> Result<Pending, EngineError> {
        let shared = &self.shared;
        let waiting = shared.waiting.fetch_add(1, Ordering::AcqRel);
        if waiting >= shared.config.max_queue {
            shared.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(EngineError::QueueFull(waiting));
        }
        let (reply, pending) = oneshot::channel();
        let job = Job {
            inputs,
            vectors: Vec::new(),
            logits: Vec::new(),
            next: 0,
            done: 0,
            reply: Some(reply),
        };
        if self.jobs.send(job).is_err() {
            shared.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(EngineError::Stopped);
        }
        Ok(pending)
    }

    /// `submit` and wait.
    pub async fn run(&self, inputs: Vec<Encoded>) -> Result<Output, EngineError> {
        self.submit(inputs)?
            .await
            .unwrap_or(Err(EngineError::Stopped))
    }

    /// `submit` and wait, for callers outside an async runtime (benches, tools).
    pub fn run_blocking(&self, inputs: Vec<Encoded>) -> Result<Output, EngineError> {
        self.submit(inputs)?
            .blocking_recv()
            .unwrap_or(Err(EngineError::Stopped))
    }
}

struct Worker {
    shared: Arc<Shared>,
    model: Model,
    threads: Threads,
    scratch: Scratch,
    incoming: mpsc::Receiver<Job>,
    jobs: VecDeque<Job>,
}

impl Worker {
    fn run(mut self) {
        loop {
            if self.jobs.is_empty() {
                match self.incoming.recv() {
                    Ok(job) => self.admit(job),
                    Err(_) => return,
                }
            }
            while let Ok(job) = self.incoming.try_recv() {
                self.admit(job);
            }
            self.drop_cancelled();
            if !self.jobs.is_empty() {
                self.step();
            }
        }
    }

    fn admit(&mut self, mut job: Job) {
        if job.inputs.is_empty() {
            let out = match self.shared.spec.kind {
                EncoderKind::Embed => Output::Embeddings(Vec::new()),
                EncoderKind::Rerank => Output::Logits(Vec::new()),
            };
            self.answer(&mut job, Ok(out));
            return;
        }
        self.jobs.push_back(job);
    }

    fn answer(&self, job: &mut Job, result: Result<Output, EngineError>) {
        if let Some(reply) = job.reply.take() {
            // The place frees before the answer goes out: a caller holding its answer never
            // sees its own request still counted.
            self.shared.waiting.fetch_sub(1, Ordering::AcqRel);
            let _ = reply.send(result);
        }
    }

    fn drop_cancelled(&mut self) {
        let before = self.jobs.len();
        self.jobs
            .retain(|j| j.reply.as_ref().is_some_and(|r| !r.is_closed()));
        let gone = before - self.jobs.len();
        if gone > 0 {
            self.shared.waiting.fetch_sub(gone, Ordering::AcqRel);
            tracing::debug!(
                cancelled = gone,
                "encoder requests dropped by their callers"
            );
        }
    }

    /// Picks the next pass's inputs: one from each request in turn, within the token budget.
    fn pick(&mut self) -> Vec<(usize, usize)> {
        let budget = self.shared.config.max_batch_tokens;
        let mut picked = Vec::new();
        let mut tokens = 0;
        loop {
            let mut took = false;
            for (j, job) in self.jobs.iter_mut().enumerate() {
                if job.next >= job.inputs.len() {
                    continue;
                }
                let n = job.inputs[job.next].len();
                if !picked.is_empty() && tokens + n > budget {
                    return picked;
                }
                picked.push((j, job.next));
                job.next += 1;
                tokens += n;
                took = true;
            }
            if !took {
                return picked;
            }
        }
    }

    fn step(&mut self) {
        let picked = self.pick();
        let started = Instant::now();
        let seqs: Vec<&Encoded> = picked
            .iter()
            .map(|&(j, i)| &self.jobs[j].inputs[i])
            .collect();
        let tokens: usize = seqs.iter().map(|s| s.len()).sum();
        let (model, threads, scratch) = (&self.model, &self.threads, &mut self.scratch);
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| match model.spec().kind {
            EncoderKind::Embed => Output::Embeddings(model.embed(&seqs, threads, scratch)),
            EncoderKind::Rerank => Output::Logits(model.score(&seqs, threads, scratch)),
        }));
        tracing::debug!(
            inputs = picked.len(),
            tokens,
            ms = started.elapsed().as_millis() as u64,
            "encoder pass"
        );
        match result {
            Ok(Output::Embeddings(vectors)) => {
                for (&(j, i), v) in picked.iter().zip(vectors) {
                    let job = &mut self.jobs[j];
                    if job.vectors.len() <= i {
                        job.vectors.resize(job.inputs.len(), Vec::new());
                    }
                    job.vectors[i] = v;
                    job.done += 1;
                }
            }
            Ok(Output::Logits(logits)) => {
                for (&(j, i), v) in picked.iter().zip(logits) {
                    let job = &mut self.jobs[j];
                    if job.logits.len() <= i {
                        job.logits.resize(job.inputs.len(), 0.0);
                    }
                    job.logits[i] = v;
                    job.done += 1;
                }
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "a panic in the forward pass".into());
                tracing::error!(%message, "encoder pass failed");
                let mut hit: Vec<usize> = picked.iter().map(|p| p.0).collect();
                hit.dedup();
                for j in hit {
                    let mut job = std::mem::replace(&mut self.jobs[j], empty_job());
                    self.answer(&mut job, Err(EngineError::Failed(message.clone())));
                }
            }
        }
        let mut k = 0;
        while k < self.jobs.len() {
            let job = &self.jobs[k];
            if job.reply.is_some() && job.done < job.inputs.len() {
                k += 1;
                continue;
            }
            let mut job = self.jobs.remove(k).expect("index checked");
            let out = match self.shared.spec.kind {
                EncoderKind::Embed => Output::Embeddings(std::mem::take(&mut job.vectors)),
                EncoderKind::Rerank => Output::Logits(std::mem::take(&mut job.logits)),
            };
            self.answer(&mut job, Ok(out));
        }
    }
}

/// Raises the calling thread's nice value by `by` (Linux: per thread, inherited by the threads it
/// creates).
fn lower_priority(by: i32) {
    if by <= 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain syscalls on the calling thread; `who = 0` is this thread on Linux.
        unsafe {
            let now = libc::getpriority(libc::PRIO_PROCESS, 0);
            if libc::setpriority(libc::PRIO_PROCESS, 0, (now + by).min(19)) != 0 {
                tracing::warn!("could not lower the encoder threads' priority");
            }
        }
    }
}

/// A finished placeholder (answered, nothing left to run).
fn empty_job() -> Job {
    Job {
        inputs: Vec::new(),
        vectors: Vec::new(),
        logits: Vec::new(),
        next: 0,
        done: 0,
        reply: None,
    }
}
