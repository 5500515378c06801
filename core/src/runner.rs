//! The pipeline runner: one source, batch and stream transforms, one sink, a checkpoint store,
//! and the epoch algorithm that makes every commit exactly once.
//!
//! ```text
//! cp   = checkpoints.load(pid); mark = sink.last_committed(pid)   // the sink is authoritative
//! mark newer than cp: fast-forward cp; older: Conflict
//! plan = source.plan(from = cp.cursor)                             // pins the end cursor
//! read splits concurrently -> batch transforms -> stream transforms -> writer.write
//! prepared = writer.prepare(e); writer.commit(prepared, {pid, e, plan.end})
//! checkpoints.save({pid, e, plan.end}, expected = cp.epoch)
//! on error before commit: abort; retry the epoch if retryable (jittered backoff), else fail
//! ```
//!
//! Every stage is connected by bounded channels: a slow sink slows the readers down instead of
//! letting batches pile up. Split readers run as tasks in a [`JoinSet`], so dropping or
//! cancelling a run aborts every task it started.

use crate::metrics::{self, Metrics, MetricsSnapshot};
use crate::panic::{guard, guard_stream, guard_sync};
use crate::quarantine::{
    QuarantineReceiver, QuarantineRecord, quarantine_batch, quarantine_channel,
};
use crate::stream::{BatchStreamAdapter, SendableBatchStream};
use crate::traits::{
    BatchTransform, CommitOutcome, Prepared, Sink, SinkWriter, Source, StreamTransform,
};
use crate::types::{CommitMarker, Epoch, ReadPlan, ReadRequest, Split};
use crate::{CheckpointStore, Context, Error, ErrorKind, Result, Retry};
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use backon::BackoffBuilder;
use futures::StreamExt;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How the runner retries a failed epoch attempt: exponential backoff with full jitter.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1: no retry).
    pub max_attempts: u32,
    /// The first delay.
    pub initial_backoff: Duration,
    /// The largest delay.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// A policy with `max_attempts` and the given first and largest delays.
    pub fn new(max_attempts: u32, initial_backoff: Duration, max_backoff: Duration) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            initial_backoff,
            max_backoff,
        }
    }

    /// The delays between attempts: exponential from `initial_backoff`, capped at
    /// `max_backoff`, with jitter (backon's `ExponentialBuilder`); `max_attempts - 1` of them.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + use<> {
        backon::ExponentialBuilder::default()
            .with_min_delay(self.initial_backoff)
            .with_max_delay(self.max_backoff)
            .with_max_times(self.max_attempts.saturating_sub(1) as usize)
            .with_jitter()
            .build()
    }
}

/// Tuning of one run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunOptions {
    /// Rows per batch asked of the source.
    pub batch_size: usize,
    /// Splits read at the same time.
    pub read_concurrency: usize,
    /// Batches buffered between the readers and the writer.
    pub channel_capacity: usize,
    /// Rejected records buffered before they are written as one quarantine batch.
    pub quarantine_batch_rows: usize,
    /// Retry of failed epoch attempts.
    pub retry: RetryPolicy,
}

impl Default for RunOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            batch_size: crate::context::DEFAULT_BATCH_SIZE,
            read_concurrency: cores.max(2),
            channel_capacity: cores.max(2),
            quarantine_batch_rows: 4096,
            retry: RetryPolicy::default(),
        }
    }
}

impl RunOptions {
    /// With `rows` per batch (0 is read as 1, by [`crate::ContextBuilder::with_batch_size`]).
    #[must_use]
    pub fn with_batch_size(mut self, rows: usize) -> Self {
        self.batch_size = rows;
        self
    }

    /// With `n` splits read at once.
    #[must_use]
    pub fn with_read_concurrency(mut self, n: usize) -> Self {
        self.read_concurrency = n.max(1);
        self
    }

    /// With `n` batches buffered between readers and writer.
    #[must_use]
    pub fn with_channel_capacity(mut self, n: usize) -> Self {
        self.channel_capacity = n.max(1);
        self
    }

