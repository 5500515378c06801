//! Structured fuzzing of the record decoders (proptest; cargo-fuzz needs a nightly toolchain):
//! arbitrary bytes in, no panic, no abort, and every non-blank input line accounted for exactly
//! once, as a row or as a quarantined record.

use proptest::prelude::*;
use std::sync::Arc;
use stratalake_core::{InMemoryCheckpointStore, PipelineBuilder, RunOptions};
use stratalake_files::{
    CsvOptions, FileSource, FileSourceConfig, Format, JsonRecordDecoder, SchemaSource,
    TypeDriftPolicy, UnknownFieldPolicy,
};
use stratalake_testkit::MemorySink;

/// Pieces of JSON and of noise that, recombined, reach the decoders' odd corners.
fn fragment() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => Just(b"{\"id\":1,\"name\":\"a\",\"tags\":[{\"n\":2}]}".to_vec()),
        2 => Just(b"{\"id\":".to_vec()),
        1 => Just(b"}".to_vec()),
        1 => Just(b"[[[[".to_vec()),
        1 => Just(b"]]".to_vec()),
        1 => Just(b"\"".to_vec()),
        1 => Just(b"\\".to_vec()),
        1 => Just(b"1.5".to_vec()),
        1 => Just(b"-2e9".to_vec()),
        1 => Just(b"null".to_vec()),
        1 => Just(b"{\"id\":\"x\"}".to_vec()),
        1 => Just(b"{\"id\":2}{\"id\":3}".to_vec()),
        1 => Just(b"\xEF\xBB\xBF".to_vec()),
        1 => Just(b"\xff\xfe".to_vec()),
        1 => Just("é€😀".as_bytes().to_vec()),
        1 => Just(b",".to_vec()),
        1 => Just(b" \t".to_vec()),
        1 => Just(b"\r".to_vec()),
        1 => Just(format!("{}1{}", "[".repeat(200), "]".repeat(200)).into_bytes()),
        2 => proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..40),
    ]
}

/// A line: fragments glued together (never a newline inside).
fn line() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(fragment(), 0..6).prop_map(|parts| parts.concat())
}

/// Lines joined by `\n` (some `\r\n`), with or without a final newline.
fn input() -> impl Strategy<Value = (Vec<Vec<u8>>, Vec<u8>)> {
    (proptest::collection::vec(line(), 0..40), any::<bool>()).prop_map(|(lines, trailing)| {
        let mut bytes = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            bytes.extend_from_slice(l);
            if i + 1 < lines.len() || trailing {
                bytes.push(b'\n');
            }
        }
        (lines, bytes)
    })
}

/// Lines a reader counts: not only whitespace (a lone BOM at the start of a file is not one).
fn counted(lines: &[Vec<u8>]) -> usize {
    lines
        .iter()
        .enumerate()
        .filter(|(i, l)| {
            let l: &[u8] = if *i == 0 {
                l.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(l)
            } else {
                l
            };
            !l.iter().all(u8::is_ascii_whitespace)
        })
        .count()
}

fn run_file(bytes: &[u8], format: Format, schema: SchemaSource, chunk: usize) -> (u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    std::fs::write(dir.path().join("in/f.data"), bytes).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut cfg = FileSourceConfig::new(dir.path().join("in").to_str().unwrap(), format);
        cfg.schema = schema;
        cfg.type_drift = TypeDriftPolicy::Quarantine;
        cfg.max_record_bytes = 256;
        let source = FileSource::try_new(cfg)
            .await
            .unwrap()
            .with_split_bytes(97)
            .with_chunk_bytes(chunk);
        let sink = MemorySink::new();
        let p = PipelineBuilder::new(
            "fuzz",
            Arc::new(source),
            Arc::new(sink.clone()),
            Arc::new(InMemoryCheckpointStore::new()),
        )
        .with_options(RunOptions::default().with_batch_size(7))
        .build()
        .unwrap();
        let r = p
            .run()
            .await
            .expect("arbitrary input never fails the run under quarantine");
        let q: usize = sink.visible_quarantine().iter().map(|b| b.num_rows()).sum();
        assert_eq!(r.rows_written as usize, sink.visible_rows());
        (r.rows_written, q as u64)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]

    #[test]
    fn ndjson_files_account_for_every_line((lines, bytes) in input(), chunk in 1usize..300) {
        let schema = SchemaSource::explicit([("id", "int64"), ("name", "utf8"), ("tags", "list<struct<n: int64>>")]);
        let (rows, quarantined) = run_file(&bytes, Format::Ndjson, schema, chunk);
        prop_assert_eq!((rows + quarantined) as usize, counted(&lines), "{:?}", String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn csv_files_account_for_every_line((lines, bytes) in input(), chunk in 1usize..300) {
        let schema = SchemaSource::explicit([("a", "utf8"), ("b", "int64"), ("c", "utf8")]);
        let csv = Format::Csv(CsvOptions { header: false, ..CsvOptions::default() });
        let (rows, quarantined) = run_file(&bytes, csv, schema, chunk);
        prop_assert_eq!((rows + quarantined) as usize, counted(&lines), "{:?}", String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn json_records_account_for_every_record((lines, _) in input()) {
        let schema = Arc::new(arrow_schema::Schema::new(vec![
            arrow_schema::Field::new("id", arrow_schema::DataType::Int64, true),
            arrow_schema::Field::new("name", arrow_schema::DataType::Utf8, true),
        ]));
        let mut d = JsonRecordDecoder::new(schema, 5, TypeDriftPolicy::Quarantine, UnknownFieldPolicy::Ignore);
        let mut input = Vec::new();
        for l in &lines {
            input.extend_from_slice(l);
            input.push(b'\n');
        }
        let out = d.decode(&input).unwrap();
        let rows: usize = out.batches.iter().map(|b| b.num_rows()).sum();
        let blank = lines.iter().filter(|l| l.iter().all(u8::is_ascii_whitespace)).count();
        prop_assert_eq!(rows + out.rejected.len(), lines.len() - blank);
    }
}
