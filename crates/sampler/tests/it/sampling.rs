//! Behaviour of one sampling step: distributions against the exact reference, edge cases,
//! determinism, logprobs and validation.

use super::common;

use common::{assert_matches, distribution, log_softmax_at, peaked_logits};
use sampler::{Param, Sampled, Sampler, SamplingError, SamplingParams};

fn params(temperature: f32, k: usize, p: f32) -> SamplingParams {
    SamplingParams {
        temperature,
        k,
        p,
        seed: Some(7),
        ..SamplingParams::default()
    }
}

/// Draws `draws` tokens, each from a fresh sampler (its own seed) that has seen `history`, so
/// every draw comes from the same distribution. Returns counts per token.
fn draw_counts(
    logits: &[f32],
    params: &SamplingParams,
    history: &[u32],
    mask: Option<&[u32]>,
    draws: u64,
) -> Vec<u64> {
    let mut counts = vec![0u64; logits.len()];
    let mut row = logits.to_vec();
    for i in 0..draws {
        let p = SamplingParams {
            seed: Some(1000 + i),
            ..params.clone()
        };
        let mut s = Sampler::new(p, logits.len()).unwrap();
        s.observe_all(history);
        row.copy_from_slice(logits);
        let out = match mask {
            Some(m) => s.sample_masked(&mut row, m),
            None => s.sample(&mut row),
        };
        counts[out.unwrap().token as usize] += 1;
    }
    counts
}

/// Draws from one long-lived sampler without penalties (its counts then do not matter).
fn draw_counts_one_sampler(logits: &[f32], params: &SamplingParams, draws: u64) -> Vec<u64> {
    assert_eq!(params.frequency_penalty + params.presence_penalty, 0.0);
    let mut s = Sampler::new(params.clone(), logits.len()).unwrap();
    let mut counts = vec![0u64; logits.len()];
    let mut row = logits.to_vec();
    for _ in 0..draws {
        row.copy_from_slice(logits);
        counts[s.sample(&mut row).unwrap().token as usize] += 1;
    }
    counts
}

const SMALL: [f32; 12] = [
    2.0, 1.5, 1.4, 1.0, 0.7, 0.5, 0.0, -0.5, -1.0, -2.0, 1.45, 0.9,
];

#[test]
fn top_p_only_matches_exact_renormalised_distribution() {
    let p = params(0.7, 0, 0.75);
    let want = distribution(&SMALL, &p, &[], None, 0.0);
    assert!(
        want.iter().filter(|&&q| q > 0.0).count() >= 4,
        "test needs a real nucleus"
    );
    let counts = draw_counts_one_sampler(&SMALL, &p, 20_000);
    assert_matches(&counts, &want, "T=0.7 p=0.75");
}

#[test]
fn top_k_then_top_p_matches_exact_distribution() {
    // k=5 leaves 5 tokens; p=0.8 of those (renormalised) drops at least the last one.
    let p = params(1.0, 5, 0.8);
    let want = distribution(&SMALL, &p, &[], None, 0.0);
    let kept = want.iter().filter(|&&q| q > 0.0).count();
    assert!(
        (2..5).contains(&kept),
        "p must act after k here, kept {kept}"
    );
    let counts = draw_counts_one_sampler(&SMALL, &p, 20_000);
    assert_matches(&counts, &want, "T=1 k=5 p=0.9");
}

#[test]
fn top_k_alone_when_p_is_high() {
    let p = params(1.3, 3, 0.99);
    let want = distribution(&SMALL, &p, &[], None, 0.0);
    assert_eq!(want.iter().filter(|&&q| q > 0.0).count(), 3);
    let counts = draw_counts_one_sampler(&SMALL, &p, 20_000);
    assert_matches(&counts, &want, "T=1.3 k=3");
}

#[test]
fn penalties_shift_the_distribution_as_specified() {
    let p = SamplingParams {
        frequency_penalty: 0.3,
        presence_penalty: 0.2,
        ..params(1.0, 0, 0.99)
    };
    let history = [0, 0, 0, 1, 3, 3, 10];
    let want = distribution(&SMALL, &p, &history, None, 0.0);
    let unpenalised = distribution(&SMALL, &params(1.0, 0, 0.99), &[], None, 0.0);
    assert!(
        want[0] < unpenalised[0] * 0.5,
        "token 0 seen three times must lose mass"
    );
    let counts = draw_counts(&SMALL, &p, &history, None, 20_000);
    assert_matches(&counts, &want, "penalties");
}

