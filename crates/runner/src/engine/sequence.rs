//! One running request on the engine thread, and what happens to it after each forward pass:
//! sample (within its grammar, steered to complete within its budget), detokenize, cut at stop
//! sequences, send the text, and decide whether it goes on.

use std::collections::VecDeque;

use sampler::Sampler;
use tokio::sync::mpsc;

use super::speculate::DraftLen;
use super::{ErrorKind, FinishReason, InFlight, StreamEvent};
use crate::constraint::Constraint;
use crate::detok::Detokenizer;
use crate::model::SeqId;
use crate::stop::StopMatcher;
use crate::thinking::ThinkingBudget;

/// A constrained sequence looks for its closing path every step once the tokens left are within
/// this many of the last path's length.
const LOOK_WINDOW: usize = 16;
/// Longest closing path looked for: a walk costs one grammar mask per token, and a reply whose
/// shortest completion is longer than this is left to its budget.
const WALK_CAP: usize = 64;
/// Tokens between looks while the end is still a few path lengths away (the path grows when the
/// model opens nested values).
const LOOK_EVERY: usize = 8;
/// Tokens of slack kept between the closing path and the budget: a free token may lengthen the
/// shortest completion a little (a new optional member, a nested value).
const CLOSING_MARGIN: usize = 2;

/// One running request: its place in the prompt, its sampler and its text pipeline.
pub(super) struct Sequence {
    pub id: SeqId,
    /// Every token the model is given, in order: the prompt, then each output token once it is
    /// fed back. A preempted sequence gives its cache up and prefills all of it again (mostly
    /// from the prefix cache) before it samples on.
    pub input: Vec<u32>,
    /// How many tokens of `input` are in the cache.
    pub prefilled: usize,
    /// The request's prompt tokens (the usage's input tokens).
    pub prompt_len: usize,
    /// Whether the cache was pointed at the longest cached prefix of `input` since the
    /// sequence was (re)admitted: done when its prefill starts, so that it sees what a sequence
    /// prefilled just before it left in the cache.
    pub attached: bool,
    /// Prompt tokens served from the prefix cache (the usage's `cached_tokens`), as of the
    /// first start.
    pub cached: Option<usize>,
    pub sampler: Sampler,
    pub constraint: Option<Constraint>,
    /// The constraint's allowed tokens for this step (reused buffer).
    pub mask: Vec<u32>,
    pub steering: Steering,
    pub detokenizer: Detokenizer,
    pub stop: StopMatcher,
    pub max_tokens: usize,
    pub output_tokens: usize,
    /// The token sampled last step, to feed in this step.
    pub next_input: Option<u32>,
    /// What this step feeds when it decodes: `next_input`, then any draft after it.
    pub feed: Vec<u32>,
    /// How long this sequence's drafts are, and how they fared.
    pub draft: DraftLen,
    /// Tokens whose text has not been sent yet (held back by the detokenizer or stop matcher).
    pub pending_ids: Vec<u32>,
    pub pending_logprobs: Vec<f32>,
    pub events: mpsc::UnboundedSender<StreamEvent>,
    /// Teacher forcing: the tokens to score (see `GenerateRequest::teacher`) and their scores.
    pub teacher: Option<Vec<u32>>,
    pub scores: Vec<f32>,
    /// Counts thinking tokens against the request's budget.
    pub thinking: Option<ThinkingBudget>,
    /// Held until the sequence is dropped, whatever ends it.
    pub _place: InFlight,
}

/// How a constrained sequence is kept within its budget (see `constraint::closing`): once the
/// shortest completion of its grammar barely fits in the tokens left, that completion is forced.
/// A required call's plan is closed earlier, so that the call keeps room for its values.
#[derive(Debug, Default)]
pub(super) struct Steering {
    /// Tokens decided on and not yet generated, in order.
    forced: VecDeque<u32>,
    /// What the last look found.
    last: Option<Looked>,
    /// Output tokens at which the next periodic look is due.
    next_look: usize,
    /// Tokens left at which a required call's plan is closed (its marker forced).
    plan_close_at: Option<usize>,
}

/// The result of a look for the closing path.
#[derive(Debug, Clone, Copy)]
enum Looked {
    /// The path has this many tokens.
    Path(usize),
    /// No path within [`WALK_CAP`]: look again once the tokens left are within it.
    Long,
    /// No path within the tokens left: nothing can be forced, ever.
    Hopeless,
}

