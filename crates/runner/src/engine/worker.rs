//! The loop on the engine thread: take in requests, order the queue, admit into free slots, run
//! one forward pass over every running sequence, and advance each of them.
//!
//! KV memory (for a model with a pool): a request is admitted only when the pool can hold its
//! whole prompt and first output token, so it waits in the queue while memory is short; the
//! queue limit still refuses the rest. A sequence starts its prefill on the longest cached prefix
//! of its prompt, and waits a step or two while a sequence ahead of it is prefilling a block it
//! shares, so that simultaneous requests with one system prompt compute it once. When a decode
//! step finds the pool full, the most recently admitted sequence is preempted: its cache is
//! released (its full blocks stay cached), it goes back ahead of the queue, and it resumes by
//! prefilling its prompt and output so far, mostly from the cache. Its reply is unchanged: a
//! position's keys and values do not depend on the batch that computed them.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::sequence::{advance, Outcome, Sequence, Steering};
use super::speculate::{lookup, DraftLen};
use super::{Admitted, EngineEvent, ErrorKind, Shared};
use crate::detok::Detokenizer;
use crate::model::{BatchItem, BatchModel, SeqId};
use crate::stop::StopMatcher;
use crate::thinking::ThinkingBudget;

/// The state owned by the engine thread.
pub(super) struct Worker {
    shared: Arc<Shared>,
    model: Box<dyn BatchModel>,
    tokenizer: Arc<tokenizers::Tokenizer>,
    end_tokens: Vec<u32>,
    incoming: mpsc::UnboundedReceiver<Admitted>,
    /// Ordered by priority (0 first), then arrival.
    queue: VecDeque<Admitted>,
    /// Sequences that gave their cache up for memory, oldest first; admitted before the queue.
    preempted: VecDeque<Sequence>,
    running: Vec<Sequence>,
    next_id: SeqId,
    logits: Vec<f32>,
}

/// The tokens one sequence feeds into a step.
enum Input {
    Prompt(usize, usize),
    /// The sequence's `feed`: its next input, then this many draft tokens.
    Decode {
        drafts: usize,
    },
}

impl Input {
    fn len(&self) -> usize {
        match self {
            Input::Prompt(start, end) => end - start,
            Input::Decode { drafts } => 1 + drafts,
        }
    }

    /// Logits rows the input gets.
    fn rows(&self) -> usize {
        match self {
            Input::Prompt(..) => 1,
            Input::Decode { drafts } => 1 + drafts,
        }
    }
}

/// The text of a panic payload, for the error sent to the requests it ended.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Gives sequence `id` the KV memory for `input` and its first output token: its cached prefix
/// is attached first, so that it counts as room already there and the reservation cannot evict
/// it. False, holding nothing, when the pool cannot hold the rest.
fn claim(model: &mut dyn BatchModel, id: SeqId, input: &[u32]) -> bool {
    model.attach_prefix(id, input);
    if model.reserve(id, input.len() + 1) {
        return true;
    }
    model.release(id);
    false
}

impl Worker {
    pub fn new(
        shared: Arc<Shared>,
        model: Box<dyn BatchModel>,
        tokenizer: Arc<tokenizers::Tokenizer>,
        end_tokens: Vec<u32>,
        incoming: mpsc::UnboundedReceiver<Admitted>,
    ) -> Self {
        Self {
            shared,
            model,
            tokenizer,
            end_tokens,
            incoming,
            queue: VecDeque::new(),
            preempted: VecDeque::new(),
            running: Vec::new(),
            next_id: 0,
            logits: Vec::new(),
        }
    }

    pub fn run(mut self) {
        loop {
            if self.running.is_empty() && self.queue.is_empty() && self.preempted.is_empty() {
                // Idle: sleep until a request arrives, or stop when every handle is gone.
                match self.incoming.blocking_recv() {
                    Some(admitted) => self.enqueue(admitted),
                    None => return,
                }
            }
            while let Ok(admitted) = self.incoming.try_recv() {
                self.enqueue(admitted);
            }
            self.drop_cancelled();
            self.admit();
            if !self.running.is_empty() {
                self.step();
            }
        }
    }

