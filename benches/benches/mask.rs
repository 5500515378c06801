//! Masking throughput: the retail privacy policy over the SF 1 customers (generated once into
//! `STRATA_BENCH_DATA`, default /tmp/strata-bench/sf1), as read from bronze (text columns and
//! the address struct). `benches/e2e/mask_baseline.py` runs the same policy in pyarrow +
//! hashlib/hmac + re over the same file for the ratio.

use arrow_array::RecordBatch;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::path::PathBuf;
use stratalake_core::{BatchTransform, Context};

fn customers() -> Vec<RecordBatch> {
    let dir = PathBuf::from(
        std::env::var("STRATA_BENCH_DATA").unwrap_or_else(|_| "/tmp/strata-bench/sf1".into()),
    );
    let path = dir.join("customers.ndjson");
    if !path.exists() {
        let cfg = stratalake_datagen::GeneratorConfig::at_scale(1.0);
        stratalake_datagen::generate(&cfg, &dir, &|_| {}).unwrap();
    }
    let file = std::fs::File::open(&path).unwrap();
    let schema = arrow_json::reader::infer_json_schema(
        std::io::BufReader::new(std::fs::File::open(&path).unwrap()),
        None,
    )
    .unwrap()
    .0;
    arrow_json::ReaderBuilder::new(std::sync::Arc::new(schema))
        .with_batch_size(8192)
        .build(std::io::BufReader::new(file))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn bench(c: &mut Criterion) {
    let batches = customers();
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let bytes: usize = batches.iter().map(RecordBatch::get_array_memory_size).sum();
    let policy = stratalake_privacy::Policy::retail();
    let mask = stratalake_privacy::Mask::try_new(
        &policy,
        "customers",
        "silver",
        &batches[0].schema(),
        &"bench-key-0123456789abcdef".to_string().into(),
    )
    .unwrap();
    let ctx = Context::new("bench");
    eprintln!(
        "customers: {rows} rows, {} MB in Arrow; masked columns {:?}",
        bytes / 1_000_000,
        mask.masked_columns()
    );
    let mut g = c.benchmark_group("mask");
    g.sample_size(10);
    g.throughput(Throughput::Elements(rows as u64));
    g.bench_function("retail_policy_sf1_customers", |b| {
        b.iter(|| {
            for batch in &batches {
                std::hint::black_box(mask.apply(batch.clone(), &ctx).unwrap());
            }
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
