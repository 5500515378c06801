#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod checkpoint;
#[cfg(feature = "cloud")]
pub mod cloud;
pub mod decode;
pub mod error;
pub mod infer;
mod location;
pub mod options;
mod parquet_io;
mod reader;
mod sink;
mod source;

pub use checkpoint::ObjectStoreCheckpointStore;
pub use decode::{DecodedRecords, JsonRecordDecoder, RejectedRecord};
pub use error::FilesError;
pub use location::{StoreLocation, cloud_url};
pub use options::{
    ColumnSpec, Compression, CorruptFilePolicy, CsvOptions, FileSourceConfig, Format, ListingMode,
    ParquetSinkConfig, Partitioning, SchemaSource, TypeDriftPolicy, UnknownFieldPolicy,
    parse_data_type,
};
pub use sink::{Manifest, ManifestFile, ParquetSink, read_parquet_dir};
pub use source::FileSource;
