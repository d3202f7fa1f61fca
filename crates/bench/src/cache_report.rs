//! The text forms of the prompt-cache workloads' reports: a terminal table of one run, and a
//! markdown table of one or more servers, each server's figure the median of its runs (reports
//! with the same label), with ratios against the first server.

use std::fmt::Write as _;

use crate::report::Report;
use crate::stats::{percentile, TtftGroup};

/// What a figure is, which says how several runs combine and whether it gets a ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A latency: the median over runs; the ratio is the other server's over the first's, so
    /// above 1 means the first is faster.
    Millis,
    /// Prompt tokens per request: the median over runs, no ratio.
    Tokens,
    /// A share in percent: the median over runs, no ratio.
    Percent,
    /// A count (errors): summed over runs, no ratio.
    Count,
}

/// One line of a table.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub name: String,
    pub value: Option<f64>,
    pub kind: Kind,
}

fn figure(name: impl Into<String>, value: Option<f64>, kind: Kind) -> Figure {
    Figure {
        name: name.into(),
        value,
        kind,
    }
}

fn p50(g: &TtftGroup) -> Option<f64> {
    g.ttft_ms.map(|t| t.p50)
}

fn mean(g: &TtftGroup) -> Option<f64> {
    g.ttft_ms.map(|t| t.mean)
}

fn cached_percent(g: &TtftGroup) -> Option<f64> {
    g.cached_share().map(|s| s * 100.0)
}

/// The figures of one report of a prompt-cache workload, in table order (none for throughput).
pub fn figures(report: &Report) -> Vec<Figure> {
    let mut out = Vec::new();
    if let Some(c) = &report.conversations {
        let first = c.first_turn().cloned().unwrap_or_default();
        let later = match c.turns {
            2 => "turn 2".to_string(),
            t => format!("turns 2-{t}"),
        };
        out.push(figure("TTFT turn 1, median ms", p50(&first), Kind::Millis));
        out.push(figure(
            format!("TTFT {later}, median ms"),
            p50(&c.later_turns),
            Kind::Millis,
        ));
        out.push(figure("TTFT turn 1, mean ms", mean(&first), Kind::Millis));
        out.push(figure(
            format!("TTFT {later}, mean ms"),
            mean(&c.later_turns),
            Kind::Millis,
        ));
        // With two turns, the later turns are turn 2 alone: their rows above say it.
        for (i, turn) in c
            .per_turn
            .iter()
            .enumerate()
            .skip(1)
            .filter(|_| c.turns > 2)
        {
            out.push(figure(
                format!("TTFT turn {}, median ms", i + 1),
                p50(turn),
                Kind::Millis,
            ));
        }
        if let Some(last) = c.per_turn.last() {
            out.push(figure(
                format!("prompt tokens at turn {}, mean", c.per_turn.len()),
                last.mean_prompt_tokens,
                Kind::Tokens,
            ));
        }
        out.push(figure(
            "prompt tokens from the cache, %",
            cached_percent(&c.all),
            Kind::Percent,
        ));
        out.push(figure("errors", Some(c.all.errors as f64), Kind::Count));
        out.push(figure(
            "turns skipped after an error",
            Some(c.skipped as f64),
            Kind::Count,
        ));
    }
    if let Some(s) = &report.shared_prefix {
        let p90 = |g: &TtftGroup| g.ttft_ms.map(|t| t.p90);
        out.push(figure(
            "TTFT p50, all rounds, ms",
            p50(&s.all),
            Kind::Millis,
        ));
        out.push(figure(
            "TTFT p90, all rounds, ms",
            p90(&s.all),
            Kind::Millis,
        ));
        out.push(figure(
            "TTFT mean, all rounds, ms",
            mean(&s.all),
            Kind::Millis,
        ));
        for (i, round) in s.rounds.iter().enumerate() {
            out.push(figure(
                format!("TTFT p50, round {}, ms", i + 1),
                p50(round),
                Kind::Millis,
            ));
            out.push(figure(
                format!("TTFT p90, round {}, ms", i + 1),
                p90(round),
                Kind::Millis,
            ));
        }
        out.push(figure(
            "prompt tokens, mean",
            s.all.mean_prompt_tokens,
            Kind::Tokens,
        ));
        out.push(figure(
            "prompt tokens from the cache, %",
            cached_percent(&s.all),
            Kind::Percent,
        ));
        out.push(figure("errors", Some(s.all.errors as f64), Kind::Count));
    }
    out
}

