//! [`Context`]: what every component gets while it runs: the pipeline id, the batch size,
//! cancellation, metrics and the quarantine channel.

use crate::metrics::Metrics;
use crate::quarantine::{QuarantineRecord, QuarantineSender};
use crate::{Cursor, Epoch, Error, ErrorKind, Result};
use std::sync::Arc;

/// The default number of rows per batch.
pub const DEFAULT_BATCH_SIZE: usize = 8192;

/// The cancellation token type the runner and contexts use (re-exported from tokio-util).
pub use tokio_util::sync::CancellationToken;

/// Per-run state shared by every component of a pipeline. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pipeline_id: String,
    batch_size: usize,
    cancel: CancellationToken,
    metrics: Metrics,
    quarantine: Option<QuarantineSender>,
    epoch: Option<Epoch>,
    position: Option<Cursor>,
}

impl Context {
    /// A context for `pipeline_id` with the default batch size, fresh metrics, a new cancellation
    /// token and no quarantine (rejecting a record is then an error).
    pub fn new(pipeline_id: impl Into<String>) -> Self {
        ContextBuilder::new(pipeline_id).build()
    }

    /// A builder for the other settings.
    pub fn builder(pipeline_id: impl Into<String>) -> ContextBuilder {
        ContextBuilder::new(pipeline_id)
    }

    /// The pipeline this run belongs to.
    pub fn pipeline_id(&self) -> &str {
        &self.inner.pipeline_id
    }

    /// The epoch being run (set by the runner; lineage columns record it).
    pub fn epoch(&self) -> Option<Epoch> {
        self.inner.epoch
    }

    /// The source position the epoch reads up to (the plan's pinned end), when known.
    pub fn position(&self) -> Option<&Cursor> {
        self.inner.position.as_ref()
    }

    /// The target number of rows per batch.
    pub fn batch_size(&self) -> usize {
        self.inner.batch_size
    }

    /// The cancellation token: cancelled when the run stops early.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.inner.cancel
    }

    /// True once the run was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// The metrics registry of this run.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// True when a quarantine channel is attached.
    pub fn has_quarantine(&self) -> bool {
        self.inner.quarantine.is_some()
    }

    /// Send rejected records to quarantine and count them as discarded by `component`.
    ///
    /// # Errors
    /// [`ErrorKind::Data`] naming the first record when no quarantine is attached (nothing is
    /// dropped silently); [`ErrorKind::Cancelled`] when the run is stopping.
    pub async fn quarantine(&self, component: &str, records: Vec<QuarantineRecord>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let Some(q) = &self.inner.quarantine else {
            let first = &records[0];
            let mut e = Error::new(
                ErrorKind::Data,
                format!("rejected record: {}", first.reason),
            )
            .with_context("location", &first.location);
            if let Some(p) = first.position {
                e = e.with_context("position", p);
            }
            return Err(e.with_context(
                "hint",
                "attach a quarantine (the runner does) to keep going past bad records",
            ));
        };
        self.metrics()
            .component(component)
            .add(crate::metrics::DISCARDED_ROWS_TOTAL, records.len() as u64);
        q.send(records).await
    }
}

/// Builds a [`Context`].
#[derive(Debug)]
pub struct ContextBuilder {
    pipeline_id: String,
    batch_size: usize,
    cancel: Option<CancellationToken>,
    metrics: Option<Metrics>,
    quarantine: Option<QuarantineSender>,
    epoch: Option<Epoch>,
    position: Option<Cursor>,
}

impl ContextBuilder {
    /// Start from the defaults.
    pub fn new(pipeline_id: impl Into<String>) -> Self {
        Self {
            pipeline_id: pipeline_id.into(),
            batch_size: DEFAULT_BATCH_SIZE,
            cancel: None,
            metrics: None,
            quarantine: None,
            epoch: None,
            position: None,
        }
    }

    /// The epoch being run and the position it reads up to.
    #[must_use]
    pub fn with_epoch(mut self, epoch: Epoch, position: Option<Cursor>) -> Self {
        self.epoch = Some(epoch);
        self.position = position;
        self
    }

    /// Rows per batch (at least 1).
    #[must_use]
    pub fn with_batch_size(mut self, rows: usize) -> Self {
        self.batch_size = rows.max(1);
        self
    }

    /// Use this cancellation token.
    #[must_use]
    pub fn with_cancellation(mut self, token: CancellationToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// Use this metrics registry.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Attach a quarantine channel.
    #[must_use]
    pub fn with_quarantine(mut self, sender: QuarantineSender) -> Self {
        self.quarantine = Some(sender);
        self
    }

    /// Build the context.
    pub fn build(self) -> Context {
        Context {
            inner: Arc::new(Inner {
                pipeline_id: self.pipeline_id,
                batch_size: self.batch_size,
                cancel: self.cancel.unwrap_or_default(),
                metrics: self.metrics.unwrap_or_default(),
                quarantine: self.quarantine,
                epoch: self.epoch,
                position: self.position,
            }),
        }
    }
}
