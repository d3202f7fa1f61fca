//! Speculative decoding by prompt lookup: guess the tokens after a sequence's next input from
//! the text it already holds, and let one forward pass check them all.
//!
//! Why it pays: a decode step on a CPU reads every weight once whatever the number of rows, so
//! while a step is small (bandwidth-bound) a few more rows cost little, and each accepted guess is
//! a token without a step of its own. Answers that quote their documents, rewrites and code edits
//! repeat long runs of their prompt, which is where the guesses come from.
//!
//! Exactness: the engine samples the rows of a verified draft one after another with the
//! sequence's own sampler, grammar and stop matcher, exactly as it would sample one token per
//! step, and stops at the first sampled token that differs from the draft. Since a row's logits
//! do not depend on the batch (nor on how many of the sequence's tokens a step feeds), every
//! emitted token, every logprob and every random draw is the one decoding without speculation
//! gives: greedy and seeded replies are identical, so the distribution of unseeded ones is too.
//! (Sampling and then comparing is the rejection rule for a draft that proposes one token with
//! certainty: accept with probability p(draft), else sample from p without it.)
//!
//! Cost: a lookup scans the sequence's tokens once per n-gram size, O(context) per step.

/// The longest and shortest n-grams looked up: longer matches give better guesses, and a
/// single-token match is too weak a hint to be worth a row.
const MAX_NGRAM: usize = 4;
const MIN_NGRAM: usize = 2;

/// How speculation is configured for an engine (see the server's `--draft-tokens`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Speculation {
    /// Most draft tokens verified with one decode token; 0 turns speculation off.
    pub max_draft: usize,
    /// Drafts are added only while a step feeds at most this many tokens in all: past it, a
    /// step is bound by compute, not by reading the weights, and each drafted row costs about
    /// what a decoded token does.
    pub step_tokens: usize,
}

/// On the CPU backend a small step's cost still grows with its rows (a SmolLM2 step of 2 tokens
/// takes about 1.6 times one of 1, 4 tokens about 3 times, on a 2-core Zen 4), so a draft pays
/// only where most of it is accepted; prompt lookup drafts only on a repeated n-gram, which keeps
/// ordinary chat as fast as without (measured: `cohost bench` sweep at 1 and 16 streams).
impl Default for Speculation {
    fn default() -> Self {
        Self {
            max_draft: 8,
            step_tokens: 8,
        }
    }
}

/// Appends to `out` the tokens that followed the most recent earlier occurrence of the last
/// n tokens of `history` + `last` (n from [`MAX_NGRAM`] down to [`MIN_NGRAM`], the longest
/// match found first), at most `max` of them; nothing when nothing matches.
pub fn lookup(history: &[u32], last: u32, max: usize, out: &mut Vec<u32>) {
    if max == 0 {
        return;
    }
    // The context is `history` followed by `last`, `full` tokens in all.
    let full = history.len() + 1;
    let at = |i: usize| if i < history.len() { history[i] } else { last };
    for n in (MIN_NGRAM..=MAX_NGRAM).rev() {
        if full <= n {
            continue;
        }
        let suffix = &history[full - n..];
        // An occurrence at p (ending before the suffix starts overlapping its own end) has at
        // least one token after it.
        for p in (0..full - n).rev() {
            if history[p + n - 1] == last && history[p..p + n - 1] == suffix[..n - 1] {
                let end = (p + n + max).min(full);
                out.extend((p + n..end).map(at));
                return;
            }
        }
    }
}

/// A sequence's draft length, adapted to how much of its drafts it accepts: it grows by two
/// after a draft accepted whole, and falls to one more than the accepted part otherwise.
#[derive(Debug, Clone, Copy)]
pub struct DraftLen {
    len: usize,
    /// What the sequence's drafts totalled so far (for the logs).
    pub drafted: usize,
    pub accepted: usize,
}

impl DraftLen {
    pub fn new(max: usize) -> Self {
        Self {
            len: max.div_ceil(2),
            drafted: 0,
            accepted: 0,
        }
    }

    /// Tokens to draft at most this step.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Records the outcome of a draft of `drafted` tokens, the first `accepted` of them right.
    pub fn record(&mut self, drafted: usize, accepted: usize, max: usize) {
        self.drafted += drafted;
        self.accepted += accepted;
        self.len = if accepted == drafted {
            (self.len + 2).min(max)
        } else {
            (accepted + 1).min(max)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn looked_up(history: &[u32], last: u32, max: usize) -> Vec<u32> {
        let mut out = Vec::new();
        lookup(history, last, max, &mut out);
        out
    }

    #[test]
    fn the_tokens_after_the_latest_longest_match_are_the_draft() {
        // "1 2 3 4 5 ... 1 2 3" -> after "2 3" comes "4 5 6".
        let history = [1, 2, 3, 4, 5, 6, 9, 1, 2];
        assert_eq!(looked_up(&history, 3, 3), [4, 5, 6]);
        assert_eq!(looked_up(&history, 3, 10), [4, 5, 6, 9, 1, 2, 3]);
        // The most recent occurrence wins: "7 8" is followed by 1 the first time, 2 the second.
        let history = [7, 8, 1, 0, 7, 8, 2, 0, 5, 7];
        assert_eq!(looked_up(&history, 8, 1), [2]);
        // A longer match beats a more recent shorter one: "3 7 8" occurs only early.
        let history = [3, 7, 8, 4, 0, 7, 8, 5, 0, 3, 7];
        assert_eq!(looked_up(&history, 8, 2), [4, 0]);
    }

    #[test]
    fn nothing_is_drafted_without_a_match_of_two_tokens() {
        assert!(looked_up(&[1, 2, 3], 4, 4).is_empty());
        assert!(
            looked_up(&[5, 1, 9, 2], 1, 4).is_empty(),
            "one token is too weak"
        );
        assert!(looked_up(&[], 1, 4).is_empty());
        assert!(looked_up(&[1, 2, 1], 2, 0).is_empty());
        // A repeated token: "4 4" matches itself one place back and predicts another 4.
        assert_eq!(looked_up(&[4, 4], 4, 3), [4]);
    }

    #[test]
    fn the_draft_grows_while_accepted_and_shrinks_to_what_was_right() {
        let mut len = DraftLen::new(8);
        assert_eq!(len.len(), 4);
        len.record(4, 4, 8);
        assert_eq!(len.len(), 6);
        len.record(6, 6, 8);
        len.record(8, 8, 8);
        assert_eq!(len.len(), 8);
        len.record(8, 2, 8);
        assert_eq!(len.len(), 3);
        len.record(3, 0, 8);
        assert_eq!(len.len(), 1);
        assert_eq!((len.drafted, len.accepted), (29, 20));
    }
}
