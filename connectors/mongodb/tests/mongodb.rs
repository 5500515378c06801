//! stratalake-mongodb against SecantusDB (a MongoDB wire-protocol server started by
//! `scripts/services.sh`; a missing server fails the tests with a hint).

use bson::{Bson, Document, doc, oid::ObjectId};
use std::sync::Arc;
use stratalake_core::{ErrorKind, InMemoryCheckpointStore, PipelineBuilder, RunOutcome, Source};
use stratalake_mongodb::{MixedTypes, MongoIncremental, MongoSource, MongoSourceConfig};
use stratalake_records::SchemaSource;
use stratalake_testkit::assert::table_lines;
use stratalake_testkit::{MemorySink, SourceFixture, check_source};

fn uri() -> String {
    std::env::var("STRATA_MONGODB_URI")
        .unwrap_or_else(|_| "mongodb://127.0.0.1:27017/?directConnection=true".into())
}

fn unique(name: &str) -> String {
    format!("{name}_{}", ObjectId::new().to_hex())
}

async fn insert(db: &str, coll: &str, docs: Vec<Document>) {
    let client = mongodb::Client::with_uri_str(uri()).await.unwrap();
    let c = client.database(db).collection::<Document>(coll);
    for chunk in docs.chunks(1000) {
        c.insert_many(chunk.to_vec()).await.unwrap_or_else(|e| {
            panic!("cannot write to MongoDB at {}: {e}. Start it: scripts/services.sh install && scripts/services.sh start", uri())
        });
    }
}

