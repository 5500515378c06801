#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod config;
mod setup;

pub use config::{S3Config, S3Credentials};
pub use setup::{Created, create_bucket};

use stratalake_core::Result;
use stratalake_files::cloud::{CloudConnection, CloudSinkConfig, CloudSourceConfig};
use stratalake_files::{FileSource, ParquetSink, StoreLocation};

/// A source reading NDJSON, CSV or Parquet objects from a bucket: a
/// [`FileSource`] over the bucket's prefix (globs, Hive partitions, splits, incremental
/// listing, quarantine: see stratalake-files).
pub type S3Source = FileSource;

/// An exactly-once (partitioned) Parquet sink writing into a bucket: a [`ParquetSink`] over
/// the bucket's prefix, with streaming multipart uploads.
pub type S3Sink = ParquetSink;

/// Configuration of an [`S3Source`]: `connection` (the bucket) and `read` (formats, globs,
/// partitioning, policies; its `root` stays empty).
pub type S3SourceConfig = CloudSourceConfig<S3Config>;

/// Configuration of an [`S3Sink`]: `connection` (the bucket) and `write` (file size,
/// partitioning, uploads; its `root` stays empty).
pub type S3SinkConfig = CloudSinkConfig<S3Config>;

impl CloudConnection for S3Config {
    fn validate(&self) -> Result<()> {
        S3Config::validate(self)
    }

    fn location(&self) -> Result<StoreLocation> {
        S3Config::location(self)
    }
}
