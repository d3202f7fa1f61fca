//! bench: `cohost bench`, the load benchmark. Its one job is to drive a running server over HTTP
//! (any Cohere-compatible one, or llama-server through its native `/completion` endpoint, so both
//! are measured by the same client code) and report what a client sees; it knows nothing of how
//! the server works inside.
//!
//! For each concurrency level N it sends N streamed chats at once (distinct prompts, greedy,
//! fixed `max_tokens`), times every streamed chunk at the client, and reports aggregate and
//! per-stream tokens/s, time to first token and inter-chunk latency. Failed requests are counted,
//! never fatal.

pub mod client;
pub mod events;
pub mod prompt;
pub mod report;
pub mod stats;
pub mod svg;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Value};

pub use client::{Api, SendError, Target};
pub use report::{markdown, Report};
pub use stats::{LevelReport, RequestOutcome};

/// How llama-server gets the chat when `--api llama`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LlamaPrompt {
    /// Rendered by the server's own chat template (`POST /apply-template`), the same text a chat
    /// endpoint would build.
    Template,
    /// The user message as the raw prompt.
    Raw,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Base URL of the server under test.
    #[arg(
        long,
        env = "COHOST_BENCH_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,

    /// API key, sent as `Authorization: Bearer <key>` (from a comma-separated COHOST_API_KEY, the
    /// first key).
    #[arg(long, env = "COHOST_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Wire format: `cohere` drives POST /v2/chat; `llama` drives llama-server's POST /completion.
    #[arg(long, value_enum, default_value = "cohere")]
    pub api: Api,

    /// Model name for Cohere requests (default: the first one GET /v1/models lists).
    #[arg(long)]
    pub model: Option<String>,

    /// Name of the server in the table, report and chart (default: the API and the URL's host).
    #[arg(long)]
    pub label: Option<String>,

    /// Concurrent streams per level, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,8,16,32")]
    pub concurrency: Vec<usize>,

    /// Batches per level; a level's figures pool all its batches.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,

    /// Output tokens asked for per request (greedy; the model may stop earlier, and the actual
    /// count is what is reported).
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,

    /// Pad each prompt to about this many tokens (for prefill / TTFT); default: a short chat
    /// question.
    #[arg(long)]
    pub prompt_tokens: Option<usize>,

    /// With --api llama: render the chat with the server's template, or send the text raw.
    #[arg(long, value_enum, default_value = "template")]
    pub llama_prompt: LlamaPrompt,

    /// Requests sent (one at a time, not measured) before the first level.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,

    /// Seconds to wait for the server to come up (connection refused or 503 while loading).
    #[arg(long, default_value_t = 120)]
    pub wait_ready: u64,

    /// Seconds one request may take before it counts as an error.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,

    /// Write the JSON report here.
    #[arg(long)]
    pub out: Option<PathBuf>,

    /// Write an SVG chart (throughput and TTFT against concurrency) here.
    #[arg(long)]
    pub svg: Option<PathBuf>,

    /// Write a markdown table here.
    #[arg(long)]
    pub markdown: Option<PathBuf>,

    /// Run nothing: load these JSON reports (repeat the flag) and print, chart and tabulate them
    /// side by side, with ratios against the first.
    #[arg(long, value_name = "REPORT.json")]
    pub compare: Vec<PathBuf>,
}

/// A validated benchmark plan.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub api: Api,
    pub url: String,
    pub api_key: Option<String>,
    pub model: Option<String>,
    pub label: String,
    pub concurrency: Vec<usize>,
    pub rounds: usize,
    pub max_tokens: usize,
    pub prompt_tokens: Option<usize>,
    pub llama_prompt: LlamaPrompt,
    pub warmup: usize,
    pub wait_ready: Duration,
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("--{flag} must be at least 1")]
    Zero { flag: &'static str },
    #[error("--url {url} is not an http(s) URL")]
    Url { url: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("the server at {url} did not become ready within {waited_s} s: {last}")]
    NotReady {
        url: String,
        waited_s: u64,
        last: SendError,
    },
    #[error("cannot find a model name at {url}/v1/models ({reason}); pass --model")]
    NoModel { url: String, reason: String },
    #[error("llama-server could not render the chat template ({0}); use --llama-prompt raw")]
    Template(SendError),
}

impl BenchArgs {
    pub fn into_config(self) -> Result<BenchConfig, BenchError> {
        if self.concurrency.is_empty() || self.concurrency.contains(&0) {
            return Err(BenchError::Zero {
                flag: "concurrency",
            });
        }
        for (flag, value) in [
            ("rounds", self.rounds),
            ("max-tokens", self.max_tokens),
            ("timeout", self.timeout as usize),
        ] {
            if value == 0 {
                return Err(BenchError::Zero { flag });
            }
        }
        if self.prompt_tokens == Some(0) {
            return Err(BenchError::Zero {
                flag: "prompt-tokens",
            });
        }
        let url = self.url.trim_end_matches('/').to_string();
        let Some(rest) = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
        else {
            return Err(BenchError::Url { url });
        };
        let host = rest.split('/').next().unwrap_or(rest).to_string();
        let api_key = self
            .api_key
            .as_deref()
            .and_then(|k| k.split(',').map(str::trim).find(|k| !k.is_empty()))
            .map(String::from);
        Ok(BenchConfig {
            api: self.api,
            label: self
                .label
                .unwrap_or_else(|| format!("{}@{host}", self.api.name())),
            url,
            api_key,
            model: self.model,
            concurrency: self.concurrency,
            rounds: self.rounds,
            max_tokens: self.max_tokens,
            prompt_tokens: self.prompt_tokens,
            llama_prompt: self.llama_prompt,
            warmup: self.warmup,
            wait_ready: Duration::from_secs(self.wait_ready),
            timeout: Duration::from_secs(self.timeout),
        })
    }
}

