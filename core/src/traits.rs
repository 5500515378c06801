//! The component contracts: [`Source`], [`BatchTransform`], [`StreamTransform`], [`Sink`] and
//! [`SinkWriter`].

use crate::stream::SendableBatchStream;
use crate::types::{CommitMarker, Cursor, Epoch, ReadPlan, ReadRequest, Split};
use crate::{Context, Error, ErrorKind, Result};
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use std::fmt::Debug;

/// Reads data as Arrow batches.
///
/// Contract:
/// - every batch from [`Source::read`] has exactly [`Source::schema`];
/// - [`Source::plan`] may do I/O (listing, counting) and pins the end position of the epoch in
///   [`ReadPlan::end`]; planning again from the same cursor with no new input gives no splits;
/// - [`Source::read`] is lazy: it does no I/O until the stream is polled, and dropping the stream
///   cancels its work;
/// - splits are independent and may be read concurrently, in any order;
/// - malformed records go to [`Context::quarantine`] with their location; errors name the thing
///   at fault.
#[async_trait]
pub trait Source: Send + Sync + Debug {
    /// A short name for logs and metrics.
    fn name(&self) -> &str;

    /// The schema of every batch.
    fn schema(&self) -> SchemaRef;

    /// Plan the reading of everything after `req.from`.
    async fn plan(&self, req: &ReadRequest, ctx: &Context) -> Result<ReadPlan>;

    /// A lazy stream over one split of a plan.
    fn read(&self, split: &Split, ctx: &Context) -> Result<SendableBatchStream>;

    /// Check reachability and credentials without reading data.
    async fn check(&self, _ctx: &Context) -> Result<()> {
        Ok(())
    }

    /// The position the epoch ends at, called once every split of `plan` has been read
    /// without error, before the sink prepares. The default is the pinned `plan.end`; a source
    /// whose end depends on the data it read (a high-water mark such as the largest
    /// `updated_at`) returns it here. Whatever is returned is committed with the data.
    async fn end_cursor(&self, plan: &ReadPlan, _ctx: &Context) -> Result<Option<Cursor>> {
        Ok(plan.end.clone())
    }
}

/// A stateless, CPU-only transform applied to each batch independently (and in parallel).
pub trait BatchTransform: Send + Sync + Debug {
    /// A short name for logs and metrics.
    fn name(&self) -> &str;

    /// The schema of the output batches, given the input schema.
    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef>;

    /// Transform one batch. Rows it rejects go to [`Context::quarantine`] (via the stream
    /// transform form) or are reported as an error naming the column and value.
    fn apply(&self, batch: RecordBatch, ctx: &Context) -> Result<RecordBatch>;
}

/// An ordered or stateful transform over the whole stream of one epoch (dedupe, sort, window).
pub trait StreamTransform: Send + Sync + Debug {
    /// A short name for logs and metrics.
    fn name(&self) -> &str;

    /// The schema of the output batches, given the input schema.
    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef>;

    /// Wrap the input stream. Must be lazy and must stop when dropped.
    fn transform(&self, input: SendableBatchStream, ctx: &Context) -> Result<SendableBatchStream>;

    /// Whether it sends rejected rows to [`Context::quarantine`]: a pipeline refuses such a
    /// transform in front of a sink whose [`SinkCapabilities`] keep no quarantine.
    fn quarantines(&self) -> bool {
        false
    }
}

/// The delivery guarantee a sink gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivery {
    /// Replays after a crash may write rows twice.
    AtLeastOnce,
    /// Every epoch is committed once, atomically, with its [`CommitMarker`].
    ExactlyOnce,
}

/// What a sink can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SinkCapabilities {
    /// The delivery guarantee.
    pub delivery: Delivery,
    /// Whether rows can be upserted by key.
    pub upsert: bool,
    /// Whether the destination schema can evolve.
    pub schema_evolution: bool,
    /// Whether [`SinkWriter::write_quarantine`] is supported (committed with the data).
    pub quarantine: bool,
}

impl SinkCapabilities {
    /// Capabilities with the given delivery and nothing else.
    pub fn new(delivery: Delivery) -> Self {
        Self {
            delivery,
            upsert: false,
            schema_evolution: false,
            quarantine: false,
        }
    }

    /// With quarantine support.
    #[must_use]
    pub fn with_quarantine(mut self, yes: bool) -> Self {
        self.quarantine = yes;
        self
    }
}

/// A prepared, durable but invisible epoch, returned by [`SinkWriter::prepare`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Prepared {
    /// The epoch prepared.
    pub epoch: Epoch,
    /// Data rows in it.
    pub rows: u64,
    /// Quarantined rows in it.
    pub quarantined_rows: u64,
    /// Bytes written.
    pub bytes: u64,
    /// What was written, for the run report (file names, staging table).
    pub items: Vec<String>,
}

