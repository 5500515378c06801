//! Change-stream CDC and the MongoDB sink against SecantusDB (started by `scripts/services.sh`:
//! 27017, and 27019 with a 300-entry oplog for lost history; a missing server fails loudly).

use arrow_array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use async_trait::async_trait;
use bson::{Document, doc, oid::ObjectId};
use std::sync::Arc;
use stratalake_core::{CheckpointStore, ErrorKind, InMemoryCheckpointStore, PipelineBuilder, Sink};
use stratalake_mongodb::{
    ChangeStreamConfig, DeleteWhen, HistoryLostPolicy, MongoSink, MongoSinkConfig, MongoSource,
    MongoSourceConfig,
};
use stratalake_records::SchemaSource;
use stratalake_testkit::assert::{sorted_rows, table_lines};
use stratalake_testkit::{MemorySink, MemorySource, SinkFixture, check_sink};

const MAIN: &str = "mongodb://127.0.0.1:27017/?directConnection=true";
const SMALL_OPLOG: &str = "mongodb://127.0.0.1:27019/?directConnection=true";

fn unique(name: &str) -> String {
    format!("{name}_{}", ObjectId::new().to_hex())
}

async fn coll(uri: &str, db: &str, name: &str) -> mongodb::Collection<Document> {
    let client = mongodb::Client::with_uri_str(uri).await.unwrap();
    client.database(db).collection(name)
}

async fn insert(uri: &str, db: &str, name: &str, docs: Vec<Document>) {
    let c = coll(uri, db, name).await;
    for chunk in docs.chunks(1000) {
        c.insert_many(chunk.to_vec()).await.unwrap_or_else(|e| {
            panic!("cannot write to MongoDB at {uri}: {e}. Start it: scripts/services.sh install && scripts/services.sh start")
        });
    }
}

fn cdc_config(uri: &str, db: &str) -> MongoSourceConfig {
    let mut cfg = MongoSourceConfig::new(uri, db, "c");
    cfg.schema = SchemaSource::explicit([("_id", "int64 not null"), ("a", "int64")]);
    cfg.change_stream = Some(ChangeStreamConfig::default());
    cfg
}

/// The named columns of `batches`, in order, as table lines.
fn columns(batches: &[RecordBatch], names: &[&str]) -> Vec<String> {
    let projected: Vec<RecordBatch> = batches
        .iter()
        .map(|b| {
            let idx: Vec<usize> = names
                .iter()
                .map(|n| b.schema().index_of(n).unwrap())
                .collect();
            b.project(&idx).unwrap()
        })
        .collect();
    table_lines(&projected)
}