async fn run(
    cfg: MongoSourceConfig,
) -> stratalake_core::Result<(stratalake_core::RunReport, MemorySink)> {
    let source = MongoSource::try_new(cfg).await?;
    let sink = MemorySink::new();
    let p = PipelineBuilder::new(
        "mongo",
        Arc::new(source),
        Arc::new(sink.clone()),
        Arc::new(InMemoryCheckpointStore::new()),
    )
    .build()?;
    Ok((p.run().await?, sink))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bson_type_keeps_its_meaning() {
    let db = unique("types");
    let oid = ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").unwrap();
    insert(&db, "c", vec![
        doc! {
            "_id": oid,
            "at": bson::DateTime::from_millis(1_704_067_200_123),
            "price": "1234.50".parse::<bson::Decimal128>().unwrap(),
            "i": 7_i32, "l": 9_000_000_000_i64, "f": 2.5,
            "nested": { "name": "x", "deep": { "tags": ["a", "b"], "n": 1_i32 } },
            "bin": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: vec![0, 255] },
            "ok": true,
        },
        doc! { "_id": ObjectId::parse_str("65a1b2c3d4e5f60718293a4c").unwrap(), "i": Bson::Null, "f": 3_i32, "ok": false },
    ]).await;
    let mut cfg = MongoSourceConfig::new(uri(), &db, "c");
    cfg.schema = SchemaSource::explicit([
        ("_id", "utf8 not null"),
        ("at", "timestamp"),
        ("price", "decimal(12,2)"),
        ("i", "int32"),
        ("l", "int64"),
        ("f", "float64"),
        (
            "nested",
            "struct<name: utf8, deep: struct<tags: list<utf8>, n: int32>>",
        ),
        ("bin", "utf8"),
        ("ok", "boolean"),
    ]);
    let (r, sink) = run(cfg).await.unwrap();
    assert_eq!(r.rows_written, 2);
    stratalake_testkit::assert_batches_eq!(
        [
            "+--------------------------+--------------------------+---------+---+------------+-----+---------------------------------------+------+-------+",
            "| _id                      | at                       | price   | i | l          | f   | nested                                | bin  | ok    |",
            "+--------------------------+--------------------------+---------+---+------------+-----+---------------------------------------+------+-------+",
            "| 65a1b2c3d4e5f60718293a4b | 2024-01-01T00:00:00.123Z | 1234.50 | 7 | 9000000000 | 2.5 | {name: x, deep: {tags: [a, b], n: 1}} | 00ff | true  |",
            "| 65a1b2c3d4e5f60718293a4c |                          |         |   |            | 3.0 |                                       |      | false |",
            "+--------------------------+--------------------------+---------+---+------------+-----+---------------------------------------+------+-------+",
        ],
        &sink.visible()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_types_follow_the_policy() {
    let db = unique("mixed");
    insert(
        &db,
        "c",
        vec![
            doc! {"_id": 1, "v": 10},
            doc! {"_id": 2, "v": "eleven"},
            doc! {"_id": 3, "v": {"x": 12}},
            doc! {"_id": 4, "v": 13.5},
        ],
    )
    .await;
    let mut cfg = MongoSourceConfig::new(uri(), &db, "c");
    cfg.schema = SchemaSource::explicit([("_id", "int64 not null"), ("v", "utf8")]);
    cfg.mixed_types = MixedTypes::JsonText;
    let (r, sink) = run(cfg.clone()).await.unwrap();
    assert_eq!(r.rows_written, 4, "every value kept as text");
    let lines = table_lines(&sink.visible()).join("\n");
    assert!(
        lines.contains("{\"x\":12}") && lines.contains("eleven") && lines.contains("13.5"),
        "{lines}"
    );
    // A number column: the text and the document go to quarantine with their _id.
    cfg.schema = SchemaSource::explicit([("_id", "int64 not null"), ("v", "float64")]);
    cfg.mixed_types = MixedTypes::Quarantine;
    let (r, sink) = run(cfg).await.unwrap();
    assert_eq!((r.rows_written, r.rows_quarantined), (2, 2));
    let q = table_lines(&sink.visible_quarantine()).join("\n");
    assert!(
        q.contains("_id=2") && q.contains("_id=3") && q.contains(&format!("{db}.c")),
        "{q}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_documents_split_by_id_ranges_are_read_once() {
    let db = unique("many");
    let docs: Vec<Document> = (0..20_000u32)
        .map(|i| {
            // ObjectIds spread over ~2 days, as real inserts would be.
            let mut b = [0u8; 12];
            b[..4].copy_from_slice(&(1_700_000_000 + i * 9).to_be_bytes());
            b[8..].copy_from_slice(&i.to_be_bytes());
            doc! {"_id": ObjectId::from_bytes(b), "n": i64::from(i), "name": format!("customer {i}")}
        })
        .collect();
    insert(&db, "customers", docs).await;
    let mut cfg = MongoSourceConfig::new(uri(), &db, "customers");
    cfg.splits = 4;
    let (r, sink) = run(cfg).await.unwrap();
    assert_eq!(r.splits, 4);
    assert_eq!(r.rows_written, 20_000);
    let rows = stratalake_testkit::assert::sorted_rows(&sink.visible());
    let mut dedup = rows.clone();
    dedup.dedup();
    assert_eq!(dedup.len(), 20_000, "no document twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_runs_read_each_document_once() {
    let db = unique("inc");
    let at = |s: i64| bson::DateTime::from_millis(1_704_067_200_000 + s * 1000);
    insert(
        &db,
        "c",
        (0..100)
            .map(|i| doc! {"_id": i, "updated_at": at(i / 10)})
            .collect(),
    )
    .await;
    let mut cfg = MongoSourceConfig::new(uri(), &db, "c");
    cfg.schema = SchemaSource::explicit([("_id", "int64 not null"), ("updated_at", "timestamp")]);
    cfg.incremental = Some(MongoIncremental::new("updated_at"));
    let source = MongoSource::try_new(cfg).await.unwrap();
    let sink = MemorySink::new();
    let p = PipelineBuilder::new(
        "inc",
        Arc::new(source),
        Arc::new(sink.clone()),
        Arc::new(InMemoryCheckpointStore::new()),
    )
    .build()
    .unwrap();
    assert_eq!(p.run().await.unwrap().rows_written, 100);
    assert_eq!(p.run().await.unwrap().outcome, RunOutcome::NothingNew);
    // New documents, two at the old high-water mark's time.
    insert(
        &db,
        "c",
        (100..110)
            .map(|i| doc! {"_id": i, "updated_at": at(if i < 102 { 9 } else { 20 })})
            .collect(),
    )
    .await;
    assert_eq!(p.run().await.unwrap().rows_written, 10);
    assert_eq!(p.run().await.unwrap().outcome, RunOutcome::NothingNew);
    assert_eq!(sink.visible_rows(), 110);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uri_failed_auth_missing_collection_and_no_server_are_clear_errors() {
    let e = MongoSource::try_new(MongoSourceConfig::new("mongodb://[::1", "d", "c"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    let e = MongoSource::try_new(MongoSourceConfig::new("postgres://x", "d", "c"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    let db = unique("missing");
    insert(&db, "present", vec![doc! {"_id": 1}]).await;
    let e = MongoSource::try_new(MongoSourceConfig::new(uri(), &db, "absent"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert_eq!(
        e.context_value("collection"),
        Some(format!("{db}.absent").as_str())
    );
    let e = MongoSource::try_new(MongoSourceConfig::new(
        "mongodb://127.0.0.1:9/?directConnection=true&serverSelectionTimeoutMS=500",
        "d",
        "c",
    ))
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    let secret = MongoSourceConfig::new("mongodb://ann:hunter2@127.0.0.1:9/", "d", "c");
    assert!(!format!("{secret:?}").contains("hunter2"));
    // A server that requires authentication, and a user it does not know.
    let auth_uri = std::env::var("STRATA_MONGODB_AUTH_URI").unwrap_or_else(|_| {
        "mongodb://nobody:hunter2@127.0.0.1:27018/?directConnection=true&serverSelectionTimeoutMS=5000".into()
    });
    let e = MongoSource::try_new(MongoSourceConfig::new(&auth_uri, "d", "c"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth, "{}", e.report());
    assert!(!e.report().contains("hunter2"), "{}", e.report());
}

/// A TCP proxy to the server that can be cut: the conformance suite's broken input.
struct Proxy {
    uri: String,
    tasks: std::sync::Mutex<tokio::task::JoinSet<()>>,
}

impl Proxy {
    async fn start() -> Arc<Proxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstream = uri()
            .trim_start_matches("mongodb://")
            .split(['/', '?'])
            .next()
            .unwrap()
            .to_string();
        let proxy = Arc::new(Proxy {
            uri: format!(
                "mongodb://127.0.0.1:{port}/?directConnection=true&serverSelectionTimeoutMS=1000"
            ),
            tasks: std::sync::Mutex::new(tokio::task::JoinSet::new()),
        });
        let p = proxy.clone();
        proxy.tasks.lock().unwrap().spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let up = upstream.clone();
                p.tasks.lock().unwrap().spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(up).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        proxy
    }

    fn cut(&self) {
        self.tasks.lock().unwrap().abort_all();
    }
}

struct Fixture {
    db: String,
    expected: Vec<arrow_array::RecordBatch>,
    proxy: Arc<Proxy>,
}

#[async_trait::async_trait]
impl SourceFixture for Fixture {
    async fn source(&self) -> Arc<dyn Source> {
        let mut cfg = MongoSourceConfig::new(&self.proxy.uri, &self.db, "c");
        cfg.schema = SchemaSource::explicit([
            ("_id", "int64 not null"),
            ("updated_at", "timestamp"),
            ("name", "utf8"),
        ]);
        cfg.incremental = Some(MongoIncremental::new("updated_at"));
        cfg.splits = 3;
        Arc::new(MongoSource::try_new(cfg).await.unwrap())
    }
    async fn expected(&self) -> Vec<arrow_array::RecordBatch> {
        self.expected.clone()
    }
    async fn break_input(&self) {
        self.proxy.cut();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mongodb_source_passes_the_conformance_suite() {
    let db = unique("conf");
    insert(&db, "c", (0..3000).map(|i| doc! {"_id": i, "updated_at": bson::DateTime::from_millis(1_704_067_200_000 + i * 1000), "name": format!("n{i}")}).collect()).await;
    let proxy = Proxy::start().await;
    // The documents inserted, as Arrow, never rows read back through the source under test.
    let expected = vec![
        arrow_array::RecordBatch::try_from_iter(vec![
            (
                "_id",
                Arc::new(arrow_array::Int64Array::from_iter_values(0..3000))
                    as arrow_array::ArrayRef,
            ),
            (
                "updated_at",
                Arc::new(
                    arrow_array::TimestampMicrosecondArray::from_iter_values(
                        (0..3000i64).map(|i| (1_704_067_200_000 + i * 1000) * 1000),
                    )
                    .with_timezone("+00:00"),
                ),
            ),
            (
                "name",
                Arc::new(arrow_array::StringArray::from_iter_values(
                    (0..3000).map(|i| format!("n{i}")),
                )),
            ),
        ])
        .unwrap(),
    ];
    assert_eq!(expected.iter().map(|b| b.num_rows()).sum::<usize>(), 3000);
    check_source(&Fixture {
        db,
        expected,
        proxy,
    })
    .await;
}
