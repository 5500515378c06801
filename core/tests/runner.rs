//! Runner tests against the reference in-memory source and sink.

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use std::sync::Arc;
use std::time::Duration;
use stratalake_core::{
    BatchTransform, CancellationToken, CheckpointStore, CommitMarker, Context, Epoch, ErrorKind,
    InMemoryCheckpointStore, PipelineBuilder, Result, RetryPolicy, RunOptions, RunOutcome, Sink,
};
use stratalake_testkit::{MemorySink, MemorySource, SinkFault, assert_same_rows};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]))
}

fn batch(start: i64, n: i64) -> RecordBatch {
    let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(start..start + n));
    let names: ArrayRef = Arc::new(StringArray::from_iter_values(
        (start..start + n).map(|i| format!("n{i}")),
    ));
    RecordBatch::try_new(schema(), vec![ids, names]).unwrap()
}

/// Up to 5 attempts: enough for the worst case of the transient test (two failed split reads
/// in separate attempts, then one failed write) whatever the interleaving of the splits.
fn fast_retry() -> RunOptions {
    RunOptions::default().with_retry(RetryPolicy::new(
        5,
        Duration::from_millis(1),
        Duration::from_millis(5),
    ))
}

fn setup(n_batches: i64) -> (Arc<MemorySource>, MemorySink, Arc<InMemoryCheckpointStore>) {
    let source = Arc::new(MemorySource::new(schema()));
    source.append((0..n_batches).map(|i| batch(i * 100, 100)));
    (
        source,
        MemorySink::new(),
        Arc::new(InMemoryCheckpointStore::new()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_once_then_nothing_new_then_the_next_epoch() {
    let (source, sink, store) = setup(10);
    source.reject_in(3, "bad record in batch 3");
    let p = PipelineBuilder::new("p", source.clone(), Arc::new(sink.clone()), store.clone())
        .with_options(fast_retry())
        .build()
        .unwrap();
    let r = p.run().await.unwrap();
    assert_eq!(r.outcome, RunOutcome::Committed);
    assert_eq!(
        (r.epoch, r.rows_written, r.rows_quarantined, r.splits),
        (Epoch(1), 1000, 1, 10)
    );
    assert_same_rows!(
        &sink.visible(),
        &(0..10).map(|i| batch(i * 100, 100)).collect::<Vec<_>>()
    );
    assert_eq!(sink.visible_quarantine()[0].num_rows(), 1);
    assert_eq!(store.load("p").await.unwrap().unwrap().epoch, Epoch(1));

    let r = p.run().await.unwrap();
    assert_eq!(r.outcome, RunOutcome::NothingNew);
    assert_eq!(
        sink.commits(),
        1,
        "a second run with nothing new commits nothing"
    );

    source.append([batch(5000, 7)]);
    let r = p.run().await.unwrap();
    assert_eq!(
        (r.outcome, r.epoch, r.rows_written),
        (RunOutcome::Committed, Epoch(2), 7)
    );
    assert_eq!(sink.visible_rows(), 1007);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_and_permanent_ones_keep_their_context() {
    let (source, sink, store) = setup(4);
    source.fail_transient(2);
    sink.set_fault(Some(SinkFault::WriteTransient));
    let p = PipelineBuilder::new("p", source.clone(), Arc::new(sink.clone()), store.clone())
        .with_options(fast_retry())
        .build()
        .unwrap();
    let r = p.run().await.unwrap();
    assert!(r.attempts >= 2, "the run needed retries");
    assert_eq!(sink.visible_rows(), 400, "retries do not duplicate rows");

    let (source, sink, store) = setup(2);
    source.fail_permanent(true);
    let p = PipelineBuilder::new("q", source, Arc::new(sink.clone()), store)
        .with_options(fast_retry())
        .build()
        .unwrap();
    let e = p.run().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Data);
    assert_eq!(e.context_value("pipeline"), Some("q"));
    assert_eq!(e.context_value("epoch"), Some("1"));
    assert_eq!(
        e.context_value("attempts"),
        Some("1"),
        "a permanent error is not retried"
    );
    assert!(e.context_value("split").unwrap().starts_with("memory["));
    assert_eq!(sink.commits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_was_lost_is_not_applied_twice() {
    let (source, sink, store) = setup(3);
    sink.set_fault(Some(SinkFault::CommitTransientAfterVisible));
    let p = PipelineBuilder::new("p", source, Arc::new(sink.clone()), store)
        .with_options(fast_retry())
        .build()
        .unwrap();
    let r = p.run().await.unwrap();
    assert_eq!(r.outcome, RunOutcome::AlreadyCommitted);
    assert_eq!((sink.commits(), sink.visible_rows()), (1, 300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_bounds_what_is_read_ahead_and_cancellation_stops_every_task() {
    let (source, sink, store) = setup(500);
    sink.set_fault(Some(SinkFault::WriteBlocks));
    let opts = fast_retry()
        .with_read_concurrency(2)
        .with_channel_capacity(4);
    let p = PipelineBuilder::new("p", source.clone(), Arc::new(sink.clone()), store)
        .with_options(opts)
        .build()
        .unwrap();
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let (p, c) = (p.clone(), cancel.clone());
        async move { p.run_with_cancellation(c).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The writer holds 1 batch, the channel 4, and each of 2 readers 1 more it is trying to send.
    let read = source.polled_batches();
    assert!(
        read <= 1 + 4 + 2,
        "read {read} batches ahead of a blocked writer"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        source.polled_batches(),
        read,
        "nothing more is read while the writer is blocked"
    );
    cancel.cancel();
    let e = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(source.live_streams(), 0, "every split stream was dropped");
    assert_eq!(sink.commits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_marker_is_authoritative() {
    let (source, sink, store) = setup(2);
    let ctx = Context::new("p");
    // The sink committed epoch 1 but the checkpoint was never saved: fast-forward.
    let p = PipelineBuilder::new("p", source.clone(), Arc::new(sink.clone()), store.clone())
        .build()
        .unwrap();
    p.run().await.unwrap();
    let fresh_store = Arc::new(InMemoryCheckpointStore::new());
    let p2 = PipelineBuilder::new(
        "p",
        source.clone(),
        Arc::new(sink.clone()),
        fresh_store.clone(),
    )
    .build()
    .unwrap();
    assert_eq!(p2.run().await.unwrap().outcome, RunOutcome::NothingNew);
    assert_eq!(
        fresh_store.load("p").await.unwrap(),
        sink.last_committed("p", &ctx).await.unwrap()
    );

    // A checkpoint ahead of the sink is a Conflict, not silent data loss.
    let ahead = Arc::new(InMemoryCheckpointStore::new());
    ahead
        .save(&CommitMarker::new("p", Epoch(5), None), Epoch(0))
        .await
        .unwrap();
    let p3 = PipelineBuilder::new("p", source, Arc::new(sink), ahead)
        .build()
        .unwrap();
    let e = p3.run().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert_eq!(e.context_value("checkpoint_epoch"), Some("5"));
}

#[derive(Debug)]
struct DoubleIds;

impl BatchTransform for DoubleIds {
    fn name(&self) -> &str {
        "double_ids"
    }
    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        Ok(input.clone())
    }
    fn apply(&self, batch: RecordBatch, _ctx: &Context) -> Result<RecordBatch> {
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        if ids.value(0) == 666 * 2 {
            return Err(stratalake_core::Error::data("an id is cursed")
                .with_context("column", "id")
                .with_context("value", 666));
        }
        let doubled: ArrayRef = Arc::new(Int64Array::from_iter_values(
            ids.values().iter().map(|v| v * 2),
        ));
        Ok(RecordBatch::try_new(
            batch.schema(),
            vec![doubled, batch.column(1).clone()],
        )?)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_transforms_run_and_their_errors_name_the_transform() {
    let (source, sink, store) = setup(3);
    let p = PipelineBuilder::new("p", source.clone(), Arc::new(sink.clone()), store.clone())
        .with_batch_transform(Arc::new(DoubleIds))
        .build()
        .unwrap();
    let r = p.run().await.unwrap();
    assert_eq!(
        r.metrics
            .get("double_ids", stratalake_core::metrics::RECEIVED_ROWS_TOTAL),
        300
    );
    let max = sink
        .visible()
        .iter()
        .map(|b| {
            arrow_array::cast::AsArray::as_primitive::<arrow_array::types::Int64Type>(b.column(0))
                .values()
                .iter()
                .copied()
                .max()
                .unwrap()
        })
        .max();
    assert_eq!(max, Some(299 * 2));

    let source = Arc::new(MemorySource::new(schema()));
    source.append([batch(666, 2)]);
    let p = PipelineBuilder::new(
        "p",
        source,
        Arc::new(MemorySink::new()),
        Arc::new(InMemoryCheckpointStore::new()),
    )
    .with_batch_transform(Arc::new(DoubleIds))
    .with_batch_transform(Arc::new(DoubleIds))
    .build()
    .unwrap();
    let e = p.run().await.unwrap_err();
    assert_eq!(e.context_value("transform"), Some("double_ids"));
    assert_eq!(e.context_value("value"), Some("666"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_sink_passes_the_conformance_suite() {
    #[derive(Debug)]
    struct Fixture(MemorySink);
    #[async_trait::async_trait]
    impl stratalake_testkit::SinkFixture for Fixture {
        async fn sink(&self) -> Arc<dyn Sink> {
            Arc::new(self.0.clone())
        }
        async fn visible(&self) -> Vec<RecordBatch> {
            self.0.visible()
        }
    }
    stratalake_testkit::check_sink(
        &Fixture(MemorySink::new()),
        vec![batch(0, 10), batch(10, 5)],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_source_passes_the_conformance_suite() {
    struct Fixture(Arc<MemorySource>);
    #[async_trait::async_trait]
    impl stratalake_testkit::SourceFixture for Fixture {
        async fn source(&self) -> Arc<dyn stratalake_core::Source> {
            self.0.clone()
        }
        async fn expected(&self) -> Vec<RecordBatch> {
            vec![batch(0, 10), batch(10, 5)]
        }
        async fn break_input(&self) {
            self.0.fail_permanent(true);
        }
    }
    let s = Arc::new(MemorySource::new(schema()));
    s.append([batch(0, 10), batch(10, 5)]);
    s.set_delay(Some(Duration::from_millis(50)));
    stratalake_testkit::check_source(&Fixture(s)).await;
}

/// A panic in any component fails the epoch with an Internal error naming the component;
/// nothing is committed; the rerun (the panic was once) loads every row exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_any_component_fails_the_epoch_and_the_rerun_loads_every_row_once() {
    use stratalake_testkit::{
        PanicAt, PanickingSink, PanickingSource, PanickingTransform, Trigger,
    };
    #[derive(Debug, Clone, Copy)]
    enum Where {
        Step(PanicAt),
        BatchTransform,
        StreamTransform,
    }
    let mut cases: Vec<(Where, &str)> = PanicAt::ALL
        .iter()
        .map(|at| {
            let component = match at {
                PanicAt::SourcePlan => "source memory (plan)",
                PanicAt::SourceRead | PanicAt::SourceStream => "source memory (split memory[",
                PanicAt::SinkOpen => "sink memory (open)",
                PanicAt::SinkWrite => "sink memory (write)",
                PanicAt::SinkPrepare => "sink memory (prepare)",
                _ => "sink memory (commit)",
            };
            (Where::Step(*at), component)
        })
        .collect();
    cases.push((Where::BatchTransform, "transform panicking"));
    cases.push((Where::StreamTransform, "stream transform panicking"));
    for (at, component) in cases {
        let (source, sink, store) = setup(4);
        let trigger = Trigger::armed();
        let (src, snk): (Arc<dyn stratalake_core::Source>, Arc<dyn Sink>) = match at {
            Where::Step(step) => (
                Arc::new(PanickingSource::new(source.clone(), step, trigger.clone())),
                Arc::new(PanickingSink::new(
                    Arc::new(sink.clone()),
                    step,
                    trigger.clone(),
                )),
            ),
            _ => (source.clone(), Arc::new(sink.clone())),
        };
        let mut b = PipelineBuilder::new("p", src, snk, store.clone()).with_options(fast_retry());
        match at {
            Where::BatchTransform => {
                b = b.with_batch_transform(Arc::new(PanickingTransform::new(trigger.clone())));
            }
            Where::StreamTransform => {
                b = b.with_stream_transform(Arc::new(PanickingTransform::new(trigger.clone())));
            }
            Where::Step(_) => {}
        }
        let p = b.build().unwrap();
        let e = p.run().await.expect_err("a panic must fail the run");
        assert!(!trigger.is_armed(), "{at:?}: the panic happened");
        assert_eq!(e.kind(), ErrorKind::Internal, "{at:?}: {}", e.report());
        assert!(
            e.context_value("component")
                .is_some_and(|c| c.starts_with(component)),
            "{at:?}: the error names {component}: {}",
            e.report()
        );
        assert!(e.report().contains("injected panic"), "{}", e.report());
        assert_eq!(sink.commits(), 0, "{at:?}: nothing committed");
        let r = p.run().await.unwrap();
        assert_eq!(r.outcome, RunOutcome::Committed, "{at:?}");
        assert_eq!(sink.visible_rows(), 400, "{at:?}: every row once");
        assert_eq!(p.run().await.unwrap().outcome, RunOutcome::NothingNew);
    }
}