/// Runs the whole sweep; `progress` sees each level as it finishes.
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
    for i in 0..config.warmup {
        let body =
            request_body(config, &target, model.as_deref(), &format!("{tag}-w{i}"), i).await?;
        // A failed warm-up shows up again, counted, in the levels.
        let _ = target.stream(&body).await;
    }
    let mut levels = Vec::with_capacity(config.concurrency.len());
    for &n in &config.concurrency {
        let mut outcomes = Vec::with_capacity(n * config.rounds);
        let mut wall = Duration::ZERO;
        for round in 0..config.rounds {
            // Prompts are built (and, for llama-server, rendered) before the clock starts.
            let mut bodies = Vec::with_capacity(n);
            for i in 0..n {
                let salt = format!("{tag}-{n}-{round}-{i}");
                bodies.push(request_body(config, &target, model.as_deref(), &salt, i).await?);
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
    Ok(Report {
        label: config.label.clone(),
        api: config.api,
        url: config.url.clone(),
        model,
        max_tokens: config.max_tokens,
        prompt_tokens_target: config.prompt_tokens,
        rounds: config.rounds,
        started_unix_s,
        levels,
    })
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

async fn request_body(
    config: &BenchConfig,
    target: &Target,
    model: Option<&str>,
    salt: &str,
    index: usize,
) -> Result<Value, BenchError> {
    let message = prompt::user_message(salt, index, config.prompt_tokens);
    let text = match (config.api, config.llama_prompt) {
        (Api::Llama, LlamaPrompt::Template) => {
            let body = json!({"messages": [{"role": "user", "content": message}]});
            // llama-server may close a pooled keep-alive connection just as it is reused; one
            // more try on a fresh connection tells that apart from a real refusal.
            let rendered = match target.post_json("/apply-template", &body).await {
                Ok(v) => v,
                Err(_) => target
                    .post_json("/apply-template", &body)
                    .await
                    .map_err(BenchError::Template)?,
            };
            rendered["prompt"]
                .as_str()
                .map(String::from)
                .ok_or_else(|| {
                    BenchError::Template(SendError::Other("no `prompt` in the reply".into()))
                })?
        }
        _ => message,
    };
    Ok(target.generation_body(model, &text, config.max_tokens))
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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    eprintln!(
        "benchmarking {} at {} ({} API), concurrency {:?}",
        config.label,
        config.url,
        config.api.name(),
        config.concurrency
    );
    let report = runtime.block_on(run(&config, |level| {
        eprintln!(
            "  concurrency {:>3}: {:>8.1} tok/s aggregate, {} errors",
            level.concurrency, level.aggregate_tokens_per_s, level.errors
        );
    }))?;
    write_outputs(&args, std::slice::from_ref(&report))
}

fn write_outputs(args: &BenchArgs, reports: &[Report]) -> anyhow::Result<()> {
    for report in reports {
        println!("{}", report.table());
    }
    let md = markdown(reports);
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
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn parse(args: &[&str]) -> BenchArgs {
        let mut argv = vec!["bench"];
        argv.extend_from_slice(args);
        Wrap::try_parse_from(argv).unwrap().args
    }

    #[test]
    fn defaults_sweep_the_documented_levels() {
        let config = parse(&[]).into_config().unwrap();
        assert_eq!(config.concurrency, [1, 4, 8, 16, 32]);
        assert_eq!((config.max_tokens, config.rounds), (256, 1));
        assert_eq!(config.url, "http://127.0.0.1:8080");
        assert_eq!(config.label, "cohere@127.0.0.1:8080");
        assert_eq!(config.api, Api::Cohere);
    }

    #[test]
    fn flags_and_key_lists() {
        let config = parse(&[
            "--url",
            "http://h:9/",
            "--api",
            "llama",
            "--concurrency",
            "2,3",
            "--api-key",
            " k1 ,k2",
            "--prompt-tokens",
            "1000",
            "--label",
            "llama.cpp",
        ])
        .into_config()
        .unwrap();
        assert_eq!(config.url, "http://h:9");
        assert_eq!(config.api, Api::Llama);
        assert_eq!(config.concurrency, [2, 3]);
        assert_eq!(config.api_key.as_deref(), Some("k1"));
        assert_eq!(config.prompt_tokens, Some(1000));
        assert_eq!(config.label, "llama.cpp");
    }

    #[test]
    fn bad_flags_are_refused() {
        let err = parse(&["--concurrency", "1,0"]).into_config().unwrap_err();
        assert_eq!(err.to_string(), "--concurrency must be at least 1");
        assert!(parse(&["--max-tokens", "0"]).into_config().is_err());
        assert!(matches!(
            parse(&["--url", "localhost:8080"]).into_config(),
            Err(BenchError::Url { .. })
        ));
    }

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
