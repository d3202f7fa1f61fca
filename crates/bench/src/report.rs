//! The results of a run, and their text forms: a terminal table, JSON, and markdown tables
//! (one run, or several runs side by side with ratios against the first).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::client::Api;
use crate::conversation::ConversationReport;
use crate::shared_prefix::SharedPrefixReport;
use crate::stats::LevelReport;
use crate::Workload;

/// Everything one `cohost bench` run measured, as written to `--out`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The server's name in tables and charts.
    pub label: String,
    pub api: Api,
    pub url: String,
    /// The model name sent (Cohere API), if any.
    pub model: Option<String>,
    pub max_tokens: usize,
    /// The long-prompt size asked for, if any (actual counts are in each level); for the
    /// conversation workloads the tokens each turn adds, for shared-prefix the system message's.
    pub prompt_tokens_target: Option<usize>,
    /// The throughput workload's prompt set (reports from before it existed: chat).
    #[serde(default)]
    pub prompt_set: crate::prompt::PromptSet,
    pub rounds: usize,
    /// Seconds since the Unix epoch when the run started.
    pub started_unix_s: u64,
    /// Throughput: one per concurrency level. The other workloads: one, all requests pooled.
    pub levels: Vec<LevelReport>,
    /// (Reports from before workloads existed are throughput reports.)
    #[serde(default)]
    pub workload: Workload,
    /// multi-turn and round-robin: the figures per turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversations: Option<ConversationReport>,
    /// shared-prefix: the figures per round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_prefix: Option<SharedPrefixReport>,
}

fn num(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) => format!("{v:.decimals$}"),
        None => "-".to_string(),
    }
}

impl Report {
    pub fn describe(&self) -> String {
        let server = format!(
            "{} ({} API at {}{})",
            self.label,
            self.api.name(),
            self.url,
            self.model
                .as_deref()
                .map(|m| format!(", model {m}"))
                .unwrap_or_default(),
        );
        if let Some(c) = &self.conversations {
            let order = match self.workload {
                Workload::RoundRobin => format!(
                    "taken in round-robin order, {} in flight at most",
                    c.in_flight
                ),
                _ => "all at once".to_string(),
            };
            return format!(
                "{server}: {}, {} conversations x {} turns (each turn adds ~{} tokens), {order}, max_tokens {}",
                self.workload.name(),
                c.conversations,
                c.turns,
                c.turn_tokens,
                self.max_tokens
            );
        }
        if let Some(s) = &self.shared_prefix {
            return format!(
                "{server}: shared-prefix, {} round(s) of {} requests at once sharing a ~{}-token system message, max_tokens {}",
                s.rounds.len(),
                s.concurrency,
                s.prefix_tokens,
                self.max_tokens
            );
        }
        let prompt = match (self.prompt_set, self.prompt_tokens_target) {
            (crate::prompt::PromptSet::Chat, Some(n)) => format!("~{n}-token prompts"),
            (crate::prompt::PromptSet::Chat, None) => "short chat prompts".to_string(),
            (set, _) => format!("{} prompts (a passage each)", set.name()),
        };
        format!(
            "{server}: max_tokens {}, {prompt}, {} round(s) per level",
            self.max_tokens, self.rounds
        )
    }

