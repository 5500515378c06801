//! Micro-benchmarks of the data path: NDJSON decoding through `FileSource` (clean and with 2%
//! dirt, which exercises the bad-record search), and NDJSON to Parquet through the runner.
//! Run with `cargo bench -p stratalake-benches`; not run in CI.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use std::path::Path;
use std::sync::Arc;
use stratalake_core::{Context, InMemoryCheckpointStore, PipelineBuilder, ReadRequest, Source};
use stratalake_files::{
    FileSource, FileSourceConfig, Format, ParquetSink, ParquetSinkConfig, SchemaSource,
};

fn config(dir: &Path) -> FileSourceConfig {
    let mut cfg = FileSourceConfig::new(dir.to_str().unwrap(), Format::Ndjson);
    cfg.include = vec!["orders.ndjson".into()];
    cfg.schema = SchemaSource::explicit(stratalake_datagen::orders_schema());
    cfg
}

async fn decode_all(source: &FileSource) -> usize {
    let (qtx, mut qrx) = stratalake_core::quarantine::quarantine_channel(1 << 16);
    let ctx = Context::builder("bench").with_quarantine(qtx).build();
    let plan = source.plan(&ReadRequest::default(), &ctx).await.unwrap();
    let mut rows = 0;
    for split in &plan.splits {
        let mut s = source.read(split, &ctx).unwrap();
        while let Some(b) = s.next().await {
            rows += b.unwrap().num_rows();
            while qrx.try_recv().is_ok() {}
        }
    }
    rows
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for (name, dirt) in [("clean", 0.0), ("dirty_2pct", 0.02)] {
        let dir = tempfile::tempdir().unwrap();
        let m = stratalake_datagen::generate(
            &stratalake_datagen::GeneratorConfig::at_scale(0.03).with_dirt_rate(dirt),
            dir.path(),
            &|_| {},
        )
        .unwrap();
        let source = rt
            .block_on(FileSource::try_new(config(dir.path())))
            .unwrap();
        // The one-pass screen alone (nesting, a second value, unterminated records, UTF-8,
        // fractions into integers): what the hostile-input guards cost per byte.
        let bytes = std::fs::read(dir.path().join("orders.ndjson")).unwrap();
        let ints: Vec<Vec<u8>> = stratalake_datagen::orders_schema()
            .into_iter()
            .filter(|(_, t)| t.contains("int"))
            .map(|(c, _)| c.as_bytes().to_vec())
            .collect();
        let mut g = c.benchmark_group(format!("ndjson_screen_{name}"));
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.sample_size(20);
        g.bench_function("screen_json", |b| {
            b.iter(|| {
                bytes
                    .chunks(1 << 20)
                    .map(|c| stratalake_files::decode::screen_json(c, 64, &ints).len())
                    .sum::<usize>()
            })
        });
        g.finish();

        let mut g = c.benchmark_group(format!("ndjson_decode_{name}"));
        g.throughput(Throughput::Bytes(m.order_file_bytes));
        g.sample_size(10);
        g.bench_function("file_source", |b| {
            b.iter(|| rt.block_on(decode_all(&source)))
        });
        g.finish();

        let mut g = c.benchmark_group(format!("ndjson_to_parquet_{name}"));
        g.throughput(Throughput::Bytes(m.order_file_bytes));
        g.sample_size(10);
        g.bench_function("pipeline", |b| {
            b.iter(|| {
                let out = tempfile::tempdir().unwrap();
                let source: Arc<dyn Source> = Arc::new(
                    rt.block_on(FileSource::try_new(config(dir.path())))
                        .unwrap(),
                );
                let sink = Arc::new(
                    ParquetSink::try_new(ParquetSinkConfig::new(out.path().to_str().unwrap()))
                        .unwrap(),
                );
                let p = PipelineBuilder::new(
                    "bench",
                    source,
                    sink,
                    Arc::new(InMemoryCheckpointStore::new()),
                )
                .build()
                .unwrap();
                rt.block_on(p.run()).unwrap()
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
