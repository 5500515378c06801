//! stratalake-s3 and stratalake-azure-blob against real local servers: moto (S3) and Azurite (Azure),
//! started by `scripts/services.sh`. Every scenario runs on both stores. A missing server fails
//! the test with a hint; nothing is skipped.

use arrow_array::RecordBatch;
use object_store::ObjectStoreExt;
use object_store::PutPayload;
use std::io::Write;
use std::sync::Arc;
use stratalake_core::{
    Context, ErrorKind, InMemoryCheckpointStore, PipelineBuilder, ReadRequest, RunOutcome, Sink,
    Source,
};
use stratalake_files::cloud::{CloudSinkConfig, CloudSourceConfig};
use stratalake_files::{
    CorruptFilePolicy, CsvOptions, FileSource, FileSourceConfig, Format, ListingMode,
    ParquetSinkConfig, Partitioning, SchemaSource,
};
use stratalake_testkit::assert::sorted_rows;
use stratalake_testkit::{MemorySink, SinkFixture, SourceFixture, check_sink, check_source};
use stratalake_tests::cloud::{Cloud, Conn, put, read_parquet_at};

const CLOUDS: [Cloud; 2] = [Cloud::S3, Cloud::Azure];

fn schema() -> SchemaSource {
    SchemaSource::explicit([
        ("id", "int64 not null"),
        ("name", "utf8"),
        ("amount", "float64"),
        ("dt", "date32"),
    ])
}

/// `n` rows starting at id `from` as NDJSON, and as CSV (without `dt`: it is in the path).
fn rows(from: usize, n: usize) -> (String, String) {
    let mut json = String::new();
    let mut csv = String::from("id,name,amount\n");
    for i in from..from + n {
        json.push_str(&format!(
            "{{\"id\":{i},\"name\":\"customer {i}\",\"amount\":{}.25}}\n",
            i % 97
        ));
        csv.push_str(&format!("{i},customer {i},{}.25\n", i % 97));
    }
    (json, csv)
}

/// The rows `rows(from, n)` writes under `dt=<day>`, built directly as Arrow: what a read must
/// give, computed without any source.
fn arrow_rows(from: usize, n: usize, day: &str) -> RecordBatch {
    use arrow_array::{ArrayRef, Date32Array, Float64Array, Int64Array, StringArray};
    let days = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")
        .unwrap()
        .signed_duration_since(chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap())
        .num_days() as i32;
    let ids = from..from + n;
    RecordBatch::try_from_iter(vec![
        (
            "id",
            Arc::new(Int64Array::from_iter_values(ids.clone().map(|i| i as i64))) as ArrayRef,
        ),
        (
            "name",
            Arc::new(StringArray::from_iter_values(
                ids.clone().map(|i| format!("customer {i}")),
            )),
        ),
        (
            "amount",
            Arc::new(Float64Array::from_iter_values(
                ids.map(|i| (i % 97) as f64 + 0.25),
            )),
        ),
        (
            "dt",
            Arc::new(Date32Array::from_iter_values(std::iter::repeat_n(days, n))),
        ),
    ])
    .unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// NDJSON rows as a Parquet file with small row groups (so row-group splits happen).
async fn parquet_of(json: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.ndjson"), json).unwrap();
    let mut cfg = FileSourceConfig::new(dir.path().to_str().unwrap(), Format::Ndjson);
    cfg.schema = SchemaSource::explicit([
        ("id", "int64 not null"),
        ("name", "utf8"),
        ("amount", "float64"),
    ]);
    let src = FileSource::try_new(cfg).await.unwrap();
    let batches = read_all(&src).await;
    let mut buf = Vec::new();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(500))
        .build();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, src.schema(), Some(props)).unwrap();
    for b in &batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();
    buf
}

/// Location, position and reason of the first quarantined record.
fn first_quarantined(sink: &MemorySink) -> (String, Option<u64>, String) {
    use arrow_array::cast::AsArray;
    use arrow_array::types::UInt64Type;
    let q = sink.visible_quarantine();
    let b = &q[0];
    let text = |name: &str| {
        b.column_by_name(name)
            .unwrap()
            .as_string::<i32>()
            .value(0)
            .to_string()
    };
    let pos = b
        .column_by_name("position")
        .unwrap()
        .as_primitive::<UInt64Type>();
    let position = (!arrow_array::Array::is_null(pos, 0)).then(|| pos.value(0));
    (text("location"), position, text("reason"))
}