    /// With this retry policy.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
}

/// Hooks for progress display; every method has a no-op default.
pub trait RunObserver: Send + Sync + fmt::Debug {
    /// Called once the epoch is planned, before any read.
    fn on_plan(&self, _epoch: Epoch, _plan: &ReadPlan) {}
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub enum RunOutcome {
    /// A new epoch was committed.
    Committed,
    /// The sink already had this epoch (a replay after a crash between commit and checkpoint).
    AlreadyCommitted,
    /// The source had nothing new: no epoch was written.
    NothingNew,
}

/// What a run did.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct RunReport {
    /// The pipeline.
    pub pipeline_id: String,
    /// The epoch committed (or the last committed one, when nothing was new).
    pub epoch: Epoch,
    /// The marker the sink holds after the run: the one this run committed, or the last one
    /// (none before the first commit). Its cursor is the connector's own: decode it with the
    /// source's codec, never by its text.
    pub committed: Option<CommitMarker>,
    /// How the run ended.
    pub outcome: RunOutcome,
    /// Splits read.
    pub splits: usize,
    /// Input bytes planned.
    pub input_bytes: u64,
    /// Rows written to the sink.
    pub rows_written: u64,
    /// Rows sent to quarantine.
    pub rows_quarantined: u64,
    /// Bytes the sink wrote.
    pub bytes_written: u64,
    /// What the sink wrote (files, tables).
    pub items: Vec<String>,
    /// Attempts made (1 without retries).
    pub attempts: u32,
    /// Wall time.
    pub elapsed: Duration,
    /// Every counter.
    pub metrics: MetricsSnapshot,
}

/// Builds a [`Pipeline`].
#[derive(Debug)]
pub struct PipelineBuilder {
    id: String,
    source: Arc<dyn Source>,
    sink: Arc<dyn Sink>,
    checkpoints: Arc<dyn CheckpointStore>,
    batch_transforms: Vec<Arc<dyn BatchTransform>>,
    stream_transforms: Vec<Arc<dyn StreamTransform>>,
    options: RunOptions,
    metrics: Metrics,
    observer: Option<Arc<dyn RunObserver>>,
}

impl PipelineBuilder {
    /// A pipeline `id` from `source` to `sink`, checkpointed in `checkpoints`.
    pub fn new(
        id: impl Into<String>,
        source: Arc<dyn Source>,
        sink: Arc<dyn Sink>,
        checkpoints: Arc<dyn CheckpointStore>,
    ) -> Self {
        Self {
            id: id.into(),
            source,
            sink,
            checkpoints,
            batch_transforms: Vec::new(),
            stream_transforms: Vec::new(),
            options: RunOptions::default(),
            metrics: Metrics::new(),
            observer: None,
        }
    }

    /// Append a batch transform (applied in order, in parallel across batches).
    #[must_use]
    pub fn with_batch_transform(mut self, t: Arc<dyn BatchTransform>) -> Self {
        self.batch_transforms.push(t);
        self
    }

    /// Append a stream transform (applied in order, after the batch transforms).
    #[must_use]
    pub fn with_stream_transform(mut self, t: Arc<dyn StreamTransform>) -> Self {
        self.stream_transforms.push(t);
        self
    }

    /// Use these options.
    #[must_use]
    pub fn with_options(mut self, options: RunOptions) -> Self {
        self.options = options;
        self
    }

