//! The sink against fakesnow: conformance, every Arrow type, MERGE semantics, schema drift.

mod common;

use arrow_array::builder::{Int64Builder, ListBuilder};
use arrow_array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, DictionaryArray,
    Float32Array, Float64Array, Int8Array, Int16Array, Int32Array, Int64Array, LargeStringArray,
    RecordBatch, StringArray, StructArray, Time64MicrosecondArray, TimestampMicrosecondArray,
    TimestampMillisecondArray, UInt8Array, UInt16Array, UInt32Array, UInt64Array,
};
use arrow_schema::{DataType, Field};
use async_trait::async_trait;
use std::sync::Arc;
use stratalake_core::{CommitMarker, CommitOutcome, Context, Epoch, ErrorKind, Sink};
use stratalake_snowflake::sink::{
    DeleteWhen, LoadMethod, SchemaEvolution, SnowflakeSink, SnowflakeSinkConfig, WriteMode,
};
use stratalake_testkit::assert::{sorted_rows, table_lines};
use stratalake_testkit::{SinkFixture, check_sink};

fn sample(range: std::ops::Range<i64>, tag: &str) -> RecordBatch {
    RecordBatch::try_from_iter(vec![
        (
            "id",
            Arc::new(Int64Array::from_iter_values(range.clone())) as ArrayRef,
        ),
        (
            "tag",
            Arc::new(StringArray::from_iter_values(
                range.map(|i| format!("{tag}{i}")),
            )),
        ),
    ])
    .unwrap()
}

struct Fix {
    db: String,
    cfg: SnowflakeSinkConfig,
}

#[async_trait]
impl SinkFixture for Fix {
    async fn sink(&self) -> Arc<dyn Sink> {
        Arc::new(SnowflakeSink::try_new(self.cfg.clone()).unwrap())
    }
    async fn visible(&self) -> Vec<RecordBatch> {
        let c = common::session(&self.db).await;
        match c
            .query(&format!(
                "SELECT * FROM {}.PUBLIC.{}",
                self.db, self.cfg.table
            ))
            .await
        {
            Ok(r) => r.batches,
            Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("{}", e.report()),
        }
    }
}

