//! stratalake-delta on local disk: conformance (sink and source), exactly-once commits, concurrent
//! writers, schema evolution policies and incremental reads by version.

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use async_trait::async_trait;
use std::sync::Arc;
use stratalake_core::{
    CheckpointStore, ErrorKind, InMemoryCheckpointStore, PipelineBuilder, RunOutcome, Sink, Source,
};
use stratalake_delta::{DeltaSink, DeltaSinkConfig, DeltaSource, SchemaEvolution, TableLocation};
use stratalake_testkit::assert::sorted_rows;
use stratalake_testkit::{
    MemorySink, MemorySource, SinkFixture, SourceFixture, check_sink, check_source,
};

fn batch(ids: std::ops::Range<i64>, tag: &str) -> RecordBatch {
    RecordBatch::try_from_iter(vec![
        (
            "id",
            Arc::new(Int64Array::from_iter_values(ids.clone())) as ArrayRef,
        ),
        (
            "name",
            Arc::new(StringArray::from_iter_values(
                ids.map(|i| format!("{tag}{i}")),
            )),
        ),
    ])
    .unwrap()
}

/// Every row of the table now, in the given columns.
async fn visible(loc: &TableLocation, columns: &[&str]) -> Vec<RecordBatch> {
    let Ok(source) = DeltaSource::try_new(loc.clone()).await else {
        return Vec::new();
    };
    let sink = MemorySink::new();
    PipelineBuilder::new(
        "read-back",
        Arc::new(source),
        Arc::new(sink.clone()),
        Arc::new(InMemoryCheckpointStore::new()),
    )
    .build()
    .unwrap()
    .run()
    .await
    .unwrap();
    sink.visible()
        .iter()
        .map(|b| {
            let idx: Vec<usize> = columns
                .iter()
                .map(|c| b.schema().index_of(c).unwrap())
                .collect();
            b.project(&idx).unwrap()
        })
        .collect()
}

struct SinkFix {
    loc: TableLocation,
}

