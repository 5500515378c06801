//! Reference in-memory [`MemorySource`] and [`MemorySink`], with fault injection, used to test
//! the runner and as the model every connector is compared with.

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use futures::Stream;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use stratalake_core::{
    BatchStream, CommitMarker, CommitOutcome, Context, Cursor, Delivery, Epoch, Error, ErrorKind,
    Prepared, QuarantineRecord, ReadPlan, ReadRequest, Result, SendableBatchStream, Sink,
    SinkCapabilities, SinkWriter, Source, Split,
};

/// An append-only in-memory source. Each appended batch is one split; the cursor is the number
/// of batches already read. Counts the streams alive and the batches yielded, so tests can
/// prove laziness and cancellation.
#[derive(Debug)]
pub struct MemorySource {
    schema: SchemaRef,
    batches: Mutex<Vec<RecordBatch>>,
    /// Rows (by global row index within a batch list) to reject to quarantine: (batch, reason).
    rejects: Mutex<Vec<(usize, String)>>,
    live_streams: Arc<AtomicUsize>,
    polled_batches: Arc<AtomicUsize>,
    delay: Mutex<Option<Duration>>,
    fail_transient: Arc<AtomicUsize>,
    fail_permanent: AtomicBool,
}

impl MemorySource {
    /// A source with `schema` and no data.
    pub fn new(schema: SchemaRef) -> Self {
        Self {
            schema,
            batches: Mutex::new(Vec::new()),
            rejects: Mutex::new(Vec::new()),
            live_streams: Arc::new(AtomicUsize::new(0)),
            polled_batches: Arc::new(AtomicUsize::new(0)),
            delay: Mutex::new(None),
            fail_transient: Arc::new(AtomicUsize::new(0)),
            fail_permanent: AtomicBool::new(false),
        }
    }

    /// Append batches (each becomes a split).
    pub fn append(&self, batches: impl IntoIterator<Item = RecordBatch>) {
        self.batches.lock().unwrap().extend(batches);
    }

    /// Make the split of batch `index` also reject one record to quarantine with `reason`.
    pub fn reject_in(&self, index: usize, reason: &str) {
        self.rejects
            .lock()
            .unwrap()
            .push((index, reason.to_string()));
    }

    /// Sleep this long before each batch (to make runs slow enough to cancel).
    pub fn set_delay(&self, delay: Option<Duration>) {
        *self.delay.lock().unwrap() = delay;
    }

    /// The next `n` split reads fail with a transient (retryable) error.
    pub fn fail_transient(&self, n: usize) {
        self.fail_transient.store(n, Ordering::SeqCst);
    }

    /// Every split read fails with a permanent error naming the split.
    pub fn fail_permanent(&self, yes: bool) {
        self.fail_permanent.store(yes, Ordering::SeqCst);
    }

    /// Streams created and not yet dropped.
    pub fn live_streams(&self) -> usize {
        self.live_streams.load(Ordering::SeqCst)
    }

    /// Batches yielded by all streams so far.
    pub fn polled_batches(&self) -> usize {
        self.polled_batches.load(Ordering::SeqCst)
    }
}

fn cursor_of(n: usize) -> Cursor {
    Cursor::new(format!("memory/v1:{n}"))
}

fn parse_cursor(c: &Cursor) -> Result<usize> {
    c.as_str()
        .strip_prefix("memory/v1:")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| {
            Error::new(ErrorKind::Data, "not a memory source cursor")
                .with_context("cursor", c.as_str())
        })
}

