//! Across crates: generator → gzip parts arriving over three epochs → FileSource → ParquetSink,
//! checkpointed in an object store. Every well-formed record lands exactly once; every bad one
//! is quarantined with its file and line.

use arrow_array::RecordBatch;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use stratalake_core::{CheckpointStore, Epoch, PipelineBuilder, RunOutcome};
use stratalake_files::{
    FileSource, FileSourceConfig, Format, ObjectStoreCheckpointStore, ParquetSink,
    ParquetSinkConfig, SchemaSource, StoreLocation,
};

fn parquet_rows(dir: &Path) -> Vec<RecordBatch> {
    stratalake_files::read_parquet_dir(dir).unwrap()
}

fn count(b: &[RecordBatch]) -> u64 {
    b.iter().map(|b| b.num_rows() as u64).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_parts_over_three_epochs_land_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let gen_dir = tmp.path().join("gen");
    let m = stratalake_datagen::generate(
        &stratalake_datagen::GeneratorConfig::at_scale(0.03).with_dirt_rate(0.03),
        &gen_dir,
        &|_| {},
    )
    .unwrap();
    let text = std::fs::read_to_string(gen_dir.join("orders.ndjson")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let parts: Vec<&[&str]> = lines.chunks(lines.len().div_ceil(3)).collect();
    assert_eq!(parts.len(), 3);

    let landing = tmp.path().join("landing");
    std::fs::create_dir_all(&landing).unwrap();
    let mut cfg = FileSourceConfig::new(landing.to_str().unwrap(), Format::Ndjson);
    cfg.include = vec!["orders-*.ndjson.gz".into()];
    cfg.schema = SchemaSource::explicit(stratalake_datagen::orders_schema());
    let lake = tmp.path().join("lake/orders");
    let checkpoints = Arc::new(ObjectStoreCheckpointStore::new(
        StoreLocation::local(tmp.path().join("cp").to_str().unwrap()).unwrap(),
    ));

    for (i, part) in parts.iter().enumerate() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        for l in *part {
            writeln!(gz, "{l}").unwrap();
        }
        std::fs::write(
            landing.join(format!("orders-{i}.ndjson.gz")),
            gz.finish().unwrap(),
        )
        .unwrap();
        // A fresh process each epoch: new source, sink and store handles.
        let source = Arc::new(FileSource::try_new(cfg.clone()).await.unwrap());
        let sink =
            Arc::new(ParquetSink::try_new(ParquetSinkConfig::new(lake.to_str().unwrap())).unwrap());
        let p = PipelineBuilder::new("orders", source, sink, checkpoints.clone())
            .build()
            .unwrap();
        let r = p.run().await.unwrap();
        assert_eq!(
            (r.outcome, r.epoch),
            (RunOutcome::Committed, Epoch(i as u64 + 1))
        );
        assert_eq!(r.splits, 1, "only the new part is read");
        assert_eq!(p.run().await.unwrap().outcome, RunOutcome::NothingNew);
    }
    assert_eq!(count(&parquet_rows(&lake)), m.well_formed_order_lines);
    let q = parquet_rows(&lake.join("_quarantine"));
    assert_eq!(
        count(&q),
        m.dirt.malformed_json_lines + m.dirt.type_drift_total_amount
    );
    // Line numbers are per part file: map each malformed line of the whole file to its part.
    let per_part = lines.len().div_ceil(3) as u64;
    let mut expected: Vec<(String, u64)> = m
        .malformed_line_numbers
        .iter()
        .map(|l| {
            (
                format!("orders-{}.ndjson.gz", (l - 1) / per_part),
                (l - 1) % per_part + 1,
            )
        })
        .collect();
    expected.sort();
    let mut got: Vec<(String, u64)> = Vec::new();
    for b in &q {
        let loc = arrow_array::cast::AsArray::as_string::<i32>(b.column(1));
        let pos =
            arrow_array::cast::AsArray::as_primitive::<arrow_array::types::UInt64Type>(b.column(2));
        let reason = arrow_array::cast::AsArray::as_string::<i32>(b.column(4));
        for i in 0..b.num_rows() {
            if reason.value(i).starts_with("malformed JSON") {
                got.push((
                    Path::new(loc.value(i))
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                    pos.value(i),
                ));
            }
        }
    }
    got.sort();
    assert_eq!(got, expected);
    assert_eq!(
        checkpoints.load("orders").await.unwrap().unwrap().epoch,
        Epoch(3)
    );
}
