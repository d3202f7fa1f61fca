//! bench: `cohost bench`, the load benchmark. Its one job is to drive a running server over HTTP
//! (any Cohere-compatible one, or llama-server through its native `/completion` endpoint, so both
//! are measured by the same client code) and report what a client sees; it knows nothing of how
//! the server works inside.
//!
//! Workloads (`--workload`):
//! - `throughput` (the default): for each concurrency level N it sends N streamed chats at once
//!   (distinct prompts, greedy, fixed `max_tokens`), times every streamed chunk at the client, and
//!   reports aggregate and per-stream tokens/s, time to first token and inter-chunk latency.
//! - `multi-turn`, `round-robin`, `shared-prefix`: prompts that repeat, as real traffic does
//!   (conversations resending their history, requests sharing one system message), and the time
//!   to first token where a server's prompt cache can help (`conversation`, `shared_prefix`).
//!
//! Failed requests are counted, never fatal.

pub mod cache_report;
pub mod client;
pub mod config;
pub mod conversation;
pub mod events;
pub mod prompt;
pub mod report;
pub mod shared_prefix;
pub mod stats;
pub mod svg;
pub mod throughput;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

pub use client::{Api, ChatMessage, SendError, Target};
pub use config::{BenchArgs, BenchConfig, BenchError, LlamaPrompt, Plan, Workload};
pub use report::{markdown, Report};
pub use stats::{LevelReport, RequestOutcome};

/// Runs the benchmark; `progress` sees each concurrency level as it finishes (the prompt-cache
/// workloads have one, all their requests pooled).
pub async fn run(
    config: &BenchConfig,
    mut progress: impl FnMut(&LevelReport),
) -> Result<Report, BenchError> {
    let started_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let target = Target::new(
        config.api,
        &config.url,
        config.api_key.clone(),
        config.timeout,
    )?;
    let model = wait_ready(config, &target).await?;
    let tag = prompt::run_tag();
    // Warm-up prompts are the throughput workload's (of its size, for that workload), distinct
    // from every measured one.
    let (warmup_tokens, llama_prompt, set) = match &config.plan {
        Plan::Throughput(plan) => (plan.prompt_tokens, plan.llama_prompt, plan.prompt_set),
        _ => (None, LlamaPrompt::Template, prompt::PromptSet::Chat),
    };
    for i in 0..config.warmup {
        let prompt = throughput::Prompt {
            salt: &format!("{tag}-w{i}"),
            index: i,
            tokens: warmup_tokens,
            llama: llama_prompt,
            set,
        };
        let body =
            throughput::request_body(&target, model.as_deref(), &prompt, config.max_tokens).await?;
        // A failed warm-up shows up again, counted, in the measured requests.
        let _ = target.stream(&body).await;
    }
    let mut report = Report {
        label: config.label.clone(),
        api: config.api,
        url: config.url.clone(),
        model: model.clone(),
        max_tokens: config.max_tokens,
        prompt_tokens_target: None,
        prompt_set: prompt::PromptSet::Chat,
        rounds: 1,
        started_unix_s,
        levels: Vec::new(),
        workload: config.plan.workload(),
        conversations: None,
        shared_prefix: None,
    };
    let model = model.as_deref();
    match &config.plan {
        Plan::Throughput(plan) => {
            report.prompt_tokens_target = plan.prompt_tokens;
            report.prompt_set = plan.prompt_set;
            report.rounds = plan.rounds;
            report.levels =
                throughput::run(config, plan, &target, model, &tag, &mut progress).await?;
        }
        Plan::Conversations(plan) => {
            report.prompt_tokens_target = Some(plan.turn_tokens);
            let (level, summary) =
                conversation::run(plan, &target, model, config.max_tokens, &tag).await;
            progress(&level);
            report.levels.push(level);
            report.conversations = Some(summary);
        }
        Plan::SharedPrefix(plan) => {
            report.prompt_tokens_target = Some(plan.prefix_tokens);
            report.rounds = plan.rounds;
            let (level, summary) =
                shared_prefix::run(plan, &target, model, config.max_tokens, &tag).await;
            progress(&level);
            report.levels.push(level);
            report.shared_prefix = Some(summary);
        }
    }
    Ok(report)
}

