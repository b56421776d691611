//! Progress bars for the CLI's long commands (restore, verify, backup): bytes
//! and files done of the total, the rate and the time left, drawn on
//! standard error while it is a terminal, unless `--quiet`. Off a terminal
//! nothing is drawn, so scripts and logs see only the result lines.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::progress::{usage, usage_against, Amount, Meter};

/// How often the bars are brought up to date.
const TICK: Duration = Duration::from_millis(100);

const TEMPLATE: &str = "{prefix:>9} [{wide_bar}] {bytes}/{total_bytes} {msg}, \
                        {binary_bytes_per_sec}, {eta} left";

/// Where a bar's count comes from.
pub(super) enum Count<'a> {
    /// The files under a directory being filled, less what it held before.
    Dir {
        /// The directory.
        path: PathBuf,
        /// What it held when the work started.
        baseline: Amount,
    },
    /// The files directly in a directory a restore fills, each done once
    /// it has the size its backup records.
    Restore {
        /// The directory.
        path: PathBuf,
        /// Each file's name there, and its size.
        expected: HashMap<String, u64>,
    },
    /// What the work counts itself.
    Meter(&'a Meter),
}

impl Count<'_> {
    /// A directory about to be filled, measured from what it holds now.
    pub(super) fn dir(path: PathBuf) -> Self {
        let baseline = usage(&path);
        Count::Dir { path, baseline }
    }

    fn done(&self) -> Amount {
        match self {
            Count::Dir { path, baseline } => usage(path).since(*baseline),
            Count::Restore { path, expected } => usage_against(path, expected),
            Count::Meter(meter) => meter.done(),
        }
    }
}

/// A set of bars, one per phase of the work.
pub(super) struct Bars<'a> {
    multi: Option<MultiProgress>,
    bars: Vec<(ProgressBar, Count<'a>, Amount)>,
}

impl<'a> Bars<'a> {
    /// Bars drawn on standard error when it is a terminal and not `quiet`.
    pub(super) fn new(quiet: bool) -> Self {
        let shown = !quiet && std::io::stderr().is_terminal();
        Bars {
            multi: shown.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            bars: Vec::new(),
        }
    }

    /// Whether anything will be drawn (work to find totals can be skipped
    /// when not).
    pub(super) fn shown(&self) -> bool {
        self.multi.is_some()
    }

    /// Adds a bar named `label` that counts `source` up to `total`.
    pub(super) fn add(&mut self, label: &str, total: Amount, source: Count<'a>) {
        let Some(multi) = &self.multi else {
            return;
        };
        let bar = multi.add(ProgressBar::new(total.bytes.max(1)));
        bar.set_style(style());
        bar.set_prefix(label.to_string());
        bar.set_message(format!("files 0/{}", total.files));
        self.bars.push((bar, source, total));
    }

    /// Runs `work`, keeping the bars up to date until it returns; the bars
    /// stay on the screen with the final counts.
    pub(super) fn run<T>(self, work: impl FnOnce() -> T) -> T {
        if self.bars.is_empty() {
            return work();
        }
        let finished = AtomicBool::new(false);
        let result = std::thread::scope(|scope| {
            scope.spawn(|| {
                while !finished.load(Ordering::Relaxed) {
                    self.update();
                    std::thread::sleep(TICK);
                }
            });
            let result = work();
            finished.store(true, Ordering::Relaxed);
            result
        });
        self.update();
        for (bar, _, _) in &self.bars {
            bar.abandon();
        }
        // The bars stay; what the command prints next goes below them.
        eprintln!();
        result
    }

    fn update(&self) {
        for (bar, count, total) in &self.bars {
            let done = count.done();
            bar.set_message(format!(
                "files {}/{}",
                done.files.min(total.files),
                total.files
            ));
            bar.set_position(done.bytes.min(total.bytes));
        }
    }
}

fn style() -> ProgressStyle {
    ProgressStyle::with_template(TEMPLATE)
        .expect("the template is valid")
        .progress_chars("=> ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_parses_and_bars_off_a_terminal_draw_nothing() {
        let _ = style();
        // The test harness's stderr is not a terminal, or --quiet says so.
        let mut bars = Bars::new(true);
        assert!(!bars.shown());
        let meter = Meter::default();
        bars.add("verify", Amount::default(), Count::Meter(&meter));
        assert_eq!(bars.run(|| 7), 7);
    }
}
