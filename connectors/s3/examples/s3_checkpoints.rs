//! A durable checkpoint store on S3: a pipeline from NDJSON objects in one prefix to Parquet in
//! another keeps its checkpoints in the same bucket (`ObjectStoreCheckpointStore`: one object
//! per saved epoch, created with `If-None-Match`, so two runs cannot both save the same next
//! epoch). A restarted process (a new pipeline, a new store instance) carries on from the
//! checkpoint: it loads only the objects added since.
//!
//! Needs an S3 endpoint: moto or MinIO at `STRATA_S3_ENDPOINT` (default
//! `http://127.0.0.1:5000`, what `scripts/services.sh start` runs).
//!
//! Run with `cargo run -p stratalake-s3 --example s3_checkpoints`.

use object_store::{ObjectStoreExt, PutPayload};
use std::sync::Arc;
use stratalake_core::{
    CheckpointStore, CommitMarker, Epoch, ErrorKind, PipelineBuilder, RunOutcome,
};
use stratalake_files::{
    FileSourceConfig, Format, ObjectStoreCheckpointStore, ParquetSinkConfig, SchemaSource,
};
use stratalake_s3::{S3Config, S3SinkConfig, S3SourceConfig, create_bucket};

/// One process's pipeline: everything built afresh, as after a restart.
async fn pipeline(bucket: &S3Config) -> stratalake_core::Result<stratalake_core::Pipeline> {
    let mut read = FileSourceConfig::new("", Format::Ndjson);
    read.schema = SchemaSource::explicit([("order_id", "utf8 not null"), ("total_cents", "int64")]);
    let source = S3SourceConfig::new(bucket.clone().with_prefix("raw/orders"), read)
        .build()
        .await?;
    let sink = S3SinkConfig::new(
        bucket.clone().with_prefix("bronze/orders"),
        ParquetSinkConfig::new(""),
    )
    .build()?;
    let checkpoints =
        ObjectStoreCheckpointStore::new(bucket.clone().with_prefix("_checkpoints").location()?);
    PipelineBuilder::new(
        "orders",
        Arc::new(source),
        Arc::new(sink),
        Arc::new(checkpoints),
    )
    .build()
}

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let endpoint =
        std::env::var("STRATA_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".into());
    let bucket = S3Config::local_server(format!("checkpoints-{}", std::process::id()), endpoint);
    create_bucket(&bucket).await?;
    let raw = bucket.clone().with_prefix("raw/orders").location()?;
    let drop_file = |name: &str, lines: &str| {
        let (raw, name, body) = (raw.clone(), name.to_string(), lines.to_string());
        async move {
            raw.store()
                .put(&raw.child(&name), PutPayload::from(body))
                .await
        }
    };

    drop_file(
        "2026-11-30.ndjson",
        "{\"order_id\":\"o-1\",\"total_cents\":1250}\n{\"order_id\":\"o-2\",\"total_cents\":499}\n",
    )
    .await?;
    let first = pipeline(&bucket).await?.run().await?;
    println!(
        "first process: epoch {}, {} rows",
        first.epoch.0, first.rows_written
    );
    assert_eq!(
        (first.outcome, first.rows_written),
        (RunOutcome::Committed, 2)
    );

    // A new file arrives; a new process starts from the checkpoint in S3.
    drop_file(
        "2026-12-01.ndjson",
        "{\"order_id\":\"o-3\",\"total_cents\":8000}\n",
    )
    .await?;
    let second = pipeline(&bucket).await?.run().await?;
    println!(
        "second process: epoch {}, {} rows",
        second.epoch.0, second.rows_written
    );
    assert_eq!((second.epoch, second.rows_written), (Epoch(2), 1));
    assert_eq!(
        pipeline(&bucket).await?.run().await?.outcome,
        RunOutcome::NothingNew
    );

    // The store is a compare-and-swap: saving over a checkpoint this run did not expect is a
    // conflict (another run of the same pipeline moved it), never a silent overwrite.
    let store =
        ObjectStoreCheckpointStore::new(bucket.clone().with_prefix("_checkpoints").location()?);
    let saved = store.load("orders").await?.expect("a checkpoint");
    println!("checkpoint in s3: epoch {}", saved.epoch.0);
    let stale = CommitMarker::new("orders", Epoch(2), saved.cursor.clone());
    let e = store
        .save(&stale, Epoch(1))
        .await
        .expect_err("a stale save");
    assert_eq!(e.kind(), ErrorKind::Conflict);
    println!("a stale save: {e}");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_example_runs() {
        super::main().expect("the example runs (is the S3 server up? scripts/services.sh start)");
    }
}