#[test]
fn mask_restricts_to_allowed_tokens_and_renormalises() {
    let p = params(1.0, 0, 0.9);
    let allowed = [0b1011_0100_0110u32]; // tokens 1, 2, 6, 8, 9, 11
    let want = distribution(&SMALL, &p, &[], Some(&allowed), 0.0);
    let counts = draw_counts(&SMALL, &p, &[], Some(&allowed), 20_000);
    for (t, &c) in counts.iter().enumerate() {
        if allowed[0] >> t & 1 == 0 {
            assert_eq!(c, 0, "masked token {t} drawn");
        }
    }
    assert_matches(&counts, &want, "mask");
}

#[test]
fn large_peaked_vocab_default_path_matches_reference() {
    // Realistic shape and size: the band gathering and selection paths, not a toy row.
    let logits = peaked_logits(49_152, 2.0, 40, 3);
    let p = SamplingParams {
        temperature: 1.0,
        seed: Some(11),
        ..SamplingParams::default()
    };
    let want = distribution(&logits, &p, &[], None, 0.0);
    let kept = want.iter().filter(|&&q| q > 0.0).count();
    assert!(kept >= 3, "kept {kept}");
    let counts = draw_counts_one_sampler(&logits, &p, 5_000);
    assert_matches(&counts, &want, "49k default");
}

#[test]
fn flat_distribution_with_a_wide_nucleus_matches_reference() {
    // A flat row at T=1: the nucleus holds thousands of tokens and needs several bands.
    let logits = peaked_logits(8_000, 1.0, 0, 5);
    let p = params(1.0, 0, 0.6);
    let want = distribution(&logits, &p, &[], None, 0.0);
    let kept = want.iter().filter(|&&q| q > 0.0).count();
    assert!(kept > 1_000, "kept {kept}");
    let counts = draw_counts_one_sampler(&logits, &p, 20_000);
    assert_matches(&counts, &want, "flat nucleus");
}

#[test]
fn top_k_on_large_vocab_matches_reference() {
    let logits = peaked_logits(60_000, 2.0, 30, 9);
    let p = params(0.7, 50, 0.99);
    let want = distribution(&logits, &p, &[], None, 0.0);
    let counts = draw_counts_one_sampler(&logits, &p, 10_000);
    assert_matches(&counts, &want, "60k k=50");
}

#[test]
fn all_minus_infinity_but_one_always_gives_that_one_with_logprob_zero() {
    let mut logits = vec![f32::NEG_INFINITY; 1000];
    logits[613] = -3.0;
    for (t, k) in [(0.0, 0), (0.3, 0), (1.0, 40), (5.0, 500)] {
        let mut s = Sampler::new(
            SamplingParams {
                logprobs: true,
                ..params(t, k, 0.5)
            },
            1000,
        )
        .unwrap();
        for _ in 0..20 {
            let mut row = logits.clone();
            let out = s.sample(&mut row).unwrap();
            assert_eq!(out.token, 613);
            assert_eq!(out.logprob, Some(0.0));
        }
    }
}

#[test]
fn all_minus_infinity_is_an_error() {
    let mut s = Sampler::new(params(0.5, 0, 0.5), 10).unwrap();
    let mut row = vec![f32::NEG_INFINITY; 10];
    assert_eq!(s.sample(&mut row), Err(SamplingError::NoCandidate));
    // And when the mask removes every finite token.
    let mut row = vec![f32::NEG_INFINITY; 10];
    row[3] = 1.0;
    assert_eq!(
        s.sample_masked(&mut row, &[!(1u32 << 3)]),
        Err(SamplingError::NoCandidate)
    );
}

#[test]
fn nan_and_positive_infinity_are_rejected_with_their_index() {
    for bad in [f32::NAN, f32::INFINITY] {
        for at in [0usize, 17, 99] {
            let mut s = Sampler::new(params(0.0, 0, 0.5), 100).unwrap();
            let mut row = vec![0.5f32; 100];
            row[at] = bad;
            match s.sample(&mut row) {
                Err(SamplingError::InvalidLogit { index, .. }) => assert_eq!(index, at),
                other => panic!("{bad} at {at}: {other:?}"),
            }
        }
    }
}

