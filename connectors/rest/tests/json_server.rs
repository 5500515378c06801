//! stratalake-rest against json-server 0.17.4, an independent third-party REST server (started by
//! `scripts/services.sh`; a missing server fails the test with a hint): RFC 8288 Link
//! pagination, page numbers with an empty-page stop, and incremental loading through its
//! `_gte` filter.

use std::sync::Arc;
use stratalake_core::{InMemoryCheckpointStore, PipelineBuilder, RunOutcome};
use stratalake_records::SchemaSource;
use stratalake_rest::{Incremental, Paginator, RestSource, RestSourceConfig};
use stratalake_testkit::MemorySink;

fn base() -> String {
    std::env::var("STRATA_JSON_SERVER").unwrap_or_else(|_| "http://127.0.0.1:3000".into())
}

fn cfg(paginator: Paginator, limit: &str) -> RestSourceConfig {
    let mut c = RestSourceConfig::new(base(), "orders");
    c.params.insert("_limit".into(), limit.into());
    c.paginator = paginator;
    c.schema = SchemaSource::explicit([
        ("id", "int64 not null"),
        ("partner_id", "utf8"),
        ("total", "float64"),
        ("updated_at", "timestamp"),
    ]);
    c.http.max_retries = 1;
    c
}

async fn pipeline(c: RestSourceConfig) -> (stratalake_core::Pipeline, MemorySink) {
    let source = RestSource::try_new(c).await.unwrap_or_else(|e| {
        panic!("json-server at {}: {e:#}. Start it: scripts/services.sh install && scripts/services.sh start", base())
    });
    let sink = MemorySink::new();
    let p = PipelineBuilder::new(
        "json-server",
        Arc::new(source),
        Arc::new(sink.clone()),
        Arc::new(InMemoryCheckpointStore::new()),
    )
    .build()
    .unwrap();
    (p, sink)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_server_pages_by_link_header_and_page_number() {
    let mut link = cfg(Paginator::LinkHeader, "30");
    link.params.insert("_page".into(), "1".into());
    let (p, sink) = pipeline(link).await;
    let r = p
        .run()
        .await
        .unwrap_or_else(|e| panic!("{e:#} (is json-server running?)"));
    assert_eq!(r.rows_written, 200);
    assert_eq!(sink.visible_rows(), 200);

    let mut pages = cfg(
        Paginator::PageNumber {
            page_param: "_page".into(),
            start: 1,
            size_param: None,
            size: None,
            total_pages_path: None,
        },
        "45",
    );
    pages.stop.max_records = 0;
    let (p, _) = pipeline(pages).await;
    assert_eq!(
        p.run().await.unwrap().rows_written,
        200,
        "stops at the first empty page"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_server_incremental_by_updated_at() {
    let mut c = cfg(Paginator::LinkHeader, "50");
    c.params.insert("_page".into(), "1".into());
    c.incremental = Some(Incremental::new(
        "updated_at",
        "updated_at_gte",
        "2024-01-15T00:00:00Z",
    ));
    let (p, sink) = pipeline(c).await;
    let first = p.run().await.unwrap();
    // Order i is updated on day 1 + i % 28: days 15..28 are 14 residues, 7 times in 1..=196.
    assert_eq!(first.rows_written, 98, "{first:?}");
    let again = p.run().await.unwrap();
    assert_eq!(
        again.outcome,
        RunOutcome::NothingNew,
        "the boundary records are not read twice"
    );
    assert_eq!(sink.visible_rows(), 98);
}
