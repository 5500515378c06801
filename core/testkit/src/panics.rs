//! Panic injection: wrappers that make any source, sink or transform panic at one chosen step,
//! once, so a test can show that a panic anywhere fails the epoch with an error naming the
//! component, commits nothing, and that the rerun loads every row exactly once.

use async_trait::async_trait;
use futures::StreamExt;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use stratalake_core::{
    BatchStreamAdapter, BatchTransform, CommitMarker, CommitOutcome, Context, Epoch, Prepared,
    ReadPlan, ReadRequest, RecordBatch, Result, SchemaRef, SendableBatchStream, Sink,
    SinkCapabilities, SinkWriter, Source, Split, StreamTransform,
};

/// The step at which a wrapped component panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PanicAt {
    /// `Source::plan`.
    SourcePlan,
    /// `Source::read` (the call that builds the split's stream).
    SourceRead,
    /// Polling a split's stream (a decoder).
    SourceStream,
    /// `Sink::open`.
    SinkOpen,
    /// `SinkWriter::write`.
    SinkWrite,
    /// `SinkWriter::prepare`.
    SinkPrepare,
    /// `SinkWriter::commit`, before the inner sink commits.
    SinkCommit,
}

impl PanicAt {
    /// Every source and sink step.
    pub const ALL: [PanicAt; 7] = [
        PanicAt::SourcePlan,
        PanicAt::SourceRead,
        PanicAt::SourceStream,
        PanicAt::SinkOpen,
        PanicAt::SinkWrite,
        PanicAt::SinkPrepare,
        PanicAt::SinkCommit,
    ];
}

/// A switch shared by the wrappers: armed, the next matching step panics and disarms it.
#[derive(Debug, Clone, Default)]
pub struct Trigger(Arc<AtomicBool>);

impl Trigger {
    /// An armed trigger.
    pub fn armed() -> Self {
        Self(Arc::new(AtomicBool::new(true)))
    }

    /// True while the panic has not happened yet.
    pub fn is_armed(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    fn fire(&self, what: &str) {
        if self.0.swap(false, Ordering::SeqCst) {
            panic!("injected panic in {what}");
        }
    }
}

/// A source that panics at `at` (a source step) once.
#[derive(Debug)]
pub struct PanickingSource {
    inner: Arc<dyn Source>,
    at: PanicAt,
    trigger: Trigger,
}

impl PanickingSource {
    /// Wrap `inner`.
    pub fn new(inner: Arc<dyn Source>, at: PanicAt, trigger: Trigger) -> Self {
        Self { inner, at, trigger }
    }
}

#[async_trait]
impl Source for PanickingSource {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
    async fn plan(&self, req: &ReadRequest, ctx: &Context) -> Result<ReadPlan> {
        if self.at == PanicAt::SourcePlan {
            self.trigger.fire("Source::plan");
        }
        self.inner.plan(req, ctx).await
    }
    fn read(&self, split: &Split, ctx: &Context) -> Result<SendableBatchStream> {
        if self.at == PanicAt::SourceRead {
            self.trigger.fire("Source::read");
        }
        let stream = self.inner.read(split, ctx)?;
        if self.at != PanicAt::SourceStream {
            return Ok(stream);
        }
        let schema = stream.schema();
        let trigger = self.trigger.clone();
        Ok(BatchStreamAdapter::boxed(
            schema,
            Box::pin(stream.map(move |b| {
                trigger.fire("a source stream");
                b
            })),
        ))
    }
    async fn end_cursor(
        &self,
        plan: &ReadPlan,
        ctx: &Context,
    ) -> Result<Option<stratalake_core::Cursor>> {
        self.inner.end_cursor(plan, ctx).await
    }
}

/// A sink that panics at `at` (a sink step) once.
#[derive(Debug)]
pub struct PanickingSink {
    inner: Arc<dyn Sink>,
    at: PanicAt,
    trigger: Trigger,
}

impl PanickingSink {
    /// Wrap `inner`.
    pub fn new(inner: Arc<dyn Sink>, at: PanicAt, trigger: Trigger) -> Self {
        Self { inner, at, trigger }
    }
}

#[async_trait]
impl Sink for PanickingSink {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn capabilities(&self) -> SinkCapabilities {
        self.inner.capabilities()
    }
    async fn open(&self, schema: SchemaRef, ctx: &Context) -> Result<Box<dyn SinkWriter>> {
        if self.at == PanicAt::SinkOpen {
            self.trigger.fire("Sink::open");
        }
        Ok(Box::new(PanickingWriter {
            inner: self.inner.open(schema, ctx).await?,
            at: self.at,
            trigger: self.trigger.clone(),
        }))
    }
    async fn last_committed(
        &self,
        pipeline_id: &str,
        ctx: &Context,
    ) -> Result<Option<CommitMarker>> {
        self.inner.last_committed(pipeline_id, ctx).await
    }
}

struct PanickingWriter {
    inner: Box<dyn SinkWriter>,
    at: PanicAt,
    trigger: Trigger,
}

#[async_trait]
impl SinkWriter for PanickingWriter {
    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if self.at == PanicAt::SinkWrite {
            self.trigger.fire("SinkWriter::write");
        }
        self.inner.write(batch).await
    }
    async fn write_quarantine(&mut self, batch: RecordBatch) -> Result<()> {
        self.inner.write_quarantine(batch).await
    }
    async fn prepare(&mut self, epoch: Epoch) -> Result<Prepared> {
        if self.at == PanicAt::SinkPrepare {
            self.trigger.fire("SinkWriter::prepare");
        }
        self.inner.prepare(epoch).await
    }
    async fn commit(&mut self, prepared: Prepared, marker: &CommitMarker) -> Result<CommitOutcome> {
        if self.at == PanicAt::SinkCommit {
            self.trigger.fire("SinkWriter::commit");
        }
        self.inner.commit(prepared, marker).await
    }
    async fn abort(&mut self, prepared: Option<Prepared>) -> Result<()> {
        self.inner.abort(prepared).await
    }
}

/// An identity transform that panics on its first batch while the trigger is armed; as a
/// [`BatchTransform`] or, polled in the stream, as a [`StreamTransform`].
#[derive(Clone)]
pub struct PanickingTransform {
    trigger: Trigger,
}

impl fmt::Debug for PanickingTransform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PanickingTransform")
    }
}

impl PanickingTransform {
    /// A transform that panics once `trigger` fires.
    pub fn new(trigger: Trigger) -> Self {
        Self { trigger }
    }
}

impl BatchTransform for PanickingTransform {
    fn name(&self) -> &str {
        "panicking"
    }
    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        Ok(input.clone())
    }
    fn apply(&self, batch: RecordBatch, _ctx: &Context) -> Result<RecordBatch> {
        self.trigger.fire("a batch transform");
        Ok(batch)
    }
}

impl StreamTransform for PanickingTransform {
    fn name(&self) -> &str {
        "panicking"
    }
    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        Ok(input.clone())
    }
    fn transform(&self, input: SendableBatchStream, _ctx: &Context) -> Result<SendableBatchStream> {
        let schema = input.schema();
        let trigger = self.trigger.clone();
        Ok(BatchStreamAdapter::boxed(
            schema,
            Box::pin(input.map(move |b| {
                trigger.fire("a stream transform");
                b
            })),
        ))
    }
}