#[test]
fn greedy_ties_go_to_lowest_id() {
    let mut row = vec![0.0f32; 100];
    for t in [77, 41, 99] {
        row[t] = 5.0;
    }
    let mut s = Sampler::new(params(0.0, 0, 0.75), 100).unwrap();
    assert_eq!(s.sample(&mut row.clone()).unwrap().token, 41);
    // With k=1 at any temperature the single kept token is the lowest-id top one too.
    let mut s = Sampler::new(params(1.0, 1, 0.75), 100).unwrap();
    for _ in 0..50 {
        assert_eq!(s.sample(&mut row.clone()).unwrap().token, 41);
    }
}

#[test]
fn ties_at_the_top_are_sampled_evenly() {
    let mut row = vec![-10.0f32; 64];
    row[5] = 1.0;
    row[50] = 1.0;
    let p = params(1.0, 0, 0.99);
    let want = distribution(&row, &p, &[], None, 0.0);
    let counts = draw_counts_one_sampler(&row, &p, 10_000);
    assert_matches(&counts, &want, "tie");
}

#[test]
fn k_larger_than_vocab_is_the_same_as_no_k() {
    let a = params(0.8, 500, 0.9);
    let b = params(0.8, 0, 0.9);
    let mut sa = Sampler::new(a, SMALL.len()).unwrap();
    let mut sb = Sampler::new(b, SMALL.len()).unwrap();
    for _ in 0..500 {
        let ta = sa.sample(&mut SMALL.to_vec()).unwrap().token;
        let tb = sb.sample(&mut SMALL.to_vec()).unwrap().token;
        let want = distribution(&SMALL, &params(0.8, 0, 0.9), &[], None, 0.0);
        assert!(want[ta as usize] > 0.0 && want[tb as usize] > 0.0);
    }
    let want_a = distribution(&SMALL, &params(0.8, 500, 0.9), &[], None, 0.0);
    let counts = draw_counts_one_sampler(&SMALL, &params(0.8, 500, 0.9), 20_000);
    assert_matches(&counts, &want_a, "k > vocab");
}

#[test]
fn p_keeping_a_single_token_always_picks_it() {
    // softmax of [4, 0, 0, 0] at T=1 gives the top token 0.948 > p = 0.9.
    let row = [0.0f32, 4.0, 0.0, 0.0];
    let mut s = Sampler::new(params(1.0, 0, 0.9), 4).unwrap();
    for _ in 0..200 {
        assert_eq!(s.sample(&mut row.to_vec()).unwrap().token, 1);
    }
    // Just below the top token's mass, the second one must appear.
    let mut s = Sampler::new(params(1.0, 0, 0.95), 4).unwrap();
    let mut others = 0;
    for _ in 0..2000 {
        others += (s.sample(&mut row.to_vec()).unwrap().token != 1) as u32;
    }
    assert!(
        others > 20,
        "p=0.95 > 0.948 must keep a second token: {others}"
    );
}

#[test]
fn penalties_with_empty_history_change_nothing() {
    let logits = peaked_logits(5_000, 2.0, 20, 1);
    let plain = params(0.9, 0, 0.8);
    let penalised = SamplingParams {
        frequency_penalty: 1.0,
        presence_penalty: 1.0,
        ..plain.clone()
    };
    let mut a = Sampler::new(plain, logits.len()).unwrap();
    let mut b = Sampler::new(penalised, logits.len()).unwrap();
    let (ta, tb) = (
        a.sample(&mut logits.clone()).unwrap(),
        b.sample(&mut logits.clone()).unwrap(),
    );
    assert_eq!(ta, tb);
}