/// Several runs' values of one figure as one: the median, or the sum for counts.
fn combine(values: &[Option<f64>], kind: Kind) -> Option<f64> {
    let present: Vec<f64> = values.iter().flatten().copied().collect();
    if present.is_empty() {
        return None;
    }
    match kind {
        Kind::Count => Some(present.iter().sum()),
        _ => percentile(&present, 0.5),
    }
}

fn num(v: Option<f64>, kind: Kind) -> String {
    match (v, kind) {
        (None, _) => "-".to_string(),
        (Some(v), Kind::Count | Kind::Tokens) => format!("{v:.0}"),
        (Some(v), _) => format!("{v:.1}"),
    }
}

/// A markdown table of the reports (all of one prompt-cache workload): one column per label,
/// each the median of that label's runs, then one ratio column per label after the first.
pub fn markdown(reports: &[Report]) -> String {
    // Labels in order of first appearance, each with its runs.
    let mut groups: Vec<(&str, Vec<&Report>)> = Vec::new();
    for r in reports {
        match groups.iter_mut().find(|(label, _)| *label == r.label) {
            Some((_, runs)) => runs.push(r),
            None => groups.push((&r.label, vec![r])),
        }
    }
    let Some((base, base_runs)) = groups.first() else {
        return String::new();
    };
    let mut out = String::new();
    for (_, runs) in &groups {
        let _ = writeln!(
            out,
            "- {} ({} run{})",
            runs[0].describe(),
            runs.len(),
            if runs.len() == 1 { "" } else { "s" }
        );
    }
    out.push('\n');
    let mut header = vec!["figure".to_string()];
    for (label, runs) in &groups {
        header.push(if runs.len() > 1 {
            format!("{label} (median of {})", runs.len())
        } else {
            label.to_string()
        });
    }
    for (label, _) in &groups[1..] {
        header.push(format!("{label} / {base} ×"));
    }
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(
        out,
        "|{}",
        header.iter().map(|_| "---|").collect::<String>()
    );
    let per_run: Vec<Vec<Vec<Figure>>> = groups
        .iter()
        .map(|(_, runs)| runs.iter().map(|r| figures(r)).collect())
        .collect();
    for row in figures(base_runs[0]) {
        let values: Vec<Option<f64>> = per_run
            .iter()
            .map(|runs| {
                let values: Vec<Option<f64>> = runs
                    .iter()
                    .map(|figs| {
                        figs.iter()
                            .find(|f| f.name == row.name)
                            .and_then(|f| f.value)
                    })
                    .collect();
                combine(&values, row.kind)
            })
            .collect();
        let mut cells = vec![row.name.clone()];
        cells.extend(values.iter().map(|v| num(*v, row.kind)));
        for v in &values[1..] {
            let ratio = match (row.kind, values[0], *v) {
                (Kind::Millis, Some(b), Some(v)) if b > 0.0 => format!("{:.2}", v / b),
                _ => "-".to_string(),
            };
            cells.push(ratio);
        }
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    if groups.len() > 1 {
        let _ = writeln!(
            out,
            "\nRatios: the other server's time over {base}'s (above 1: {base} is faster)."
        );
    }
    out
}

/// A fixed-width table of one run for the terminal: a row per turn or round, then the pooled
/// rows.
pub fn table(report: &Report) -> String {
    let mut out = format!("{}\n", report.describe());
    let mut rows: Vec<(String, &TtftGroup)> = Vec::new();
    let what = if let Some(c) = &report.conversations {
        for (i, g) in c.per_turn.iter().enumerate() {
            rows.push(((i + 1).to_string(), g));
        }
        if c.turns > 2 {
            rows.push((format!("2-{}", c.turns), &c.later_turns));
        }
        rows.push(("all".to_string(), &c.all));
        "turn"
    } else if let Some(s) = &report.shared_prefix {
        for (i, g) in s.rounds.iter().enumerate() {
            rows.push(((i + 1).to_string(), g));
        }
        rows.push(("all".to_string(), &s.all));
        "round"
    } else {
        return out;
    };
    let _ = writeln!(
        out,
        "{what:>5} {:>5} {:>6} {:>9} {:>9} {:>9} {:>7} {:>7}",
        "reqs", "errors", "ttft_p50", "ttft_mean", "ttft_p90", "prompt", "cached%"
    );
    for (name, g) in rows {
        let ms = |v: Option<f64>| num(v, Kind::Millis);
        let _ = writeln!(
            out,
            "{name:>5} {:>5} {:>6} {:>9} {:>9} {:>9} {:>7} {:>7}",
            g.requests,
            g.errors,
            ms(p50(g)),
            ms(mean(g)),
            ms(g.ttft_ms.map(|t| t.p90)),
            num(g.mean_prompt_tokens, Kind::Tokens),
            num(cached_percent(g), Kind::Percent),
        );
    }
    out.push_str(
        "(TTFT in ms at the client, to the first streamed chunk; prompt = mean prompt tokens the \
         server counted; cached% = the share of them from its prompt cache, where it says)\n",
    );
    if let Some(c) = &report.conversations {
        if c.skipped > 0 {
            let _ = writeln!(out, "{} turns skipped after an error", c.skipped);
        }
    }
    for l in report.levels.iter().filter(|l| l.errors > 0) {
        let _ = writeln!(
            out,
            "errors: {} of {}; first: {}",
            l.errors,
            l.requests,
            l.first_error.as_deref().unwrap_or("?")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::ConversationReport;
    use crate::shared_prefix::SharedPrefixReport;
    use crate::stats::TtftSpread;
    use crate::Workload;

    fn group(p50: f64, mean: f64, cached: Option<usize>, errors: usize) -> TtftGroup {
        TtftGroup {
            requests: 8,
            errors,
            ttft_ms: Some(TtftSpread {
                p50,
                p90: p50 * 2.0,
                mean,
            }),
            prompt_tokens: Some(1000),
            cached_tokens: cached,
            mean_prompt_tokens: Some(125.0),
        }
    }

    fn multi_turn(label: &str, first: f64, later: f64, cached: Option<usize>) -> Report {
        let mut r = crate::report::tests::report(label, Vec::new());
        r.workload = Workload::MultiTurn;
        r.conversations = Some(ConversationReport {
            conversations: 8,
            turns: 3,
            in_flight: 8,
            turn_tokens: 300,
            per_turn: vec![
                group(first, first, cached.map(|_| 0), 0),
                group(later, later, cached, 0),
                group(later * 2.0, later * 2.0, cached, 0),
            ],
            later_turns: group(later, later * 1.5, cached, 0),
            all: group(first, first, cached, 1),
            skipped: 2,
        });
        r
    }

    fn cells<'a>(md: &'a str, row: &str) -> Vec<&'a str> {
        md.lines()
            .find(|l| l.starts_with(&format!("| {row} |")))
            .unwrap_or_else(|| panic!("no row {row} in\n{md}"))
            .trim_matches('|')
            .split(" | ")
            .map(str::trim)
            .collect()
    }

    #[test]
    fn conversation_figures_in_order() {
        let figs = figures(&multi_turn("a", 900.0, 60.0, Some(700)));
        let names: Vec<&str> = figs.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "TTFT turn 1, median ms",
                "TTFT turns 2-3, median ms",
                "TTFT turn 1, mean ms",
                "TTFT turns 2-3, mean ms",
                "TTFT turn 2, median ms",
                "TTFT turn 3, median ms",
                "prompt tokens at turn 3, mean",
                "prompt tokens from the cache, %",
                "errors",
                "turns skipped after an error",
            ]
        );
        assert_eq!(figs[1].value, Some(60.0));
        assert_eq!(figs[3].value, Some(90.0));
        assert_eq!(figs[5].value, Some(120.0));
        assert_eq!(figs[7].value, Some(70.0));
        assert_eq!(figs[9].value, Some(2.0));
        // A server that does not report cached tokens has no share.
        let plain = figures(&multi_turn("b", 900.0, 60.0, None));
        assert_eq!(plain[7].value, None);
        // Two turns: the later turns are turn 2, named so, once.
        let mut two = multi_turn("c", 900.0, 60.0, None);
        let c = two.conversations.as_mut().unwrap();
        c.turns = 2;
        c.per_turn.pop();
        let names: Vec<String> = figures(&two).into_iter().map(|f| f.name).collect();
        assert_eq!(
            names.iter().filter(|n| n.contains("turn 2")).count(),
            3,
            "{names:?}"
        );
        assert!(names.contains(&"TTFT turn 2, median ms".to_string()));
    }

    #[test]
    fn markdown_takes_each_labels_median_and_ratios_against_the_first() {
        let reports = [
            multi_turn("cohost", 1000.0, 50.0, Some(700)),
            multi_turn("cohost", 1100.0, 70.0, Some(700)),
            multi_turn("cohost", 900.0, 60.0, Some(800)),
            multi_turn("cold", 1000.0, 600.0, None),
            multi_turn("llama", 1200.0, 240.0, None),
        ];
        let md = markdown(&reports);
        let header = cells(&md, "figure");
        assert_eq!(
            header,
            [
                "figure",
                "cohost (median of 3)",
                "cold",
                "llama",
                "cold / cohost ×",
                "llama / cohost ×"
            ]
        );
        // Medians of 50, 70, 60 and 1000, 1100, 900; ratios other / first.
        assert_eq!(
            cells(&md, "TTFT turns 2-3, median ms"),
            [
                "TTFT turns 2-3, median ms",
                "60.0",
                "600.0",
                "240.0",
                "10.00",
                "4.00"
            ]
        );
        assert_eq!(
            cells(&md, "TTFT turn 1, median ms")[1..],
            ["1000.0", "1000.0", "1200.0", "1.00", "1.20"]
        );
        // Shares get no ratio, and an unreported one is a dash; counts are summed over runs.
        assert_eq!(
            cells(&md, "prompt tokens from the cache, %")[1..],
            ["70.0", "-", "-", "-", "-"]
        );
        assert_eq!(cells(&md, "errors")[1..], ["3", "1", "1", "-", "-"]);
        assert!(md.contains("(3 runs)") && md.contains("above 1: cohost is faster"));
        // One report alone: its figures, no ratio columns.
        let one = markdown(&reports[..1]);
        assert_eq!(cells(&one, "figure"), ["figure", "cohost"]);
    }

    #[test]
    fn shared_prefix_figures_and_table() {
        let mut r = crate::report::tests::report("cohost", Vec::new());
        r.workload = Workload::SharedPrefix;
        r.shared_prefix = Some(SharedPrefixReport {
            concurrency: 16,
            prefix_tokens: 1500,
            rounds: vec![
                group(4000.0, 4100.0, Some(0), 0),
                group(300.0, 320.0, Some(900), 0),
            ],
            all: group(2000.0, 2200.0, Some(450), 0),
        });
        let figs = figures(&r);
        let value = |name: &str| figs.iter().find(|f| f.name == name).unwrap().value;
        assert_eq!(value("TTFT p50, all rounds, ms"), Some(2000.0));
        assert_eq!(value("TTFT p90, all rounds, ms"), Some(4000.0));
        assert_eq!(value("TTFT p50, round 2, ms"), Some(300.0));
        assert_eq!(value("prompt tokens from the cache, %"), Some(45.0));
        let t = r.table();
        assert!(
            t.contains("shared-prefix, 2 round(s) of 16 requests"),
            "{t}"
        );
        let rows: Vec<&str> = t
            .lines()
            .filter(|l| {
                let first = l.split_whitespace().next().unwrap_or("");
                first == "all" || first.parse::<usize>().is_ok()
            })
            .collect();
        assert_eq!(rows.len(), 3, "{t}");
        assert!(rows[1].contains("300.0") && rows[1].contains("90.0"), "{t}");
    }
}