impl Prepared {
    /// A prepared epoch.
    pub fn new(
        epoch: Epoch,
        rows: u64,
        quarantined_rows: u64,
        bytes: u64,
        items: Vec<String>,
    ) -> Self {
        Self {
            epoch,
            rows,
            quarantined_rows,
            bytes,
            items,
        }
    }
}

/// The result of [`SinkWriter::commit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommitOutcome {
    /// This call made the epoch visible.
    Committed,
    /// The epoch was already committed (a replay): nothing changed.
    AlreadyCommitted,
}

/// Writes data to a destination.
#[async_trait]
pub trait Sink: Send + Sync + Debug {
    /// A short name for logs and metrics.
    fn name(&self) -> &str;

    /// What this sink can do.
    fn capabilities(&self) -> SinkCapabilities;

    /// Open a writer for one epoch of batches of `schema`. May do I/O (create a table, recover
    /// a half-finished commit, clean up abandoned staging data).
    async fn open(&self, schema: SchemaRef, ctx: &Context) -> Result<Box<dyn SinkWriter>>;

    /// The last marker this sink committed for `pipeline_id`, read from the destination itself.
    async fn last_committed(
        &self,
        pipeline_id: &str,
        ctx: &Context,
    ) -> Result<Option<CommitMarker>>;
}

/// Writes one epoch.
///
/// Contract: `write` may be awaited for backpressure; `prepare` makes the epoch durable but
/// invisible; `commit` makes it visible atomically together with the marker and is idempotent
/// (a second commit of the same pipeline and epoch answers `AlreadyCommitted`); `abort` leaves
/// nothing visible.
#[async_trait]
pub trait SinkWriter: Send {
    /// Write one batch.
    async fn write(&mut self, batch: RecordBatch) -> Result<()>;

    /// Write rejected records (see [`crate::quarantine_schema`]) to be committed with the epoch.
    async fn write_quarantine(&mut self, _batch: RecordBatch) -> Result<()> {
        Err(Error::new(
            ErrorKind::Unsupported,
            "this sink does not keep a quarantine",
        ))
    }

    /// Make everything written durable but invisible.
    async fn prepare(&mut self, epoch: Epoch) -> Result<Prepared>;

    /// Make a prepared epoch visible, atomically with `marker`. Idempotent.
    async fn commit(&mut self, prepared: Prepared, marker: &CommitMarker) -> Result<CommitOutcome>;

    /// Discard everything written since `open`; leaves nothing visible.
    async fn abort(&mut self, prepared: Option<Prepared>) -> Result<()>;
}

/// Plan `source` from `request` and read every split, one after another: all its batches,
/// and the plan they came from (its end cursor is where a next read starts). For tools,
/// tests and small tables; a pipeline reads through the runner, which bounds memory.
///
/// # Errors
/// The first error of the plan or of any split.
pub async fn read_all(
    source: &dyn Source,
    request: &ReadRequest,
    ctx: &Context,
) -> Result<(Vec<RecordBatch>, ReadPlan)> {
    use futures::StreamExt as _;
    let plan = source.plan(request, ctx).await?;
    let mut out = Vec::new();
    for split in &plan.splits {
        let mut s = source.read(split, ctx)?;
        while let Some(b) = s.next().await {
            out.push(b?);
        }
    }
    Ok((out, plan))
}

/// What [`sample`] read.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Sample {
    /// The batches read, about `rows` rows (the last batch may run past).
    pub batches: Vec<RecordBatch>,
    /// Rows in `batches`.
    pub rows: usize,
    /// Records the source rejected on the way (malformed lines): counted, not fatal.
    pub rejected: usize,
}

/// The first `rows` rows of `source` (planned from the start, splits in order), stopping as
/// soon as it has them: what tools such as PII classification look at. Rejected records are
/// counted instead of failing the sample.
///
/// # Errors
/// The first error of the plan or of a split.
pub async fn sample(source: &dyn Source, rows: usize, name: &str) -> Result<Sample> {
    use futures::StreamExt as _;
    let (qtx, mut qrx) = crate::quarantine::quarantine_channel(64);
    let ctx = Context::builder(name).with_quarantine(qtx).build();
    let plan = source.plan(&ReadRequest::after(None), &ctx).await?;
    let mut out = Sample::default();
    'read: for split in &plan.splits {
        let mut s = source.read(split, &ctx)?;
        loop {
            tokio::select! {
                Some(r) = qrx.recv() => out.rejected += r.len(),
                b = s.next() => match b {
                    Some(b) => {
                        let b = b?;
                        out.rows += b.num_rows();
                        out.batches.push(b);
                        if out.rows >= rows {
                            break 'read;
                        }
                    }
                    None => break,
                },
            }
        }
    }
    while let Ok(r) = qrx.try_recv() {
        out.rejected += r.len();
    }
    Ok(out)
}
