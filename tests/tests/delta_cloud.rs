//! Delta tables on moto (S3) and Azurite (Azure Blob), started by `scripts/services.sh`: the
//! sink passes the conformance suite on both, and the whole medallion (bronze, silver, gold)
//! runs on Azurite with gold equal to the generator's manifest.

use arrow_array::cast::AsArray;
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Arc;
use strata_core::{
    BatchTransform, InMemoryCheckpointStore, PipelineBuilder, RunReport, Sink, Source,
    StreamTransform,
};
use strata_delta::{DeltaSink, DeltaSinkConfig, DeltaSource, TableLocation};
use strata_testkit::{MemorySink, SinkFixture, check_sink};
use strata_tests::cloud::{Cloud, Conn};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn read_all(loc: &TableLocation) -> Vec<RecordBatch> {
    let Ok(source) = DeltaSource::try_new(loc.clone()).await else {
        return Vec::new();
    };
    let sink = MemorySink::new();
    PipelineBuilder::new(
        "read",
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

struct Fix {
    loc: TableLocation,
}

#[async_trait]
impl SinkFixture for Fix {
    async fn sink(&self) -> Arc<dyn Sink> {
        Arc::new(DeltaSink::try_new(self.loc.clone(), DeltaSinkConfig::default()).unwrap())
    }
    async fn visible(&self) -> Vec<RecordBatch> {
        read_all(&self.loc)
            .await
            .iter()
            .map(|b| b.project(&[0, 1]).unwrap())
            .collect()
    }
}

fn rows(ids: std::ops::Range<i64>) -> RecordBatch {
    RecordBatch::try_from_iter(vec![
        (
            "id",
            Arc::new(Int64Array::from_iter_values(ids.clone())) as ArrayRef,
        ),
        (
            "name",
            Arc::new(StringArray::from_iter_values(ids.map(|i| format!("n{i}")))),
        ),
    ])
    .unwrap()
}

#[test]
fn the_delta_sink_passes_the_conformance_suite_on_moto_and_azurite() {
    rt().block_on(async {
        for cloud in [Cloud::S3, Cloud::Azure] {
            let conn = cloud.fresh("delta").await;
            let loc = conn.delta_table("lake/conformance");
            check_sink(&Fix { loc }, vec![rows(0..400), rows(400..700)]).await;
        }
    });
}

async fn run(
    id: &str,
    source: Arc<dyn Source>,
    batch: Vec<Arc<dyn BatchTransform>>,
    stream: Vec<Arc<dyn StreamTransform>>,
    sink: Arc<dyn Sink>,
) -> RunReport {
    let mut b = PipelineBuilder::new(id, source, sink, Arc::new(InMemoryCheckpointStore::new()));
    for t in batch {
        b = b.with_batch_transform(t);
    }
    for t in stream {
        b = b.with_stream_transform(t);
    }
    b.build().unwrap().run().await.unwrap()
}

fn file_source_yaml(root: &std::path::Path, name: &str) -> strata_files::FileSourceConfig {
    let mut y = format!(
        "root: '{}'\ninclude: [\"{name}.ndjson\"]\nformat: ndjson\ntype_drift: quarantine\nunknown_fields: ignore\n",
        root.display()
    );
    if name == "orders" {
        y.push_str("schema:\n  explicit:\n");
        for (c, t) in strata_datagen::orders_schema() {
            y.push_str(&format!("    - {{ name: {c}, type: \"{t}\" }}\n"));
        }
    }
    serde_yaml_ng::with::singleton_map_recursive::deserialize(
        serde_yaml_ng::Deserializer::from_str(&y),
    )
    .unwrap()
}

#[test]
fn the_whole_medallion_runs_on_azurite_and_gold_equals_the_manifest() {
    rt().block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = strata_datagen::GeneratorConfig::at_scale(0.002).with_dirt_rate(0.03);
        let m = strata_datagen::generate(&cfg, tmp.path(), &|_| {}).unwrap();
        let conn: Conn = Cloud::Azure.fresh("medallion").await;
        let t = |layer: &str, name: &str| conn.delta_table(&format!("{layer}/{name}"));
        for name in ["partners", "customers", "products", "orders"] {
            let source = strata_files::FileSource::try_new(file_source_yaml(tmp.path(), name))
                .await
                .unwrap();
            let r = run(
                &format!("bronze_{name}"),
                Arc::new(source),
                vec![Arc::new(strata_bronze::Lineage::new(format!("{name}.ndjson")))],
                vec![],
                Arc::new(strata_bronze::bronze_sink(t("bronze", name)).unwrap()),
            )
            .await;
            if name == "orders" {
                assert_eq!(r.rows_written, m.well_formed_order_lines);
            }
        }
        let silver: [(&str, &str, Vec<&str>, Option<&str>); 5] = [
            ("partners", "partners", vec!["partner_id"], None),
            ("customers", "customers", vec!["customer_id"], Some("updated_at")),
            ("products", "products", vec!["product_id"], None),
            ("orders", "orders", vec!["order_id"], Some("updated_at")),
            ("order_lines", "orders", vec!["order_id", "line_no"], Some("updated_at")),
        ];
        for (name, from, key, version) in silver {
            let spec = match from {
                "orders" => strata_silver::retail::orders(),
                "customers" => strata_silver::retail::customers(),
                "partners" => strata_silver::retail::partners(),
                _ => strata_silver::retail::products(),
            };
            let mut stream: Vec<Arc<dyn StreamTransform>> =
                vec![Arc::new(strata_silver::Conform::try_new(spec).unwrap())];
            if name == "order_lines" {
                stream.push(Arc::new(strata_core::transforms::OnStream(Arc::new(
                    strata_silver::Explode::new("lines", strata_silver::retail::ORDER_LINE_PARENT),
                ))));
            }
            let source = DeltaSource::try_new(t("bronze", from)).await.unwrap();
            // PII masked before conforming, as the scaffolded silver pipelines do.
            let policy = strata_privacy::Policy::retail();
            let mask = strata_privacy::Mask::try_new(
                &policy,
                from,
                "silver",
                &strata_core::Source::schema(&source),
                &"a-test-masking-key-0123456789".to_string().into(),
            )
            .unwrap();
            let r = run(
                &format!("silver_{name}"),
                Arc::new(source),
                vec![Arc::new(mask)],
                stream,
                Arc::new(
                    strata_delta::DeltaSink::try_new(
                        t("silver", name),
                        strata_delta::DeltaSinkConfig::default()
                            .with_merge(&key, version)
                            .with_schema_evolution(strata_delta::SchemaEvolution::Freeze),
                    )
                    .unwrap(),
                ),
            )
            .await;
            if name == "orders" {
                assert_eq!(
                    r.rows_quarantined,
                    m.dirt.null_customer_id + m.dirt.negative_quantity + m.dirt.unknown_currency
                );
            }
        }
        let gold = strata_gold::Gold::try_new(
            |n| Ok(conn.delta_table(&format!("silver/{n}"))),
            |n| Ok(conn.delta_table(&format!("gold/{n}"))),
        )
        .unwrap();
        let report = gold.build().await.unwrap();
        assert_eq!(report.rebuilt.len(), strata_gold::gold_tables().len());
        let one = |b: Vec<RecordBatch>| {
            let c = arrow_cast::cast(b[0].column(0), &arrow_schema::DataType::Int64).unwrap();
            c.as_primitive::<arrow_array::types::Int64Type>().value(0)
        };
        assert_eq!(
            one(gold.query("SELECT COUNT(*) FROM silver_orders").await.unwrap()) as u64,
            m.expected.orders
        );
        assert_eq!(
            one(gold.query("SELECT COUNT(*) FROM fact_order_line").await.unwrap()) as u64,
            m.expected.order_lines
        );
        assert_eq!(
            one(gold.query("SELECT CAST(SUM(quantity) AS BIGINT) FROM fact_order_line").await.unwrap()) as u64,
            m.expected.units
        );
        let rev = gold
            .query("SELECT currency, CAST(SUM(revenue) * 100 AS BIGINT) FROM daily_revenue GROUP BY currency")
            .await
            .unwrap();
        let mut got = BTreeMap::new();
        for b in &rev {
            let v = arrow_cast::cast(b.column(1), &arrow_schema::DataType::Int64).unwrap();
            let k = arrow_cast::cast(b.column(0), &arrow_schema::DataType::Utf8).unwrap();
            for i in 0..b.num_rows() {
                got.insert(
                    k.as_string::<i32>().value(i).to_string(),
                    v.as_primitive::<arrow_array::types::Int64Type>().value(i),
                );
            }
        }
        assert_eq!(got, m.expected.revenue_cents_by_currency);
        // Up to date: a second build changes nothing.
        assert!(gold.build().await.unwrap().rebuilt.is_empty());
    });
}