#[async_trait]
impl SinkFixture for SinkFix {
    async fn sink(&self) -> Arc<dyn Sink> {
        Arc::new(DeltaSink::try_new(self.loc.clone(), DeltaSinkConfig::default()).unwrap())
    }
    async fn visible(&self) -> Vec<RecordBatch> {
        visible(&self.loc, &["id", "name"]).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delta_sink_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let loc = TableLocation::local(dir.path().join("t")).unwrap();
    check_sink(
        &SinkFix { loc },
        vec![batch(0..500, "a"), batch(500..900, "b")],
    )
    .await;
}

struct SourceFix {
    loc: TableLocation,
    dir: std::path::PathBuf,
    expected: Vec<RecordBatch>,
}

#[async_trait]
impl SourceFixture for SourceFix {
    async fn source(&self) -> Arc<dyn Source> {
        Arc::new(DeltaSource::try_new(self.loc.clone()).await.unwrap())
    }
    async fn expected(&self) -> Vec<RecordBatch> {
        self.expected.clone()
    }
    async fn break_input(&self) {
        std::fs::remove_dir_all(&self.dir).unwrap();
    }
}

async fn append(
    loc: &TableLocation,
    pid: &str,
    batches: Vec<RecordBatch>,
    cfg: DeltaSinkConfig,
) -> stratalake_core::Result<stratalake_core::RunReport> {
    let source = Arc::new(MemorySource::new(batches[0].schema()));
    source.append(batches);
    PipelineBuilder::new(
        pid,
        source,
        Arc::new(DeltaSink::try_new(loc.clone(), cfg)?),
        Arc::new(InMemoryCheckpointStore::new()),
    )
    .build()?
    .run()
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delta_source_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t");
    let loc = TableLocation::local(&path).unwrap();
    append(
        &loc,
        "w",
        vec![batch(0..300, "x")],
        DeltaSinkConfig::default(),
    )
    .await
    .unwrap();
    // The rows written plus the change columns of one insert commit (version 1), built
    // directly: never rows read back through the source under test.
    let written = batch(0..300, "x");
    let schema = DeltaSource::try_new(loc.clone()).await.unwrap().schema();
    let cols: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match f.name().as_str() {
            "id" | "name" => written.column_by_name(f.name()).unwrap().clone(),
            "_change_type" => Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                "insert", 300,
            ))) as ArrayRef,
            "_commit_version" => arrow_cast::cast(
                &(Arc::new(Int64Array::from_iter_values(std::iter::repeat_n(1, 300))) as ArrayRef),
                f.data_type(),
            )
            .unwrap(),
            _ => arrow_array::new_null_array(f.data_type(), 300),
        })
        .collect();
    let expected = vec![RecordBatch::try_new(schema, cols).unwrap()];
    assert_eq!(expected.iter().map(|b| b.num_rows()).sum::<usize>(), 300);
    check_source(&SourceFix {
        loc,
        dir: path,
        expected,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_reads_see_only_new_versions() {
    let dir = tempfile::tempdir().unwrap();
    let loc = TableLocation::local(dir.path().join("t")).unwrap();
    append(
        &loc,
        "w",
        vec![batch(0..3, "a")],
        DeltaSinkConfig::default(),
    )
    .await
    .unwrap();
    let store: Arc<dyn CheckpointStore> = Arc::new(InMemoryCheckpointStore::new());
    let out = MemorySink::new();
    let reader = PipelineBuilder::new(
        "reader",
        Arc::new(DeltaSource::try_new(loc.clone()).await.unwrap()),
        Arc::new(out.clone()),
        store,
    )
    .build()
    .unwrap();
    assert_eq!(reader.run().await.unwrap().rows_written, 3);
    assert_eq!(reader.run().await.unwrap().outcome, RunOutcome::NothingNew);
    append(
        &loc,
        "w2",
        vec![batch(3..5, "b")],
        DeltaSinkConfig::default(),
    )
    .await
    .unwrap();
    let r = reader.run().await.unwrap();
    assert_eq!(r.rows_written, 2, "only the new version's rows");
    let all = out.visible();
    let last = all.last().unwrap();
    let ct = last.column_by_name("_change_type").unwrap();
    assert_eq!(
        sorted_rows(&[last.project(&[0, 1]).unwrap()]),
        vec!["| 3  | b3   |", "| 4  | b4   |"]
    );
    assert_eq!(
        ct.as_any().downcast_ref::<StringArray>().unwrap().value(0),
        "insert"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_writers_both_land_once() {
    let dir = tempfile::tempdir().unwrap();
    let loc = TableLocation::local(dir.path().join("t")).unwrap();
    append(
        &loc,
        "seed",
        vec![batch(0..1, "s")],
        DeltaSinkConfig::default(),
    )
    .await
    .unwrap();
    let (a, b) = tokio::join!(
        append(
            &loc,
            "a",
            vec![batch(100..200, "a")],
            DeltaSinkConfig::default()
        ),
        append(
            &loc,
            "b",
            vec![batch(200..300, "b")],
            DeltaSinkConfig::default()
        ),
    );
    assert_eq!(a.unwrap().rows_written, 100);
    assert_eq!(b.unwrap().rows_written, 100);
    assert_eq!(sorted_rows(&visible(&loc, &["id"]).await).len(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_drift_follows_the_declared_policy() {
    let wide = |ids: std::ops::Range<i64>| {
        RecordBatch::try_from_iter(vec![
            (
                "id",
                Arc::new(Int64Array::from_iter_values(ids.clone())) as ArrayRef,
            ),
            (
                "name",
                Arc::new(StringArray::from_iter_values(
                    ids.clone().map(|i| format!("n{i}")),
                )),
            ),
            (
                "email",
                Arc::new(StringArray::from_iter_values(
                    ids.map(|i| format!("e{i}@x")),
                )),
            ),
        ])
        .unwrap()
    };
    for policy in [
        SchemaEvolution::AddColumns,
        SchemaEvolution::Freeze,
        SchemaEvolution::Discard,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let loc = TableLocation::local(dir.path().join("t")).unwrap();
        let cfg = DeltaSinkConfig::default().with_schema_evolution(policy);
        append(&loc, "p1", vec![batch(0..2, "n")], cfg.clone())
            .await
            .unwrap();
        let r = append(&loc, "p2", vec![wide(2..4)], cfg).await;
        match policy {
            SchemaEvolution::AddColumns => {
                r.unwrap();
                assert_eq!(
                    sorted_rows(&visible(&loc, &["id", "email"]).await),
                    vec![
                        "| 0  |       |",
                        "| 1  |       |",
                        "| 2  | e2@x  |",
                        "| 3  | e3@x  |"
                    ]
                );
            }
            SchemaEvolution::Freeze => {
                let e = r.unwrap_err();
                assert_eq!(e.kind(), ErrorKind::Schema);
                assert_eq!(e.context_value("columns"), Some("email"));
                assert_eq!(sorted_rows(&visible(&loc, &["id"]).await).len(), 2);
            }
            _ => {
                r.unwrap();
                let src = DeltaSource::try_new(loc.clone()).await.unwrap();
                assert!(src.schema().field_with_name("email").is_err());
                assert_eq!(sorted_rows(&visible(&loc, &["id"]).await).len(), 4);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merges_keep_the_newest_version_per_key_and_apply_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let loc = TableLocation::local(dir.path().join("customers")).unwrap();
    let mut cfg = DeltaSinkConfig::default().with_merge(&["id"], Some("v"));
    if let stratalake_delta::WriteMode::Merge { delete_when, .. } = &mut cfg.write {
        *delete_when = Some(stratalake_delta::DeleteWhen::new("op", "delete"));
    }
    let rows = |ids: &[i64], names: &[&str], v: &[i64], ops: &[&str]| {
        RecordBatch::try_from_iter(vec![
            ("id", Arc::new(Int64Array::from(ids.to_vec())) as ArrayRef),
            ("name", Arc::new(StringArray::from(names.to_vec()))),
            ("v", Arc::new(Int64Array::from(v.to_vec()))),
            ("op", Arc::new(StringArray::from(ops.to_vec()))),
        ])
        .unwrap()
    };
    let source = Arc::new(MemorySource::new(rows(&[0], &["x"], &[0], &["x"]).schema()));
    let store: Arc<dyn CheckpointStore> = Arc::new(InMemoryCheckpointStore::new());
    let p = PipelineBuilder::new(
        "merge",
        source.clone(),
        Arc::new(DeltaSink::try_new(loc.clone(), cfg).unwrap()),
        store,
    )
    .build()
    .unwrap();
    source.append([rows(
        &[1, 2, 3],
        &["a", "b", "c"],
        &[1, 1, 1],
        &["insert"; 3],
    )]);
    p.run().await.unwrap();
    // Two batches in one epoch (no order between them): the highest version wins; a late,
    // older update changes nothing; a delete removes its key.
    source.append([
        rows(&[1, 2], &["a2", "b"], &[2, 2], &["update", "delete"]),
        rows(
            &[1, 3, 4],
            &["a3", "c-old", "d"],
            &[3, 0, 1],
            &["update", "update", "insert"],
        ),
    ]);
    p.run().await.unwrap();
    assert_eq!(
        sorted_rows(&visible(&loc, &["id", "name", "v"]).await),
        vec![
            "| 1  | a3   | 3 |",
            "| 3  | c    | 1 |",
            "| 4  | d    | 1 |"
        ]
    );
    // The epoch's transaction is in the MERGE commit: a replay is AlreadyCommitted.
    let sink = DeltaSink::try_new(
        loc.clone(),
        DeltaSinkConfig::default().with_merge(&["id"], Some("v")),
    )
    .unwrap();
    let ctx = stratalake_core::Context::new("merge");
    let marker = sink.last_committed("merge", &ctx).await.unwrap().unwrap();
    assert_eq!(marker.epoch, stratalake_core::Epoch(2));
    let mut w = sink
        .open(rows(&[9], &["z"], &[9], &["insert"]).schema(), &ctx)
        .await
        .unwrap();
    w.write(rows(&[9], &["z"], &[9], &["insert"]))
        .await
        .unwrap();
    let prepared = w.prepare(marker.epoch).await.unwrap();
    assert_eq!(
        w.commit(prepared, &marker).await.unwrap(),
        stratalake_core::CommitOutcome::AlreadyCommitted
    );
    assert_eq!(sorted_rows(&visible(&loc, &["id"]).await).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_records_land_in_the_quarantine_table_with_the_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let loc = TableLocation::local(dir.path().join("orders")).unwrap();
    let source = Arc::new(MemorySource::new(batch(0..1, "x").schema()));
    source.append([batch(0..10, "a")]);
    source.reject_in(0, "quantity -3 in column quantity is negative");
    let sink = DeltaSink::try_new(loc.clone(), DeltaSinkConfig::default()).unwrap();
    let qloc = sink.quarantine_location().clone();
    let r = PipelineBuilder::new(
        "q",
        source,
        Arc::new(sink),
        Arc::new(InMemoryCheckpointStore::new()),
    )
    .build()
    .unwrap()
    .run()
    .await
    .unwrap();
    assert_eq!(r.rows_quarantined, 1);
    let q = visible(&qloc, &["reason"]).await;
    assert_eq!(
        sorted_rows(&q),
        vec!["| quantity -3 in column quantity is negative |"]
    );
    assert!(
        qloc.url.as_str().ends_with("/orders/_quarantine/"),
        "{}",
        qloc.url
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_and_vacuum_keep_the_rows_and_drop_the_small_files() {
    let dir = tempfile::tempdir().unwrap();
    let loc = TableLocation::local(dir.path().join("t")).unwrap();
    for i in 0..5 {
        append(
            &loc,
            &format!("w{i}"),
            vec![batch(i * 10..i * 10 + 10, "r")],
            DeltaSinkConfig::default(),
        )
        .await
        .unwrap();
    }
    let before = sorted_rows(&visible(&loc, &["id", "name"]).await);
    let c = stratalake_delta::maintenance::compact(&loc, 64)
        .await
        .unwrap();
    assert_eq!((c.files_removed, c.files_added), (5, 1));
    assert_eq!(sorted_rows(&visible(&loc, &["id", "name"]).await), before);
    // Delta refuses a retention under 7 days unless forced.
    let e = stratalake_delta::maintenance::vacuum(&loc, 0, false, false)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{}", e.report());
    let dry = stratalake_delta::maintenance::vacuum(&loc, 0, true, true)
        .await
        .unwrap();
    assert_eq!(dry.files.len(), 5);
    let done = stratalake_delta::maintenance::vacuum(&loc, 0, false, true)
        .await
        .unwrap();
    assert_eq!(done.files.len(), 5);
    assert_eq!(sorted_rows(&visible(&loc, &["id", "name"]).await), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_merges_into_one_table_retry_their_conflicts_and_both_land() {
    let dir = tempfile::tempdir().unwrap();
    let loc = TableLocation::local(dir.path().join("t")).unwrap();
    let merge = || DeltaSinkConfig::default().with_merge(&["id"], None);
    append(&loc, "seed", vec![batch(0..100, "s")], merge())
        .await
        .unwrap();
    // Two writers update overlapping keys at once: when their commits race, the loser's MERGE
    // conflicts, is retried by the runner against the new version, and lands.
    let (a, b) = tokio::join!(
        append(&loc, "a", vec![batch(0..60, "a")], merge()),
        append(&loc, "b", vec![batch(40..100, "b")], merge()),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.rows_written + b.rows_written, 120);
    let rows = sorted_rows(&visible(&loc, &["id", "name"]).await);
    assert_eq!(rows.len(), 100, "one row per key");
    // Keys only one writer touched carry its value; the overlap carries one of the two.
    assert!(rows.iter().any(|r| r.contains("a0 ")));
    assert!(rows.iter().any(|r| r.contains("b99")));
}

/// Two pipelines loading the same new table at once, with overlapping keys: each may find
/// the table empty and take the first-load path (files written without a MERGE); the commit
/// that comes second conflicts with the first, is retried against the table it now finds,
/// and MERGEs, so every key is in the table once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_loads_of_one_table_keep_one_row_per_key() {
    for round in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let loc = TableLocation::local(dir.path().join("t")).unwrap();
        let merge = || DeltaSinkConfig::default().with_merge(&["id"], None);
        let (a, b) = tokio::join!(
            append(&loc, "a", vec![batch(0..600, "a")], merge()),
            append(&loc, "b", vec![batch(400..1000, "b")], merge()),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.rows_written + b.rows_written, 1200, "round {round}");
        let rows = sorted_rows(&visible(&loc, &["id", "name"]).await);
        assert_eq!(rows.len(), 1000, "round {round}: one row per key");
    }
}

/// Files under `<table>/_strata_staging`.
fn staged_files(table: &std::path::Path) -> Vec<std::path::PathBuf> {
    fn walk(d: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                if e.path().is_dir() {
                    walk(&e.path(), out);
                } else {
                    out.push(e.path());
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(&table.join("_strata_staging"), &mut out);
    out
}

/// A MERGE epoch is staged as Parquet files, not held in memory: an epoch far over
/// `merge_memory_megabytes` (64 MB here; ~180 MB of rows) merges (its sort spills), keeps
/// one row per key, and leaves no staging file behind; an aborted epoch's files are deleted
/// too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_epoch_larger_than_its_memory_is_staged_and_merged_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orders");
    let loc = TableLocation::local(&path).unwrap();
    let cfg = DeltaSinkConfig::default()
        .with_merge(&["id"], None)
        .with_merge_memory_megabytes(64)
        .with_target_file_size_megabytes(8);
    let sink = DeltaSink::try_new(loc.clone(), cfg).unwrap();
    let pad = "p".repeat(600);
    let wide = |ids: std::ops::Range<i64>, tag: &str| {
        RecordBatch::try_from_iter(vec![
            (
                "id",
                Arc::new(Int64Array::from_iter_values(ids.clone())) as ArrayRef,
            ),
            (
                "name",
                Arc::new(StringArray::from_iter_values(
                    ids.map(|i| format!("{tag}{i}{pad}")),
                )),
            ),
        ])
        .unwrap()
    };
    let ctx = stratalake_core::Context::new("big");
    // Every key twice in the epoch: the later row wins.
    let n = 150_000;
    let mut w = sink.open(wide(0..1, "a").schema(), &ctx).await.unwrap();
    for start in (0..n).step_by(10_000) {
        w.write(wide(start..start + 10_000, "old")).await.unwrap();
    }
    for start in (0..n).step_by(10_000) {
        w.write(wide(start..start + 10_000, "new")).await.unwrap();
    }
    let p = w.prepare(stratalake_core::Epoch(1)).await.unwrap();
    assert!(
        !staged_files(&path).is_empty(),
        "the epoch is staged in files"
    );
    let m = stratalake_core::CommitMarker::new("big", stratalake_core::Epoch(1), None);
    assert_eq!(
        w.commit(p, &m).await.unwrap(),
        stratalake_core::CommitOutcome::Committed
    );
    assert_eq!(staged_files(&path), Vec::<std::path::PathBuf>::new());
    let rows = visible(&loc, &["id", "name"]).await;
    let total: usize = rows.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(total, n as usize, "one row per key");
    let names = sorted_rows(&rows);
    assert!(
        names.iter().all(|r| r.contains("new")),
        "the later row wins"
    );
    // An aborted epoch leaves nothing staged.
    let mut w = sink.open(wide(0..1, "a").schema(), &ctx).await.unwrap();
    w.write(wide(0..1000, "x")).await.unwrap();
    let p = w.prepare(stratalake_core::Epoch(2)).await.unwrap();
    assert!(!staged_files(&path).is_empty());
    w.abort(Some(p)).await.unwrap();
    assert_eq!(staged_files(&path), Vec::<std::path::PathBuf>::new());
}