    /// Count into this metrics registry (e.g. one a progress bar reads).
    #[must_use]
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Report progress to `observer`.
    #[must_use]
    pub fn with_observer(mut self, observer: Arc<dyn RunObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Check the pipeline id and the schemas of every stage.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for a bad id; a transform's schema error.
    pub fn build(self) -> Result<Pipeline> {
        crate::checkpoint::validate_pipeline_id(&self.id)?;
        let mut schema = self.source.schema();
        for t in &self.batch_transforms {
            schema = t.output_schema(&schema)?;
        }
        let batch_schema = schema.clone();
        for t in &self.stream_transforms {
            schema = t.output_schema(&schema)?;
        }
        if !self.sink.capabilities().quarantine
            && let Some(t) = self.stream_transforms.iter().find(|t| t.quarantines())
        {
            return Err(Error::config(format!(
                "transform `{}` sends rejected rows to quarantine, but sink `{}` keeps none: use a sink with a quarantine, or make the transform's rules fail or warn",
                t.name(),
                self.sink.name()
            ))
            .with_context("pipeline", &self.id));
        }
        Ok(Pipeline {
            inner: Arc::new(self),
            batch_schema,
            output_schema: schema,
        })
    }
}

/// A runnable pipeline. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Pipeline {
    inner: Arc<PipelineBuilder>,
    /// The schema after the batch transforms (what the stream transforms receive).
    batch_schema: SchemaRef,
    output_schema: SchemaRef,
}

impl Pipeline {
    /// The schema the sink receives.
    pub fn output_schema(&self) -> SchemaRef {
        self.output_schema.clone()
    }

    /// The metrics registry this pipeline counts into.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Run one epoch: everything the source has after the committed cursor.
    ///
    /// # Errors
    /// The first permanent error, or the last one once retries are exhausted, with its context.
    pub async fn run(&self) -> Result<RunReport> {
        self.run_with_cancellation(CancellationToken::new()).await
    }

    /// Run one epoch, stopping early (with [`ErrorKind::Cancelled`]) when `cancel` fires.
    ///
    /// # Errors
    /// As [`Pipeline::run`].
    pub async fn run_with_cancellation(&self, cancel: CancellationToken) -> Result<RunReport> {
        let span = tracing::info_span!("epoch", pipeline = %self.inner.id);
        self.epoch(cancel).instrument(span).await
    }