impl Steering {
    /// Whether this step should look for the closing path.
    fn should_look(&self, remaining: usize, output_tokens: usize) -> bool {
        match self.last {
            None => true,
            Some(Looked::Hopeless) => false,
            Some(Looked::Long) => remaining <= WALK_CAP,
            Some(Looked::Path(len)) => {
                remaining <= len + LOOK_WINDOW
                    || (remaining <= 4 * len + 4 * LOOK_WINDOW && output_tokens >= self.next_look)
            }
        }
    }
}

/// What happened to one sequence in a step.
pub(super) enum Outcome {
    Continue,
    Finished,
}

impl Sequence {
    pub fn in_prefill(&self) -> bool {
        self.prefilled < self.input.len()
    }

    /// Gives the cache up (the caller releases it): the token sampled last becomes the end of
    /// the input, so that the prefill that resumes the sequence ends in the logits it would
    /// have decoded next.
    pub fn preempt(&mut self) {
        if let Some(token) = self.next_input.take() {
            self.input.push(token);
        }
        self.prefilled = 0;
        self.attached = false;
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
            prompt_tokens: self.prompt_len,
            output_tokens: self.output_tokens,
            cached_tokens: self.cached.unwrap_or(0),
        });
    }

    /// Ends the sequence with an error event.
    pub fn fail(&mut self, message: String, kind: ErrorKind) -> Outcome {
        let _ = self.events.send(StreamEvent::Error { message, kind });
        Outcome::Finished
    }

    /// Narrows this step's mask to the next forced token, deciding first (when the budget runs
    /// low) whether the grammar must start closing now.
    fn steer(&mut self) -> Result<(), String> {
        let Some(constraint) = self.constraint.as_mut() else {
            return Ok(());
        };
        let remaining = self.max_tokens.saturating_sub(self.output_tokens);
        let steering = &mut self.steering;
        if steering.forced.is_empty() && constraint.in_plan() {
            // Half of what the shortest call leaves is for the plan, half for the call's values:
            // decided once, from the path at the start of the plan.
            // When even the shortest call does not fit, closing the plan early cannot help: it
            // runs, and a cut reports it as the plan.
            if steering.plan_close_at.is_none() {
                let limit = remaining.min(WALK_CAP);
                let path = constraint.closing_path(limit).map_err(|e| e.to_string())?;
                steering.plan_close_at = Some(match path {
                    Some(path) => {
                        let len = path.tokens.len();
                        len + self.max_tokens.saturating_sub(len) / 2
                    }
                    None => 0,
                });
            }
            if steering.plan_close_at.is_some_and(|at| remaining <= at) {
                steering.forced.extend(constraint.plan_marker_tokens());
            }
        } else if steering.forced.is_empty() && steering.should_look(remaining, self.output_tokens)
        {
            steering.next_look = self.output_tokens + LOOK_EVERY;
            let limit = remaining.min(WALK_CAP);
            match constraint.closing_path(limit).map_err(|e| e.to_string())? {
                None if limit < remaining => steering.last = Some(Looked::Long),
                None => steering.last = Some(Looked::Hopeless),
                Some(path) => {
                    let len = path.tokens.len();
                    steering.last = Some(Looked::Path(len));
                    if remaining <= len + CLOSING_MARGIN {
                        steering.forced.extend(path.tokens);
                    }
                }
            }
        }
        if let Some(&token) = steering.forced.front() {
            let (word, bit) = (token as usize / 32, 1u32 << (token % 32));
            if self.mask.get(word).is_some_and(|w| w & bit != 0) {
                self.mask.iter_mut().for_each(|w| *w = 0);
                self.mask[word] = bit;
            } else {
                // The grammar moved on in a way the path did not foresee: decide again next step.
                steering.forced.clear();
                steering.last = None;
            }
        }
        Ok(())
    }
}

