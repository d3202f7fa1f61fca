//! Percentiles and the per-level summary of a batch of streamed requests.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The `q`-quantile (0..=1) of `values`, interpolating linearly between the two nearest ranks
/// (numpy's default), so small samples still give a sensible p95. `None` for an empty sample.
pub fn percentile(values: &[f64], q: f64) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let q = q.clamp(0.0, 1.0);
    let rank = q * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let frac = rank - lo as f64;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * frac)
}

pub fn mean(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        None
    } else {
        Some(values.iter().sum::<f64>() / values.len() as f64)
    }
}

/// p50 and p95 of a sample, in the sample's unit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub p50: f64,
    pub p95: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Option<Spread> {
        Some(Spread {
            p50: percentile(values, 0.50)?,
            p95: percentile(values, 0.95)?,
        })
    }
}

/// What the client saw of one streamed request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestOutcome {
    /// Arrival of each content chunk, measured from the moment the request was sent.
    pub chunk_times: Vec<Duration>,
    /// Output tokens: the server's own count where it reports one, else the number of chunks.
    pub output_tokens: usize,
    /// Prompt tokens as the server counted them, where it says.
    pub prompt_tokens: Option<usize>,
    /// Of those, the ones the server took from its prompt cache, where it says.
    pub cached_tokens: Option<usize>,
    /// The reply text as streamed (what a conversation's next turn sends back as the assistant's).
    pub text: String,
    /// Why the request failed (HTTP status, broken stream, server-side error event).
    pub error: Option<String>,
}

impl RequestOutcome {
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            error: Some(message.into()),
            ..Self::default()
        }
    }

    /// Client-side time to the first content chunk.
    pub fn ttft(&self) -> Option<Duration> {
        self.chunk_times.first().copied()
    }

    /// Decode speed of this stream alone: tokens after the first over the time between the first
    /// and the last chunk (prefill and queueing excluded).
    pub fn decode_tokens_per_s(&self) -> Option<f64> {
        let (first, last) = (self.chunk_times.first()?, self.chunk_times.last()?);
        let span = last.saturating_sub(*first).as_secs_f64();
        (self.output_tokens >= 2 && span > 0.0).then(|| (self.output_tokens - 1) as f64 / span)
    }

    /// Gaps between consecutive chunks, in milliseconds.
    pub fn gaps_ms(&self) -> impl Iterator<Item = f64> + '_ {
        self.chunk_times
            .windows(2)
            .map(|w| w[1].saturating_sub(w[0]).as_secs_f64() * 1e3)
    }
}

/// The figures for one concurrency level (all its rounds pooled).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelReport {
    pub concurrency: usize,
    pub requests: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    /// Sum of the rounds' wall times (each round: first request sent to last stream closed).
    pub wall_s: f64,
    pub output_tokens: usize,
    pub mean_prompt_tokens: Option<f64>,
    /// All output tokens over the wall time.
    pub aggregate_tokens_per_s: f64,
    /// Mean over streams of each stream's own decode speed.
    pub per_stream_tokens_per_s: Option<f64>,
    pub ttft_ms: Option<Spread>,
    /// Gaps between consecutive content chunks, all streams pooled.
    pub itl_ms: Option<Spread>,
}

impl LevelReport {
    /// Summarises the outcomes of `concurrency`-wide rounds that took `wall` in total.
    pub fn summarise(concurrency: usize, outcomes: &[RequestOutcome], wall: Duration) -> Self {
        let errors: Vec<&str> = outcomes.iter().filter_map(|o| o.error.as_deref()).collect();
        let output_tokens = outcomes.iter().map(|o| o.output_tokens).sum();
        let prompt: Vec<f64> = outcomes
            .iter()
            .filter_map(|o| o.prompt_tokens.map(|p| p as f64))
            .collect();
        let ttft: Vec<f64> = outcomes
            .iter()
            .filter_map(|o| o.ttft().map(|t| t.as_secs_f64() * 1e3))
            .collect();
        let decode: Vec<f64> = outcomes
            .iter()
            .filter_map(RequestOutcome::decode_tokens_per_s)
            .collect();
        let gaps: Vec<f64> = outcomes.iter().flat_map(RequestOutcome::gaps_ms).collect();
        let wall_s = wall.as_secs_f64();
        Self {
            concurrency,
            requests: outcomes.len(),
            errors: errors.len(),
            first_error: errors.first().map(|e| e.to_string()),
            wall_s,
            output_tokens,
            mean_prompt_tokens: mean(&prompt),
            aggregate_tokens_per_s: if wall_s > 0.0 {
                output_tokens as f64 / wall_s
            } else {
                0.0
            },
            per_stream_tokens_per_s: mean(&decode),
            ttft_ms: Spread::of(&ttft),
            itl_ms: Spread::of(&gaps),
        }
    }
}

