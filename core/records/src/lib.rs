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
