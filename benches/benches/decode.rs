//! Micro-benchmarks of the data path, one group per decoder path (throughput in bytes of input,
//! so criterion reports MB/s; the runtime has two workers but each path decodes on one thread
//! at a time here, so the figure is per core):
//!
//! - `ndjson_screen_*`: the one-pass hostile-input screen alone;
//! - `ndjson_decode_*`: NDJSON through `FileSource` with the explicit schema, clean and with 2%
//!   dirt (which exercises the bad-record search);
//! - `ndjson_inferred_*`: the same with the schema inferred from a sample;
//! - `json_records_*`: `JsonRecordDecoder`, the path of REST pages and MongoDB documents, on the
//!   same records in 1,000-record pages;
//! - `csv_decode`: a flat CSV of the orders' scalar columns through `FileSource`;
//! - `ndjson_to_parquet_*`: NDJSON to zstd Parquet through the runner (both cores).
//!
//! With `STRATA_BENCH_NDJSON=/path/to/file.ndjson` set, the `ndjson_file_*` groups decode that
//! file (schema inferred) and convert it to Parquet as well: measure your own data's shape.
//!
//! Run with `cargo bench -p stratalake-benches --bench decode`; not run in CI.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use std::path::Path;
use std::sync::Arc;
use stratalake_core::{Context, InMemoryCheckpointStore, PipelineBuilder, ReadRequest, Source};
use stratalake_files::{
    CsvOptions, FileSource, FileSourceConfig, Format, JsonRecordDecoder, ParquetSink,
    ParquetSinkConfig, SchemaSource, TypeDriftPolicy, UnknownFieldPolicy,
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

/// Decode, then convert to Parquet, one NDJSON file with its schema inferred.
fn bench_file(c: &mut Criterion, rt: &tokio::runtime::Runtime, path: &Path) {
    let dir = path.parent().unwrap().to_str().unwrap();
    let mut cfg = FileSourceConfig::new(dir, Format::Ndjson);
    cfg.include = vec![path.file_name().unwrap().to_str().unwrap().into()];
    let bytes = std::fs::metadata(path).unwrap().len();
    let source = rt.block_on(FileSource::try_new(cfg.clone())).unwrap();
    let mut g = c.benchmark_group("ndjson_file_decode");
    g.throughput(Throughput::Bytes(bytes));
    g.sample_size(10);
    g.bench_function("file_source", |b| {
        b.iter(|| rt.block_on(decode_all(&source)))
    });
    g.finish();
    let mut g = c.benchmark_group("ndjson_file_to_parquet");
    g.throughput(Throughput::Bytes(bytes));
    g.sample_size(10);
    g.bench_function("pipeline", |b| b.iter(|| to_parquet(rt, cfg.clone())));
    g.finish();
}

/// One run of `cfg`'s files to zstd Parquet in a fresh directory, through the runner.
fn to_parquet(rt: &tokio::runtime::Runtime, cfg: FileSourceConfig) -> u64 {
    let out = tempfile::tempdir().unwrap();
    let source: Arc<dyn Source> = Arc::new(rt.block_on(FileSource::try_new(cfg)).unwrap());
    let sink = Arc::new(
        ParquetSink::try_new(ParquetSinkConfig::new(out.path().to_str().unwrap())).unwrap(),
    );
    let p = PipelineBuilder::new(
        "bench",
        source,
        sink,
        Arc::new(InMemoryCheckpointStore::new()),
    )
    .build()
    .unwrap();
    rt.block_on(p.run()).unwrap().rows_written
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if let Some(path) = std::env::var_os("STRATA_BENCH_NDJSON") {
        bench_file(c, &rt, Path::new(&path));
    }
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

        let mut inferred = config(dir.path());
        inferred.schema = SchemaSource::default();
        let inferred = rt.block_on(FileSource::try_new(inferred)).unwrap();
        let mut g = c.benchmark_group(format!("ndjson_inferred_{name}"));
        g.throughput(Throughput::Bytes(m.order_file_bytes));
        g.sample_size(10);
        g.bench_function("file_source", |b| {
            b.iter(|| rt.block_on(decode_all(&inferred)))
        });
        g.finish();

        // Pages of 1,000 records, as a REST source hands them to the decoder.
        let pages: Vec<&[u8]> = page_slices(&bytes, 1000);
        let mut g = c.benchmark_group(format!("json_records_{name}"));
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.sample_size(10);
        g.bench_function("json_record_decoder", |b| {
            let mut dec = JsonRecordDecoder::new(
                source.schema(),
                8192,
                TypeDriftPolicy::Quarantine,
                UnknownFieldPolicy::Ignore,
            );
            b.iter(|| {
                pages
                    .iter()
                    .map(|p| {
                        let out = dec.decode(p).unwrap();
                        out.batches.iter().map(|b| b.num_rows()).sum::<usize>() + out.rejected.len()
                    })
                    .sum::<usize>()
            })
        });
        g.finish();

        if dirt == 0.0 {
            let csv = flat_csv(&bytes);
            std::fs::write(dir.path().join("orders.csv"), &csv).unwrap();
            let mut cfg = FileSourceConfig::new(
                dir.path().to_str().unwrap(),
                Format::Csv(CsvOptions::default()),
            );
            cfg.include = vec!["orders.csv".into()];
            cfg.schema = SchemaSource::explicit(csv_columns());
            let csv_source = rt.block_on(FileSource::try_new(cfg)).unwrap();
            let mut g = c.benchmark_group("csv_decode");
            g.throughput(Throughput::Bytes(csv.len() as u64));
            g.sample_size(10);
            g.bench_function("file_source", |b| {
                b.iter(|| rt.block_on(decode_all(&csv_source)))
            });
            g.finish();
        }

        let mut g = c.benchmark_group(format!("ndjson_to_parquet_{name}"));
        g.throughput(Throughput::Bytes(m.order_file_bytes));
        g.sample_size(10);
        g.bench_function("pipeline", |b| {
            b.iter(|| to_parquet(&rt, config(dir.path())))
        });
        g.finish();
    }
}

