#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod config;
mod setup;

pub use config::{AzureBlobConfig, AzureCredentials, EMULATOR_ACCOUNT, EMULATOR_ENDPOINT};
pub use setup::{Created, create_container};

use stratalake_core::Result;
use stratalake_files::cloud::{CloudConnection, CloudSinkConfig, CloudSourceConfig};
use stratalake_files::{FileSource, ParquetSink, StoreLocation};

/// A source reading NDJSON, CSV or Parquet blobs from a container: a [`FileSource`] over the
/// container's prefix (globs, Hive partitions, splits, incremental listing, quarantine: see
/// stratalake-files).
pub type AzureBlobSource = FileSource;

/// An exactly-once (partitioned) Parquet sink writing into a container: a [`ParquetSink`] over
/// the container's prefix, with streaming block uploads.
pub type AzureBlobSink = ParquetSink;

/// Configuration of an [`AzureBlobSource`]: `connection` (the container) and `read` (formats,
/// globs, partitioning, policies; its `root` stays empty).
pub type AzureBlobSourceConfig = CloudSourceConfig<AzureBlobConfig>;

/// Configuration of an [`AzureBlobSink`]: `connection` (the container) and `write` (file
/// size, partitioning, uploads; its `root` stays empty).
pub type AzureBlobSinkConfig = CloudSinkConfig<AzureBlobConfig>;

impl CloudConnection for AzureBlobConfig {
    fn validate(&self) -> Result<()> {
        AzureBlobConfig::validate(self)
    }

    fn location(&self) -> Result<StoreLocation> {
        AzureBlobConfig::location(self)
    }
}