    /// One epoch (the body of [`Pipeline::run_with_cancellation`], inside its span).
    async fn epoch(&self, cancel: CancellationToken) -> Result<RunReport> {
        let p = &self.inner;
        let started = Instant::now();
        let probe = Context::builder(&p.id)
            .with_metrics(p.metrics.clone())
            .with_cancellation(cancel.clone())
            .build();
        let cp = guard("checkpoint store (load)", p.checkpoints.load(&p.id)).await?;
        let mark = guard(
            &format!("sink {} (last_committed)", p.sink.name()),
            p.sink.last_committed(&p.id, &probe),
        )
        .await?;
        let cp = guard(
            "checkpoint store (reconcile)",
            reconcile(&p.id, p.checkpoints.as_ref(), cp, mark),
        )
        .await?;
        let committed = cp.as_ref().map_or(Epoch(0), |m| m.epoch);
        let from = cp.as_ref().and_then(|m| m.cursor.clone());
        let plan = guard(
            &format!("source {} (plan)", p.source.name()),
            p.source.plan(&ReadRequest::after(from), &probe),
        )
        .await?;
        let epoch = committed.next();
        tracing::info!(
            epoch = epoch.0,
            splits = plan.splits.len(),
            bytes = plan.total_bytes(),
            "planned"
        );
        if let Some(o) = &p.observer {
            o.on_plan(epoch, &plan);
        }
        let mut report = RunReport {
            pipeline_id: p.id.clone(),
            epoch: committed,
            committed: cp.clone(),
            outcome: RunOutcome::NothingNew,
            splits: plan.splits.len(),
            input_bytes: plan.total_bytes(),
            rows_written: 0,
            rows_quarantined: 0,
            bytes_written: 0,
            items: Vec::new(),
            attempts: 0,
            elapsed: Duration::ZERO,
            metrics: MetricsSnapshot::default(),
        };
        if plan.splits.is_empty() {
            report.elapsed = started.elapsed();
            report.metrics = p.metrics.snapshot();
            return Ok(report);
        }
        let marker = CommitMarker::new(&p.id, epoch, plan.end.clone());
        let mut attempt = 0u32;
        let mut delays = p.options.retry.delays();
        let (prepared, outcome, marker) = loop {
            attempt += 1;
            // Cancellation drops the attempt wherever it is awaiting (even inside a blocked
            // write); an uncommitted epoch stays invisible and the sink cleans it up on open.
            let result = tokio::select! {
                r = self.attempt(&plan, &marker, &cancel) => r,
                () = cancel.cancelled() => Err(Error::cancelled()),
            };
            match result {
                Ok(done) => break done,
                Err(e)
                    if e.is_retryable()
                        && !cancel.is_cancelled()
                        && attempt < p.options.retry.max_attempts =>
                {
                    p.metrics.component("runner").add(metrics::ERRORS_TOTAL, 1);
                    let backoff = delays.next().unwrap_or(p.options.retry.max_backoff);
                    // A delay the remote side asked for (Retry-After) wins over the backoff.
                    let delay = match e.retry() {
                        Retry::After(d) => d,
                        _ => backoff,
                    };
                    tracing::warn!(
                        attempt,
                        delay_ms = delay.as_millis() as u64,
                        error = %e.report(),
                        "epoch attempt failed; retrying"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = cancel.cancelled() => return Err(Error::cancelled()),
                    }
                }
                Err(e) => {
                    p.metrics.component("runner").add(metrics::ERRORS_TOTAL, 1);
                    return Err(e
                        .with_context("pipeline", &p.id)
                        .with_context("epoch", epoch)
                        .with_context("attempts", attempt));
                }
            }
        };
        crash_point("runner.before_checkpoint").await;
        guard(
            "checkpoint store (save)",
            p.checkpoints.save(&marker, committed),
        )
        .await?;
        report.epoch = epoch;
        report.committed = Some(marker.clone());
        report.outcome = match outcome {
            CommitOutcome::Committed => RunOutcome::Committed,
            CommitOutcome::AlreadyCommitted => RunOutcome::AlreadyCommitted,
        };
        report.rows_written = prepared.rows;
        report.rows_quarantined = prepared.quarantined_rows;
        report.bytes_written = prepared.bytes;
        report.items = prepared.items;
        report.attempts = attempt;
        report.elapsed = started.elapsed();
        report.metrics = p.metrics.snapshot();
        tracing::info!(
            epoch = epoch.0,
            rows = report.rows_written,
            quarantined = report.rows_quarantined,
            "committed"
        );
        Ok(report)
    }

    async fn attempt(
        &self,
        plan: &ReadPlan,
        planned: &CommitMarker,
        cancel: &CancellationToken,
    ) -> Result<(Prepared, CommitOutcome, CommitMarker)> {
        let p = &self.inner;
        let attempt_cancel = cancel.child_token();
        // Cancel this attempt's tasks however we leave this function.
        let _guard = attempt_cancel.clone().drop_guard();
        let (qtx, qrx) = quarantine_channel(64);
        let ctx = Context::builder(&p.id)
            .with_epoch(planned.epoch, planned.cursor.clone())
            .with_batch_size(p.options.batch_size)
            .with_cancellation(attempt_cancel.clone())
            .with_metrics(p.metrics.clone())
            .with_quarantine(qtx)
            .build();
        let sink = p.sink.name();
        let mut writer = guard(
            &format!("sink {sink} (open)"),
            p.sink.open(self.output_schema.clone(), &ctx),
        )
        .await?;
        if let Err(e) = guard(
            "runner (drive)",
            self.drive(plan, &ctx, writer.as_mut(), qrx),
        )
        .await
        {
            abort_quietly(writer.as_mut(), None).await;
            return Err(e);
        }
        // Every split was read: the source may now name the end position from what it saw.
        let marker = match guard(
            &format!("source {} (end_cursor)", p.source.name()),
            p.source.end_cursor(plan, &ctx),
        )
        .await
        {
            Ok(end) => CommitMarker::new(&planned.pipeline_id, planned.epoch, end),
            Err(e) => {
                abort_quietly(writer.as_mut(), None).await;
                return Err(e);
            }
        };
        let marker = &marker;
        crash_point("runner.before_prepare").await;
        let prepared = match guard(
            &format!("sink {sink} (prepare)"),
            writer.prepare(marker.epoch),
        )
        .await
        {
            Ok(prepared) => prepared,
            Err(e) => {
                abort_quietly(writer.as_mut(), None).await;
                return Err(e);
            }
        };
        crash_point("runner.after_prepare").await;
        match guard(
            &format!("sink {sink} (commit)"),
            writer.commit(prepared.clone(), marker),
        )
        .await
        {
            Ok(outcome) => {
                crash_point("runner.after_commit").await;
                Ok((prepared, outcome, marker.clone()))
            }
            Err(e) => {
                abort_quietly(writer.as_mut(), Some(prepared)).await;
                Err(e)
            }
        }
    }