async fn write(
    sink: &SnowflakeSink,
    pid: &str,
    epoch: u64,
    batches: Vec<RecordBatch>,
) -> CommitOutcome {
    let ctx = Context::new(pid);
    let mut w = sink.open(batches[0].schema(), &ctx).await.unwrap();
    for b in batches {
        w.write(b).await.unwrap();
    }
    let p = w.prepare(Epoch(epoch)).await.unwrap();
    w.commit(p, &CommitMarker::new(pid, Epoch(epoch), None))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_copy_sink_passes_the_conformance_suite() {
    let db = common::unique("conf");
    let cfg =
        SnowflakeSinkConfig::new(common::config(&db), "TARGET").with_target_file_size_megabytes(1);
    check_sink(
        &Fix { db, cfg },
        vec![sample(0..700, "a"), sample(700..1500, "b")],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_insert_sink_passes_the_conformance_suite() {
    let db = common::unique("confins");
    let cfg =
        SnowflakeSinkConfig::new(common::config(&db), "TARGET").with_load(LoadMethod::Insert {
            rows_per_statement: 500,
        });
    check_sink(
        &Fix { db, cfg },
        vec![sample(0..300, "a"), sample(300..600, "b")],
    )
    .await;
}

/// One row of every Arrow type Strata produces, and a row of NULLs.
fn every_type() -> RecordBatch {
    let mut list = ListBuilder::new(Int64Builder::new());
    list.values().append_value(1);
    list.values().append_value(2);
    list.append(true);
    list.append(false);
    let addr = StructArray::try_new(
        vec![
            Field::new("city", DataType::Utf8, true),
            Field::new("zip", DataType::Int32, true),
        ]
        .into(),
        vec![
            Arc::new(StringArray::from(vec![Some("Berlin"), None])) as ArrayRef,
            Arc::new(Int32Array::from(vec![Some(10115), None])) as ArrayRef,
        ],
        Some(arrow_buffer::NullBuffer::from(vec![true, false])),
    )
    .unwrap();
    let dict: DictionaryArray<arrow_array::types::Int32Type> =
        vec![Some("paid"), None].into_iter().collect();
    RecordBatch::try_from_iter(vec![
        ("id", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
        ("b", Arc::new(BooleanArray::from(vec![Some(true), None]))),
        ("i8", Arc::new(Int8Array::from(vec![Some(-8), None]))),
        ("i16", Arc::new(Int16Array::from(vec![Some(-16), None]))),
        ("i32", Arc::new(Int32Array::from(vec![Some(-32), None]))),
        ("u8", Arc::new(UInt8Array::from(vec![Some(8), None]))),
        ("u16", Arc::new(UInt16Array::from(vec![Some(16), None]))),
        ("u32", Arc::new(UInt32Array::from(vec![Some(32), None]))),
        (
            "u64",
            Arc::new(UInt64Array::from(vec![Some(u64::MAX), None])),
        ),
        ("f32", Arc::new(Float32Array::from(vec![Some(1.5), None]))),
        ("f64", Arc::new(Float64Array::from(vec![Some(-2.25), None]))),
        (
            "dec",
            Arc::new(
                Decimal128Array::from(vec![Some(123456), None])
                    .with_precision_and_scale(14, 2)
                    .unwrap(),
            ),
        ),
        (
            "s",
            Arc::new(StringArray::from(vec![Some("Grüße, 'quoted'"), None])),
        ),
        (
            "ls",
            Arc::new(LargeStringArray::from(vec![Some("large"), None])),
        ),
        (
            "bin",
            Arc::new(BinaryArray::from(vec![Some(&b"\x00\xff"[..]), None])),
        ),
        ("d", Arc::new(Date32Array::from(vec![Some(19_675), None]))),
        (
            "t",
            Arc::new(Time64MicrosecondArray::from(vec![
                Some(3_723_500_000),
                None,
            ])),
        ),
        (
            "ts_utc",
            Arc::new(
                TimestampMicrosecondArray::from(vec![Some(1_700_000_000_123_456), None])
                    .with_timezone("+00:00"),
            ),
        ),
        (
            "ts_ntz",
            Arc::new(TimestampMillisecondArray::from(vec![
                Some(1_700_000_000_123),
                None,
            ])),
        ),
        ("status", Arc::new(dict)),
        ("lines", Arc::new(list.finish())),
        ("address", Arc::new(addr)),
    ])
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_arrow_type_round_trips() {
    let db = common::unique("types");
    for (load, table) in [
        (LoadMethod::Copy, "COPIED"),
        (
            LoadMethod::Insert {
                rows_per_statement: 10,
            },
            "INSERTED",
        ),
    ] {
        let sink = SnowflakeSink::try_new(
            SnowflakeSinkConfig::new(common::config(&db), table).with_load(load),
        )
        .unwrap();
        assert_eq!(
            write(&sink, &format!("types-{table}"), 1, vec![every_type()]).await,
            CommitOutcome::Committed
        );
        let c = common::session(&db).await;
        let r = c
            .query(&format!("SELECT * FROM {table} ORDER BY ID"))
            .await
            .unwrap();
        let lines = table_lines(&r.batches);
        let types: Vec<String> = r
            .rowtype
            .iter()
            .map(|m| format!("{}:{}", m.name, m.kind))
            .collect();
        assert_eq!(
            types.join(" "),
            "ID:fixed B:boolean I8:fixed I16:fixed I32:fixed U8:fixed U16:fixed U32:fixed U64:fixed F32:real F64:real DEC:fixed S:text LS:text BIN:binary D:date T:time TS_UTC:timestamp_tz TS_NTZ:timestamp_ntz STATUS:text LINES:variant ADDRESS:variant",
            "{table}"
        );
        assert_eq!(
            lines,
            vec![
                "+----+------+----+-----+-----+----+-----+-----+----------------------+-----+-------+---------+-----------------+-------+------+------------+--------------+-----------------------------+-------------------------+--------+-------+-------------------------------+",
                "| ID | B    | I8 | I16 | I32 | U8 | U16 | U32 | U64                  | F32 | F64   | DEC     | S               | LS    | BIN  | D          | T            | TS_UTC                      | TS_NTZ                  | STATUS | LINES | ADDRESS                       |",
                "+----+------+----+-----+-----+----+-----+-----+----------------------+-----+-------+---------+-----------------+-------+------+------------+--------------+-----------------------------+-------------------------+--------+-------+-------------------------------+",
                "| 1  | true | -8 | -16 | -32 | 8  | 16  | 32  | 18446744073709551615 | 1.5 | -2.25 | 1234.56 | Grüße, 'quoted' | large | 00ff | 2023-11-14 | 01:02:03.500 | 2023-11-14T22:13:20.123456Z | 2023-11-14T22:13:20.123 | paid   | [1,2] | {\"city\":\"Berlin\",\"zip\":10115} |",
                "| 2  |      |    |     |     |    |     |     |                      |     |       |         |                 |       |      |            |              |                             |                         |        |       |                               |",
                "+----+------+----+-----+-----+----+-----+-----+----------------------+-----+-------+---------+-----------------+-------+------+------------+--------------+-----------------------------+-------------------------+--------+-------+-------------------------------+",
            ],
            "{table}"
        );
    }
}

fn versioned(rows: &[(i64, &str, i64, &str)]) -> RecordBatch {
    RecordBatch::try_from_iter(vec![
        (
            "id",
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
        ),
        (
            "v",
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
        ),
        (
            "version",
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ),
        (
            "_op",
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.3))),
        ),
    ])
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_keeps_the_newest_version_applies_deletes_and_replays_nothing() {
    let db = common::unique("merge");
    let cfg =
        SnowflakeSinkConfig::new(common::config(&db), "CUSTOMERS").with_write(WriteMode::Merge {
            key: vec!["id".into()],
            version_column: Some("version".into()),
            delete_when: Some(DeleteWhen::new("_op", "delete")),
        });
    let sink = SnowflakeSink::try_new(cfg.clone()).unwrap();
    let e1 = versioned(&[
        (1, "a1", 1, "upsert"),
        (1, "a2", 2, "upsert"),
        (2, "b1", 1, "upsert"),
        (3, "c1", 5, "upsert"),
    ]);
    assert_eq!(
        write(&sink, "m", 1, vec![e1.clone()]).await,
        CommitOutcome::Committed
    );
    // Epoch 2: a late (older) version of 3 is ignored, 2 is deleted, 4 is new, 1 updated.
    let e2 = versioned(&[
        (3, "c0", 4, "upsert"),
        (2, "", 2, "delete"),
        (4, "d1", 1, "upsert"),
        (1, "a3", 3, "upsert"),
    ]);
    assert_eq!(
        write(&sink, "m", 2, vec![e2.clone()]).await,
        CommitOutcome::Committed
    );
    let expect = vec![
        "| 1  | a3 | 3       |",
        "| 3  | c1 | 5       |",
        "| 4  | d1 | 1       |",
    ];
    let c = common::session(&db).await;
    let rows = sorted_rows(&c.query("SELECT * FROM CUSTOMERS").await.unwrap().batches);
    assert_eq!(rows, expect, "the _op column is not stored");
    // A replay of both epochs (a rerun after a kill) is recognised and changes nothing.
    let fresh = SnowflakeSink::try_new(cfg).unwrap();
    assert_eq!(
        write(&fresh, "m", 1, vec![e1]).await,
        CommitOutcome::AlreadyCommitted
    );
    assert_eq!(
        write(&fresh, "m", 2, vec![e2]).await,
        CommitOutcome::AlreadyCommitted
    );
    let rows = sorted_rows(&c.query("SELECT * FROM CUSTOMERS").await.unwrap().batches);
    assert_eq!(rows, expect);
    let marker = fresh
        .last_committed("m", &Context::new("m"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(marker.epoch, Epoch(2));
    // No staging table is left.
    let t = c
        .query(&format!(
            "SELECT TABLE_NAME FROM {db}.INFORMATION_SCHEMA.TABLES WHERE TABLE_NAME LIKE '%__STG_%'"
        ))
        .await
        .unwrap();
    assert_eq!(t.num_rows(), 0, "{:?}", table_lines(&t.batches));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_drift_follows_the_policy() {
    let db = common::unique("drift");
    let base = sample(0..2, "a");
    let wider = RecordBatch::try_from_iter(vec![
        ("id", Arc::new(Int64Array::from(vec![10, 11])) as ArrayRef),
        ("tag", Arc::new(StringArray::from(vec!["n10", "n11"]))),
        (
            "loyalty_tier",
            Arc::new(StringArray::from(vec!["gold", "silver"])),
        ),
    ])
    .unwrap();
    let c = common::session(&db).await;
    for (policy, table) in [
        (SchemaEvolution::AddColumns, "ADDS"),
        (SchemaEvolution::Discard, "DISCARDS"),
        (SchemaEvolution::Freeze, "FREEZES"),
    ] {
        let sink = SnowflakeSink::try_new(
            SnowflakeSinkConfig::new(common::config(&db), table).with_schema_evolution(policy),
        )
        .unwrap();
        write(&sink, table, 1, vec![base.clone()]).await;
        if policy == SchemaEvolution::Freeze {
            let Err(e) = sink.open(wider.schema(), &Context::new(table)).await else {
                panic!("a frozen schema refuses new columns")
            };
            assert_eq!(e.kind(), ErrorKind::Schema);
            assert!(
                e.message().contains("loyalty_tier") && e.message().contains("FREEZES"),
                "{}",
                e.message()
            );
            continue;
        }
        write(&sink, table, 2, vec![wider.clone()]).await;
        let r = c
            .query(&format!("SELECT * FROM {table} ORDER BY ID"))
            .await
            .unwrap();
        let lines = table_lines(&r.batches).join("\n");
        if policy == SchemaEvolution::AddColumns {
            assert!(lines.contains("| 11 | n11 | silver       |"), "{lines}");
            assert!(lines.contains("| 0  | a0  |              |"), "{lines}");
        } else {
            assert_eq!(r.schema.fields().len(), 2, "{lines}");
            assert!(lines.contains("| 11 | n11 |"), "{lines}");
        }
    }
}

/// Two runs of one pipeline planned the same epoch from the same checkpoint, with other data
/// (a later end cursor): their commits race. One applies its rows; every other one gets a
/// retryable Conflict and applies nothing (on Snowflake the loser waits on the lock row and
/// then sees the winner's control row; on fakesnow DuckDB refuses the second UPDATE of the
/// lock row, answered as Snowflake's lock error 000625). A commit of the same epoch with the
/// same cursor afterwards is AlreadyCommitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_of_one_epoch_apply_it_once_and_the_losers_get_a_conflict() {
    let db = common::unique("race");
    let cfg = SnowflakeSinkConfig::new(common::config(&db), "TARGET")
        .with_write(WriteMode::Append)
        .with_target_file_size_megabytes(1);
    let pid = "race";
    let ctx = Context::new(pid);
    let runs = 4usize;
    let mut prepared = Vec::new();
    for run in 0..runs {
        let sink = SnowflakeSink::try_new(cfg.clone()).unwrap();
        let b = sample(0..(100 + run as i64), &format!("run{run}-"));
        let mut w = sink.open(b.schema(), &ctx).await.unwrap();
        w.write(b).await.unwrap();
        let p = w.prepare(Epoch(1)).await.unwrap();
        prepared.push((run, sink, w, p));
    }
    let mut set = tokio::task::JoinSet::new();
    for (run, sink, mut w, p) in prepared {
        set.spawn(async move {
            let marker = CommitMarker::new(
                "race",
                Epoch(1),
                Some(stratalake_core::Cursor::new(format!("end-{run}"))),
            );
            let r = w.commit(p, &marker).await;
            drop(sink);
            (run, r)
        });
    }
    let mut winners = Vec::new();
    let mut conflicts = 0;
    while let Some(done) = set.join_next().await {
        let (run, r) = done.unwrap();
        match r {
            Ok(CommitOutcome::Committed) => winners.push(run),
            Err(e) if e.kind() == ErrorKind::Conflict => {
                assert!(e.is_retryable(), "{}", e.report());
                conflicts += 1;
            }
            other => panic!("run {run}: unexpected {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one run commits epoch 1");
    assert_eq!(conflicts, runs - 1);
    let winner = winners[0];
    let c = common::session(&db).await;
    let rows = c
        .query(&format!(
            "SELECT COUNT(*) AS N, MIN(TAG) AS T FROM {db}.PUBLIC.TARGET"
        ))
        .await
        .unwrap();
    assert_eq!(
        table_lines(&rows.batches),
        table_lines(
            &c.query(&format!(
                "SELECT {} AS N, 'run{winner}-0' AS T",
                100 + winner
            ))
            .await
            .unwrap()
            .batches
        ),
        "the target holds the winner's rows only"
    );
    let control = c
        .query(&format!(
            "SELECT EPOCH, CURSOR FROM {db}.PUBLIC._STRATA_COMMITS WHERE PIPELINE_ID = 'race'"
        ))
        .await
        .unwrap();
    assert_eq!(
        control
            .batches
            .iter()
            .map(RecordBatch::num_rows)
            .sum::<usize>(),
        1,
        "one control row"
    );
    // The winner's commit retried (its answer lost) is recognised; the sink reports it.
    let sink = SnowflakeSink::try_new(cfg.clone()).unwrap();
    let mark = sink.last_committed(pid, &ctx).await.unwrap().unwrap();
    assert_eq!(mark.epoch, Epoch(1));
    assert_eq!(
        mark.cursor.as_ref().map(stratalake_core::Cursor::as_str),
        Some(format!("end-{winner}").as_str())
    );
    let b = sample(0..(100 + winner as i64), "again-");
    let mut w = sink.open(b.schema(), &ctx).await.unwrap();
    w.write(b).await.unwrap();
    let p = w.prepare(Epoch(1)).await.unwrap();
    let again = w
        .commit(
            p,
            &CommitMarker::new(
                pid,
                Epoch(1),
                Some(stratalake_core::Cursor::new(format!("end-{winner}"))),
            ),
        )
        .await
        .unwrap();
    assert_eq!(again, CommitOutcome::AlreadyCommitted);
}

/// A process killed inside its commit transaction leaves the transaction open in its session
/// (detached, on Snowflake), holding the pipeline's lock row. A rerun's commit is then a
/// retryable Conflict that says how to end the old transaction, and applies nothing; once the
/// old transaction ends (rolled back here, aborted or expired on Snowflake) the rerun commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_transaction_left_open_makes_the_rerun_a_conflict_until_it_ends() {
    let db = common::unique("detached");
    let cfg = SnowflakeSinkConfig::new(common::config(&db), "TARGET").with_write(WriteMode::Append);
    let pid = "detached";
    let ctx = Context::new(pid);
    let sink = SnowflakeSink::try_new(cfg.clone()).unwrap();
    // Opening a writer makes the pipeline's lock row.
    let b = sample(0..10, "x");
    let mut w = sink.open(b.schema(), &ctx).await.unwrap();
    w.write(b).await.unwrap();
    let p = w.prepare(Epoch(1)).await.unwrap();
    // The killed run's session: inside its commit transaction, the lock taken.
    let killed = common::session(&db).await;
    killed.query("BEGIN").await.unwrap();
    killed
        .query(&format!(
            "UPDATE {db}.PUBLIC._STRATA_COMMITS_LOCKS SET LOCKED_AT = CURRENT_TIMESTAMP() WHERE PIPELINE_ID = '{pid}'"
        ))
        .await
        .unwrap();
    let marker = CommitMarker::new(pid, Epoch(1), None);
    let e = w.commit(p.clone(), &marker).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{}", e.report());
    assert!(e.is_retryable());
    assert!(e.report().contains("SHOW TRANSACTIONS"), "{}", e.report());
    let c = common::session(&db).await;
    let n = c
        .query(&format!("SELECT COUNT(*) AS N FROM {db}.PUBLIC.TARGET"))
        .await
        .unwrap();
    assert_eq!(table_lines(&n.batches)[3], "| 0 |", "nothing applied");
    killed.query("ROLLBACK").await.unwrap();
    let b = sample(0..10, "x");
    let mut w = sink.open(b.schema(), &ctx).await.unwrap();
    w.write(b).await.unwrap();
    let p = w.prepare(Epoch(1)).await.unwrap();
    assert_eq!(
        w.commit(p, &marker).await.unwrap(),
        CommitOutcome::Committed
    );
    let n = c
        .query(&format!("SELECT COUNT(*) AS N FROM {db}.PUBLIC.TARGET"))
        .await
        .unwrap();
    assert_eq!(table_lines(&n.batches)[3], "| 10 |");
}
