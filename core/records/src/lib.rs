#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod decode;
pub mod infer;
pub mod schema;

pub use decode::{DecodedRecords, JsonRecordDecoder, RejectedRecord};
pub use schema::{
    ColumnSpec, SchemaSource, TypeDriftPolicy, UnknownFieldPolicy, data_type_name, explicit_schema,
    parse_data_type,
};

/// Row `i` of `batch` as one JSON object on one line (how a rejected row's raw record is
/// kept in quarantine, and decoded again when it is replayed); empty when it cannot be
/// written.
pub fn row_json(batch: &arrow_array::RecordBatch, i: usize) -> String {
    let mut out = Vec::new();
    {
        let mut w = arrow_json::LineDelimitedWriter::new(&mut out);
        if w.write(&batch.slice(i, 1)).is_err() || w.finish().is_err() {
            return String::new();
        }
    }
    String::from_utf8_lossy(&out).trim_end().to_string()
}