/// Waits until the server answers (retrying while nothing listens or it answers 503), and finds
/// the model name for Cohere requests.
async fn wait_ready(config: &BenchConfig, target: &Target) -> Result<Option<String>, BenchError> {
    let deadline = Instant::now() + config.wait_ready;
    loop {
        let attempt = match config.api {
            Api::Cohere => match &config.model {
                Some(m) => Ok(Some(m.clone())),
                None => target
                    .get_json("/v1/models")
                    .await
                    .and_then(|v| first_model_name(&v).map(Some)),
            },
            // llama-server answers /health with 503 until its model is loaded.
            Api::Llama => target.get_json("/health").await.map(|_| None),
        };
        match attempt {
            Ok(model) => return Ok(model),
            Err(e) if e.while_starting() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) if e.while_starting() => {
                return Err(BenchError::NotReady {
                    url: config.url.clone(),
                    waited_s: config.wait_ready.as_secs(),
                    last: e,
                })
            }
            Err(e) => {
                return Err(BenchError::NoModel {
                    url: config.url.clone(),
                    reason: e.to_string(),
                })
            }
        }
    }
}

fn first_model_name(models: &Value) -> Result<String, SendError> {
    models["models"][0]["name"]
        .as_str()
        .or_else(|| models["data"][0]["id"].as_str())
        .map(String::from)
        .ok_or_else(|| SendError::Other("no model listed".into()))
}

/// The `cohost bench` command.
pub fn main(args: BenchArgs) -> anyhow::Result<()> {
    if !args.compare.is_empty() {
        let mut reports = Vec::new();
        for path in &args.compare {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            let report = Report::from_json(&text)
                .map_err(|e| anyhow::anyhow!("{} is not a bench report: {e}", path.display()))?;
            reports.push(report);
        }
        return write_outputs(&args, &reports);
    }
    let config = args.clone().into_config()?;
    if args.svg.is_some() && config.plan.workload() != Workload::Throughput {
        anyhow::bail!("--svg charts the throughput workload only");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match &config.plan {
        Plan::Throughput(plan) => eprintln!(
            "benchmarking {} at {} ({} API), concurrency {:?}",
            config.label,
            config.url,
            config.api.name(),
            plan.concurrency
        ),
        plan => eprintln!(
            "benchmarking {} at {} ({} API), workload {}",
            config.label,
            config.url,
            config.api.name(),
            plan.workload().name()
        ),
    }
    let report = runtime.block_on(run(&config, |level| {
        eprintln!(
            "  concurrency {:>3}: {:>8.1} tok/s aggregate, {} errors",
            level.concurrency, level.aggregate_tokens_per_s, level.errors
        );
    }))?;
    write_outputs(&args, std::slice::from_ref(&report))
}

fn write_outputs(args: &BenchArgs, reports: &[Report]) -> anyhow::Result<()> {
    let Some(first) = reports.first() else {
        return Ok(());
    };
    let workload = first.workload;
    if let Some(other) = reports.iter().find(|r| r.workload != workload) {
        anyhow::bail!(
            "cannot compare a {} report with a {} report",
            workload.name(),
            other.workload.name()
        );
    }
    if args.svg.is_some() && workload != Workload::Throughput {
        anyhow::bail!("--svg charts the throughput workload only");
    }
    // Each run's own table, except for several runs of a prompt-cache workload: their
    // markdown table (medians of each label's runs) is what says something.
    if workload == Workload::Throughput || reports.len() == 1 {
        for report in reports {
            println!("{}", report.table());
        }
    }
    let md = if workload == Workload::Throughput {
        markdown(reports)
    } else {
        cache_report::markdown(reports)
    };
    if reports.len() > 1 {
        println!("{md}");
    }
    let write = |path: &PathBuf, text: &str| {
        std::fs::write(path, text)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
    };
    if let Some(path) = &args.out {
        if let [report] = reports {
            write(path, &report.to_json())?;
        } else {
            anyhow::bail!("--out writes one run's report; with --compare use --markdown or --svg");
        }
    }
    if let Some(path) = &args.svg {
        write(path, &svg::chart(reports))?;
    }
    if let Some(path) = &args.markdown {
        write(path, &md)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn model_names_from_cohere_or_openai_listings() {
        assert_eq!(
            first_model_name(&json!({"models": [{"name": "a"}, {"name": "b"}]})).unwrap(),
            "a"
        );
        assert_eq!(
            first_model_name(&json!({"data": [{"id": "x"}]})).unwrap(),
            "x"
        );
        assert!(first_model_name(&json!({"models": []})).is_err());
    }
}
