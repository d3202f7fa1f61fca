//! The throughput workload: for each concurrency level N, N streamed chats at once with distinct
//! prompts (no prompt cache on llama-server), all their chunks timed.

use std::time::{Duration, Instant};

use crate::client::{ChatMessage, Target};
use crate::prompt::PromptSet;
use crate::stats::{LevelReport, RequestOutcome};
use crate::{prompt, BenchConfig, BenchError, LlamaPrompt};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThroughputPlan {
    /// Concurrent streams per level, in order.
    pub concurrency: Vec<usize>,
    /// Batches per level; a level's figures pool all its batches.
    pub rounds: usize,
    /// Pad each prompt to about this many tokens; `None`: a short chat question.
    pub prompt_tokens: Option<usize>,
    pub llama_prompt: LlamaPrompt,
    /// What the prompts ask for.
    pub prompt_set: PromptSet,
}

/// Which of the distinct prompts one request sends.
#[derive(Debug, Clone, Copy)]
pub struct Prompt<'a> {
    pub salt: &'a str,
    pub index: usize,
    pub tokens: Option<usize>,
    pub llama: LlamaPrompt,
    pub set: PromptSet,
}

/// Runs the sweep; `progress` sees each level as it finishes.
pub async fn run(
    config: &BenchConfig,
    plan: &ThroughputPlan,
    target: &Target,
    model: Option<&str>,
    tag: &str,
    progress: &mut impl FnMut(&LevelReport),
) -> Result<Vec<LevelReport>, BenchError> {
    let mut levels = Vec::with_capacity(plan.concurrency.len());
    for &n in &plan.concurrency {
        let mut outcomes = Vec::with_capacity(n * plan.rounds);
        let mut wall = Duration::ZERO;
        for round in 0..plan.rounds {
            // Prompts are built (and, for llama-server, rendered) before the clock starts.
            let mut bodies = Vec::with_capacity(n);
            for i in 0..n {
                let prompt = Prompt {
                    salt: &format!("{tag}-{n}-{round}-{i}"),
                    index: i,
                    tokens: plan.prompt_tokens,
                    llama: plan.llama_prompt,
                    set: plan.prompt_set,
                };
                bodies.push(request_body(target, model, &prompt, config.max_tokens).await?);
            }
            let start = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for body in bodies {
                let target = target.clone();
                tasks.spawn(async move {
                    match target.stream(&body).await {
                        Ok(outcome) => outcome,
                        Err(e) => RequestOutcome::failed(e.to_string()),
                    }
                });
            }
            while let Some(joined) = tasks.join_next().await {
                outcomes.push(joined.unwrap_or_else(|e| {
                    RequestOutcome::failed(format!("the request task failed: {e}"))
                }));
            }
            wall += start.elapsed();
        }
        let level = LevelReport::summarise(n, &outcomes, wall);
        progress(&level);
        levels.push(level);
    }
    Ok(levels)
}

/// The body of one distinct-prompt request (for llama-server rendered by its template unless
/// raw is asked for, and with `cache_prompt: false`).
pub async fn request_body(
    target: &Target,
    model: Option<&str>,
    prompt: &Prompt<'_>,
    max_tokens: usize,
) -> Result<serde_json::Value, BenchError> {
    let message = prompt::throughput_message(prompt.set, prompt.salt, prompt.index, prompt.tokens);
    let text = match (target.api, prompt.llama) {
        (crate::Api::Llama, LlamaPrompt::Template) => target
            .render_template(&[ChatMessage::new("user", message)])
            .await
            .map_err(BenchError::Template)?,
        _ => message,
    };
    Ok(target.generation_body(model, &text, max_tokens))
}