/// Time to first token of a group of requests (one turn of every conversation, one round of a
/// shared-prefix run, ...), in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TtftSpread {
    pub p50: f64,
    pub p90: f64,
    pub mean: f64,
}

/// What a group of requests of a prompt-cache workload measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TtftGroup {
    pub requests: usize,
    pub errors: usize,
    /// Over every request that streamed something (a stream that broke later still had its
    /// first token).
    pub ttft_ms: Option<TtftSpread>,
    /// Prompt tokens the server counted, summed over the requests it counted them for.
    pub prompt_tokens: Option<usize>,
    /// Prompt tokens the server says came from its prompt cache, summed; `None` when no
    /// response said (a server without a prompt cache, or one that does not report it).
    pub cached_tokens: Option<usize>,
    /// Mean prompt tokens per request that has a count.
    pub mean_prompt_tokens: Option<f64>,
}

impl TtftGroup {
    pub fn of<'a>(outcomes: impl IntoIterator<Item = &'a RequestOutcome>) -> Self {
        let mut group = TtftGroup::default();
        let mut ttft = Vec::new();
        let mut counted = 0usize;
        for o in outcomes {
            group.requests += 1;
            group.errors += usize::from(o.error.is_some());
            if let Some(t) = o.ttft() {
                ttft.push(t.as_secs_f64() * 1e3);
            }
            if let Some(p) = o.prompt_tokens {
                *group.prompt_tokens.get_or_insert(0) += p;
                counted += 1;
            }
            if let Some(c) = o.cached_tokens {
                *group.cached_tokens.get_or_insert(0) += c;
            }
        }
        group.ttft_ms = (|| {
            Some(TtftSpread {
                p50: percentile(&ttft, 0.5)?,
                p90: percentile(&ttft, 0.9)?,
                mean: mean(&ttft)?,
            })
        })();
        group.mean_prompt_tokens = group
            .prompt_tokens
            .map(|p| p as f64 / counted.max(1) as f64);
        group
    }

    /// The share of the counted prompt tokens that came from the cache, 0..=1.
    pub fn cached_share(&self) -> Option<f64> {
        match (self.cached_tokens, self.prompt_tokens) {
            (Some(c), Some(p)) if p > 0 => Some(c as f64 / p as f64),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(percentile(&v, 0.5), Some(2.5));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 1.0), Some(4.0));
        let p95 = percentile(&v, 0.95).unwrap();
        assert!((p95 - 3.85).abs() < 1e-12, "{p95}");
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert!((percentile(&hundred, 0.95).unwrap() - 95.05).abs() < 1e-9);
    }

    #[test]
    fn percentiles_of_tiny_and_odd_samples() {
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[7.0], 0.95), Some(7.0));
        assert_eq!(percentile(&[1.0, 2.0, 9.0], 0.5), Some(2.0));
        // Non-finite values are measurement failures, not data.
        assert_eq!(percentile(&[f64::NAN, 3.0], 0.5), Some(3.0));
        assert_eq!(mean(&[1.0, 2.0, 6.0]), Some(3.0));
        assert_eq!(mean(&[]), None);
    }

    #[test]
    fn a_stream_reports_its_ttft_decode_speed_and_gaps() {
        let o = RequestOutcome {
            chunk_times: vec![ms(100), ms(110), ms(130), ms(140)],
            output_tokens: 4,
            prompt_tokens: Some(30),
            ..Default::default()
        };
        assert_eq!(o.ttft(), Some(ms(100)));
        // 3 tokens after the first in 40 ms.
        assert!((o.decode_tokens_per_s().unwrap() - 75.0).abs() < 1e-9);
        let gaps: Vec<f64> = o.gaps_ms().collect();
        assert_eq!(gaps.len(), 3);
        assert!((gaps[1] - 20.0).abs() < 1e-9);
        // One token has no decode speed.
        let one = RequestOutcome {
            chunk_times: vec![ms(5)],
            output_tokens: 1,
            ..Default::default()
        };
        assert_eq!(one.decode_tokens_per_s(), None);
    }

    #[test]
    fn a_level_pools_its_streams_and_counts_errors() {
        let ok = |first: u64, n: u64| RequestOutcome {
            chunk_times: (0..n).map(|i| ms(first + 10 * i)).collect(),
            output_tokens: n as usize,
            prompt_tokens: Some(20),
            ..Default::default()
        };
        let outcomes = vec![
            ok(100, 11),
            ok(300, 11),
            RequestOutcome::failed("HTTP 500: boom"),
            RequestOutcome::failed("second"),
        ];
        let level = LevelReport::summarise(4, &outcomes, Duration::from_secs(2));
        assert_eq!((level.requests, level.errors), (4, 2));
        assert_eq!(level.first_error.as_deref(), Some("HTTP 500: boom"));
        assert_eq!(level.output_tokens, 22);
        assert!((level.aggregate_tokens_per_s - 11.0).abs() < 1e-9);
        assert_eq!(level.mean_prompt_tokens, Some(20.0));
        assert!((level.per_stream_tokens_per_s.unwrap() - 100.0).abs() < 1e-6);
        let ttft = level.ttft_ms.unwrap();
        assert!((ttft.p50 - 200.0).abs() < 1e-6 && (ttft.p95 - 290.0).abs() < 1e-6);
        let itl = level.itl_ms.unwrap();
        assert!((itl.p50 - 10.0).abs() < 1e-6);
    }

    #[test]
    fn a_group_pools_ttft_prompt_and_cached_tokens() {
        let req = |ttft: u64, prompt: usize, cached: Option<usize>| RequestOutcome {
            chunk_times: vec![ms(ttft), ms(ttft + 10)],
            output_tokens: 2,
            prompt_tokens: Some(prompt),
            cached_tokens: cached,
            ..Default::default()
        };
        let outcomes = [
            req(100, 1000, Some(900)),
            req(300, 1000, Some(0)),
            req(200, 2000, Some(1500)),
            req(400, 4000, Some(3000)),
            RequestOutcome::failed("HTTP 500: boom"),
        ];
        let g = TtftGroup::of(&outcomes);
        assert_eq!((g.requests, g.errors), (5, 1));
        let t = g.ttft_ms.unwrap();
        // 100, 200, 300, 400: median 250, p90 at rank 2.7, mean 250; the failure has no TTFT.
        assert!((t.p50 - 250.0).abs() < 1e-9, "{t:?}");
        assert!((t.p90 - 370.0).abs() < 1e-9, "{t:?}");
        assert!((t.mean - 250.0).abs() < 1e-9, "{t:?}");
        assert_eq!((g.prompt_tokens, g.cached_tokens), (Some(8000), Some(5400)));
        assert_eq!(g.mean_prompt_tokens, Some(2000.0));
        assert!((g.cached_share().unwrap() - 0.675).abs() < 1e-12);
        // A server that reports no cache: no share, rather than 0%.
        let plain = TtftGroup::of(&[req(100, 50, None)]);
        assert_eq!((plain.cached_tokens, plain.cached_share()), (None, None));
        let empty = TtftGroup::of(&[]);
        assert_eq!((empty.requests, empty.ttft_ms), (0, None));
    }

    #[test]
    fn a_level_where_everything_failed_has_no_latencies() {
        let level = LevelReport::summarise(1, &[RequestOutcome::failed("x")], Duration::ZERO);
        assert_eq!(level.aggregate_tokens_per_s, 0.0);
        assert_eq!((level.ttft_ms, level.itl_ms), (None, None));
    }
}
