//! The command line of `cohost bench` and its validation: flags -> one [`BenchConfig`] whose
//! [`Plan`] has every workload default filled in, or an error that names the flag.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::client::{Api, SendError};
use crate::{conversation, shared_prefix, throughput};

/// What traffic the bench sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Concurrency sweep of distinct prompts: tokens/s, TTFT and inter-token latency.
    #[default]
    Throughput,
    /// Conversations (--conversations, default 8) all at once, each sending its next turn
    /// (--turns, default 6) as soon as its previous reply is in, with the whole history.
    MultiTurn,
    /// Conversations (default 32) taking their turns (default 4) in round-robin order, turn t of
    /// every conversation before turn t+1 of any, at most --concurrency (default 16) in flight.
    RoundRobin,
    /// --concurrency (default 16) requests at once with one shared ~1,500-token system message
    /// and a different short question each, --rounds (default 3) times.
    SharedPrefix,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Throughput => "throughput",
            Workload::MultiTurn => "multi-turn",
            Workload::RoundRobin => "round-robin",
            Workload::SharedPrefix => "shared-prefix",
        }
    }
}

/// How llama-server gets the chat when `--api llama`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LlamaPrompt {
    /// Rendered by the server's own chat template (`POST /apply-template`), the same text a chat
    /// endpoint would build.
    Template,
    /// The user message as the raw prompt (throughput workload only).
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

    /// Wire format: `cohere` drives POST /v2/chat; `llama` drives llama-server's POST /completion
    /// (throughput: `cache_prompt: false`, every prompt pays its prefill; the prompt-cache
    /// workloads: `cache_prompt: true`, llama-server's default).
    #[arg(long, value_enum, default_value = "cohere")]
    pub api: Api,

    /// What to send. The prompt-cache workloads (multi-turn, round-robin, shared-prefix) report
    /// time to first token where prompts repeat; --compare of their reports takes the median of
    /// each server's runs (reports with the same --label) and the ratios against the first.
    #[arg(long, value_enum, default_value_t = Workload::Throughput)]
    pub workload: Workload,

    /// Model name for Cohere requests (default: the first one GET /v1/models lists).
    #[arg(long)]
    pub model: Option<String>,

    /// Name of the server in the table, report and chart (default: the API and the URL's host).
    #[arg(long)]
    pub label: Option<String>,

    /// throughput: concurrent streams per level, comma-separated [1,4,8,16,32]. round-robin:
    /// requests in flight at most [16]; shared-prefix: requests per round [16]. multi-turn
    /// runs every conversation at once and takes none.
    #[arg(long, value_delimiter = ',')]
    pub concurrency: Option<Vec<usize>>,

    /// throughput: batches per level, pooled [1]. shared-prefix: rounds, each with new
    /// questions [3].
    #[arg(long)]
    pub rounds: Option<usize>,

    /// Output tokens asked for per request (greedy; the model may stop earlier, and the actual
    /// count is what is reported) [throughput 256, the prompt-cache workloads 32].
    #[arg(long)]
    pub max_tokens: Option<usize>,

    /// throughput: pad each prompt to about this many tokens (for prefill / TTFT) [a short chat
    /// question]. multi-turn, round-robin: tokens each user turn adds [300]. shared-prefix:
    /// tokens of the shared system message [1500].
    #[arg(long)]
    pub prompt_tokens: Option<usize>,

    /// multi-turn, round-robin: conversations [8, round-robin 32].
    #[arg(long)]
    pub conversations: Option<usize>,

    /// multi-turn, round-robin: user turns per conversation [6, round-robin 4].
    #[arg(long)]
    pub turns: Option<usize>,

    /// throughput: what the prompts ask for: `chat` (short questions, or notes to summarise
    /// with --prompt-tokens), `rewrite` (copy a passage out, lightly edited) or `quote` (answer a
    /// question about a passage by quoting it): the last two measure speculative decoding.
    #[arg(long, value_enum)]
    pub prompt_set: Option<crate::prompt::PromptSet>,

    /// With --api llama: render the chat with the server's template, or send the text raw
    /// (throughput only: the other workloads send histories, which need the template).
    #[arg(long, value_enum, default_value = "template")]
    pub llama_prompt: LlamaPrompt,

    /// Requests sent (one at a time, not measured, unrelated to the measured prompts) before
    /// the measured ones.
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

    /// Write an SVG chart (throughput and TTFT against concurrency) here (throughput only).
    #[arg(long)]
    pub svg: Option<PathBuf>,

    /// Write a markdown table here.
    #[arg(long)]
    pub markdown: Option<PathBuf>,

    /// Run nothing: load these JSON reports (repeat the flag) and print and tabulate them side
    /// by side, with ratios against the first. Throughput reports: one column per report, and
    /// a chart (--svg). Prompt-cache reports (all of one workload): one column per --label, the
    /// median of that label's runs.
    #[arg(long, value_name = "REPORT.json")]
    pub compare: Vec<PathBuf>,
}