#[test]
fn frequency_penalty_scales_with_count_and_presence_is_flat() {
    let row = [1.0f32, 0.6];
    let freq = SamplingParams {
        frequency_penalty: 0.25,
        ..params(0.0, 0, 0.75)
    };
    let mut s = Sampler::new(freq.clone(), 2).unwrap();
    s.observe(0);
    assert_eq!(
        s.sample(&mut row.to_vec()).unwrap().token,
        0,
        "1.0 - 0.25 > 0.6"
    );
    // The sample observed token 0 again: count 2 now.
    assert_eq!(s.count(0), 2);
    assert_eq!(
        s.sample(&mut row.to_vec()).unwrap().token,
        1,
        "1.0 - 0.5 < 0.6"
    );

    let presence = SamplingParams {
        presence_penalty: 0.3,
        ..params(0.0, 0, 0.75)
    };
    let mut s = Sampler::new(presence, 2).unwrap();
    s.observe_all(&[0; 10]);
    // 1.0 - 0.3 = 0.7 > 0.6 however many times token 0 was seen.
    assert_eq!(s.sample(&mut row.to_vec()).unwrap().token, 0);
    s.observe(1);
    s.reset().unwrap();
    assert_eq!((s.count(0), s.count(1)), (0, 0));
}

#[test]
fn same_seed_same_tokens_whatever_else_runs() {
    let rows: Vec<Vec<f32>> = (0..64).map(|i| peaked_logits(3_000, 1.5, 10, i)).collect();
    let p = SamplingParams {
        frequency_penalty: 0.2,
        ..params(1.0, 0, 0.9)
    };
    let run = |interleave: bool| -> Vec<u32> {
        let mut s = Sampler::new(p.clone(), 3_000).unwrap();
        let mut other = Sampler::new(
            SamplingParams {
                seed: None,
                ..p.clone()
            },
            3_000,
        )
        .unwrap();
        rows.iter()
            .map(|r| {
                if interleave {
                    other.sample(&mut r.clone()).unwrap();
                }
                s.sample(&mut r.clone()).unwrap().token
            })
            .collect()
    };
    let first = run(false);
    assert_eq!(first, run(true));
    assert_eq!(first, run(false));
    let mut other_seed = Sampler::new(
        SamplingParams {
            seed: Some(8),
            ..p.clone()
        },
        3_000,
    )
    .unwrap();
    let different: Vec<u32> = rows
        .iter()
        .map(|r| other_seed.sample(&mut r.clone()).unwrap().token)
        .collect();
    assert_ne!(first, different, "another seed must give another sequence");
}

#[test]
fn reset_replays_the_same_sequence() {
    let row = peaked_logits(1_000, 1.0, 5, 2);
    let mut s = Sampler::new(params(1.0, 0, 0.9), 1_000).unwrap();
    let a: Vec<u32> = (0..30)
        .map(|_| s.sample(&mut row.clone()).unwrap().token)
        .collect();
    s.reset().unwrap();
    let b: Vec<u32> = (0..30)
        .map(|_| s.sample(&mut row.clone()).unwrap().token)
        .collect();
    assert_eq!(a, b);
}

#[test]
fn logprob_is_log_softmax_of_raw_logits_whatever_the_settings() {
    let logits = peaked_logits(2_000, 2.0, 15, 4);
    let history: Vec<u32> = (0..300).map(|i| (i * 37 % 2_000) as u32).collect();
    let mut allowed = vec![u32::MAX; 2_000usize.div_ceil(32)];
    allowed[0] = 0; // mask out tokens 0..32
    for (temperature, k) in [(0.0, 0), (0.3, 0), (1.0, 40), (2.0, 0)] {
        let p = SamplingParams {
            logprobs: true,
            frequency_penalty: 0.5,
            presence_penalty: 0.5,
            ..params(temperature, k, 0.9)
        };
        let mut s = Sampler::new(p, 2_000).unwrap();
        s.observe_all(&history);
        for step in 0..20 {
            let out = if step % 2 == 0 {
                s.sample(&mut logits.clone()).unwrap()
            } else {
                s.sample_masked(&mut logits.clone(), &allowed).unwrap()
            };
            let want = log_softmax_at(&logits, out.token as usize);
            let got = out.logprob.unwrap() as f64;
            assert!(
                (got - want).abs() < 1e-4,
                "T={temperature}: {got} vs {want}"
            );
        }
    }
    let mut s = Sampler::new(params(1.0, 0, 0.9), 2_000).unwrap();
    assert_eq!(s.sample(&mut logits.clone()).unwrap().logprob, None);
}

