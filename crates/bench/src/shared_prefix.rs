//! The shared-prefix workload: rounds of concurrent requests that all send the same long system
//! message (a preamble and documents, as a RAG application does) and a short question of their
//! own. A server with a prompt cache prefills the shared part once.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::client::{ChatMessage, Target};
use crate::prompt;
use crate::stats::{LevelReport, RequestOutcome, TtftGroup};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedPrefixPlan {
    /// Requests per round, all sent at once.
    pub concurrency: usize,
    /// Rounds, one after the other, each with new questions.
    pub rounds: usize,
    /// About how many tokens the shared system message has.
    pub prefix_tokens: usize,
}

/// Runs the rounds; the pooled level and the per-round summary.
pub async fn run(
    plan: &SharedPrefixPlan,
    target: &Target,
    model: Option<&str>,
    max_tokens: usize,
    tag: &str,
) -> (LevelReport, SharedPrefixReport) {
    let system = ChatMessage::new(
        "system",
        prompt::shared_system_message(tag, plan.prefix_tokens),
    );
    let mut rounds = Vec::with_capacity(plan.rounds);
    let mut wall = Duration::ZERO;
    for round in 0..plan.rounds {
        // Bodies are built (and, for llama-server, rendered) before the clock starts.
        let mut bodies = Vec::with_capacity(plan.concurrency);
        for i in 0..plan.concurrency {
            let messages = [
                system.clone(),
                ChatMessage::new("user", prompt::shared_question(tag, round, i)),
            ];
            bodies.push(target.history_body(model, &messages, max_tokens).await);
        }
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for (i, body) in bodies.into_iter().enumerate() {
            let target = target.clone();
            tasks.spawn(async move {
                let outcome = match body {
                    Ok(body) => target
                        .stream(&body)
                        .await
                        .unwrap_or_else(|e| RequestOutcome::failed(e.to_string())),
                    Err(e) => {
                        RequestOutcome::failed(format!("cannot render the chat template: {e}"))
                    }
                };
                (i, outcome)
            });
        }
        // A task that never reports (it panicked) leaves its request counted as failed.
        let mut outcomes =
            vec![RequestOutcome::failed("the request task failed"); plan.concurrency];
        while let Some(joined) = tasks.join_next().await {
            if let Ok((i, outcome)) = joined {
                outcomes[i] = outcome;
            }
        }
        wall += start.elapsed();
        rounds.push(outcomes);
    }
    summarise(plan, &rounds, wall)
}

/// The per-round summary of a shared-prefix run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedPrefixReport {
    pub concurrency: usize,
    /// About how many tokens the shared system message had.
    pub prefix_tokens: usize,
    /// Round 1 (index 0) onwards.
    pub rounds: Vec<TtftGroup>,
    /// Every round pooled.
    pub all: TtftGroup,
}

/// Summarises the rounds' outcomes (in order) of a run whose rounds took `wall` in all.
pub fn summarise(
    plan: &SharedPrefixPlan,
    rounds: &[Vec<RequestOutcome>],
    wall: Duration,
) -> (LevelReport, SharedPrefixReport) {
    let all: Vec<RequestOutcome> = rounds.iter().flatten().cloned().collect();
    let level = LevelReport::summarise(plan.concurrency, &all, wall);
    let report = SharedPrefixReport {
        concurrency: plan.concurrency,
        prefix_tokens: plan.prefix_tokens,
        rounds: rounds.iter().map(TtftGroup::of).collect(),
        all: TtftGroup::of(&all),
    };
    (level, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_are_summarised_apart_and_together() {
        let ok = |ttft: u64| RequestOutcome {
            chunk_times: vec![Duration::from_millis(ttft)],
            output_tokens: 1,
            prompt_tokens: Some(1600),
            ..Default::default()
        };
        let plan = SharedPrefixPlan {
            concurrency: 2,
            rounds: 2,
            prefix_tokens: 1500,
        };
        let rounds = vec![vec![ok(1000), ok(3000)], vec![ok(100), ok(300)]];
        let (level, report) = summarise(&plan, &rounds, Duration::from_secs(4));
        assert_eq!((level.concurrency, level.requests), (2, 4));
        assert_eq!(report.rounds.len(), 2);
        let p = |g: &TtftGroup| g.ttft_ms.unwrap();
        assert_eq!(p(&report.rounds[0]).p50, 2000.0);
        assert_eq!(p(&report.rounds[1]).p50, 200.0);
        assert!((p(&report.rounds[1]).p90 - 280.0).abs() < 1e-9);
        // All four: 100, 300, 1000, 3000.
        assert_eq!(p(&report.all).p50, 650.0);
        assert_eq!(report.all.mean_prompt_tokens, Some(1600.0));
        assert_eq!(report.all.cached_tokens, None);
    }
}