/// `bytes` (NDJSON) cut into pages of `per_page` whole lines.
fn page_slices(bytes: &[u8], per_page: usize) -> Vec<&[u8]> {
    let mut pages = Vec::new();
    let mut start = 0;
    for (n, end) in memchr::memchr_iter(b'\n', bytes).enumerate() {
        if (n + 1) % per_page == 0 {
            pages.push(&bytes[start..=end]);
            start = end + 1;
        }
    }
    if start < bytes.len() {
        pages.push(&bytes[start..]);
    }
    pages
}

/// The orders' scalar columns the CSV bench writes, typed as the orders schema types them.
const CSV_NAMES: [&str; 8] = [
    "order_id",
    "partner_id",
    "customer_id",
    "status",
    "channel",
    "currency",
    "created_at",
    "total_amount",
];

fn csv_columns() -> Vec<(&'static str, &'static str)> {
    stratalake_datagen::orders_schema()
        .into_iter()
        .filter(|(n, _)| CSV_NAMES.contains(n))
        .collect()
}

/// A CSV of the orders' scalar columns (the lines that parse as JSON objects).
fn flat_csv(ndjson: &[u8]) -> Vec<u8> {
    let columns = csv_columns();
    let mut out = columns
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(",")
        .into_bytes();
    out.push(b'\n');
    for line in ndjson.split(|b| *b == b'\n') {
        let Ok(serde_json::Value::Object(m)) = serde_json::from_slice(line) else {
            continue;
        };
        let cells: Vec<String> = columns
            .iter()
            .map(|(n, _)| match m.get(*n) {
                Some(serde_json::Value::String(s)) => s.replace(',', " "),
                Some(serde_json::Value::Null) | None => String::new(),
                Some(v) => v.to_string(),
            })
            .collect();
        out.extend_from_slice(cells.join(",").as_bytes());
        out.push(b'\n');
    }
    out
}

criterion_group!(benches, bench);
criterion_main!(benches);