    /// Read every split, transform, and write; returns once every batch and every rejected
    /// record reached the writer.
    async fn drive(
        &self,
        plan: &ReadPlan,
        ctx: &Context,
        writer: &mut dyn SinkWriter,
        mut qrx: QuarantineReceiver,
    ) -> Result<()> {
        let p = &self.inner;
        let (tx, rx) = mpsc::channel::<RecordBatch>(p.options.channel_capacity);
        let mut tasks: JoinSet<Result<()>> = JoinSet::new();
        let mut pending = plan.splits.iter();
        let mut tx = Some(tx);
        for _ in 0..p.options.read_concurrency {
            match (pending.next(), &tx) {
                (Some(split), Some(sender)) => {
                    self.spawn_split(&mut tasks, split.clone(), ctx.clone(), sender.clone())
                }
                _ => break,
            }
        }
        if pending.len() == 0 {
            tx = None;
        }
        let mut stream: SendableBatchStream = BatchStreamAdapter::boxed(
            self.batch_schema.clone(),
            Box::pin(futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|b| (Ok(b), rx))
            })),
        );
        for t in &p.stream_transforms {
            let component = format!("stream transform {}", t.name());
            stream = guard_sync(&component, || t.transform(stream, ctx))?;
            stream = guard_stream(component, stream);
        }
        let sink_name = p.sink.name();
        // Named once, not per batch: the guards are on the hot path.
        let (write_as, quarantine_as) = (
            format!("sink {sink_name} (write)"),
            format!("sink {sink_name} (write_quarantine)"),
        );
        let sink_metrics = p.metrics.component("sink");
        let mut quarantined: Vec<QuarantineRecord> = Vec::new();
        loop {
            tokio::select! {
                biased;
                () = ctx.cancellation().cancelled() => return Err(Error::cancelled()),
                Some(joined) = tasks.join_next() => {
                    match joined {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Err(e),
                        Err(e) if e.is_panic() => {
                            let what = format!("source {} (split reader)", p.source.name());
                            return Err(crate::panic::panic_error(&what, e.into_panic().as_ref()));
                        }
                        Err(e) => return Err(Error::cancelled().with_source(e)),
                    }
                    if let (Some(split), Some(sender)) = (pending.next(), &tx) {
                        self.spawn_split(&mut tasks, split.clone(), ctx.clone(), sender.clone());
                    }
                    if pending.len() == 0 {
                        tx = None; // the readers hold the remaining senders
                    }
                }
                Some(records) = qrx.recv() => {
                    quarantined.extend(records);
                    if quarantined.len() >= p.options.quarantine_batch_rows {
                        let batch = quarantine_batch(&std::mem::take(&mut quarantined))?;
                        guard(&quarantine_as, writer.write_quarantine(batch)).await?;
                    }
                }
                item = stream.next() => match item {
                    Some(Ok(batch)) => {
                        if batch.schema() != self.output_schema {
                            return Err(Error::new(
                                ErrorKind::Schema,
                                "a batch does not have the pipeline's output schema",
                            )
                            .with_context("expected", self.output_schema.to_string())
                            .with_context("found", batch.schema().to_string()));
                        }
                        let started = Instant::now();
                        sink_metrics.add(metrics::RECEIVED_ROWS_TOTAL, batch.num_rows() as u64);
                        let bytes = batch.get_array_memory_size() as u64;
                        sink_metrics.add(metrics::RECEIVED_BYTES_TOTAL, bytes);
                        guard(&write_as, writer.write(batch)).await?;
                        sink_metrics.add_busy(started.elapsed());
                    }
                    Some(Err(e)) => return Err(e),
                    None => break,
                },
            }
        }
        // Every reader is done (the stream ended only after every sender was dropped); collect
        // the rejected records still queued.
        while let Some(joined) = tasks.join_next().await {
            joined
                .map_err(|e| Error::internal("a split reader failed to join").with_source(e))??;
        }
        while let Ok(records) = qrx.try_recv() {
            quarantined.extend(records);
        }
        if !quarantined.is_empty() {
            let batch = quarantine_batch(&quarantined)?;
            guard(&quarantine_as, writer.write_quarantine(batch)).await?;
        }
        Ok(())
    }

    fn spawn_split(
        &self,
        tasks: &mut JoinSet<Result<()>>,
        split: Split,
        ctx: Context,
        tx: mpsc::Sender<RecordBatch>,
    ) {
        let p = self.inner.clone();
        let span = tracing::debug_span!("split", id = %split.id);
        tasks.spawn(
            async move {
                let source_metrics = p.metrics.component("source");
                let component = format!("source {} (split {})", p.source.name(), split.id);
                let stream = guard_sync(&component, || p.source.read(&split, &ctx))
                    .map_err(|e| e.with_context("split", &split.id))?;
                let mut stream = guard_stream(component, stream);
                let expected = p.source.schema();
                while let Some(batch) = stream.next().await {
                    let batch =
                        batch.inspect_err(|_| source_metrics.add(metrics::ERRORS_TOTAL, 1))?;
                    if batch.schema() != expected {
                        return Err(Error::new(
                            ErrorKind::Schema,
                            "the source yielded a batch that does not have its declared schema",
                        )
                        .with_context("source", p.source.name())
                        .with_context("split", &split.id));
                    }
                    source_metrics.add(metrics::SENT_ROWS_TOTAL, batch.num_rows() as u64);
                    source_metrics.add(metrics::SENT_BATCHES_TOTAL, 1);
                    let batch = if p.batch_transforms.is_empty() {
                        batch
                    } else {
                        let (p2, ctx2) = (p.clone(), ctx.clone());
                        crate::panic::join_blocking(
                            "batch transforms",
                            tokio::task::spawn_blocking(move || {
                                p2.apply_batch_transforms(batch, &ctx2)
                            }),
                        )
                        .await?
                    };
                    if batch.num_rows() == 0 {
                        continue;
                    }
                    if tx.send(batch).await.is_err() {
                        return Ok(()); // the writer side is gone: the run is stopping
                    }
                }
                Ok(())
            }
            .instrument(span),
        );
    }
}

