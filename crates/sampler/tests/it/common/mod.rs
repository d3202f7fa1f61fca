//! A slow, obviously-correct reference for what the sampler should draw from: f64, full sort.
#![allow(dead_code)]

use sampler::SamplingParams;

/// The exact probability of each token under `params`, given the tokens observed so far
/// (`history`) and an optional allowed-token bitset. `p_slack` widens the top-p target
/// (`p * (1 + p_slack)`, capped at the whole mass) to get a superset of the kept tokens that is
/// immune to rounding at the boundary; 0 gives the exact set.
pub fn distribution(
    logits: &[f32],
    params: &SamplingParams,
    history: &[u32],
    mask: Option<&[u32]>,
    p_slack: f64,
) -> Vec<f64> {
    let n = logits.len();
    let mut counts = vec![0u32; n];
    for &t in history {
        if (t as usize) < n {
            counts[t as usize] += 1;
        }
    }
    let mut l: Vec<f64> = logits.iter().map(|&x| x as f64).collect();
    for (t, x) in l.iter_mut().enumerate() {
        if counts[t] > 0 {
            *x -=
                counts[t] as f64 * params.frequency_penalty as f64 + params.presence_penalty as f64;
        }
        if let Some(mask) = mask {
            if mask[t / 32] >> (t % 32) & 1 == 0 {
                *x = f64::NEG_INFINITY;
            }
        }
    }
    let mut order: Vec<usize> = (0..n).filter(|&t| l[t] > f64::NEG_INFINITY).collect();
    order.sort_by(|&a, &b| l[b].partial_cmp(&l[a]).unwrap().then(a.cmp(&b)));
    let mut probs = vec![0.0; n];
    if order.is_empty() {
        return probs;
    }
    if params.temperature == 0.0 {
        probs[order[0]] = 1.0;
        return probs;
    }
    if params.k > 0 {
        order.truncate(params.k);
    }
    let max = l[order[0]];
    let t = params.temperature as f64;
    let w: Vec<f64> = order.iter().map(|&i| ((l[i] - max) / t).exp()).collect();
    let total: f64 = w.iter().sum();
    let target = (params.p as f64 * (1.0 + p_slack)).min(1.0) * total;
    let mut acc = 0.0;
    let mut kept = order.len();
    for (j, wj) in w.iter().enumerate() {
        acc += wj;
        if acc >= target {
            kept = j + 1;
            break;
        }
    }
    let kept_total: f64 = w[..kept].iter().sum();
    for j in 0..kept {
        probs[order[j]] = w[j] / kept_total;
    }
    probs
}

/// `log_softmax(logits)[token]` in f64.
pub fn log_softmax_at(logits: &[f32], token: usize) -> f64 {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&x| (x as f64 - max).exp()).sum();
    logits[token] as f64 - max - sum.ln()
}

/// Chi-square critical value for `df` degrees of freedom at upper-tail probability about 1e-6
/// (Wilson–Hilferty). With a fixed seed the test is deterministic; this level keeps a correct
/// sampler far from the edge while a wrong distribution (off by a few percent) still fails.
pub fn chi_square_critical(df: usize) -> f64 {
    let z = 4.75; // one-sided normal quantile for 1e-6
    let d = df as f64;
    let a = 2.0 / (9.0 * d);
    d * (1.0 - a + z * a.sqrt()).powi(3)
}

/// Checks observed draw counts against `probs`: every draw must have non-zero probability, and
/// a chi-square test over cells (tokens grouped by probability so each cell expects >= 20
/// draws) must pass. Returns the statistic for the report on failure.
pub fn assert_matches(counts: &[u64], probs: &[f64], what: &str) {
    let draws: u64 = counts.iter().sum();
    for (t, &c) in counts.iter().enumerate() {
        assert!(
            c == 0 || probs[t] > 0.0,
            "{what}: drew token {t} {c} times but it is outside the allowed set"
        );
    }
    let mut ids: Vec<usize> = (0..probs.len()).filter(|&t| probs[t] > 0.0).collect();
    ids.sort_by(|&a, &b| probs[b].partial_cmp(&probs[a]).unwrap());
    let mut cells: Vec<(f64, u64)> = Vec::new();
    let (mut exp, mut obs) = (0.0, 0u64);
    for t in ids {
        exp += probs[t] * draws as f64;
        obs += counts[t];
        if exp >= 20.0 {
            cells.push((exp, obs));
            exp = 0.0;
            obs = 0;
        }
    }
    if exp > 0.0 {
        match cells.last_mut() {
            Some(last) => {
                last.0 += exp;
                last.1 += obs;
            }
            None => cells.push((exp, obs)),
        }
    }
    if cells.len() < 2 {
        // A single cell (one token, or all mass in one group): nothing to test beyond support.
        return;
    }
    let stat: f64 = cells.iter().map(|&(e, o)| (o as f64 - e).powi(2) / e).sum();
    let crit = chi_square_critical(cells.len() - 1);
    assert!(
        stat < crit,
        "{what}: chi-square {stat:.1} >= {crit:.1} over {} cells; cells (expected, observed): {cells:?}",
        cells.len()
    );
}

/// A deterministic pseudo-random row: Gaussian-ish bulk around 0 with spread `sigma`, plus a
/// head of `head` tokens lifted well above it, like a language model's next-token logits.
pub fn peaked_logits(n: usize, sigma: f32, head: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    };
    let mut row: Vec<f32> = (0..n)
        .map(|_| {
            // Sum of 4 uniforms: a cheap bell curve.
            let s = next() + next() + next() + next() - 2.0;
            s * sigma * 1.7
        })
        .collect();
    for r in 0..head.min(n) {
        let t = (next() * n as f32) as usize % n;
        row[t] = 4.0 * sigma + 6.0 / (1.0 + r as f32);
    }
    row
}
