//! Embedding two connectors in a service of your own: an axum app whose `POST /loads/orders`
//! pulls the orders a partner's REST API has added since the last load (stratalake-rest,
//! incremental by `updated_at`) and lands them in S3 as Parquet (stratalake-s3), exactly once.
//! A second request loads only what is new; two requests at once never load anything twice
//! (the second waits, or gets `409` if another process holds the pipeline).
//!
//! Needs an S3 endpoint: moto or MinIO at `STRATA_S3_ENDPOINT` (default
//! `http://127.0.0.1:5000`, what `scripts/services.sh start` runs). The partner API is served
//! in-process here so the example is self-contained.
//!
//! Run with `cargo run -p stratalake-s3 --example rest_to_s3_service`.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use stratalake_core::{
    Context, ErrorKind, InMemoryCheckpointStore, Pipeline, PipelineBuilder, ReadRequest, RunOutcome,
};
use stratalake_files::{FileSourceConfig, Format, ParquetSinkConfig, SchemaSource};
use stratalake_rest::{Incremental, RestSource, RestSourceConfig};
use stratalake_s3::{S3Config, S3SinkConfig, S3SourceConfig, create_bucket};
use tokio::task::JoinSet;

/// The partner's API: orders with the time they were last updated.
#[derive(Default)]
struct PartnerApi {
    orders: Mutex<Vec<(String, i64, String)>>,
}

/// `GET /orders?updated_since=T`: the orders updated at or after `T`, as `{"data": [...]}`.
async fn list_orders(
    State(api): State<Arc<PartnerApi>>,
    Query(q): Query<HashMap<String, String>>,
) -> String {
    let since = q.get("updated_since").cloned().unwrap_or_default();
    let rows: Vec<String> = api
        .orders
        .lock()
        .expect("orders")
        .iter()
        .filter(|(_, _, t)| t.as_str() >= since.as_str())
        .map(|(id, cents, t)| {
            format!(r#"{{"order_id":"{id}","total_cents":{cents},"updated_at":"{t}"}}"#)
        })
        .collect();
    format!(r#"{{"data":[{}]}}"#, rows.join(","))
}

/// Our service: one pipeline, run on request, one run at a time in this process.
struct Loader {
    pipeline: Pipeline,
    running: tokio::sync::Mutex<()>,
}

/// `POST /loads/orders`: run one epoch and say what it did.
async fn load(State(app): State<Arc<Loader>>) -> (StatusCode, String) {
    let _one_at_a_time = app.running.lock().await;
    match app.pipeline.run().await {
        Ok(r) => {
            let outcome = match r.outcome {
                RunOutcome::Committed => "committed",
                RunOutcome::NothingNew => "nothing_new",
                _ => "other",
            };
            let body = format!(
                r#"{{"outcome":"{outcome}","epoch":{},"rows":{}}}"#,
                r.epoch.0, r.rows_written
            );
            (StatusCode::OK, body)
        }
        // Another process runs the same pipeline: the caller may try again later.
        Err(e) if e.kind() == ErrorKind::Conflict => (StatusCode::CONFLICT, e.to_string()),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Serve `app` on a free local port, in `servers` (aborted when it is dropped).
async fn serve(app: Router, servers: &mut JoinSet<std::io::Result<()>>) -> std::io::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    servers.spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}"))
}

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    // The partner API, with three orders.
    let api = Arc::new(PartnerApi::default());
    let add = |id: &str, cents: i64, at: &str| {
        api.orders
            .lock()
            .expect("orders")
            .push((id.into(), cents, at.into()));
    };
    add("o-1", 1250, "2026-11-30T09:00:00Z");
    add("o-2", 499, "2026-11-30T09:05:00Z");
    add("o-3", 8000, "2026-11-30T10:00:00Z");
    let mut servers = JoinSet::new();
    let partner = Router::new()
        .route("/orders", get(list_orders))
        .with_state(api.clone());
    let partner = serve(partner, &mut servers).await?;

    // The lake: a fresh bucket on the local S3 server.
    let endpoint =
        std::env::var("STRATA_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".into());
    let bucket = format!("orders-service-{}", std::process::id());
    let lake = S3Config::local_server(bucket, endpoint).with_prefix("bronze/orders");
    create_bucket(&lake).await?;

    // The pipeline, built once when the service starts.
    let source = RestSourceConfig::new(&partner, "/orders")
        .with_records("$.data")
        .with_schema(SchemaSource::explicit([
            ("order_id", "utf8 not null"),
            ("total_cents", "int64"),
            ("updated_at", "timestamp"),
        ]))
        .with_incremental(Incremental::new(
            "updated_at",
            "updated_since",
            "2026-01-01T00:00:00Z",
        ));
    let sink = S3SinkConfig::new(lake.clone(), ParquetSinkConfig::new("")).build()?;
    let pipeline = PipelineBuilder::new(
        "partner_orders",
        Arc::new(RestSource::try_new(source).await?),
        Arc::new(sink),
        // The sink holds the committed marker in its manifest, so even an in-memory checkpoint
        // store is exactly once across restarts (see s3_checkpoints for a durable one).
        Arc::new(InMemoryCheckpointStore::new()),
    )
    .build()?;
    let loader = Arc::new(Loader {
        pipeline,
        running: tokio::sync::Mutex::new(()),
    });
    let service = Router::new()
        .route("/loads/orders", post(load))
        .with_state(loader);
    let service = serve(service, &mut servers).await?;

    // Clients of the service.
    let http = reqwest::Client::new();
    let call = || async {
        let r = http.post(format!("{service}/loads/orders")).send().await?;
        let status = r.status();
        let body: serde_json::Value = serde_json::from_str(&r.text().await?)?;
        println!("POST /loads/orders -> {status} {body}");
        Ok::<_, Box<dyn std::error::Error>>(body)
    };
    let first = call().await?;
    assert_eq!(
        (first["outcome"].as_str(), first["rows"].as_u64()),
        (Some("committed"), Some(3))
    );

    add("o-4", 2100, "2026-11-30T11:00:00Z");
    add("o-2", 599, "2026-11-30T11:30:00Z"); // o-2 corrected by the partner: a new version
    // Two clients at once: one epoch loads the two changes, the other finds nothing new.
    let (a, b) = tokio::join!(call(), call());
    let mut rows = [a?["rows"].as_u64(), b?["rows"].as_u64()];
    rows.sort();
    assert_eq!(rows, [Some(0), Some(2)]);

    // What landed: every version once.
    let read = S3SourceConfig::new(lake, FileSourceConfig::new("", Format::Parquet))
        .build()
        .await?;
    let (batches, _) =
        stratalake_core::read_all(&read, &ReadRequest::default(), &Context::new("check")).await?;
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    println!("{total} order versions in s3");
    assert_eq!(total, 5);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_example_runs() {
        super::main().expect("the example runs (is the S3 server up? scripts/services.sh start)");
    }
}