impl PipelineBuilder {
    fn apply_batch_transforms(&self, mut batch: RecordBatch, ctx: &Context) -> Result<RecordBatch> {
        for t in &self.batch_transforms {
            let m = self.metrics.component(t.name());
            let started = Instant::now();
            m.add(metrics::RECEIVED_ROWS_TOTAL, batch.num_rows() as u64);
            batch = guard_sync(format_args!("transform {}", t.name()), || {
                t.apply(batch, ctx)
            })
            .map_err(|e| {
                m.add(metrics::ERRORS_TOTAL, 1);
                e.with_context("transform", t.name())
            })?;
            m.add(metrics::SENT_ROWS_TOTAL, batch.num_rows() as u64);
            m.add_busy(started.elapsed());
        }
        Ok(batch)
    }
}

async fn abort_quietly(writer: &mut dyn SinkWriter, prepared: Option<Prepared>) {
    if let Err(e) = guard("sink (abort)", writer.abort(prepared)).await {
        tracing::warn!(error = %e.report(), "abort failed; the sink cleans up on its next open");
    }
}

async fn reconcile(
    id: &str,
    store: &dyn CheckpointStore,
    cp: Option<CommitMarker>,
    mark: Option<CommitMarker>,
) -> Result<Option<CommitMarker>> {
    let cp_epoch = cp.as_ref().map_or(Epoch(0), |m| m.epoch);
    let mark_epoch = mark.as_ref().map_or(Epoch(0), |m| m.epoch);
    if mark_epoch > cp_epoch {
        // A crash between the sink's commit and the checkpoint save: the sink is authoritative.
        let m = mark.expect("mark_epoch > 0 implies a marker");
        tracing::info!(
            pipeline = id,
            from = cp_epoch.0,
            to = m.epoch.0,
            "fast-forwarding the checkpoint to the sink's marker"
        );
        store.save(&m, cp_epoch).await?;
        Ok(Some(m))
    } else if mark_epoch < cp_epoch {
        Err(Error::new(
            ErrorKind::Conflict,
            "the checkpoint is ahead of the sink: the destination lost commits or is not the one \
             this pipeline wrote to",
        )
        .with_context("pipeline", id)
        .with_context("checkpoint_epoch", cp_epoch)
        .with_context("sink_epoch", mark_epoch)
        .with_context(
            "hint",
            "point the pipeline at its original destination, or remove the checkpoint to start \
             over",
        ))
    } else {
        Ok(mark.or(cp))
    }
}

