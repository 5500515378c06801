//! Progress bars (indicatif) fed from the run's metrics: bytes read of the planned total, rows.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::Arc;
use std::time::Duration;
use stratalake_core::metrics::{RECEIVED_BYTES_TOTAL, SENT_ROWS_TOTAL};
use stratalake_core::{Epoch, Metrics, ReadPlan, RunObserver};

/// A bar for one run; hidden when stderr is not a terminal.
pub struct RunProgress {
    bar: ProgressBar,
    /// The task refreshing the bar; dropping the set aborts it.
    ticker: tokio::task::JoinSet<()>,
}

#[derive(Debug)]
struct Observer(ProgressBar);

impl RunObserver for Observer {
    fn on_plan(&self, epoch: Epoch, plan: &ReadPlan) {
        self.0.set_length(plan.total_bytes());
        self.0
            .set_prefix(format!("epoch {epoch}, {} splits", plan.splits.len()));
    }
}

impl RunProgress {
    pub fn new(name: &str, metrics: Metrics, show: bool) -> Self {
        let bar = ProgressBar::with_draw_target(
            Some(0),
            if show {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} {prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(name.to_string());
        let b = bar.clone();
        let mut ticker = tokio::task::JoinSet::new();
        if show {
            ticker.spawn(async move {
                let source = metrics.component("source");
                loop {
                    b.set_position(source.get(RECEIVED_BYTES_TOTAL));
                    b.set_message(format!("{} rows", source.get(SENT_ROWS_TOTAL)));
                    tokio::time::sleep(Duration::from_millis(150)).await;
                }
            });
        }
        Self { bar, ticker }
    }

    pub fn observer(&self) -> Arc<dyn RunObserver> {
        Arc::new(Observer(self.bar.clone()))
    }

    pub fn finish(mut self) {
        self.ticker.abort_all();
        self.bar.finish_and_clear();
    }
}

/// A bar over a known count (the generator).
pub fn counter(len: u64, what: &str, show: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(len),
        if show {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// A spinner with the elapsed time, for work of unknown length (compaction, vacuum, a
/// warehouse sync); drawn only on a terminal.
pub fn spinner(what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// A build's bar: nodes done of nodes selected, the running ones as its message.
pub struct BuildProgress(pub ProgressBar);

impl stratalake_build::BuildObserver for BuildProgress {
    fn planned(&self, nodes: &[String]) {
        self.0.set_length(nodes.len() as u64);
    }

    fn running(&self, active: &std::collections::BTreeSet<String>) {
        self.0
            .set_message(active.iter().cloned().collect::<Vec<_>>().join(", "));
    }

    fn finished(
        &self,
        _run: &stratalake_build::NodeRun,
        active: &std::collections::BTreeSet<String>,
    ) {
        self.0.inc(1);
        self.running(active);
    }
}
