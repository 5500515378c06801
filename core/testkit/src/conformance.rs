//! The conformance suite every connector runs: [`check_source`] and [`check_sink`].
//!
//! A connector's test implements [`SourceFixture`] or [`SinkFixture`] over a real destination
//! (local disk, a local server) and calls the suite; every check asserts, none is skipped.

use crate::assert::sorted_rows;
use crate::memory::{MemorySink, MemorySource, SinkFault};
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use stratalake_core::CancellationToken;
use stratalake_core::{
    CheckpointStore, CommitMarker, CommitOutcome, Context, Cursor, Epoch, ErrorKind,
    InMemoryCheckpointStore, PipelineBuilder, Prepared, ReadRequest, Result, Sink, SinkWriter,
    Source,
};
use tokio::sync::Notify;

/// A connector's source under test.
#[async_trait]
pub trait SourceFixture: Send + Sync {
    /// A source over the fixture's data (at least one row, at least one split).
    async fn source(&self) -> Arc<dyn Source>;
    /// The rows a full read must yield.
    async fn expected(&self) -> Vec<RecordBatch>;
    /// Make the input unreadable (delete the files, stop the server): proves `read` is lazy.
    async fn break_input(&self);
}

/// A connector's sink under test.
#[async_trait]
pub trait SinkFixture: Send + Sync {
    /// A new handle on the fixture's destination (as a new process would open it).
    async fn sink(&self) -> Arc<dyn Sink>;
    /// What readers of the destination see now.
    async fn visible(&self) -> Vec<RecordBatch>;
}

async fn read_all(
    source: &dyn Source,
    from: Option<Cursor>,
    ctx: &Context,
) -> Result<(Vec<RecordBatch>, Option<Cursor>, usize)> {
    let plan = source.plan(&ReadRequest::after(from), ctx).await?;
    let mut out = Vec::new();
    for split in &plan.splits {
        let mut s = source.read(split, ctx)?;
        assert_eq!(
            s.schema(),
            source.schema(),
            "read() stream schema differs from Source::schema for {}",
            split.id
        );
        while let Some(b) = s.next().await {
            let b = b?;
            assert_eq!(
                b.schema(),
                source.schema(),
                "a batch of split {} differs from Source::schema",
                split.id
            );
            out.push(b);
        }
    }
    let end = source.end_cursor(&plan, ctx).await?;
    Ok((out, end, plan.splits.len()))
}