/// Fault injection for crash tests: when the environment variable `STRATA_PAUSE_AT` lists
/// `name` (comma-separated), print `strata: paused at <name>` to stderr and never return, so a
/// test can SIGKILL the process at exactly this point. Otherwise a no-op, and always a no-op in
/// release builds (`debug_assertions` off).
pub async fn crash_point(name: &str) {
    // Never live in release builds: a stray environment variable must not hang production.
    if !cfg!(debug_assertions) {
        return;
    }
    static POINTS: OnceLock<Vec<String>> = OnceLock::new();
    if named_in(&POINTS, "STRATA_PAUSE_AT", name) {
        eprintln!("strata: paused at {name}");
        std::future::pending::<()>().await;
    }
}

/// Fault injection for panic tests: in debug builds, when the environment variable
/// `STRATA_PANIC_AT` lists `name` (comma-separated), panic here. A no-op in release builds.
///
/// # Panics
/// On purpose, as described.
pub fn panic_point(name: &str) {
    if !cfg!(debug_assertions) {
        return;
    }
    static POINTS: OnceLock<Vec<String>> = OnceLock::new();
    if named_in(&POINTS, "STRATA_PANIC_AT", name) {
        panic!("injected panic at {name} (STRATA_PANIC_AT)");
    }
}

/// True when the comma-separated list in environment variable `var` (read once) names `name`.
fn named_in(cell: &OnceLock<Vec<String>>, var: &str, name: &str) -> bool {
    cell.get_or_init(|| {
        std::env::var(var)
            .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
            .unwrap_or_default()
    })
    .iter()
    .any(|p| p == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_are_bounded_jittered_and_counted() {
        let p = RetryPolicy::new(5, Duration::from_millis(10), Duration::from_millis(50));
        let d: Vec<Duration> = p.delays().collect();
        assert_eq!(d.len(), 4, "one delay between each pair of attempts");
        assert!(
            d.iter()
                .all(|d| *d >= Duration::from_millis(10) && *d <= Duration::from_millis(100)),
            "{d:?}"
        );
        assert_eq!(
            RetryPolicy::new(1, Duration::ZERO, Duration::ZERO)
                .delays()
                .count(),
            0
        );
    }
}