#[test]
fn sample_observes_the_chosen_token() {
    let mut s = Sampler::new(params(0.0, 0, 0.5), 3).unwrap();
    let Sampled { token, .. } = s.sample(&mut [0.0, 2.0, 1.0]).unwrap();
    assert_eq!(token, 1);
    assert_eq!(s.count(1), 1);
    s.observe(7); // outside the vocabulary: ignored
    assert_eq!(s.count(7), 0);
}

#[test]
fn tiny_and_huge_temperatures() {
    let row = [0.0f32, 1.0, 0.999, -1.0];
    let mut s = Sampler::new(params(1e-40, 0, 0.99), 4).unwrap();
    for _ in 0..100 {
        assert_eq!(s.sample(&mut row.to_vec()).unwrap().token, 1);
    }
    // Huge temperature: close to uniform over all four, p=0.99 keeps all.
    let p = params(1e30, 0, 0.99);
    let want = distribution(&row, &p, &[], None, 0.0);
    assert_eq!(want.iter().filter(|&&q| q > 0.0).count(), 4);
    assert_matches(&draw_counts_one_sampler(&row, &p, 8_000), &want, "huge T");
}

#[test]
fn wrong_lengths_are_errors() {
    let mut s = Sampler::new(params(0.5, 0, 0.5), 100).unwrap();
    assert_eq!(
        s.sample(&mut vec![0.0; 99]),
        Err(SamplingError::LogitsLength {
            expected: 100,
            got: 99
        })
    );
    assert_eq!(
        s.sample_masked(&mut vec![0.0; 100], &[u32::MAX; 3]),
        Err(SamplingError::MaskLength {
            expected: 4,
            got: 3
        })
    );
    assert!(matches!(
        Sampler::new(SamplingParams::default(), 0),
        Err(SamplingError::VocabSize(0))
    ));
}

#[test]
fn validation_names_parameter_value_and_range() {
    let cases: Vec<(SamplingParams, Param, &str)> = vec![
        (
            SamplingParams {
                temperature: -0.1,
                ..Default::default()
            },
            Param::Temperature,
            "temperature must be a finite number of at least 0, got",
        ),
        (
            SamplingParams {
                temperature: f32::INFINITY,
                ..Default::default()
            },
            Param::Temperature,
            "temperature must be",
        ),
        (
            SamplingParams {
                temperature: f32::NAN,
                ..Default::default()
            },
            Param::Temperature,
            "temperature must be",
        ),
        (
            SamplingParams {
                k: 501,
                ..Default::default()
            },
            Param::K,
            "k must be between 0 and 500 inclusive, got 501",
        ),
        (
            SamplingParams {
                p: 0.995,
                ..Default::default()
            },
            Param::P,
            "p must be between 0.01",
        ),
        (
            SamplingParams {
                p: 0.0,
                ..Default::default()
            },
            Param::P,
            "p must be between 0.01",
        ),
        (
            SamplingParams {
                frequency_penalty: 1.5,
                ..Default::default()
            },
            Param::FrequencyPenalty,
            "frequency_penalty must be between 0 and 1 inclusive, got 1.5",
        ),
        (
            SamplingParams {
                presence_penalty: f32::NAN,
                ..Default::default()
            },
            Param::PresencePenalty,
            "presence_penalty must be between 0 and 1 inclusive, got NaN",
        ),
    ];
    for (p, param, text) in cases {
        let err = Sampler::new(p.clone(), 10).expect_err("must be rejected");
        match &err {
            SamplingError::OutOfRange { param: got, .. } => assert_eq!(*got, param),
            other => panic!("{p:?}: {other:?}"),
        }
        assert!(err.to_string().starts_with(text), "{err}");
        assert_eq!(p.validate().unwrap_err().to_string(), err.to_string());
    }
    // Edges are inclusive.
    for ok in [
        SamplingParams {
            temperature: 0.0,
            k: 500,
            p: 0.01,
            ..Default::default()
        },
        SamplingParams {
            p: 0.99,
            frequency_penalty: 1.0,
            presence_penalty: 1.0,
            ..Default::default()
        },
        SamplingParams {
            temperature: 7.5,
            ..Default::default()
        },
    ] {
        assert_eq!(ok.validate(), Ok(()));
    }
}
