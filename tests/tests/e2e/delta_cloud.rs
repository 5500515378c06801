//! Delta tables on moto (S3) and Azurite (Azure Blob), started by `scripts/services.sh`: the
//! sink passes the conformance suite on both. (The whole medallion on both clouds runs
//! through the CLI in `examples/tests/cloud_lake.rs`.)

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use async_trait::async_trait;
use std::sync::Arc;
use stratalake_core::{InMemoryCheckpointStore, PipelineBuilder, Sink};
use stratalake_delta::{DeltaSink, DeltaSinkConfig, DeltaSource, TableLocation};
use stratalake_testkit::{MemorySink, SinkFixture, check_sink};
use stratalake_tests::cloud::Cloud;

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