async fn read_all(source: &dyn Source) -> Vec<RecordBatch> {
    let ctx = Context::builder("test").build();
    stratalake_core::read_all(source, &ReadRequest::after(None), &ctx)
        .await
        .unwrap()
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_round_trips_through_hive_partitions() {
    for cloud in CLOUDS {
        let conn = cloud.fresh("formats").await;
        let days = ["2024-01-01", "2024-01-02", "2024-01-03"];
        for (d, day) in days.iter().enumerate() {
            let (json, csv) = rows(d * 1000, 1000);
            let raw = conn.with_prefix("raw");
            put(
                &raw,
                &format!("ndjson/dt={day}/part.ndjson"),
                json.as_bytes().to_vec(),
            )
            .await;
            put(
                &raw,
                &format!("gzip/dt={day}/part.ndjson.gz"),
                gzip(json.as_bytes()),
            )
            .await;
            put(
                &raw,
                &format!("zstd/dt={day}/part.ndjson.zst"),
                zstd::encode_all(json.as_bytes(), 1).unwrap(),
            )
            .await;
            put(&raw, &format!("csv/dt={day}/part.csv"), csv.into_bytes()).await;
            put(
                &raw,
                &format!("parquet/dt={day}/part.parquet"),
                parquet_of(&json).await,
            )
            .await;
        }
        let expected = sorted_rows(
            &days
                .iter()
                .enumerate()
                .map(|(d, day)| arrow_rows(d * 1000, 1000, day))
                .collect::<Vec<_>>(),
        );
        for (name, format) in [
            ("ndjson", Format::Ndjson),
            ("gzip", Format::Ndjson),
            ("zstd", Format::Ndjson),
            ("csv", Format::Csv(CsvOptions::default())),
            ("parquet", Format::Parquet),
        ] {
            let mut read = FileSourceConfig::new("", format);
            read.schema = schema();
            read.partitioning = Partitioning::Hive;
            let source = CloudSourceConfig::new(conn.with_prefix(&format!("raw/{name}")), read)
                .build()
                .await
                .unwrap()
                .with_split_bytes(4 << 10); // byte ranges and row groups, not whole files
            let mut write = ParquetSinkConfig::new("");
            write.partition_by = vec!["dt".into()];
            let sink = CloudSinkConfig::new(conn.with_prefix(&format!("out/{name}")), write)
                .build()
                .unwrap();
            let p = PipelineBuilder::new(
                name,
                Arc::new(source),
                Arc::new(sink),
                Arc::new(InMemoryCheckpointStore::new()),
            )
            .build()
            .unwrap();
            let report = p.run().await.unwrap();
            assert_eq!(report.rows_written, 3000, "{cloud:?} {name}");
            // Plain files are cut into byte ranges and Parquet into row groups; a compressed
            // stream is one split.
            let whole = matches!(name, "gzip" | "zstd");
            assert!(
                report.splits > 3 || (whole && report.splits == 3),
                "{cloud:?} {name}: {} splits",
                report.splits
            );
            let out = conn.with_prefix(&format!("out/{name}"));
            let dirs = out.list_dirs().await;
            assert_eq!(
                dirs,
                vec!["dt=2024-01-01", "dt=2024-01-02", "dt=2024-01-03"],
                "{cloud:?} {name}"
            );
            let back = read_parquet_at(&out, schema()).await;
            assert_eq!(sorted_rows(&back), expected, "{cloud:?} {name}");
        }
    }
}

struct StoreSourceFixture {
    conn: Conn,
    expected: Vec<RecordBatch>,
}

#[async_trait::async_trait]
impl SourceFixture for StoreSourceFixture {
    async fn source(&self) -> Arc<dyn Source> {
        let mut read = FileSourceConfig::new("", Format::Ndjson);
        read.schema = schema();
        read.partitioning = Partitioning::Hive;
        Arc::new(
            CloudSourceConfig::new(self.conn.clone(), read)
                .build()
                .await
                .unwrap()
                .with_split_bytes(8 << 10),
        )
    }
    async fn expected(&self) -> Vec<RecordBatch> {
        self.expected.clone()
    }
    async fn break_input(&self) {
        self.conn.delete_all().await;
    }
}

struct StoreSinkFixture {
    conn: Conn,
}

#[async_trait::async_trait]
impl SinkFixture for StoreSinkFixture {
    async fn sink(&self) -> Arc<dyn Sink> {
        let mut write = ParquetSinkConfig::new("");
        write.partition_by = vec!["dt".into()];
        Arc::new(
            CloudSinkConfig::new(self.conn.clone(), write)
                .build()
                .unwrap(),
        )
    }
    async fn visible(&self) -> Vec<RecordBatch> {
        read_parquet_at(&self.conn, schema()).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_stores_pass_the_conformance_suite() {
    for cloud in CLOUDS {
        let conn = cloud.fresh("conformance").await;
        let input = conn.with_prefix("in");
        for (d, day) in ["2024-02-01", "2024-02-02"].iter().enumerate() {
            let (json, _) = rows(d * 700, 700);
            put(&input, &format!("dt={day}/a.ndjson"), json.into_bytes()).await;
        }
        let expected = vec![
            arrow_rows(0, 700, "2024-02-01"),
            arrow_rows(700, 700, "2024-02-02"),
        ];
        assert_eq!(expected.iter().map(|b| b.num_rows()).sum::<usize>(), 1400);
        check_source(&StoreSourceFixture {
            conn: input.clone(),
            expected: expected.clone(),
        })
        .await;
        check_sink(
            &StoreSinkFixture {
                conn: conn.with_prefix("out"),
            },
            expected,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_runs_read_only_new_or_changed_objects() {
    for cloud in CLOUDS {
        for listing in [ListingMode::Full, ListingMode::StartAfter] {
            let conn = cloud.fresh("incremental").await;
            let input = conn.with_prefix("in");
            put(
                &input,
                "dt=2024-03-01/a.ndjson",
                rows(0, 100).0.into_bytes(),
            )
            .await;
            put(
                &input,
                "dt=2024-03-02/b.ndjson",
                rows(100, 50).0.into_bytes(),
            )
            .await;
            let mut read = FileSourceConfig::new("", Format::Ndjson);
            read.schema = schema();
            read.partitioning = Partitioning::Hive;
            read.listing = listing;
            let source = CloudSourceConfig::new(input.clone(), read)
                .build()
                .await
                .unwrap();
            let sink = MemorySink::new();
            let cp = stratalake_files::ObjectStoreCheckpointStore::new(
                conn.with_prefix("checkpoints").location(),
            );
            let p = PipelineBuilder::new(
                "inc",
                Arc::new(source),
                Arc::new(sink.clone()),
                Arc::new(cp),
            )
            .build()
            .unwrap();
            assert_eq!(p.run().await.unwrap().rows_written, 150);
            assert_eq!(p.run().await.unwrap().outcome, RunOutcome::NothingNew);
            // A new day arrives; in full listing an object that grew (its first 100 rows as
            // they were, one more after them) gives only its new row, never the old ones again.
            put(
                &input,
                "dt=2024-03-03/c.ndjson",
                rows(150, 30).0.into_bytes(),
            )
            .await;
            let mut want = 30;
            if listing == ListingMode::Full {
                put(
                    &input,
                    "dt=2024-03-01/a.ndjson",
                    rows(0, 101).0.into_bytes(),
                )
                .await;
                want += 1;
            }
            let r = p.run().await.unwrap();
            assert_eq!(r.rows_written, want, "{cloud:?} {listing:?}");
            assert_eq!(sink.visible_rows(), 150 + want as usize);
            assert_eq!(p.run().await.unwrap().outcome, RunOutcome::NothingNew);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// 5,500 objects: more than one listing page on both services (S3 answers 1,000 keys per
/// page, Azure 5,000).
async fn thousands_of_objects_are_listed_across_pages_and_start_after_skips_them() {
    for cloud in CLOUDS {
        let conn = cloud.fresh("many").await;
        let input = conn.with_prefix("in");
        let store = input.location();
        use futures::StreamExt;
        futures::stream::iter(0..5_500)
            .map(|i| {
                let store = store.clone();
                async move {
                    let p = store.child(&format!("dt=2024-04-{:02}/o-{i:05}.ndjson", 1 + i % 28));
                    store
                        .store()
                        .put(&p, PutPayload::from(format!("{{\"id\":{i}}}\n")))
                        .await
                        .unwrap();
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await;
        let mut read = FileSourceConfig::new("", Format::Ndjson);
        read.schema = SchemaSource::explicit([("id", "int64 not null")]);
        read.listing = ListingMode::StartAfter;
        let source = CloudSourceConfig::new(input.clone(), read)
            .build()
            .await
            .unwrap();
        let ctx = Context::builder("test").build();
        let plan = source.plan(&ReadRequest::after(None), &ctx).await.unwrap();
        assert_eq!(plan.splits.len(), 5_500, "{cloud:?}");
        let next = source
            .plan(&ReadRequest::after(plan.end.clone()), &ctx)
            .await
            .unwrap();
        assert_eq!(
            next.splits.len(),
            0,
            "{cloud:?}: nothing after the last key"
        );
        assert!(
            plan.end.unwrap().as_str().len() < 200,
            "the cursor is one key, not 5,500"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_auth_errors() {
    // S3: moto on the checking port, with keys it never issued.
    let s3 = stratalake_s3::S3Config::local_server("any-bucket", Cloud::s3_auth_endpoint());
    let e = s3.location().unwrap().check().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
    assert!(e.to_string().contains("credentials"), "{e}");
    assert!(!format!("{e:?}").contains("strata-test-secret"));
    // Azure: Azurite checks the account key's signature.
    let conn = Cloud::Azure.fresh("auth").await;
    let Conn::Azure(mut az) = conn else {
        unreachable!()
    };
    az.credentials = stratalake_azure_blob::AzureCredentials::AccountKey {
        key: "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk="
            .to_string()
            .into(),
    };
    let e = az.location().unwrap().check().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
    assert!(!format!("{e:?}").contains("d3Jvbmcta2V5"));
    let e = stratalake_azure_blob::create_container(&az)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_or_container_is_not_found() {
    for cloud in CLOUDS {
        let conn = cloud.unmade("missing");
        let e = conn.location().check().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{cloud:?}: {e}");
        assert!(e.to_string().contains("does not exist"), "{e}");
        let mut read = FileSourceConfig::new("", Format::Ndjson);
        read.schema = schema();
        let source = CloudSourceConfig::new(conn.clone(), read)
            .build()
            .await
            .unwrap();
        let ctx = Context::builder("test").build();
        let e = source
            .plan(&ReadRequest::after(None), &ctx)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{cloud:?}: {e}");
        assert!(format!("{e:#}").contains(&conn.name()), "{e:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_parquet_and_truncated_gzip_are_quarantined_or_fail() {
    for cloud in CLOUDS {
        let conn = cloud.fresh("corrupt").await;
        let input = conn.with_prefix("in");
        let (json, _) = rows(0, 3000);
        let good = parquet_of(&json).await;
        let mut bad = good.clone();
        let mid = bad.len() / 2;
        bad.truncate(mid); // no footer
        put(&input, "pq/good.parquet", good).await;
        put(&input, "pq/bad.parquet", bad).await;
        let gz = gzip(json.as_bytes());
        put(&input, "gz/cut.ndjson.gz", gz[..gz.len() / 2].to_vec()).await;
        for (dir, format) in [("pq", Format::Parquet), ("gz", Format::Ndjson)] {
            for policy in [CorruptFilePolicy::Quarantine, CorruptFilePolicy::Fail] {
                let mut read = FileSourceConfig::new("", format.clone());
                read.schema = SchemaSource::explicit([
                    ("id", "int64 not null"),
                    ("name", "utf8"),
                    ("amount", "float64"),
                ]);
                read.on_corrupt_file = policy;
                let source = CloudSourceConfig::new(input.with_prefix(dir), read)
                    .build()
                    .await
                    .unwrap();
                let sink = MemorySink::new();
                let p = PipelineBuilder::new(
                    "corrupt",
                    Arc::new(source),
                    Arc::new(sink.clone()),
                    Arc::new(InMemoryCheckpointStore::new()),
                )
                .build()
                .unwrap();
                let key = if dir == "pq" {
                    "pq/bad.parquet"
                } else {
                    "gz/cut.ndjson.gz"
                };
                match policy {
                    CorruptFilePolicy::Quarantine => {
                        let r = p.run().await.unwrap();
                        assert_eq!(r.rows_quarantined, 1, "{cloud:?} {dir}");
                        let (location, position, reason) = first_quarantined(&sink);
                        assert!(location.ends_with(key), "{cloud:?}: {location}");
                        assert!(reason.contains("cannot be read"), "{reason}");
                        if dir == "pq" {
                            assert_eq!(r.rows_written, 3000, "the good file is kept");
                        } else {
                            // The lines before the cut are kept; reading stops where it broke.
                            let line = position.unwrap();
                            assert_eq!(r.rows_written, line - 1, "{cloud:?}");
                            assert!(line > 1 && line < 3000, "{line}");
                        }
                    }
                    _ => {
                        let e = p.run().await.unwrap_err();
                        assert_eq!(e.kind(), ErrorKind::Data, "{cloud:?} {dir}: {e}");
                        assert!(format!("{e:#}").contains(key), "{e:#}");
                        assert_eq!(sink.commits(), 0);
                    }
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_and_containers_are_created_once() {
    let name = format!("setup-{}", stratalake_tests::cloud::unique());
    let s3 = stratalake_s3::S3Config::local_server(&name, Cloud::s3_endpoint());
    assert_eq!(
        stratalake_s3::create_bucket(&s3).await.unwrap(),
        stratalake_s3::Created::Created
    );
    assert_eq!(
        stratalake_s3::create_bucket(&s3).await.unwrap(),
        stratalake_s3::Created::AlreadyExisted
    );
    let az = stratalake_azure_blob::AzureBlobConfig::emulator(&name, Cloud::azurite_endpoint());
    assert_eq!(
        stratalake_azure_blob::create_container(&az).await.unwrap(),
        stratalake_azure_blob::Created::Created
    );
    assert_eq!(
        stratalake_azure_blob::create_container(&az).await.unwrap(),
        stratalake_azure_blob::Created::AlreadyExisted
    );
}