    /// A fixed-width table for the terminal.
    pub fn table(&self) -> String {
        if self.workload != Workload::Throughput {
            return crate::cache_report::table(self);
        }
        let mut out = format!("{}\n", self.describe());
        let _ = writeln!(
            out,
            "{:>5} {:>5} {:>6} {:>8} {:>7} {:>9} {:>10} {:>9} {:>9} {:>8} {:>8} {:>7}",
            "conc",
            "reqs",
            "errors",
            "out_tok",
            "wall_s",
            "agg_tok/s",
            "stream_t/s",
            "ttft_p50",
            "ttft_p95",
            "itl_p50",
            "itl_p95",
            "prompt"
        );
        for l in &self.levels {
            let _ = writeln!(
                out,
                "{:>5} {:>5} {:>6} {:>8} {:>7.2} {:>9.1} {:>10} {:>9} {:>9} {:>8} {:>8} {:>7}",
                l.concurrency,
                l.requests,
                l.errors,
                l.output_tokens,
                l.wall_s,
                l.aggregate_tokens_per_s,
                num(l.per_stream_tokens_per_s, 1),
                num(l.ttft_ms.map(|s| s.p50), 1),
                num(l.ttft_ms.map(|s| s.p95), 1),
                num(l.itl_ms.map(|s| s.p50), 2),
                num(l.itl_ms.map(|s| s.p95), 2),
                num(l.mean_prompt_tokens, 0),
            );
        }
        out.push_str("(latencies in ms; itl = gap between streamed chunks; prompt = mean prompt tokens the server counted)\n");
        for l in self.levels.iter().filter(|l| l.errors > 0) {
            let _ = writeln!(
                out,
                "errors at concurrency {}: {} of {}; first: {}",
                l.concurrency,
                l.errors,
                l.requests,
                l.first_error.as_deref().unwrap_or("?")
            );
        }
        out
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("reports always serialize")
    }

    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// A table column: its name, how to read it from a level, and whether higher is better.
type Metric = (&'static str, fn(&LevelReport) -> Option<f64>, bool);

/// A markdown table of one or more runs, level by level; with several runs, each one after the
/// first gets ratio columns against the first (throughput: run / first; TTFT: first / run, so
/// above 1 always means better than the first).
pub fn markdown(reports: &[Report]) -> String {
    let Some(base) = reports.first() else {
        return String::new();
    };
    let mut out = String::new();
    for r in reports {
        let _ = writeln!(out, "- {}", r.describe());
    }
    out.push('\n');
    let mut header = vec!["concurrency".to_string()];
    let metrics: [Metric; 4] = [
        ("aggregate tok/s", |l| Some(l.aggregate_tokens_per_s), true),
        ("per-stream tok/s", |l| l.per_stream_tokens_per_s, true),
        ("TTFT p50 ms", |l| l.ttft_ms.map(|s| s.p50), false),
        ("ITL p50 ms", |l| l.itl_ms.map(|s| s.p50), false),
    ];
    for (name, _, _) in &metrics {
        for r in reports {
            header.push(format!("{} {name}", r.label));
        }
        for r in &reports[1..] {
            header.push(format!("{} / {} ×", r.label, base.label));
        }
    }
    header.push("errors".to_string());
    header.push("mean prompt tokens".to_string());
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(
        out,
        "|{}",
        header.iter().map(|_| "---|").collect::<String>()
    );
    for level in &base.levels {
        let c = level.concurrency;
        let row: Vec<Option<&LevelReport>> = reports
            .iter()
            .map(|r| r.levels.iter().find(|l| l.concurrency == c))
            .collect();
        let mut cells = vec![c.to_string()];
        for (_, get, higher_is_better) in &metrics {
            let values: Vec<Option<f64>> = row.iter().map(|l| l.and_then(get)).collect();
            for (v, _) in values.iter().zip(reports) {
                cells.push(num(*v, 1));
            }
            for v in &values[1..] {
                let ratio = match (values[0], *v) {
                    (Some(b), Some(v)) if b > 0.0 && v > 0.0 => {
                        Some(if *higher_is_better { v / b } else { b / v })
                    }
                    _ => None,
                };
                cells.push(num(ratio, 2));
            }
        }
        cells.push(
            row.iter()
                .map(|l| l.map_or("-".to_string(), |l| l.errors.to_string()))
                .collect::<Vec<_>>()
                .join(" / "),
        );
        cells.push(
            row.iter()
                .map(|l| num(l.and_then(|l| l.mean_prompt_tokens), 0))
                .collect::<Vec<_>>()
                .join(" / "),
        );
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::stats::Spread;

    pub(crate) fn level(c: usize, agg: f64, ttft: f64) -> LevelReport {
        LevelReport {
            concurrency: c,
            requests: c,
            errors: 0,
            first_error: None,
            wall_s: 1.0,
            output_tokens: agg as usize,
            mean_prompt_tokens: Some(40.0),
            aggregate_tokens_per_s: agg,
            per_stream_tokens_per_s: Some(agg / c as f64),
            ttft_ms: Some(Spread {
                p50: ttft,
                p95: ttft * 2.0,
            }),
            itl_ms: Some(Spread { p50: 8.0, p95: 9.0 }),
        }
    }

    pub(crate) fn report(label: &str, levels: Vec<LevelReport>) -> Report {
        Report {
            label: label.into(),
            api: Api::Cohere,
            url: "http://127.0.0.1:8080".into(),
            model: Some("m".into()),
            max_tokens: 256,
            prompt_tokens_target: None,
            prompt_set: crate::prompt::PromptSet::Chat,
            rounds: 1,
            started_unix_s: 0,
            levels,
            workload: Workload::Throughput,
            conversations: None,
            shared_prefix: None,
        }
    }

    #[test]
    fn json_round_trips() {
        let mut r = report(
            "cohost",
            vec![level(1, 120.0, 100.0), level(4, 300.0, 250.0)],
        );
        r.levels[1].errors = 1;
        r.levels[1].first_error = Some("HTTP 429: busy".into());
        r.levels[0].ttft_ms = None;
        let text = r.to_json();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["levels"][1]["first_error"], "HTTP 429: busy");
        assert_eq!(v["levels"][1]["ttft_ms"]["p95"], 500.0);
        assert_eq!(v["api"], "cohere");
        assert_eq!(Report::from_json(&text).unwrap(), r);
    }

    #[test]
    fn reports_from_before_workloads_read_as_throughput() {
        let r = report("cohost", vec![level(1, 120.0, 100.0)]);
        let mut v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["workload"], "throughput");
        assert!(v.get("conversations").is_none() && v.get("shared_prefix").is_none());
        v.as_object_mut().unwrap().remove("workload");
        let old = Report::from_json(&v.to_string()).unwrap();
        assert_eq!(old.workload, Workload::Throughput);
    }

    #[test]
    fn table_has_a_row_per_level_and_names_errors() {
        let mut r = report(
            "cohost",
            vec![level(1, 120.0, 100.0), level(16, 300.0, 250.0)],
        );
        r.levels[1].errors = 2;
        r.levels[1].first_error = Some("HTTP 500: boom".into());
        let t = r.table();
        let rows: Vec<&str> = t
            .lines()
            .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
            .collect();
        assert_eq!(rows.len(), 2, "{t}");
        assert!(
            rows[1].contains("300.0") && rows[1].contains("250.0"),
            "{t}"
        );
        assert!(t.contains("errors at concurrency 16: 2 of 16; first: HTTP 500: boom"));
    }

    #[test]
    fn markdown_ratios_say_better_above_one() {
        let llama = report(
            "llama",
            vec![level(1, 100.0, 200.0), level(8, 200.0, 800.0)],
        );
        let cohost = report(
            "cohost",
            vec![level(1, 150.0, 100.0), level(8, 500.0, 400.0)],
        );
        let md = markdown(&[llama, cohost]);
        let header = md.lines().find(|l| l.starts_with("| concurrency")).unwrap();
        let names: Vec<&str> = header
            .trim_matches('|')
            .split(" | ")
            .map(str::trim)
            .collect();
        let row = md.lines().find(|l| l.starts_with("| 8 |")).unwrap();
        let cells: Vec<&str> = row.trim_matches('|').split(" | ").map(str::trim).collect();
        assert_eq!(names.len(), cells.len(), "{md}");
        let cell = |name: &str| cells[names.iter().position(|n| *n == name).unwrap()];
        assert_eq!(cell("llama aggregate tok/s"), "200.0");
        assert_eq!(cell("cohost aggregate tok/s"), "500.0");
        // Ratio columns follow each metric's values, in order: aggregate, per-stream, TTFT, ITL.
        let ratios: Vec<&str> = names
            .iter()
            .zip(&cells)
            .filter(|(n, _)| n.ends_with('×'))
            .map(|(_, c)| *c)
            .collect();
        assert_eq!(ratios, ["2.50", "2.50", "2.00", "1.00"]);
        assert_eq!(cell("errors"), "0 / 0");
    }

    #[test]
    fn markdown_marks_levels_missing_from_a_run() {
        let a = report("a", vec![level(1, 100.0, 200.0), level(32, 200.0, 800.0)]);
        let b = report("b", vec![level(1, 100.0, 100.0)]);
        let md = markdown(&[a, b]);
        let row = md.lines().find(|l| l.starts_with("| 32 |")).unwrap();
        assert!(row.contains("| - |"), "{row}");
        assert!(row.contains("0 / -"), "{row}");
    }
}
