//! Property tests: whatever the row, parameters, history and mask, the chosen token lies in the
//! set the reference allows, greedy equals the reference argmax, and the logprob is right.

use super::common;

use common::{distribution, log_softmax_at};
use proptest::prelude::*;
use sampler::{Sampler, SamplingParams};

fn logit() -> impl Strategy<Value = f32> {
    prop_oneof![
        8 => -20.0f32..20.0,
        1 => Just(f32::NEG_INFINITY),
        // Repeated values exercise the tie rules.
        1 => Just(3.0f32),
    ]
}

fn case() -> impl Strategy<Value = (Vec<f32>, SamplingParams, Vec<u32>, Option<Vec<u32>>)> {
    (1usize..300)
        .prop_flat_map(|n| {
            (
                prop::collection::vec(logit(), n),
                prop_oneof![Just(0.0f32), 0.01f32..3.0],
                prop_oneof![Just(0usize), 1usize..=500],
                0.01f32..=0.99,
                prop_oneof![Just(0.0f32), 0.0f32..=1.0],
                prop_oneof![Just(0.0f32), 0.0f32..=1.0],
                any::<u64>(),
                prop::collection::vec(0..n as u32, 0..50),
                prop::option::of(prop::collection::vec(any::<u32>(), n.div_ceil(32))),
            )
        })
        .prop_map(
            |(mut logits, temperature, k, p, fp, pp, seed, history, mask)| {
                // At least one finite, allowed token, so that there is something to choose.
                logits[0] = logits[0].max(-20.0);
                let mask = mask.map(|mut m| {
                    m[0] |= 1;
                    m
                });
                let params = SamplingParams {
                    temperature,
                    k,
                    p,
                    frequency_penalty: fp,
                    presence_penalty: pp,
                    seed: Some(seed),
                    logprobs: true,
                };
                (logits, params, history, mask)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn chosen_token_is_always_allowed((logits, params, history, mask) in case()) {
        let mut s = Sampler::new(params.clone(), logits.len()).unwrap();
        s.observe_all(&history);
        let mut row = logits.clone();
        let out = match &mask {
            Some(m) => s.sample_masked(&mut row, m),
            None => s.sample(&mut row),
        }.unwrap();
        let t = out.token as usize;
        prop_assert!(t < logits.len());
        // A slightly wider p gives a superset of the kept set that rounding cannot cross.
        let allowed = distribution(&logits, &params, &history, mask.as_deref(), 1e-3);
        prop_assert!(allowed[t] > 0.0, "token {} (logit {}) outside the allowed set", t, logits[t]);
        if params.temperature == 0.0 {
            let exact = distribution(&logits, &params, &history, mask.as_deref(), 0.0);
            prop_assert_eq!(exact[t], 1.0);
        }
        if params.k > 0 {
            // Rank within the penalised, masked row is below k (exact: no rounding involved).
            let only_k = SamplingParams { p: 0.99, temperature: 1.0, ..params.clone() };
            let in_top_k = distribution(&logits, &only_k, &history, mask.as_deref(), 1.0);
            prop_assert!(in_top_k[t] > 0.0);
        }
        let want = log_softmax_at(&logits, t);
        let got = out.logprob.unwrap() as f64;
        prop_assert!((got - want).abs() < 1e-3 * want.abs().max(1.0), "{} vs {}", got, want);
        prop_assert_eq!(s.count(out.token), history.iter().filter(|&&h| h == out.token).count() as u32 + 1);
    }
}
