//! A 200 MB object streamed to moto and Azurite through the Parquet sink with bounded memory:
//! the live heap (jemalloc's `stats.allocated`, sampled every 5 ms) stays far below the
//! object's size. Its own test binary, so no other test shares the heap.

use arrow_array::{BinaryArray, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use futures::StreamExt;
use object_store::ObjectStoreExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use stratalake_core::{
    BatchStreamAdapter, Context, Cursor, InMemoryCheckpointStore, PipelineBuilder, ReadPlan,
    ReadRequest, Result, SendableBatchStream, Source, Split,
};
use stratalake_files::ParquetSinkConfig;
use stratalake_files::cloud::CloudSinkConfig;
use stratalake_tests::cloud::Cloud;

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const BATCHES: usize = 200;
const ROWS: usize = 1024;
const VALUE_BYTES: usize = 1024;

/// 200 batches of 1 MiB of incompressible bytes, made as they are read.
#[derive(Debug)]
struct Noise {
    schema: SchemaRef,
}

fn noise_batch(schema: &SchemaRef, i: usize) -> RecordBatch {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (i as u64 + 1);
    let mut bytes = vec![0u8; ROWS * VALUE_BYTES];
    for chunk in bytes.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let values: Vec<&[u8]> = bytes.chunks(VALUE_BYTES).collect();
    let ids = Int64Array::from_iter_values((0..ROWS).map(|r| (i * ROWS + r) as i64));
    RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(ids), Arc::new(BinaryArray::from(values))],
    )
    .unwrap()
}

#[async_trait::async_trait]
impl Source for Noise {
    fn name(&self) -> &str {
        "noise"
    }
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    async fn plan(&self, req: &ReadRequest, _ctx: &Context) -> Result<ReadPlan> {
        let splits = if req.from.is_some() {
            Vec::new()
        } else {
            vec![Split {
                id: "noise".into(),
                spec: String::new(),
                size_bytes: None,
            }]
        };
        Ok(ReadPlan::new(splits, Some(Cursor::new("done"))))
    }
    fn read(&self, _split: &Split, _ctx: &Context) -> Result<SendableBatchStream> {
        let schema = self.schema.clone();
        let s = schema.clone();
        let stream = futures::stream::iter(0..BATCHES).map(move |i| Ok(noise_batch(&s, i)));
        Ok(BatchStreamAdapter::boxed(schema, Box::pin(stream)))
    }
}

fn allocated() -> usize {
    let _ = tikv_jemalloc_ctl::epoch::advance();
    tikv_jemalloc_ctl::stats::allocated::read().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_megabyte_object_is_uploaded_with_bounded_memory() {
    for cloud in [Cloud::S3, Cloud::Azure] {
        let conn = cloud.fresh("big").await;
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("payload", DataType::Binary, false),
        ]));
        let mut write = ParquetSinkConfig::new("");
        write.target_file_size_megabytes = 1024;
        write.row_group_rows = 4096;
        write.write_concurrency = 1;
        write.upload_part_size_megabytes = 8;
        write.upload_concurrency = 4;
        let sink = CloudSinkConfig::new(conn.with_prefix("big"), write)
            .build()
            .unwrap();
        let p = PipelineBuilder::new(
            "big",
            Arc::new(Noise { schema }),
            Arc::new(sink),
            Arc::new(InMemoryCheckpointStore::new()),
        )
        .build()
        .unwrap();
        let base = allocated();
        let peak = Arc::new(AtomicUsize::new(base));
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (peak, stop) = (peak.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(allocated(), Ordering::Relaxed);
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            })
        };
        let report = p.run().await.unwrap();
        stop.store(true, Ordering::Relaxed);
        sampler.join().unwrap();
        assert_eq!(report.rows_written, (BATCHES * ROWS) as u64);
        assert_eq!(report.items.len(), 1, "{cloud:?}: one file");
        let loc = conn.with_prefix("big").location();
        let meta = loc
            .store()
            .head(&loc.child(&report.items[0]))
            .await
            .unwrap();
        assert!(meta.size > 200 << 20, "{cloud:?}: {} bytes", meta.size);
        let grew = peak.load(Ordering::Relaxed).saturating_sub(base);
        // Parts in flight (4 x 8 MiB) + the part being filled + a 4 MiB row group + batches.
        assert!(
            grew < 96 << 20,
            "{cloud:?}: the live heap grew by {} MiB while uploading {} MiB",
            grew >> 20,
            meta.size >> 20
        );
        println!(
            "{cloud:?}: {} MiB uploaded, live heap grew by {} MiB at most",
            meta.size >> 20,
            grew >> 20
        );
    }
}
