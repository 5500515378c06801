#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod checkpoint;
pub use stratalake_records::{decode, infer};
#[cfg(feature = "cloud")]
pub mod cloud;
pub mod error;
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
    ChangedFilePolicy, ColumnSpec, Compression, CorruptFilePolicy, CsvOptions, FileSourceConfig,
    Format, ListingMode, ParquetSinkConfig, Partitioning, SOURCE_VERSION_COLUMN, SchemaSource,
    TypeDriftPolicy, UnknownFieldPolicy, data_type_name, parse_data_type,
};
pub use sink::{Manifest, ManifestFile, ParquetSink, read_parquet_dir};
pub use source::FileSource;

/// Run blocking work on the blocking pool; its panic is an error, never a lost result.
pub(crate) async fn panic_free_blocking<T: Send + 'static>(
    f: impl FnOnce() -> stratalake_core::Result<T> + Send + 'static,
) -> stratalake_core::Result<T> {
    stratalake_core::panic::join_blocking("files (blocking work)", tokio::task::spawn_blocking(f))
        .await
}
