//! The source against fakesnow: conformance and incremental reads.

mod common;

use async_trait::async_trait;
use std::sync::Arc;
use stratalake_core::{Context, ReadRequest, Source};
use stratalake_snowflake::source::{SnowflakeSource, SnowflakeSourceConfig};
use stratalake_testkit::assert::sorted_rows;
use stratalake_testkit::{SourceFixture, check_source};

struct Fix {
    db: String,
}

#[async_trait]
impl SourceFixture for Fix {
    async fn source(&self) -> Arc<dyn Source> {
        Arc::new(
            SnowflakeSource::try_new(
                SnowflakeSourceConfig::new(common::config(&self.db), "SELECT ID, NAME FROM ORDERS")
                    .with_incremental("id"),
            )
            .await
            .unwrap(),
        )
    }
    async fn expected(&self) -> Vec<arrow_array::RecordBatch> {
        // The rows the generator inserted, built directly: never read through the connector.
        vec![
            arrow_array::RecordBatch::try_from_iter(vec![
                (
                    "ID",
                    std::sync::Arc::new(arrow_array::Int64Array::from_iter_values(0..2500))
                        as arrow_array::ArrayRef,
                ),
                (
                    "NAME",
                    std::sync::Arc::new(arrow_array::StringArray::from_iter_values(
                        (0..2500).map(|i| format!("order {i}")),
                    )),
                ),
            ])
            .unwrap(),
        ]
    }
    async fn break_input(&self) {
        let c = common::session(&self.db).await;
        c.query("DROP TABLE ORDERS").await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_passes_the_conformance_suite() {
    let db = common::unique("src");
    let c = common::session(&db).await;
    c.query("CREATE TABLE ORDERS (ID INT, NAME VARCHAR)")
        .await
        .unwrap();
    c.query("INSERT INTO ORDERS SELECT seq4(), 'order ' || seq4() FROM TABLE(GENERATOR(ROWCOUNT => 2500))")
        .await
        .unwrap();
    check_source(&Fix { db }).await;
}

async fn read(
    src: &SnowflakeSource,
    from: Option<stratalake_core::Cursor>,
) -> (Vec<String>, Option<stratalake_core::Cursor>) {
    let ctx = Context::new("inc");
    let (out, plan) = stratalake_core::read_all(src, &ReadRequest::after(from), &ctx)
        .await
        .unwrap();
    (sorted_rows(&out), plan.end)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_reads_only_rows_above_the_mark() {
    let db = common::unique("inc");
    let c = common::session(&db).await;
    c.query("CREATE TABLE EVENTS (ID INT, UPDATED_AT TIMESTAMP_TZ)")
        .await
        .unwrap();
    c.query("INSERT INTO EVENTS VALUES (1, '2024-01-01 00:00:00+00:00'), (2, '2024-01-02 00:00:00+00:00')")
        .await
        .unwrap();
    let src = SnowflakeSource::try_new(
        SnowflakeSourceConfig::new(common::config(&db), "SELECT * FROM EVENTS")
            .with_incremental("updated_at"),
    )
    .await
    .unwrap();
    assert_eq!(src.schema().field(1).name(), "updated_at");
    let (rows, mark) = read(&src, None).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (rows, mark2) = read(&src, mark.clone()).await;
    assert!(rows.is_empty(), "nothing new: {rows:?}");
    assert_eq!(mark2, mark);
    c.query("INSERT INTO EVENTS VALUES (3, '2024-01-03 00:00:00+00:00')")
        .await
        .unwrap();
    let (rows, _) = read(&src, mark).await;
    assert_eq!(rows, vec!["| 3  | 2024-01-03T00:00:00Z |"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_table_is_not_found_naming_it() {
    let db = common::unique("nf");
    common::session(&db).await;
    let e = SnowflakeSource::try_new(SnowflakeSourceConfig::new(
        common::config(&db),
        "SELECT * FROM NOPE",
    ))
    .await
    .unwrap_err();
    assert_eq!(e.kind(), stratalake_core::ErrorKind::NotFound);
    assert!(e.report().contains("NOPE"), "{}", e.report());
}
