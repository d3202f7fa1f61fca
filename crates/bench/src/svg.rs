//! A hand-written SVG chart of one or more runs: aggregate output tokens/s (left panel) and
//! median TTFT (right panel) against concurrency, one line and one marker per level per run.

use std::fmt::Write as _;

use crate::report::Report;
use crate::stats::LevelReport;

const PANEL_W: f64 = 440.0;
const PANEL_H: f64 = 300.0;
const MARGIN_L: f64 = 70.0;
const MARGIN_T: f64 = 50.0;
const GAP: f64 = 90.0;
const COLOURS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

struct Panel {
    id: &'static str,
    title: &'static str,
    value: fn(&LevelReport) -> Option<f64>,
}

const PANELS: [Panel; 2] = [
    Panel {
        id: "throughput",
        title: "aggregate output tokens/s",
        value: |l| Some(l.aggregate_tokens_per_s),
    },
    Panel {
        id: "ttft",
        title: "TTFT p50 (ms)",
        value: |l| l.ttft_ms.map(|s| s.p50),
    },
];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round axis maximum (1, 2 or 5 times a power of ten) at or above `max`.
fn nice_ceiling(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|v| *v >= max)
        .unwrap_or(10.0 * magnitude)
}

/// The chart as a standalone SVG document.
pub fn chart(reports: &[Report]) -> String {
    // Concurrency levels are spaced evenly, in order: 1, 4, 8, 16, 32 read better that way
    // than on a linear or log axis.
    let mut levels: Vec<usize> = reports
        .iter()
        .flat_map(|r| r.levels.iter().map(|l| l.concurrency))
        .collect();
    levels.sort_unstable();
    levels.dedup();
    let width = MARGIN_L + 2.0 * PANEL_W + GAP + 30.0;
    let height = MARGIN_T + PANEL_H + 90.0 + 20.0 * reports.len() as f64;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>"#
    );
    let x_of = |c: usize| {
        let i = levels.iter().position(|l| *l == c).unwrap_or(0) as f64;
        let steps = (levels.len().max(2) - 1) as f64;
        20.0 + i * (PANEL_W - 40.0) / steps
    };
    for (p, panel) in PANELS.iter().enumerate() {
        let x0 = MARGIN_L + p as f64 * (PANEL_W + GAP);
        let y0 = MARGIN_T;
        let max = reports
            .iter()
            .flat_map(|r| r.levels.iter().filter_map(panel.value))
            .fold(0.0, f64::max);
        let top = nice_ceiling(max);
        let y_of = |v: f64| PANEL_H - v / top * PANEL_H;
        let _ = writeln!(
            svg,
            r#"<g id="{}" transform="translate({x0},{y0})">"#,
            panel.id
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="-18" text-anchor="middle" font-size="14">{}</text>"#,
            PANEL_W / 2.0,
            escape(panel.title)
        );
        for tick in 0..=5 {
            let v = top * tick as f64 / 5.0;
            let y = y_of(v);
            let _ = writeln!(
                svg,
                r##"<line x1="0" y1="{y}" x2="{PANEL_W}" y2="{y}" stroke="#ddd"/>"##
            );
            let _ = writeln!(
                svg,
                r#"<text x="-8" y="{}" text-anchor="end">{}</text>"#,
                y + 4.0,
                format_tick(v)
            );
        }
        for &c in &levels {
            let _ = writeln!(
                svg,
                r#"<text x="{}" y="{}" text-anchor="middle">{c}</text>"#,
                x_of(c),
                PANEL_H + 18.0
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">concurrent streams</text>"#,
            PANEL_W / 2.0,
            PANEL_H + 38.0
        );
        let _ = writeln!(
            svg,
            r#"<rect x="0" y="0" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="black"/>"#
        );
        for (s, report) in reports.iter().enumerate() {
            let colour = COLOURS[s % COLOURS.len()];
            let points: Vec<(usize, f64)> = report
                .levels
                .iter()
                .filter_map(|l| (panel.value)(l).map(|v| (l.concurrency, v)))
                .collect();
            let path: Vec<String> = points
                .iter()
                .map(|(c, v)| format!("{:.1},{:.1}", x_of(*c), y_of(*v)))
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
                path.join(" ")
            );
            for (c, v) in points {
                let _ = writeln!(
                    svg,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{colour}" data-series="{}" data-concurrency="{c}" data-value="{v:.2}"><title>{}: {v:.1} at {c}</title></circle>"#,
                    x_of(c),
                    y_of(v),
                    escape(&report.label),
                    escape(&report.label)
                );
            }
        }
        svg.push_str("</g>\n");
    }
    for (s, report) in reports.iter().enumerate() {
        let colour = COLOURS[s % COLOURS.len()];
        let y = MARGIN_T + PANEL_H + 70.0 + 20.0 * s as f64;
        let _ = writeln!(
            svg,
            r#"<rect x="{MARGIN_L}" y="{}" width="14" height="14" fill="{colour}"/><text x="{}" y="{}">{}</text>"#,
            y - 11.0,
            MARGIN_L + 22.0,
            y,
            escape(&report.describe())
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn format_tick(v: f64) -> String {
    if v >= 100.0 || v == v.round() {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::{level, report};

    /// Checks that tags nest and close, the way an XML parser would, and returns the start tags.
    fn tags(svg: &str) -> Vec<String> {
        let mut stack: Vec<String> = Vec::new();
        let mut starts = Vec::new();
        let mut rest = svg;
        while let Some(open) = rest.find('<') {
            let close = rest[open..].find('>').expect("unclosed tag") + open;
            let tag = &rest[open + 1..close];
            assert!(!tag.contains('<'), "nested '<' in {tag}");
            let name: String = tag
                .trim_start_matches('/')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            if tag.starts_with('/') {
                assert_eq!(stack.pop().as_deref(), Some(name.as_str()), "at </{name}>");
            } else {
                starts.push(tag.to_string());
                if !tag.ends_with('/') {
                    stack.push(name);
                }
            }
            rest = &rest[close + 1..];
        }
        assert!(stack.is_empty(), "unclosed: {stack:?}");
        starts
    }

    #[test]
    fn one_marker_per_level_per_panel_per_run() {
        let a = report(
            "llama <anchor> & co",
            vec![
                level(1, 120.0, 100.0),
                level(4, 150.0, 400.0),
                level(16, 200.0, 6000.0),
            ],
        );
        let mut b = report("cohost", vec![level(1, 180.0, 50.0), level(4, 400.0, 90.0)]);
        b.levels[1].ttft_ms = None; // an all-failed level has no TTFT point
        let svg = chart(&[a, b]);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        let starts = tags(&svg);
        let circles = |series: &str, panel_index: usize| {
            let panel_text = svg.split("<g id=").nth(panel_index + 1).unwrap();
            tags(&format!(
                "<g {}",
                &panel_text[..panel_text.find("</g>").unwrap() + 4]
            ))
            .iter()
            .filter(|t| t.starts_with("circle") && t.contains(&format!("data-series=\"{series}\"")))
            .count()
        };
        assert_eq!(circles("llama &lt;anchor&gt; &amp; co", 0), 3);
        assert_eq!(circles("llama &lt;anchor&gt; &amp; co", 1), 3);
        assert_eq!(circles("cohost", 0), 2);
        assert_eq!(circles("cohost", 1), 1);
        assert_eq!(
            starts.iter().filter(|t| t.starts_with("polyline")).count(),
            4
        );
        assert!(!svg.contains("llama <anchor>"), "labels are escaped");
        // Every level on the x axis once per panel.
        for c in ["1", "4", "16"] {
            assert_eq!(svg.matches(&format!(">{c}</text>")).count(), 2, "{c}");
        }
    }

    #[test]
    fn markers_sit_higher_for_larger_values() {
        let svg = chart(&[report(
            "s",
            vec![level(1, 100.0, 10.0), level(2, 200.0, 10.0)],
        )]);
        let cy: Vec<f64> = svg
            .split("<circle ")
            .skip(1)
            .take(2)
            .map(|c| {
                let at = c.find("cy=\"").unwrap() + 4;
                c[at..at + c[at..].find('"').unwrap()].parse().unwrap()
            })
            .collect();
        assert!(cy[1] < cy[0], "{cy:?}");
    }

    #[test]
    fn axis_tops_are_round() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(180.0), 200.0);
        assert_eq!(nice_ceiling(201.0), 500.0);
        assert_eq!(nice_ceiling(5000.0), 5000.0);
    }
}