/// Run every source check: schema contract and contents, an empty second plan, cancellation on
/// drop through the runner, and (last, as it breaks the input) lazy reads.
///
/// # Panics
/// On the first failed check, with what was expected.
pub async fn check_source(fixture: &dyn SourceFixture) {
    let source = fixture.source().await;
    let (qtx, mut qrx) = stratalake_core::quarantine::quarantine_channel(1024);
    let ctx = Context::builder("conformance").with_quarantine(qtx).build();
    // Schema contract and contents.
    let (batches, end, splits) = read_all(source.as_ref(), None, &ctx)
        .await
        .expect("full read");
    assert!(splits > 0, "the fixture must plan at least one split");
    assert_eq!(
        sorted_rows(&batches),
        sorted_rows(&fixture.expected().await),
        "a full read yields the expected rows"
    );
    while qrx.try_recv().is_ok() {}
    // Nothing new after the pinned end.
    let again = source
        .plan(&ReadRequest::after(end), &ctx)
        .await
        .expect("second plan");
    assert!(
        again.splits.is_empty(),
        "planning from the end cursor with no new input gives no splits"
    );

    // Cancellation: a run whose sink blocks stops promptly when cancelled, with Cancelled.
    let sink = MemorySink::new();
    sink.set_fault(Some(SinkFault::WriteBlocks));
    let pipeline = PipelineBuilder::new(
        "conformance-cancel",
        fixture.source().await,
        Arc::new(sink.clone()),
        Arc::new(InMemoryCheckpointStore::new()),
    )
    .build()
    .expect("pipeline");
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let (p, c) = (pipeline.clone(), cancel.clone());
        async move { p.run_with_cancellation(c).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    cancel.cancel();
    let result = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("a cancelled run stops within 10 s")
        .expect("join");
    assert_eq!(
        result.expect_err("a cancelled run fails").kind(),
        ErrorKind::Cancelled
    );
    assert_eq!(sink.commits(), 0, "a cancelled run commits nothing");

    // Laziness: read() on a broken input still returns a stream; the failure comes on polling.
    let plan = source
        .plan(&ReadRequest::default(), &ctx)
        .await
        .expect("plan");
    fixture.break_input().await;
    let mut failed = 0;
    for split in &plan.splits {
        let mut s = source
            .read(split, &ctx)
            .expect("read() must not do I/O, so it cannot fail on a broken input");
        if let Some(Err(_)) = s.next().await {
            failed += 1;
        }
    }
    assert!(failed > 0, "polling a split of a broken input fails");
}

async fn write_epoch(
    sink: &dyn Sink,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    ctx: &Context,
) -> (Box<dyn SinkWriter>, Prepared) {
    let mut w = sink.open(schema.clone(), ctx).await.expect("open");
    for b in batches {
        w.write(b.clone()).await.expect("write");
    }
    let p = w.prepare(Epoch(1)).await.expect("prepare");
    (w, p)
}

/// Run every sink check on `batches` (non-empty, one schema): abort leaves nothing visible; a
/// commit makes exactly the rows visible with its marker; a second commit of the same epoch is
/// `AlreadyCommitted`; a new handle recovers `last_committed`; a writer killed after write,
/// after prepare or after commit (before the checkpoint) leaves the destination exactly as a
/// rerun through the runner expects.
///
/// # Panics
/// On the first failed check.
pub async fn check_sink(fixture: &dyn SinkFixture, batches: Vec<RecordBatch>) {
    assert!(!batches.is_empty(), "check_sink needs data");
    let schema = batches[0].schema();
    let ctx = Context::new("conformance");
    let pid = "conformance";
    let sink = fixture.sink().await;

    // Abort leaves nothing visible.
    let (mut w, p) = write_epoch(sink.as_ref(), &schema, &batches, &ctx).await;
    w.abort(Some(p)).await.expect("abort");
    assert!(
        sorted_rows(&fixture.visible().await).is_empty(),
        "abort leaves nothing visible"
    );
    assert_eq!(
        sink.last_committed(pid, &ctx)
            .await
            .expect("last_committed"),
        None
    );

    // A killed writer (dropped without abort) after prepare leaves nothing visible either.
    let (w, _p) = write_epoch(sink.as_ref(), &schema, &batches, &ctx).await;
    drop(w);
    assert!(
        sorted_rows(&fixture.visible().await).is_empty(),
        "a prepared, uncommitted epoch is invisible"
    );

    // Commit.
    let marker = CommitMarker::new(pid, Epoch(1), Some(Cursor::new("conformance/v1:1")));
    let (mut w, p) = write_epoch(sink.as_ref(), &schema, &batches, &ctx).await;
    assert_eq!(
        w.commit(p, &marker).await.expect("commit"),
        CommitOutcome::Committed
    );
    assert_eq!(
        sorted_rows(&fixture.visible().await),
        sorted_rows(&batches),
        "a commit makes exactly the rows visible"
    );

    // Recovery from last_committed through a new handle.
    let fresh = fixture.sink().await;
    assert_eq!(
        fresh
            .last_committed(pid, &ctx)
            .await
            .expect("last_committed"),
        Some(marker.clone())
    );
    assert_eq!(
        fresh
            .last_committed("another-pipeline", &ctx)
            .await
            .expect("last_committed"),
        None
    );

    // Idempotent commit.
    let (mut w, p) = write_epoch(fresh.as_ref(), &schema, &batches, &ctx).await;
    assert_eq!(
        w.commit(p, &marker).await.expect("second commit"),
        CommitOutcome::AlreadyCommitted
    );
    assert_eq!(
        sorted_rows(&fixture.visible().await),
        sorted_rows(&batches),
        "a replayed commit changes nothing"
    );

    // Kill-and-rerun through the runner, at each step, for a second pipeline on the same sink.
    let mut expected = batches.clone();
    for (i, step) in [KillStep::FirstWrite, KillStep::Prepare, KillStep::Commit]
        .into_iter()
        .enumerate()
    {
        let pid = format!("conformance-kill-{i}");
        let source = Arc::new(MemorySource::new(schema.clone()));
        source.append(batches.clone());
        let store: Arc<dyn CheckpointStore> = Arc::new(InMemoryCheckpointStore::new());
        let reached = Arc::new(Notify::new());
        let killing = Arc::new(KillingSink {
            inner: fixture.sink().await,
            step,
            reached: reached.clone(),
        });
        let pipeline = PipelineBuilder::new(&pid, source.clone(), killing, store.clone())
            .build()
            .expect("pipeline");
        let run = tokio::spawn(async move { pipeline.run().await });
        tokio::time::timeout(Duration::from_secs(30), reached.notified())
            .await
            .expect("the kill step is reached");
        run.abort(); // the "kill": no cleanup code runs
        let _ = run.await;
        let rerun = PipelineBuilder::new(&pid, source, fixture.sink().await, store.clone())
            .build()
            .expect("pipeline");
        let report = rerun.run().await.expect("rerun after kill");
        assert_eq!(
            report.epoch,
            Epoch(1),
            "the rerun commits (or finds committed) epoch 1 ({step:?})"
        );
        expected.extend(batches.iter().cloned());
        assert_eq!(
            sorted_rows(&fixture.visible().await),
            sorted_rows(&expected),
            "after a kill {step:?} and a rerun every row is visible exactly once"
        );
    }
}

/// After which step [`KillingSink`] freezes a run so the test can kill it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KillStep {
    FirstWrite,
    Prepare,
    Commit,
}

