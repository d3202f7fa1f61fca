//! Progress of long work (model downloads): a bar for a person at a terminal, and a log line at
//! every tenth of the way otherwise (pipes, files, CI, JSON logs), so that a slow fetch is never
//! silent and never fills a log with redraws.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

pub struct Progress {
    label: String,
    bar: Option<ProgressBar>,
    total: Option<u64>,
    position: u64,
    /// The last tenth (or, with no total, the last 50 MB step) logged.
    logged: u64,
}

/// Without a total, a line per this many bytes.
const STEP_WITHOUT_TOTAL: u64 = 50_000_000;

impl Progress {
    pub fn new(label: impl Into<String>) -> Self {
        let label = label.into();
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} {bytes} ({bytes_per_sec})")
                    .expect("static template"),
            );
            bar.set_message(label.clone());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        if bar.is_none() {
            tracing::info!("{label} ...");
        }
        Self {
            label,
            bar,
            total: None,
            position: 0,
            logged: 0,
        }
    }

    pub fn set_total(&mut self, total: u64) {
        if self.total.is_some() || total == 0 {
            return;
        }
        self.total = Some(total);
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            // The rate and ETA count from the first byte, not from pip's start-up.
            bar.reset_eta();
            bar.set_style(
                ProgressStyle::with_template("{msg} [{wide_bar}] {bytes}/{total_bytes} eta {eta}")
                    .expect("static template")
                    .progress_chars("=> "),
            );
        }
    }

    pub fn set_position(&mut self, bytes: u64) {
        // What is measured (files on disk) can shrink when the downloader moves them; never go back.
        if bytes <= self.position {
            return;
        }
        self.position = bytes;
        match (&self.bar, self.total) {
            (Some(bar), _) => bar.set_position(bytes),
            (None, Some(total)) => {
                let tenth = (bytes.min(total) * 10 / total.max(1)).min(9);
                if tenth > self.logged {
                    self.logged = tenth;
                    tracing::info!(
                        "{}: {}% ({} of {})",
                        self.label,
                        tenth * 10,
                        HumanBytes(bytes.min(total)),
                        HumanBytes(total)
                    );
                }
            }
            (None, None) => {
                let step = bytes / STEP_WITHOUT_TOTAL;
                if step > self.logged {
                    self.logged = step;
                    tracing::info!("{}: {}", self.label, HumanBytes(bytes));
                }
            }
        }
    }

    /// Done: `bytes` is the final size.
    pub fn finish(self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        tracing::info!("{}: done, {}", self.label, HumanBytes(bytes));
    }

    /// Failed: the bar goes away; the caller reports why.
    pub fn abandon(self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
