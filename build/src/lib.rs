#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod config;
pub mod lake;
pub mod logical;
pub mod project;
pub mod replay;
pub mod report;
pub mod reset;
mod run;
pub mod status;

pub use config::{PipelineConfig, Step};
pub use lake::{Lake, LakeConnection};
pub use project::{BuildObserver, Loaded, NodeRun, Status};
pub use run::{Watch, run_pipeline, with_steps};

use stratalake_core::CancellationToken;

/// What every run and build of one command shares: the run id recorded in the lake's `_runs`
/// and `_expectations`, and the token that cancels it (SIGTERM, Ctrl-C, a caller giving up).
///
/// Cancelling stops a run at its next await; nothing partial becomes visible (the runner's
/// and the models' commits are atomic).
#[derive(Debug, Clone)]
pub struct Session {
    run_id: String,
    cancel: CancellationToken,
}

impl Session {
    /// A session with run id `run_id` (see [`project::new_run_id`]) and a fresh token.
    pub fn new(run_id: impl Into<String>) -> Self {
        Self {
            run_id: run_id.into(),
            cancel: CancellationToken::new(),
        }
    }

    /// Cancel through `token` instead of the session's own.
    #[must_use]
    pub fn with_cancellation(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }

    /// The run id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The cancellation token.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// True once cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}