/// What one run sends, validated, with every default filled in.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    Throughput(throughput::ThroughputPlan),
    Conversations(conversation::ConversationPlan),
    SharedPrefix(shared_prefix::SharedPrefixPlan),
}

impl Plan {
    pub fn workload(&self) -> Workload {
        match self {
            Plan::Throughput(_) => Workload::Throughput,
            Plan::Conversations(p) => p.workload(),
            Plan::SharedPrefix(_) => Workload::SharedPrefix,
        }
    }
}

/// A validated benchmark.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub api: Api,
    pub url: String,
    pub api_key: Option<String>,
    pub model: Option<String>,
    pub label: String,
    pub max_tokens: usize,
    pub warmup: usize,
    pub wait_ready: Duration,
    pub timeout: Duration,
    pub plan: Plan,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("--{flag} must be at least 1")]
    Zero { flag: &'static str },
    #[error("--{flag} does not apply to --workload {workload}")]
    NotForWorkload {
        flag: &'static str,
        workload: &'static str,
    },
    #[error("--concurrency takes one number with --workload {workload}")]
    OneConcurrency { workload: &'static str },
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

/// `Some(value)` of a flag only some workloads take; an error if given to another.
fn only_for<T>(
    value: Option<T>,
    flag: &'static str,
    applies: bool,
    workload: Workload,
) -> Result<Option<T>, BenchError> {
    match value {
        Some(_) if !applies => Err(BenchError::NotForWorkload {
            flag,
            workload: workload.name(),
        }),
        v => Ok(v),
    }
}

fn at_least_one(value: usize, flag: &'static str) -> Result<usize, BenchError> {
    if value == 0 {
        Err(BenchError::Zero { flag })
    } else {
        Ok(value)
    }
}

impl BenchArgs {
    pub fn into_config(self) -> Result<BenchConfig, BenchError> {
        let workload = self.workload;
        let conversational = matches!(workload, Workload::MultiTurn | Workload::RoundRobin);
        let concurrency = only_for(
            self.concurrency,
            "concurrency",
            workload != Workload::MultiTurn,
            workload,
        )?;
        if let Some(levels) = &concurrency {
            if levels.is_empty() || levels.contains(&0) {
                return Err(BenchError::Zero {
                    flag: "concurrency",
                });
            }
            if workload != Workload::Throughput && levels.len() != 1 {
                return Err(BenchError::OneConcurrency {
                    workload: workload.name(),
                });
            }
        }
        let one_level = concurrency.as_ref().map(|levels| levels[0]);
        let rounds = only_for(
            self.rounds,
            "rounds",
            matches!(workload, Workload::Throughput | Workload::SharedPrefix),
            workload,
        )?;
        let conversations = only_for(
            self.conversations,
            "conversations",
            conversational,
            workload,
        )?;
        let turns = only_for(self.turns, "turns", conversational, workload)?;
        if self.llama_prompt == LlamaPrompt::Raw && workload != Workload::Throughput {
            return Err(BenchError::NotForWorkload {
                flag: "llama-prompt raw",
                workload: workload.name(),
            });
        }
        let prompt_set = only_for(
            self.prompt_set,
            "prompt-set",
            workload == Workload::Throughput,
            workload,
        )?
        .unwrap_or_default();
        if prompt_set != crate::prompt::PromptSet::Chat && self.prompt_tokens.is_some() {
            return Err(BenchError::NotForWorkload {
                flag: "prompt-tokens",
                workload: "throughput --prompt-set rewrite|quote",
            });
        }
        if self.prompt_tokens == Some(0) {
            return Err(BenchError::Zero {
                flag: "prompt-tokens",
            });
        }
        at_least_one(self.timeout as usize, "timeout")?;
        let max_tokens = at_least_one(
            self.max_tokens.unwrap_or(match workload {
                Workload::Throughput => 256,
                // Short replies: these workloads measure the prompt side.
                _ => 32,
            }),
            "max-tokens",
        )?;
        let plan = match workload {
            Workload::Throughput => Plan::Throughput(throughput::ThroughputPlan {
                concurrency: concurrency.unwrap_or_else(|| vec![1, 4, 8, 16, 32]),
                rounds: at_least_one(rounds.unwrap_or(1), "rounds")?,
                prompt_tokens: self.prompt_tokens,
                llama_prompt: self.llama_prompt,
                prompt_set,
            }),
            Workload::MultiTurn | Workload::RoundRobin => {
                let round_robin = workload == Workload::RoundRobin;
                let conversations = at_least_one(
                    conversations.unwrap_or(if round_robin { 32 } else { 8 }),
                    "conversations",
                )?;
                Plan::Conversations(conversation::ConversationPlan {
                    order: if round_robin {
                        conversation::Order::RoundRobin {
                            in_flight: one_level.unwrap_or(16),
                        }
                    } else {
                        conversation::Order::Independent
                    },
                    conversations,
                    turns: at_least_one(turns.unwrap_or(if round_robin { 4 } else { 6 }), "turns")?,
                    turn_tokens: self.prompt_tokens.unwrap_or(300),
                })
            }
            Workload::SharedPrefix => Plan::SharedPrefix(shared_prefix::SharedPrefixPlan {
                concurrency: one_level.unwrap_or(16),
                rounds: at_least_one(rounds.unwrap_or(3), "rounds")?,
                prefix_tokens: self.prompt_tokens.unwrap_or(1500),
            }),
        };
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
            max_tokens,
            warmup: self.warmup,
            wait_ready: Duration::from_secs(self.wait_ready),
            timeout: Duration::from_secs(self.timeout),
            plan,
        })
    }
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

    fn throughput(config: &BenchConfig) -> &throughput::ThroughputPlan {
        match &config.plan {
            Plan::Throughput(p) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_sweep_the_documented_levels() {
        let config = parse(&[]).into_config().unwrap();
        let plan = throughput(&config);
        assert_eq!(plan.concurrency, [1, 4, 8, 16, 32]);
        assert_eq!((config.max_tokens, plan.rounds), (256, 1));
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
        assert_eq!(throughput(&config).concurrency, [2, 3]);
        assert_eq!(config.api_key.as_deref(), Some("k1"));
        assert_eq!(throughput(&config).prompt_tokens, Some(1000));
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
    fn each_workload_has_the_issue_sizes_by_default() {
        use conversation::{ConversationPlan, Order};
        let plan = |args: &[&str]| parse(args).into_config().unwrap();
        let multi = plan(&["--workload", "multi-turn"]);
        assert_eq!(multi.max_tokens, 32);
        assert_eq!(
            multi.plan,
            Plan::Conversations(ConversationPlan {
                order: Order::Independent,
                conversations: 8,
                turns: 6,
                turn_tokens: 300,
            })
        );
        assert_eq!(
            plan(&["--workload", "round-robin"]).plan,
            Plan::Conversations(ConversationPlan {
                order: Order::RoundRobin { in_flight: 16 },
                conversations: 32,
                turns: 4,
                turn_tokens: 300,
            })
        );
        let shared = plan(&["--workload", "shared-prefix"]);
        assert_eq!(
            shared.plan,
            Plan::SharedPrefix(shared_prefix::SharedPrefixPlan {
                concurrency: 16,
                rounds: 3,
                prefix_tokens: 1500,
            })
        );
        // Every default can be changed.
        let small = plan(&[
            "--workload",
            "round-robin",
            "--conversations",
            "3",
            "--turns",
            "2",
            "--concurrency",
            "2",
            "--prompt-tokens",
            "50",
            "--max-tokens",
            "4",
        ]);
        assert_eq!(small.max_tokens, 4);
        assert_eq!(
            small.plan,
            Plan::Conversations(ConversationPlan {
                order: Order::RoundRobin { in_flight: 2 },
                conversations: 3,
                turns: 2,
                turn_tokens: 50,
            })
        );
    }

    #[test]
    fn flags_of_other_workloads_are_refused_by_name() {
        let err = |args: &[&str]| parse(args).into_config().unwrap_err().to_string();
        assert_eq!(
            err(&["--turns", "3"]),
            "--turns does not apply to --workload throughput"
        );
        assert_eq!(
            err(&["--workload", "multi-turn", "--concurrency", "4"]),
            "--concurrency does not apply to --workload multi-turn"
        );
        assert_eq!(
            err(&["--workload", "round-robin", "--rounds", "2"]),
            "--rounds does not apply to --workload round-robin"
        );
        assert_eq!(
            err(&["--workload", "shared-prefix", "--conversations", "2"]),
            "--conversations does not apply to --workload shared-prefix"
        );
        assert_eq!(
            err(&["--workload", "shared-prefix", "--concurrency", "4,8"]),
            "--concurrency takes one number with --workload shared-prefix"
        );
        assert_eq!(
            err(&["--workload", "multi-turn", "--turns", "0"]),
            "--turns must be at least 1"
        );
        assert!(err(&["--workload", "multi-turn", "--llama-prompt", "raw"]).contains("raw"));
    }
}