/// A teacher-forced step: the log-probability of the given token, which becomes the next input.
fn score_step(seq: &mut Sequence, logits: &[f32]) -> Outcome {
    let teacher = seq.teacher.as_deref().unwrap_or_default();
    let Some(&token) = teacher.get(seq.output_tokens) else {
        return seq.fail("nothing left to score".into(), ErrorKind::Server);
    };
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|&l| (l - max).exp()).sum();
    let logprob = logits
        .get(token as usize)
        .map_or(f32::NEG_INFINITY, |&l| l - max - sum.ln());
    seq.scores.push(logprob);
    seq.output_tokens += 1;
    if seq.output_tokens >= teacher.len() {
        let scores = std::mem::take(&mut seq.scores);
        let _ = seq.events.send(StreamEvent::Scores(scores));
        seq.finish(FinishReason::MaxTokens);
        return Outcome::Finished;
    }
    seq.next_input = Some(token);
    Outcome::Continue
}

/// Samples the next token of one sequence from its logits row and pushes the resulting text
/// through the detokenizer and stop matcher.
pub(super) fn advance(seq: &mut Sequence, logits: &mut [f32], end_tokens: &[u32]) -> Outcome {
    if seq.teacher.is_some() {
        return score_step(seq, logits);
    }
    let forced = seq.thinking.as_ref().and_then(ThinkingBudget::forced);
    let sampled = match (&mut seq.constraint, forced) {
        // The thinking budget is spent: its end marker, token by token.
        (None, Some(token)) => {
            // The mask is a bitset over the vocabulary: only the forced token.
            let token = token as usize;
            seq.mask.clear();
            seq.mask.resize(logits.len().div_ceil(32), 0);
            if let Some(word) = seq.mask.get_mut(token / 32) {
                *word |= 1 << (token % 32);
            }
            seq.sampler.sample_masked(logits, &seq.mask)
        }
        (None, None) => seq.sampler.sample(logits),
        (Some(constraint), _) => {
            if let Err(error) = constraint.mask(&mut seq.mask) {
                return seq.fail(error.to_string(), ErrorKind::Request);
            }
            if let Err(message) = seq.steer() {
                return seq.fail(message, ErrorKind::Request);
            }
            seq.sampler.sample_masked(logits, &seq.mask)
        }
    };
    let sampled = match sampled {
        Ok(sampled) => sampled,
        // With a grammar, an empty choice comes from the grammar; without one it cannot happen.
        Err(error) => {
            let kind = match seq.constraint {
                Some(_) => ErrorKind::Request,
                None => ErrorKind::Server,
            };
            return seq.fail(format!("sampling failed: {error}"), kind);
        }
    };
    if end_tokens.contains(&sampled.token) {
        close(seq, FinishReason::EndOfTurn);
        return Outcome::Finished;
    }
    if let Some(constraint) = &mut seq.constraint {
        if let Err(error) = constraint.accept(sampled.token) {
            return seq.fail(error.to_string(), ErrorKind::Request);
        }
        if seq.steering.forced.front() == Some(&sampled.token) {
            seq.steering.forced.pop_front();
        }
    }
    seq.output_tokens += 1;
    if let Some(thinking) = &mut seq.thinking {
        thinking.accept(sampled.token, seq.output_tokens);
    }
    seq.pending_ids.push(sampled.token);
    if let Some(logprob) = sampled.logprob {
        seq.pending_logprobs.push(logprob);
    }
    let piece = match seq.detokenizer.push(sampled.token) {
        Ok(piece) => piece,
        Err(error) => {
            return seq.fail(
                format!("decoding the output failed: {error}"),
                ErrorKind::Server,
            )
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
        // A grammar that may end here (a reply steered to completion within its budget) is a
        // complete reply, not a cut one.
        let complete = seq
            .constraint
            .as_mut()
            .is_some_and(|c| c.is_accepting().unwrap_or(false));
        let reason = if complete {
            FinishReason::EndOfTurn
        } else {
            FinishReason::MaxTokens
        };
        close(seq, reason);
        return Outcome::Finished;
    }
    seq.next_input = Some(sampled.token);
    Outcome::Continue
}

/// Ends a sequence that stopped for `reason`: text held back by the detokenizer and the stop
/// matcher is released first (it may still complete a stop sequence). An incomplete character
/// at the very end (a reply cut between the tokens of one character) is never sent: its tokens
/// count in the usage but carry no text, so they are left out of the logprobs too.
fn close(seq: &mut Sequence, reason: FinishReason) {
    // A flush failure only loses text that was never complete.
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