#[async_trait]
impl Source for MemorySource {
    fn name(&self) -> &str {
        "memory"
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn plan(&self, req: &ReadRequest, _ctx: &Context) -> Result<ReadPlan> {
        let from = req
            .from
            .as_ref()
            .map(parse_cursor)
            .transpose()?
            .unwrap_or(0);
        let end = self.batches.lock().unwrap().len();
        let splits = (from..end)
            .map(|i| Split {
                id: format!("memory[{i}]"),
                spec: i.to_string(),
                size_bytes: None,
            })
            .collect();
        Ok(ReadPlan::new(splits, Some(cursor_of(end))))
    }

    fn read(&self, split: &Split, ctx: &Context) -> Result<SendableBatchStream> {
        let index: usize = split
            .spec
            .parse()
            .map_err(|_| Error::internal("bad memory split").with_context("split", &split.id))?;
        // Capture what the stream needs; no work happens until it is polled.
        let batch = self.batches.lock().unwrap().get(index).cloned();
        let reject = self
            .rejects
            .lock()
            .unwrap()
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, r)| r.clone());
        let transient = self.fail_transient.clone();
        let permanent = self.fail_permanent.load(Ordering::SeqCst);
        let delay = *self.delay.lock().unwrap();
        let polled = self.polled_batches.clone();
        let ctx = ctx.clone();
        let id = split.id.clone();
        let stream = async_stream(move || async move {
            if permanent {
                return Err(Error::data("injected permanent failure").with_context("split", &id));
            }
            if transient
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(
                    Error::new(ErrorKind::Unavailable, "injected transient failure")
                        .with_context("split", &id),
                );
            }
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            if let Some(reason) = reject {
                let rec = QuarantineRecord {
                    component: "source".into(),
                    location: id.clone(),
                    position: Some(0),
                    raw: "<memory record>".into(),
                    reason,
                    column: None,
                };
                ctx.quarantine("source", vec![rec]).await?;
            }
            let batch = batch.ok_or_else(|| {
                Error::new(ErrorKind::NotFound, "no such batch").with_context("split", &id)
            })?;
            polled.fetch_add(1, Ordering::SeqCst);
            Ok(batch)
        });
        Ok(Box::pin(CountedStream::new(
            self.schema.clone(),
            stream,
            self.live_streams.clone(),
        )))
    }
}

/// A one-item stream produced by an async closure, run only when first polled.
fn async_stream<F, Fut>(f: F) -> Pin<Box<dyn Stream<Item = Result<RecordBatch>> + Send>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<RecordBatch>> + Send + 'static,
{
    Box::pin(futures::stream::once(async move { f().await }))
}

struct CountedStream {
    schema: SchemaRef,
    inner: Pin<Box<dyn Stream<Item = Result<RecordBatch>> + Send>>,
    live: Arc<AtomicUsize>,
}