    /// Places a request after every queued one of the same or a more important priority.
    fn enqueue(&mut self, admitted: Admitted) {
        let priority = admitted.request.priority;
        let at = self
            .queue
            .iter()
            .position(|queued| queued.request.priority > priority)
            .unwrap_or(self.queue.len());
        self.queue.insert(at, admitted);
    }

    /// Removes sequences (and queued requests) whose client has gone, freeing their caches.
    fn drop_cancelled(&mut self) {
        self.queue.retain(|a| !a.events.is_closed());
        self.preempted.retain(|seq| !seq.events.is_closed());
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

    /// Moves preempted sequences, then queued requests, into free slots while the KV pool can
    /// hold their input and first output token; the first that does not fit waits, and so does
    /// everything behind it.
    fn admit(&mut self) {
        while self.running.len() < self.shared.config.max_concurrent {
            if let Some(seq) = self.preempted.front() {
                if !claim(&mut *self.model, seq.id, &seq.input) {
                    break;
                }
                let seq = self.preempted.pop_front().expect("front exists");
                tracing::debug!(
                    seq = seq.id,
                    tokens = seq.input.len(),
                    "preempted sequence resumes"
                );
                self.running.push(seq);
                continue;
            }
            let Some(front) = self.queue.front() else {
                break;
            };
            let id = self.next_id;
            if !claim(&mut *self.model, id, &front.request.prompt) {
                break;
            }
            self.next_id += 1;
            let Admitted {
                request,
                mut sampler,
                events,
                place,
                submitted,
            } = self.queue.pop_front().expect("front exists");
            self.shared.notify(EngineEvent::Scheduled {
                queue_wait: submitted.elapsed(),
            });
            sampler.observe_all(&request.prompt);
            self.running.push(Sequence {
                id,
                prompt_len: request.prompt.len(),
                input: request.prompt,
                prefilled: 0,
                attached: false,
                cached: None,
                sampler,
                constraint: request.constraint,
                mask: Vec::new(),
                steering: Steering::default(),
                detokenizer: Detokenizer::new(self.tokenizer.clone()),
                stop: StopMatcher::new(request.stop_sequences),
                max_tokens: request.max_tokens,
                output_tokens: 0,
                next_input: None,
                feed: Vec::new(),
                draft: DraftLen::new(self.shared.config.speculation.max_draft),
                pending_ids: Vec::new(),
                pending_logprobs: Vec::new(),
                events,
                teacher: request.teacher,
                scores: Vec::new(),
                thinking: request.thinking_budget.and_then(|budget| {
                    let (open, close) = self.shared.thinking_ids.as_ref()?;
                    Some(ThinkingBudget::new(
                        open.clone(),
                        close.clone(),
                        budget,
                        request.thinking_opened,
                    ))
                }),
                _place: place,
            });
        }
        self.publish_running();
    }

    /// Gives the cache of running sequence `i` up and puts it ahead of the queue.
    fn preempt(&mut self, i: usize) {
        let mut seq = self.running.remove(i);
        self.model.release(seq.id);
        let tokens = seq.input.len() + usize::from(seq.next_input.is_some());
        tracing::info!(
            seq = seq.id,
            tokens,
            "KV pool full: sequence preempted, to resume from the prefix cache"
        );
        self.shared.notify(EngineEvent::Preempted { tokens });
        seq.preempt();
        self.preempted.push_front(seq);
        self.publish_running();
    }

    /// Makes room in the pool for this step's decode tokens (prompts reserved theirs when
    /// admitted). When the pool is full, the most recently admitted sequence steps aside, until
    /// the rest fit.
    fn reserve_decodes(&mut self) {
        let mut i = 0;
        while i < self.running.len() {
            let seq = &self.running[i];
            if seq.in_prefill()
                || seq.next_input.is_none()
                || self.model.reserve(seq.id, seq.prefilled + 1)
            {
                i += 1;
                continue;
            }
            self.preempt(self.running.len() - 1);
        }
    }

    /// Whether sequence `i`, whose prefill has not started, should wait for a sequence ahead of
    /// it that is prefilling at least one whole block of its prompt not yet in the cache.
    fn awaits_shared_prefill(&self, i: usize, block: usize) -> bool {
        let input = &self.running[i].input;
        self.running[..i].iter().any(|ahead| {
            if !ahead.in_prefill() {
                return false;
            }
            let common = ahead
                .input
                .iter()
                .zip(input)
                .take_while(|(a, b)| a == b)
                .count();
            // Blocks below `ahead.prefilled` are committed: attaching finds them now.
            common / block > ahead.prefilled / block
        })
    }

    /// Adds prompt-lookup drafts to the decode inputs of `plan` while the step stays small
    /// enough to be bound by reading the weights (see `speculate`), first come first served.
    fn draft(&mut self, plan: &mut [(usize, Input)]) {
        let spec = self.shared.config.speculation;
        if spec.max_draft == 0 || !self.model.takes_drafts() {
            return;
        }
        let mut room = spec
            .step_tokens
            .saturating_sub(plan.iter().map(|(_, input)| input.len()).sum());
        for (i, input) in plan.iter_mut() {
            if room == 0 {
                break;
            }
            let Input::Decode { drafts } = input else {
                continue;
            };
            let seq = &mut self.running[*i];
            if seq.teacher.is_some() {
                continue;
            }
            // Each row yields at most one token: no more rows than tokens left to generate.
            let left = seq.max_tokens.saturating_sub(seq.output_tokens + 1);
            let want = seq.draft.len().min(left).min(room);
            // `feed` holds the decode token; the draft goes after it.
            lookup(&seq.input, seq.feed[0], want, &mut seq.feed);
            let n = seq.feed.len() - 1;
            if n == 0 || !self.model.reserve(seq.id, seq.prefilled + 1 + n) {
                seq.feed.truncate(1);
                continue;
            }
            *drafts = n;
            room -= n;
        }
    }

    fn publish_running(&self) {
        self.shared
            .load
            .running
            .store(self.running.len(), Ordering::Relaxed);
    }

    /// Ends the running sequences at `indices` (sorted, unique) with an error and frees them.
    fn fail_all(&mut self, indices: &[usize], message: &str, kind: ErrorKind) {
        for &i in indices.iter().rev() {
            let mut seq = self.running.remove(i);
            seq.fail(message.to_string(), kind);
            self.model.release(seq.id);
        }
        self.publish_running();
    }

    /// One forward pass over every running sequence: decoding sequences feed their last token,
    /// prefilling ones a slice of their prompt within the step's prefill budget.
    fn step(&mut self) {
        self.reserve_decodes();
        let mut prefill_budget = self.shared.config.prefill_chunk;
        let block = self.model.kv_usage().map(|u| u.block_tokens);
        // (index into running, start, end) of the prompt slice, or the decode token.
        let mut plan: Vec<(usize, Input)> = Vec::with_capacity(self.running.len());
        for i in 0..self.running.len() {
            if self.running[i].in_prefill() {
                if prefill_budget == 0 {
                    continue;
                }
                if !self.running[i].attached {
                    if block.is_some_and(|b| self.awaits_shared_prefill(i, b)) {
                        continue;
                    }
                    let seq = &mut self.running[i];
                    seq.prefilled = self.model.attach_prefix(seq.id, &seq.input);
                    seq.attached = true;
                    if seq.cached.is_none() {
                        seq.cached = Some(seq.prefilled);
                        tracing::debug!(
                            seq = seq.id,
                            cached = seq.prefilled,
                            prompt = seq.input.len(),
                            "prefix cache"
                        );
                    }
                }
                let seq = &self.running[i];
                let take = (seq.input.len() - seq.prefilled).min(prefill_budget);
                prefill_budget -= take;
                plan.push((i, Input::Prompt(seq.prefilled, seq.prefilled + take)));
            } else if let Some(token) = self.running[i].next_input {
                let seq = &mut self.running[i];
                seq.feed.clear();
                seq.feed.push(token);
                plan.push((i, Input::Decode { drafts: 0 }));
            }
        }
        if plan.is_empty() {
            return;
        }
        self.draft(&mut plan);
        let batch: Vec<BatchItem<'_>> = plan
            .iter()
            .map(|(i, input)| {
                let seq = &self.running[*i];
                let (tokens, drafts): (&[u32], usize) = match input {
                    Input::Prompt(start, end) => (&seq.input[*start..*end], 0),
                    Input::Decode { drafts } => (&seq.feed, *drafts),
                };
                BatchItem {
                    seq: seq.id,
                    tokens,
                    drafts,
                }
            })
            .collect();
        // A panic in the forward pass is a failed step like any other: the sequences of the
        // batch end with an error and the engine serves on.
        let (model, logits) = (&mut self.model, &mut self.logits);
        let started = std::time::Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| model.forward(&batch, logits)));
        // Where a step's time goes (with RUST_LOG=runner=trace): a time-to-first-token is a
        // few of these, so their sizes and durations explain it.
        tracing::trace!(
            sequences = batch.len(),
            prefill = plan
                .iter()
                .filter(|(_, i)| matches!(i, Input::Prompt(..)))
                .count(),
            tokens = batch.iter().map(|b| b.tokens.len()).sum::<usize>(),
            forward_ms = started.elapsed().as_secs_f64() * 1e3,
            "step"
        );
        drop(batch);
        let failure = match result {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(format!("the model failed during generation: {error}")),
            Err(payload) => Some(format!(
                "the model failed during generation (panic: {})",
                panic_text(&*payload)
            )),
        };
        let mut touched: Vec<usize> = plan.iter().map(|(i, _)| *i).collect();
        touched.sort_unstable();
        if let Some(message) = failure {
            tracing::error!(%message, sequences = touched.len(), "forward pass failed");
            self.fail_all(&touched, &message, ErrorKind::Server);
            return;
        }
        let vocab = self.model.vocab_size();
        let mut finished = Vec::new();
        let (mut row, mut drafted, mut accepted) = (0, 0, 0);
        for (i, input) in &plan {
            let rows = &mut self.logits[row * vocab..(row + input.rows()) * vocab];
            row += input.rows();
            let seq = &mut self.running[*i];
            let drafts = match input {
                Input::Prompt(_, end) => {
                    seq.prefilled = *end;
                    if seq.in_prefill() {
                        continue;
                    }
                    0
                }
                Input::Decode { drafts } => *drafts,
            };
            // Row j holds the logits after the j-th token fed: sample them in order, for as
            // long as each sampled token is the draft's next one (see `speculate`).
            let mut ended = false;
            let mut right = 0;
            for (j, logits) in rows.chunks_exact_mut(vocab).enumerate() {
                if let Input::Decode { .. } = input {
                    seq.input.push(seq.feed[j]);
                    seq.prefilled = seq.input.len();
                }
                let end_tokens = &self.end_tokens;
                let outcome = catch_unwind(AssertUnwindSafe(|| advance(seq, logits, end_tokens)));
                match outcome {
                    Ok(Outcome::Continue) => {}
                    Ok(Outcome::Finished) => ended = true,
                    Err(payload) => {
                        let message =
                            format!("generation failed (panic: {})", panic_text(&*payload));
                        tracing::error!(seq = seq.id, %message, "sequence failed");
                        seq.fail(message, ErrorKind::Server);
                        ended = true;
                    }
                }
                if ended || j == drafts || seq.next_input != seq.feed.get(j + 1).copied() {
                    break;
                }
                right += 1;
            }
            if ended {
                finished.push(*i);
            } else if drafts > 0 {
                if right < drafts {
                    self.model.truncate(seq.id, seq.prefilled);
                }
                let max = self.shared.config.speculation.max_draft;
                seq.draft.record(drafts, right, max);
            }
            drafted += drafts;
            accepted += right;
        }
        if drafted > 0 {
            self.shared
                .notify(EngineEvent::Drafted { drafted, accepted });
        }
        finished.sort_unstable();
        for &i in finished.iter().rev() {
            let seq = self.running.remove(i);
            self.model.release(seq.id);
        }
        self.publish_running();
        let config = &self.shared.config;
        let (cached_tokens, cache_capacity) = match self.model.kv_usage() {
            Some(u) => (u.held * u.block_tokens, u.total * u.block_tokens),
            None => (
                self.running.iter().map(|s| s.prefilled).sum(),
                config.max_concurrent * config.context_length,
            ),
        };
        self.shared.notify(EngineEvent::Step {
            sequences: plan.len(),
            tokens: plan.iter().map(|(_, input)| input.len()).sum(),
            cached_tokens,
            cache_capacity,
        });
    }
}
