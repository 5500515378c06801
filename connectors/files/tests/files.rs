//! stratalake-files against local disk: conformance, property tests, quarantine, compression,
//! incremental pickup, exactly-once Parquet.

use arrow_array::RecordBatch;
use proptest::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use stratalake_core::{
    CheckpointStore, Context, Epoch, ErrorKind, PipelineBuilder, ReadRequest, RunOptions,
    RunOutcome, Sink, Source,
};
use stratalake_files::{
    ColumnSpec, CsvOptions, FileSource, FileSourceConfig, Format, ObjectStoreCheckpointStore,
    ParquetSink, ParquetSinkConfig, SchemaSource, StoreLocation, TypeDriftPolicy,
};
use stratalake_testkit::assert::sorted_rows;
use stratalake_testkit::{MemorySink, SinkFixture, SourceFixture, check_sink, check_source};

fn orders_ndjson(n: usize, bad_every: usize) -> (String, usize, Vec<usize>) {
    let mut s = String::new();
    let mut good = 0;
    let mut bad_lines = Vec::new();
    for i in 0..n {
        if bad_every > 0 && i % bad_every == bad_every - 1 {
            s.push_str(&format!("{{\"order_id\": {i}, \"qty\": \n"));
            bad_lines.push(i + 1);
        } else {
            s.push_str(&format!(
                "{{\"order_id\":{i},\"customer\":\"c{}\",\"qty\":{},\"amount\":{}.5,\"at\":\"2024-03-0{}T10:00:00+02:00\",\"lines\":[{{\"sku\":\"s{}\",\"q\":1}}]}}\n",
                i % 7,
                i % 5,
                i,
                1 + i % 9,
                i % 3
            ));
            good += 1;
        }
    }
    (s, good, bad_lines)
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, data).unwrap();
    p
}

async fn read_all(
    source: &FileSource,
    batch_size: usize,
) -> (Vec<RecordBatch>, Vec<stratalake_core::QuarantineRecord>) {
    let (qtx, mut qrx) = stratalake_core::quarantine::quarantine_channel(10_000);
    let ctx = Context::builder("t")
        .with_batch_size(batch_size)
        .with_quarantine(qtx)
        .build();
    let (out, _) = stratalake_core::read_all(source, &ReadRequest::default(), &ctx)
        .await
        .unwrap();
    let mut q = Vec::new();
    while let Ok(r) = qrx.try_recv() {
        q.extend(r);
    }
    q.sort_by_key(|r| r.position);
    (out, q)
}

/// The first error reading the first split (with no quarantine attached).
async fn first_error(source: &FileSource) -> Option<stratalake_core::Error> {
    let ctx = Context::new("t");
    let plan = source.plan(&ReadRequest::default(), &ctx).await.unwrap();
    let mut st = source.read(&plan.splits[0], &ctx).unwrap();
    while let Some(b) = futures::StreamExt::next(&mut st).await {
        if let Err(e) = b {
            return Some(e);
        }
    }
    None
}

/// The columns `orders_ndjson` writes.
const ORDER_COLUMNS: &[(&str, &str)] = &[
    ("order_id", "int64"),
    ("customer", "utf8"),
    ("qty", "int64"),
    ("amount", "float64"),
    ("at", "timestamp"),
    ("lines", "list<struct<sku: utf8, q: int64>>"),
];

fn ndjson_cfg(root: &Path) -> FileSourceConfig {
    FileSourceConfig::new(root.to_str().unwrap(), Format::Ndjson)
}