impl CountedStream {
    fn new(
        schema: SchemaRef,
        inner: Pin<Box<dyn Stream<Item = Result<RecordBatch>> + Send>>,
        live: Arc<AtomicUsize>,
    ) -> Self {
        live.fetch_add(1, Ordering::SeqCst);
        Self {
            schema,
            inner,
            live,
        }
    }
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Stream for CountedStream {
    type Item = Result<RecordBatch>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl BatchStream for CountedStream {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

/// Where a [`MemorySink`] fails on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SinkFault {
    /// `write` fails with a transient error (once).
    WriteTransient,
    /// `write` fails with a permanent error.
    WritePermanent,
    /// `write` blocks forever (to test cancellation and backpressure).
    WriteBlocks,
    /// `commit` fails with a transient error (once) after making the epoch visible.
    CommitTransientAfterVisible,
}

#[derive(Debug, Default)]
struct SinkState {
    committed: Vec<(CommitMarker, Vec<RecordBatch>, Vec<RecordBatch>)>,
    fault: Option<SinkFault>,
    writes: usize,
    no_quarantine: bool,
}

/// An exactly-once in-memory sink. Clones share the destination, as two handles on one table.
#[derive(Debug, Clone, Default)]
pub struct MemorySink {
    state: Arc<Mutex<SinkState>>,
}

impl MemorySink {
    /// An empty destination.
    pub fn new() -> Self {
        Self::default()
    }

    /// A destination that keeps no quarantine (as some sinks do): its capabilities say so.
    #[must_use]
    pub fn without_quarantine(self) -> Self {
        self.state.lock().unwrap().no_quarantine = true;
        self
    }

    /// Inject a fault.
    pub fn set_fault(&self, fault: Option<SinkFault>) {
        self.state.lock().unwrap().fault = fault;
    }

    /// Every visible data batch, in commit order.
    pub fn visible(&self) -> Vec<RecordBatch> {
        self.state
            .lock()
            .unwrap()
            .committed
            .iter()
            .flat_map(|(_, b, _)| b.clone())
            .collect()
    }

    /// Every visible quarantine batch.
    pub fn visible_quarantine(&self) -> Vec<RecordBatch> {
        self.state
            .lock()
            .unwrap()
            .committed
            .iter()
            .flat_map(|(_, _, q)| q.clone())
            .collect()
    }

    /// Visible data rows.
    pub fn visible_rows(&self) -> usize {
        self.visible().iter().map(RecordBatch::num_rows).sum()
    }

    /// The number of commits.
    pub fn commits(&self) -> usize {
        self.state.lock().unwrap().committed.len()
    }

    /// `write` calls so far.
    pub fn writes(&self) -> usize {
        self.state.lock().unwrap().writes
    }
}

#[async_trait]
impl Sink for MemorySink {
    fn name(&self) -> &str {
        "memory"
    }

    fn capabilities(&self) -> SinkCapabilities {
        let keeps = !self.state.lock().unwrap().no_quarantine;
        SinkCapabilities::new(Delivery::ExactlyOnce).with_quarantine(keeps)
    }

    async fn open(&self, _schema: SchemaRef, _ctx: &Context) -> Result<Box<dyn SinkWriter>> {
        Ok(Box::new(MemoryWriter {
            sink: self.clone(),
            staged: Vec::new(),
            quarantine: Vec::new(),
        }))
    }

    async fn last_committed(
        &self,
        pipeline_id: &str,
        _ctx: &Context,
    ) -> Result<Option<CommitMarker>> {
        let s = self.state.lock().unwrap();
        Ok(s.committed
            .iter()
            .rev()
            .find(|(m, _, _)| m.pipeline_id == pipeline_id)
            .map(|(m, _, _)| m.clone()))
    }
}

struct MemoryWriter {
    sink: MemorySink,
    staged: Vec<RecordBatch>,
    quarantine: Vec<RecordBatch>,
}

#[async_trait]
impl SinkWriter for MemoryWriter {
    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        let fault = {
            let mut s = self.sink.state.lock().unwrap();
            s.writes += 1;
            s.fault
        };
        match fault {
            Some(SinkFault::WriteTransient) => {
                self.sink.set_fault(None);
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    "injected transient write failure",
                ));
            }
            Some(SinkFault::WritePermanent) => {
                return Err(
                    Error::new(ErrorKind::Auth, "injected permanent write failure")
                        .with_context("table", "memory"),
                );
            }
            Some(SinkFault::WriteBlocks) => std::future::pending::<()>().await,
            _ => {}
        }
        self.staged.push(batch);
        Ok(())
    }

    async fn write_quarantine(&mut self, batch: RecordBatch) -> Result<()> {
        self.quarantine.push(batch);
        Ok(())
    }

    async fn prepare(&mut self, epoch: Epoch) -> Result<Prepared> {
        let rows = self.staged.iter().map(|b| b.num_rows() as u64).sum();
        let q = self.quarantine.iter().map(|b| b.num_rows() as u64).sum();
        Ok(Prepared::new(
            epoch,
            rows,
            q,
            0,
            vec![format!("memory epoch {epoch}")],
        ))
    }

    async fn commit(
        &mut self,
        _prepared: Prepared,
        marker: &CommitMarker,
    ) -> Result<CommitOutcome> {
        let mut s = self.sink.state.lock().unwrap();
        if s.committed
            .iter()
            .any(|(m, _, _)| m.pipeline_id == marker.pipeline_id && m.epoch == marker.epoch)
        {
            return Ok(CommitOutcome::AlreadyCommitted);
        }
        s.committed.push((
            marker.clone(),
            std::mem::take(&mut self.staged),
            std::mem::take(&mut self.quarantine),
        ));
        if s.fault == Some(SinkFault::CommitTransientAfterVisible) {
            s.fault = None;
            return Err(Error::new(
                ErrorKind::Timeout,
                "injected: the commit landed but the answer was lost",
            ));
        }
        Ok(CommitOutcome::Committed)
    }

    async fn abort(&mut self, _prepared: Option<Prepared>) -> Result<()> {
        self.staged.clear();
        self.quarantine.clear();
        Ok(())
    }
}