fn cluster_times(batches: &[RecordBatch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b.column_by_name("_cluster_time").unwrap();
            let c = c.as_any().downcast_ref::<Int64Array>().unwrap();
            c.iter().map(|v| v.unwrap()).collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_stream_snapshots_then_reads_inserts_updates_replaces_and_deletes_in_order() {
    let db = unique("cdc");
    insert(
        MAIN,
        &db,
        "c",
        (0..3)
            .map(|i| doc! {"_id": i as i64, "a": i as i64})
            .collect(),
    )
    .await;
    let store = Arc::new(InMemoryCheckpointStore::new());
    let pipeline = |sink: MemorySink| {
        let (db, store) = (db.clone(), store.clone());
        async move {
            let source = MongoSource::try_new(cdc_config(MAIN, &db)).await.unwrap();
            PipelineBuilder::new("cdc", Arc::new(source), Arc::new(sink), store)
                .build()
                .unwrap()
        }
    };
    // One destination across runs (the sink's marker is authoritative); each run's batches are
    // the ones after the previous run's.
    let sink = MemorySink::new();
    let new_batches = |seen: &mut usize| {
        let all = sink.visible();
        let out = all[*seen..].to_vec();
        *seen = all.len();
        out
    };
    let mut seen = 0;
    let r = pipeline(sink.clone()).await.run().await.unwrap();
    assert_eq!(r.rows_written, 3);
    let projected: Vec<RecordBatch> = new_batches(&mut seen)
        .iter()
        .map(|b| b.project(&[0, 2, 1]).unwrap())
        .collect();
    assert_eq!(
        sorted_rows(&projected),
        vec![
            "| 0   | snapshot | 0 |",
            "| 1   | snapshot | 1 |",
            "| 2   | snapshot | 2 |"
        ]
    );

    let c = coll(MAIN, &db, "c").await;
    c.insert_one(doc! {"_id": 10_i64, "a": 10_i64})
        .await
        .unwrap();
    c.update_one(
        doc! {"_id": 1_i64},
        doc! {"$set": {"a": 100_i64}, "$unset": {"gone": ""}},
    )
    .await
    .unwrap();
    c.replace_one(doc! {"_id": 2_i64}, doc! {"a": 200_i64})
        .await
        .unwrap();
    c.delete_one(doc! {"_id": 0_i64}).await.unwrap();

    // A new process: the stream resumes from the committed token.
    let r = pipeline(sink.clone()).await.run().await.unwrap();
    assert_eq!(r.rows_written, 4);
    let got = new_batches(&mut seen);
    assert_eq!(
        columns(
            &got,
            &["_id", "_op", "a", "_updated_fields", "_removed_fields"]
        ),
        vec![
            "+-----+---------+-----+-----------------+-----------------+",
            "| _id | _op     | a   | _updated_fields | _removed_fields |",
            "+-----+---------+-----+-----------------+-----------------+",
            "| 10  | insert  | 10  |                 |                 |",
            "| 1   | update  | 100 | {\"a\":100}       | []              |",
            "| 2   | replace | 200 |                 |                 |",
            "| 0   | delete  |     |                 |                 |",
            "+-----+---------+-----+-----------------+-----------------+",
        ]
    );
    let times = cluster_times(&got);
    assert!(
        times.windows(2).all(|w| w[0] < w[1]),
        "events in cluster-time order: {times:?}"
    );

    // Nothing new: an epoch with no rows; the changes are not read twice.
    let r = pipeline(sink.clone()).await.run().await.unwrap();
    assert_eq!(r.rows_written, 0);
    new_batches(&mut seen);
    c.insert_one(doc! {"_id": 11_i64, "a": 11_i64})
        .await
        .unwrap();
    let r = pipeline(sink.clone()).await.run().await.unwrap();
    assert_eq!(r.rows_written, 1);
    assert_eq!(
        columns(&new_batches(&mut seen), &["_id", "_op"]),
        vec![
            "+-----+--------+",
            "| _id | _op    |",
            "+-----+--------+",
            "| 11  | insert |",
            "+-----+--------+"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_token_whose_history_is_gone_is_an_error_or_a_new_snapshot_by_policy() {
    let db = unique("lost");
    insert(
        SMALL_OPLOG,
        &db,
        "c",
        (0..5).map(|i| doc! {"_id": i as i64, "a": 1_i64}).collect(),
    )
    .await;
    let store: Arc<dyn CheckpointStore> = Arc::new(InMemoryCheckpointStore::new());
    let sink = MemorySink::new();
    let run = |cfg: MongoSourceConfig| {
        let (store, sink) = (store.clone(), sink.clone());
        async move {
            let source = MongoSource::try_new(cfg).await?;
            PipelineBuilder::new("lost", Arc::new(source), Arc::new(sink), store)
                .build()?
                .run()
                .await
        }
    };
    assert_eq!(
        run(cdc_config(SMALL_OPLOG, &db))
            .await
            .unwrap()
            .rows_written,
        5
    );
    insert(SMALL_OPLOG, &db, "c", vec![doc! {"_id": 5_i64, "a": 2_i64}]).await;
    assert_eq!(
        run(cdc_config(SMALL_OPLOG, &db))
            .await
            .unwrap()
            .rows_written,
        1
    );
    // 1,500 more writes: the server (300 oplog entries) prunes the history after the token.
    insert(
        SMALL_OPLOG,
        &db,
        "c",
        (100..1600)
            .map(|i| doc! {"_id": i as i64, "a": 3_i64})
            .collect(),
    )
    .await;
    let e = run(cdc_config(SMALL_OPLOG, &db)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{}", e.report());
    let report = e.report();
    assert!(
        report.contains("no longer in the server's oplog"),
        "{report}"
    );
    assert!(report.contains(&format!("{db}.c")), "{report}");
    assert!(
        report.contains("on_history_lost"),
        "the error says what to do: {report}"
    );
    assert_eq!(
        sink.visible_rows(),
        6,
        "nothing was written by the failed run"
    );

    // By policy: read the collection again and go on from there.
    let mut cfg = cdc_config(SMALL_OPLOG, &db);
    cfg.change_stream =
        Some(ChangeStreamConfig::default().with_on_history_lost(HistoryLostPolicy::Snapshot));
    let r = run(cfg.clone()).await.unwrap();
    assert_eq!(r.rows_written, 1506);
    insert(
        SMALL_OPLOG,
        &db,
        "c",
        vec![doc! {"_id": 7000_i64, "a": 4_i64}],
    )
    .await;
    assert_eq!(run(cfg).await.unwrap().rows_written, 1);
}

// ---- the sink ----

fn sample(ids: std::ops::Range<i64>, tag: &str) -> RecordBatch {
    let n = ids.clone().count();
    RecordBatch::try_from_iter(vec![
        (
            "id",
            Arc::new(Int64Array::from_iter_values(ids.clone())) as ArrayRef,
        ),
        (
            "name",
            Arc::new(StringArray::from_iter_values(
                ids.clone().map(|i| format!("{tag}{i}")),
            )),
        ),
        (
            "amount",
            Arc::new(Float64Array::from_iter_values(
                ids.clone().map(|i| i as f64 * 1.5),
            )),
        ),
        ("ok", Arc::new(BooleanArray::from(vec![true; n]))),
        (
            "at",
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    ids.map(|i| 1_704_067_200_000_000 + i * 1000),
                )
                .with_timezone("+00:00"),
            ),
        ),
    ])
    .unwrap()
}

fn sample_schema() -> SchemaSource {
    SchemaSource::explicit([
        ("id", "int64"),
        ("name", "utf8"),
        ("amount", "float64"),
        ("ok", "boolean"),
        ("at", "timestamp"),
    ])
}

/// What readers of `db.name` see, read back through the source.
async fn read_back(db: &str, name: &str) -> Vec<RecordBatch> {
    let mut cfg = MongoSourceConfig::new(MAIN, db, name);
    cfg.schema = sample_schema();
    let source = match MongoSource::try_new(cfg).await {
        Ok(s) => s,
        Err(e) if e.kind() == ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("{}", e.report()),
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
}

struct SinkFix {
    db: String,
}

#[async_trait]
impl SinkFixture for SinkFix {
    async fn sink(&self) -> Arc<dyn Sink> {
        Arc::new(
            MongoSink::try_new(MongoSinkConfig::new(MAIN, &self.db, "target"))
                .await
                .unwrap(),
        )
    }
    async fn visible(&self) -> Vec<RecordBatch> {
        read_back(&self.db, "target").await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mongodb_sink_passes_the_conformance_suite() {
    let db = unique("sinkconf");
    check_sink(
        &SinkFix { db: db.clone() },
        vec![sample(0..700, "a"), sample(700..1500, "b")],
    )
    .await;
    // Every staging collection is gone once its epoch is committed or aborted.
    let client = mongodb::Client::with_uri_str(MAIN).await.unwrap();
    let names = client.database(&db).list_collection_names().await.unwrap();
    let staging: Vec<_> = names
        .iter()
        .filter(|n| n.contains("_strata_staging"))
        .collect();
    // The suite's killed writers leave theirs behind: claimed by no intent, they are dropped
    // by the next open once abandoned.
    assert!(!staging.is_empty());
    let sink =
        MongoSink::try_new(MongoSinkConfig::new(MAIN, &db, "target").with_abandoned_after_secs(0))
            .await
            .unwrap();
    let ctx = stratalake_core::Context::new("cleanup");
    let mut w = sink.open(sample(0..1, "x").schema(), &ctx).await.unwrap();
    w.abort(None).await.unwrap();
    let names = client.database(&db).list_collection_names().await.unwrap();
    assert!(
        !names.iter().any(|n| n.contains("_strata_staging")),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upserts_keep_the_newest_version_per_key_and_apply_deletes() {
    let db = unique("upsert");
    let cfg = MongoSinkConfig::new(MAIN, &db, "customers")
        .with_upsert(&["id"], Some(DeleteWhen::new("_op", "delete")))
        .with_version_column("v");
    let rows = |ids: &[i64], names: &[&str], ops: &[&str], v: &[i64]| {
        RecordBatch::try_from_iter(vec![
            ("id", Arc::new(Int64Array::from(ids.to_vec())) as ArrayRef),
            ("name", Arc::new(StringArray::from(names.to_vec()))),
            ("_op", Arc::new(StringArray::from(ops.to_vec()))),
            ("v", Arc::new(Int64Array::from(v.to_vec()))),
        ])
        .unwrap()
    };
    let store: Arc<dyn CheckpointStore> = Arc::new(InMemoryCheckpointStore::new());
    let source = Arc::new(MemorySource::new(
        rows(&[1], &["x"], &["insert"], &[0]).schema(),
    ));
    let sink = Arc::new(MongoSink::try_new(cfg).await.unwrap());
    let p = PipelineBuilder::new("upsert", source.clone(), sink, store)
        .build()
        .unwrap();
    source.append([rows(
        &[1, 2, 3],
        &["ann", "bob", "cid"],
        &["insert"; 3],
        &[1, 1, 1],
    )]);
    p.run().await.unwrap();
    // One epoch in two batches (read in parallel, in no order): id 1 updated twice (version 3
    // wins), id 2 deleted, id 3 deleted then inserted again.
    source.append([
        rows(
            &[1, 2, 3],
            &["ann2", "bob", "cid"],
            &["update", "delete", "delete"],
            &[2, 2, 2],
        ),
        rows(
            &[1, 3, 4],
            &["ann3", "cid2", "dan"],
            &["update", "insert", "insert"],
            &[3, 3, 1],
        ),
    ]);
    p.run().await.unwrap();
    // Late rows: an older update and an older delete change nothing.
    source.append([rows(
        &[1, 4],
        &["ann-late", "dan"],
        &["update", "delete"],
        &[2, 0],
    )]);
    p.run().await.unwrap();
    let c = coll(MAIN, &db, "customers").await;
    let mut got: Vec<(i64, String)> = Vec::new();
    let mut cur = c.find(doc! {}).sort(doc! {"id": 1}).await.unwrap();
    while cur.advance().await.unwrap() {
        let d = cur.deserialize_current().unwrap();
        got.push((
            d.get_i64("id").unwrap(),
            d.get_str("name").unwrap().to_string(),
        ));
    }
    assert_eq!(
        got,
        vec![(1, "ann3".into()), (3, "cid2".into()), (4, "dan".into())]
    );
    // The key has a unique index, so two writers can never create duplicates.
    let idx = c.list_index_names().await.unwrap();
    assert!(idx.iter().any(|i| i.starts_with("id_")), "{idx:?}");
    // Replaying the same epochs changes nothing (exactly once through the control collection).
    let ctl = coll(MAIN, &db, "_strata_commits").await;
    let d = ctl.find_one(doc! {"_id": "upsert"}).await.unwrap().unwrap();
    assert_eq!(d.get_i64("epoch").unwrap(), 3);
    assert!(d.get("pending").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_without_its_key_is_a_clear_error() {
    let db = unique("nokey");
    let sink = MongoSink::try_new(MongoSinkConfig::new(MAIN, &db, "t").with_upsert(&["id"], None))
        .await
        .unwrap();
    let batch = RecordBatch::try_from_iter(vec![(
        "id",
        Arc::new(Int64Array::from(vec![Some(1), None])) as ArrayRef,
    )])
    .unwrap();
    let ctx = stratalake_core::Context::new("nokey");
    let mut w = sink.open(batch.schema(), &ctx).await.unwrap();
    let e = w.write(batch).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Data);
    assert_eq!(e.context_value("column"), Some("id"));
    assert_eq!(e.context_value("row"), Some("1"));
    w.abort(None).await.unwrap();
    // A key column missing from the rows is refused at open.
    let other = RecordBatch::try_from_iter(vec![(
        "name",
        Arc::new(StringArray::from(vec!["x"])) as ArrayRef,
    )])
    .unwrap();
    let e = sink.open(other.schema(), &ctx).await.err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Schema);
    assert_eq!(e.context_value("column"), Some("id"));
    assert!(!format!("{sink:?}").contains("mongodb://"));
}