fn rows(b: &[RecordBatch]) -> usize {
    b.iter().map(RecordBatch::num_rows).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_names_file_and_true_line_numbers_across_splits() {
    let dir = tempfile::tempdir().unwrap();
    let (data, good, bad) = orders_ndjson(5000, 97);
    write(dir.path(), "orders.ndjson", data.as_bytes());
    let mut cfg = ndjson_cfg(dir.path());
    cfg.split_size_megabytes = 1; // ~0.6 MB file: still one split; force more with a bigger file below
    let source = FileSource::try_new(cfg.clone()).await.unwrap();
    let (batches, q) = read_all(&source, 1000).await;
    assert_eq!(rows(&batches), good);
    assert_eq!(
        q.iter()
            .map(|r| r.position.unwrap() as usize)
            .collect::<Vec<_>>(),
        bad
    );
    assert!(q[0].location.ends_with("orders.ndjson"));
    assert!(q[0].raw.starts_with("{\"order_id\": 96"), "{}", q[0].raw);
    assert!(q[0].reason.contains("malformed JSON"), "{}", q[0].reason);

    // A file of several splits gives the same rows and the same line numbers.
    let (big, good, bad) = orders_ndjson(40_000, 333);
    write(dir.path(), "orders.ndjson", big.as_bytes());
    let source = FileSource::try_new(cfg).await.unwrap();
    let plan = source
        .plan(&ReadRequest::default(), &Context::new("t"))
        .await
        .unwrap();
    assert!(plan.splits.len() >= 4, "{} splits", plan.splits.len());
    let (batches, q) = read_all(&source, 777).await;
    assert_eq!(rows(&batches), good);
    assert_eq!(
        q.iter()
            .map(|r| r.position.unwrap() as usize)
            .collect::<Vec<_>>(),
        bad
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, .. ProptestConfig::default() })]
    /// Any split size, chunk size and batch size give the same rows and the same rejected lines.
    #[test]
    fn any_split_chunk_and_batch_size_give_the_same_rows(n in 1usize..600, bad_every in 0usize..40, split_bytes in 1u64..8192, chunk_bytes in 1usize..4096, batch in 1usize..300) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let (data, good, bad) = orders_ndjson(n, bad_every);
            write(dir.path(), "a.ndjson", data.as_bytes());
            let mut cfg = ndjson_cfg(dir.path());
            cfg.schema = SchemaSource::Explicit(vec![
                ColumnSpec { name: "order_id".into(), data_type: "int64".into() },
                ColumnSpec { name: "customer".into(), data_type: "utf8".into() },
                ColumnSpec { name: "qty".into(), data_type: "int64".into() },
                ColumnSpec { name: "amount".into(), data_type: "float64".into() },
                ColumnSpec { name: "at".into(), data_type: "timestamp".into() },
                ColumnSpec { name: "lines".into(), data_type: "list<struct<sku: utf8, q: int64>>".into() },
            ]);
            let whole = FileSource::try_new(cfg.clone()).await.unwrap();
            let (reference, rq) = read_all(&whole, 100_000).await;
            prop_assert_eq!(rows(&reference), good);
            prop_assert_eq!(rq.iter().map(|r| r.position.unwrap() as usize).collect::<Vec<_>>(), bad.clone());
            let split = FileSource::try_new(cfg).await.unwrap().with_split_bytes(split_bytes).with_chunk_bytes(chunk_bytes);
            let (chunked, cq) = read_all(&split, batch).await;
            prop_assert!(chunked.iter().all(|b| b.num_rows() <= batch));
            prop_assert_eq!(sorted_rows(&chunked), sorted_rows(&reference));
            prop_assert_eq!(cq.iter().map(|r| r.position.unwrap() as usize).collect::<Vec<_>>(), bad);
            Ok(())
        })?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_zstd_and_plain_read_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let (data, good, _) = orders_ndjson(3000, 0);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data.as_bytes()).unwrap();
    write(dir.path(), "gz/a.ndjson.gz", &gz.finish().unwrap());
    write(
        dir.path(),
        "zst/a.ndjson.zst",
        &zstd::encode_all(data.as_bytes(), 3).unwrap(),
    );
    write(dir.path(), "plain/a.ndjson", data.as_bytes());
    let mut results = Vec::new();
    for sub in ["gz", "zst", "plain"] {
        let s = FileSource::try_new(ndjson_cfg(&dir.path().join(sub)))
            .await
            .unwrap();
        let (b, q) = read_all(&s, 500).await;
        assert_eq!((rows(&b), q.len()), (good, 0), "{sub}");
        results.push(sorted_rows(&b));
    }
    assert_eq!(results[0], results[2]);
    assert_eq!(results[1], results[2]);

    // A truncated gzip object is an error that names the file.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data.as_bytes()).unwrap();
    let bytes = gz.finish().unwrap();
    write(dir.path(), "gz/a.ndjson.gz", &bytes[..bytes.len() / 2]);
    let mut cfg = ndjson_cfg(&dir.path().join("gz"));
    cfg.schema = SchemaSource::Explicit(vec![ColumnSpec {
        name: "order_id".into(),
        data_type: "int64".into(),
    }]);
    let s = FileSource::try_new(cfg).await.unwrap();
    let err = first_error(&s).await;
    let e = err.expect("a truncated gzip fails");
    assert!(
        e.context_value("file").unwrap().ends_with("a.ndjson.gz"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_with_header_and_bad_values() {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("id,name,qty\n");
    for i in 0..1000 {
        if i == 500 {
            csv.push_str("500,x,notanumber\n");
        } else {
            csv.push_str(&format!("{i},n{i},{}\n", i % 10));
        }
    }
    write(dir.path(), "p.csv", csv.as_bytes());
    let s = FileSource::try_new(FileSourceConfig::new(
        dir.path().to_str().unwrap(),
        Format::Csv(CsvOptions::default()),
    ))
    .await
    .unwrap();
    // Inference saw the bad value only if it sampled it; declare to be sure.
    let _ = s;
    let mut cfg = FileSourceConfig::new(
        dir.path().to_str().unwrap(),
        Format::Csv(CsvOptions::default()),
    );
    cfg.schema = SchemaSource::Explicit(vec![
        ColumnSpec {
            name: "id".into(),
            data_type: "int64".into(),
        },
        ColumnSpec {
            name: "name".into(),
            data_type: "utf8".into(),
        },
        ColumnSpec {
            name: "qty".into(),
            data_type: "int64".into(),
        },
    ]);
    let s = FileSource::try_new(cfg.clone()).await.unwrap();
    let (b, q) = read_all(&s, 128).await;
    assert_eq!(rows(&b), 999);
    assert_eq!(q.len(), 1);
    assert_eq!(
        q[0].position,
        Some(502),
        "line 1 is the header, id 0 is line 2"
    );
    assert_eq!(q[0].column.as_deref(), Some("qty"));
    assert_eq!(q[0].raw, "500,x,notanumber");

    cfg.type_drift = TypeDriftPolicy::Fail;
    let s = FileSource::try_new(cfg).await.unwrap();
    let failed = first_error(&s).await;
    let e = failed.expect("fail policy stops");
    assert_eq!(e.kind(), ErrorKind::Schema);
    assert_eq!(e.context_value("line"), Some("502"));
    assert_eq!(e.context_value("column"), Some("qty"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_runs_pick_up_only_new_and_changed_files() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("in");
    let (a, ga, _) = orders_ndjson(100, 0);
    write(&src, "2024/a.ndjson", a.as_bytes());
    write(&src, "_tmp/ignored.ndjson", b"{\"x\":1}\n");
    let source = Arc::new(FileSource::try_new(ndjson_cfg(&src)).await.unwrap());
    let sink = MemorySink::new();
    let store = Arc::new(stratalake_core::LocalFileCheckpointStore::new(
        dir.path().join("cp"),
    ));
    let p = PipelineBuilder::new("inc", source.clone(), Arc::new(sink.clone()), store)
        .build()
        .unwrap();
    assert_eq!(p.run().await.unwrap().rows_written, ga as u64);
    assert_eq!(p.run().await.unwrap().outcome, RunOutcome::NothingNew);
    let (b, gb, _) = orders_ndjson(30, 0);
    write(&src, "2024/b.ndjson", b.as_bytes());
    let r = p.run().await.unwrap();
    assert_eq!((r.epoch, r.rows_written), (Epoch(2), gb as u64));
    assert_eq!(sink.visible_rows(), ga + gb);
}

struct NdjsonFixture {
    dir: tempfile::TempDir,
    expected: Vec<RecordBatch>,
}

#[async_trait::async_trait]
impl SourceFixture for NdjsonFixture {
    async fn source(&self) -> Arc<dyn Source> {
        let mut cfg = ndjson_cfg(&self.dir.path().join("in"));
        cfg.split_size_megabytes = 1;
        cfg.schema = SchemaSource::explicit(ORDER_COLUMNS.iter().copied());
        Arc::new(FileSource::try_new(cfg).await.unwrap())
    }
    async fn expected(&self) -> Vec<RecordBatch> {
        self.expected.clone()
    }
    async fn break_input(&self) {
        std::fs::remove_dir_all(self.dir.path().join("in")).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_source_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let (data, _, _) = orders_ndjson(20_000, 0);
    write(&dir.path().join("in"), "a.ndjson", data.as_bytes());
    write(&dir.path().join("in"), "b.ndjson", data.as_bytes());
    // The expected rows come from arrow-json itself, never from the source under test.
    let SchemaSource::Explicit(cols) = SchemaSource::explicit(ORDER_COLUMNS.iter().copied()) else {
        unreachable!("explicit")
    };
    let schema = stratalake_files::options::explicit_schema(&cols).unwrap();
    let mut expected = Vec::new();
    for _ in 0..2 {
        let reader = arrow_json::ReaderBuilder::new(schema.clone())
            .build(std::io::Cursor::new(data.as_bytes()))
            .unwrap();
        expected.extend(reader.map(Result::unwrap));
    }
    assert_eq!(rows(&expected), 40_000);
    check_source(&NdjsonFixture { dir, expected }).await;
}

/// What a reader globbing `<root>/*.parquet` sees.
fn visible_parquet(root: &Path) -> Vec<RecordBatch> {
    stratalake_files::read_parquet_dir(root).unwrap()
}

struct ParquetFixture {
    root: PathBuf,
}

#[async_trait::async_trait]
impl SinkFixture for ParquetFixture {
    async fn sink(&self) -> Arc<dyn Sink> {
        Arc::new(ParquetSink::try_new(ParquetSinkConfig::new(self.root.to_str().unwrap())).unwrap())
    }
    async fn visible(&self) -> Vec<RecordBatch> {
        visible_parquet(&self.root)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_sink_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let (data, _, _) = orders_ndjson(3000, 0);
    write(&dir.path().join("in"), "a.ndjson", data.as_bytes());
    let source = FileSource::try_new(ndjson_cfg(&dir.path().join("in")))
        .await
        .unwrap();
    let (batches, _) = read_all(&source, 1000).await;
    check_sink(
        &ParquetFixture {
            root: dir.path().join("out"),
        },
        batches,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_round_trip_with_quarantine_and_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let (data, good, bad) = orders_ndjson(10_000, 101);
    write(&dir.path().join("in"), "orders.ndjson", data.as_bytes());
    let source = Arc::new(
        FileSource::try_new(ndjson_cfg(&dir.path().join("in")))
            .await
            .unwrap(),
    );
    let out = dir.path().join("out");
    let mut sink_cfg = ParquetSinkConfig::new(out.to_str().unwrap());
    sink_cfg.target_file_size_megabytes = 1;
    let sink = Arc::new(ParquetSink::try_new(sink_cfg).unwrap());
    let store = Arc::new(ObjectStoreCheckpointStore::new(
        StoreLocation::local(dir.path().join("cp").to_str().unwrap()).unwrap(),
    ));
    let p = PipelineBuilder::new("orders", source.clone(), sink.clone(), store.clone())
        .with_options(RunOptions::default().with_batch_size(1000))
        .build()
        .unwrap();
    let r = p.run().await.unwrap();
    assert_eq!(
        (r.rows_written as usize, r.rows_quarantined as usize),
        (good, bad.len())
    );
    assert_eq!(rows(&visible_parquet(&out)), good);
    let q = visible_parquet(&out.join("_quarantine"));
    assert_eq!(rows(&q), bad.len());
    let lines =
        arrow_array::cast::AsArray::as_primitive::<arrow_array::types::UInt64Type>(q[0].column(2));
    let mut got: Vec<u64> = q
        .iter()
        .flat_map(|b| {
            arrow_array::cast::AsArray::as_primitive::<arrow_array::types::UInt64Type>(b.column(2))
                .values()
                .to_vec()
        })
        .collect();
    got.sort_unstable();
    assert_eq!(got, bad.iter().map(|l| *l as u64).collect::<Vec<_>>());
    let _ = lines;
    assert_eq!(p.run().await.unwrap().outcome, RunOutcome::NothingNew);
    assert_eq!(sink.manifests("orders").await.unwrap().len(), 1);
    assert_eq!(store.load("orders").await.unwrap().unwrap().epoch, Epoch(1));
}

#[tokio::test]
async fn object_store_checkpoints_are_compare_and_swap() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStoreCheckpointStore::new(
        StoreLocation::local(dir.path().to_str().unwrap()).unwrap(),
    );
    let m1 = stratalake_core::CommitMarker::new("p", Epoch(1), None);
    store.save(&m1, Epoch(0)).await.unwrap();
    assert_eq!(
        store.save(&m1, Epoch(0)).await.unwrap_err().kind(),
        ErrorKind::Conflict
    );
    for e in 2..6 {
        store
            .save(
                &stratalake_core::CommitMarker::new("p", Epoch(e), None),
                Epoch(e - 1),
            )
            .await
            .unwrap();
    }
    assert_eq!(store.load("p").await.unwrap().unwrap().epoch, Epoch(5));
    assert_eq!(
        std::fs::read_dir(dir.path().join("p")).unwrap().count(),
        3,
        "old epochs are pruned"
    );
}

#[tokio::test]
async fn a_missing_source_root_is_not_found_and_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    let e = FileSource::try_new(ndjson_cfg(&missing)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.context_value("path").unwrap().ends_with("no-such-dir"));
    assert!(!missing.exists(), "a source never creates its root");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_file_with_other_columns_is_a_schema_error() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.csv", b"id,name\n1,x\n");
    write(dir.path(), "b.csv", b"name,id\ny,2\n");
    let mut cfg = FileSourceConfig::new(
        dir.path().to_str().unwrap(),
        Format::Csv(CsvOptions::default()),
    );
    cfg.schema = SchemaSource::explicit([("id", "int64"), ("name", "utf8")]);
    let s = FileSource::try_new(cfg).await.unwrap();
    let ctx = Context::new("t");
    let plan = s.plan(&ReadRequest::default(), &ctx).await.unwrap();
    let mut errors = Vec::new();
    for split in &plan.splits {
        let mut st = s.read(split, &ctx).unwrap();
        while let Some(b) = futures::StreamExt::next(&mut st).await {
            if let Err(e) = b {
                errors.push(e);
            }
        }
    }
    assert_eq!(errors.len(), 1, "only b.csv has the columns swapped");
    assert_eq!(errors[0].kind(), ErrorKind::Schema);
    assert!(errors[0].context_value("file").unwrap().ends_with("b.csv"));
    assert_eq!(errors[0].context_value("found"), Some("name,id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_files_are_cut_at_the_target_size() {
    let dir = tempfile::tempdir().unwrap();
    // Incompressible values, so the Parquet size tracks the input size.
    let mut data = String::new();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..40_000 {
        let mut v = String::new();
        for _ in 0..4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.push_str(&format!("{x:016x}"));
        }
        data.push_str(&format!("{{\"id\":{i},\"v\":\"{v}\"}}\n"));
    }
    write(&dir.path().join("in"), "a.ndjson", data.as_bytes());
    let source = Arc::new(
        FileSource::try_new(ndjson_cfg(&dir.path().join("in")))
            .await
            .unwrap(),
    );
    let out = dir.path().join("out");
    let mut cfg = ParquetSinkConfig::new(out.to_str().unwrap());
    cfg.target_file_size_megabytes = 1;
    cfg.write_concurrency = 1;
    let sink = Arc::new(ParquetSink::try_new(cfg).unwrap());
    let p = PipelineBuilder::new(
        "sized",
        source,
        sink,
        Arc::new(stratalake_core::InMemoryCheckpointStore::new()),
    )
    .with_options(RunOptions::default().with_batch_size(1000))
    .build()
    .unwrap();
    let r = p.run().await.unwrap();
    assert_eq!(r.rows_written, 40_000);
    let sizes: Vec<u64> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .collect();
    assert!(
        sizes.len() >= 3,
        "about 3 MB of incompressible data in 1 MB files: {sizes:?}"
    );
    // A file closes at the first batch that takes it past the target: at most one batch over.
    assert!(sizes.iter().all(|s| *s < (1 << 20) + 200_000), "{sizes:?}");
    assert_eq!(rows(&visible_parquet(&out)), 40_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_of_the_same_pipeline_cannot_rob_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let (data, good, _) = orders_ndjson(2000, 0);
    write(&dir.path().join("in"), "a.ndjson", data.as_bytes());
    let source = FileSource::try_new(ndjson_cfg(&dir.path().join("in")))
        .await
        .unwrap();
    let (batches, _) = read_all(&source, 500).await;
    let out = dir.path().join("out");
    let sink = ParquetSink::try_new(ParquetSinkConfig::new(out.to_str().unwrap())).unwrap();
    let ctx = Context::new("p");
    let marker = stratalake_core::CommitMarker::new("p", Epoch(1), None);
    let mut a = sink.open(source.schema(), &ctx).await.unwrap();
    for b in &batches {
        a.write(b.clone()).await.unwrap();
    }
    let pa = a.prepare(Epoch(1)).await.unwrap();
    // A second run opens while the first is between prepare and commit.
    let mut b = sink.open(source.schema(), &ctx).await.unwrap();
    for batch in &batches {
        b.write(batch.clone()).await.unwrap();
    }
    let pb = b.prepare(Epoch(1)).await.unwrap();
    assert_eq!(
        a.commit(pa, &marker).await.unwrap(),
        stratalake_core::CommitOutcome::Committed
    );
    assert_eq!(
        b.commit(pb, &marker).await.unwrap(),
        stratalake_core::CommitOutcome::AlreadyCommitted
    );
    assert_eq!(
        rows(&visible_parquet(&out)),
        good,
        "exactly one copy is visible"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_writes_read_back_as_the_same_rows_with_awkward_values() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = String::new();
    let regions = ["DE", "a/b=c %d", "ü:x"];
    for i in 0..600 {
        let region = if i % 7 == 0 {
            "null".to_string()
        } else {
            format!("\"{}\"", regions[(i / 3) % 3])
        };
        lines.push_str(&format!(
            "{{\"id\":{i},\"region\":{region},\"day\":\"2024-05-0{}\",\"v\":{i}.5}}\n",
            1 + i % 3
        ));
    }
    write(&dir.path().join("in"), "a.ndjson", lines.as_bytes());
    let schema = SchemaSource::explicit([
        ("id", "int64 not null"),
        ("region", "utf8"),
        ("day", "date32"),
        ("v", "float64"),
    ]);
    let mut cfg = ndjson_cfg(&dir.path().join("in"));
    cfg.schema = schema.clone();
    let source = FileSource::try_new(cfg).await.unwrap();
    let (input, _) = read_all(&source, 1000).await;
    let out = dir.path().join("out");
    let mut sink_cfg = ParquetSinkConfig::new(out.to_str().unwrap());
    sink_cfg.partition_by = vec!["day".into(), "region".into()];
    sink_cfg.max_open_files = 2; // more partitions than open files: the biggest is closed
    let p = PipelineBuilder::new(
        "part",
        Arc::new(source),
        Arc::new(ParquetSink::try_new(sink_cfg).unwrap()),
        Arc::new(stratalake_core::InMemoryCheckpointStore::new()),
    )
    .build()
    .unwrap();
    assert_eq!(p.run().await.unwrap().rows_written, 600);
    let mut dirs: Vec<String> = std::fs::read_dir(out.join("day=2024-05-01"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut want = vec![
        "region=DE",
        "region=__HIVE_DEFAULT_PARTITION__",
        "region=a%2Fb%3Dc %25d",
        "region=%C3%BC%3Ax",
    ];
    want.sort_unstable();
    assert_eq!(dirs, want);
    let mut back_cfg = FileSourceConfig::new(out.to_str().unwrap(), Format::Parquet);
    back_cfg.schema = schema;
    back_cfg.partitioning = stratalake_files::Partitioning::Hive;
    let back = FileSource::try_new(back_cfg).await.unwrap();
    let (output, _) = read_all(&back, 1000).await;
    assert_eq!(sorted_rows(&output), sorted_rows(&input));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_after_listing_reads_only_later_keys() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("in");
    write(&src, "dt=2024-01-01/a.ndjson", b"{\"id\":1}\n");
    write(&src, "dt=2024-01-02/a.ndjson", b"{\"id\":2}\n");
    let mut cfg = ndjson_cfg(&src);
    cfg.schema = SchemaSource::explicit([("id", "int64")]);
    cfg.listing = stratalake_files::ListingMode::StartAfter;
    let source = FileSource::try_new(cfg).await.unwrap();
    let ctx = Context::new("t");
    let first = source.plan(&ReadRequest::default(), &ctx).await.unwrap();
    assert_eq!(first.splits.len(), 2);
    // A late file below the watermark is not seen (the layout promise); a later one is.
    write(&src, "dt=2024-01-01/b.ndjson", b"{\"id\":3}\n");
    write(&src, "dt=2024-01-03/a.ndjson", b"{\"id\":4}\n");
    let next = source
        .plan(&ReadRequest::after(first.end.clone()), &ctx)
        .await
        .unwrap();
    let ids: Vec<&str> = next.splits.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, vec!["dt=2024-01-03/a.ndjson"]);
}