#[derive(Debug)]
struct KillingSink {
    inner: Arc<dyn Sink>,
    step: KillStep,
    reached: Arc<Notify>,
}

#[async_trait]
impl Sink for KillingSink {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn capabilities(&self) -> stratalake_core::SinkCapabilities {
        self.inner.capabilities()
    }
    async fn open(&self, schema: SchemaRef, ctx: &Context) -> Result<Box<dyn SinkWriter>> {
        Ok(Box::new(KillingWriter {
            inner: self.inner.open(schema, ctx).await?,
            step: self.step,
            reached: self.reached.clone(),
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

struct KillingWriter {
    inner: Box<dyn SinkWriter>,
    step: KillStep,
    reached: Arc<Notify>,
}

async fn freeze(reached: &Notify) {
    reached.notify_one();
    std::future::pending::<()>().await;
}

#[async_trait]
impl SinkWriter for KillingWriter {
    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        self.inner.write(batch).await?;
        if self.step == KillStep::FirstWrite {
            freeze(&self.reached).await;
        }
        Ok(())
    }
    async fn write_quarantine(&mut self, batch: RecordBatch) -> Result<()> {
        self.inner.write_quarantine(batch).await
    }
    async fn prepare(&mut self, epoch: Epoch) -> Result<Prepared> {
        let p = self.inner.prepare(epoch).await?;
        if self.step == KillStep::Prepare {
            freeze(&self.reached).await;
        }
        Ok(p)
    }
    async fn commit(&mut self, prepared: Prepared, marker: &CommitMarker) -> Result<CommitOutcome> {
        let o = self.inner.commit(prepared, marker).await?;
        if self.step == KillStep::Commit {
            freeze(&self.reached).await;
        }
        Ok(o)
    }
    async fn abort(&mut self, prepared: Option<Prepared>) -> Result<()> {
        self.inner.abort(prepared).await
    }
}
