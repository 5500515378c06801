//! HTTP client and retry settings shared by the cloud connectors (S3, Azure Blob), mapped onto
//! object_store's [`ClientOptions`] and [`RetryConfig`]: object_store retries 5xx answers,
//! timeouts and connection resets with exponential backoff and jitter.

use crate::{FileSource, FileSourceConfig, ParquetSink, ParquetSinkConfig, StoreLocation};
use object_store::{BackoffConfig, ClientOptions, RetryConfig};
use serde::Deserialize;
use std::time::Duration;
use stratalake_core::{Error, Result};

pub use stratalake_core::HttpSettings;

/// [`HttpSettings`] as object_store's client options and retry settings. object_store honours
/// the timeouts, retries, backoff and retry timeout; the REST-only keys are refused.
pub trait ObjectStoreHttp {
    /// Check the settings without I/O, refusing what an object store client cannot honour.
    ///
    /// # Errors
    /// [`stratalake_core::ErrorKind::Config`] or `Unsupported`, naming the key.
    fn validate_for(&self, client: &str) -> Result<()>;

    /// object_store's retry settings.
    fn retry_config(&self) -> RetryConfig;

    /// object_store's client options (`allow_http` for local servers).
    fn client_options(&self, allow_http: bool) -> ClientOptions;
}

impl ObjectStoreHttp for HttpSettings {
    fn validate_for(&self, client: &str) -> Result<()> {
        self.validate()?;
        self.refuse_rest_only(client)
    }

    fn retry_config(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: self.initial_backoff(),
                max_backoff: self.max_backoff(),
                base: 2.0,
            },
            max_retries: self.max_retries as usize,
            // object_store has no "unlimited": a week is the longest the setting allows.
            retry_timeout: self.retry_timeout().unwrap_or(Duration::from_secs(604_800)),
        }
    }

    fn client_options(&self, allow_http: bool) -> ClientOptions {
        ClientOptions::new()
            .with_allow_http(allow_http)
            .with_timeout(self.request_timeout())
            .with_connect_timeout(self.connect_timeout())
    }
}

/// A cloud store's connection settings (S3, Azure Blob): validated without I/O, resolved to a
/// location (bucket or container and prefix).
pub trait CloudConnection {
    /// Check without I/O.
    ///
    /// # Errors
    /// [`stratalake_core::ErrorKind::Config`] naming the key.
    fn validate(&self) -> Result<()>;

    /// The store and prefix.
    ///
    /// # Errors
    /// Config errors.
    fn location(&self) -> Result<StoreLocation>;
}

/// A source over a cloud store: where (`connection`) and how to read (`read`; its `root`
/// stays empty, the connection's prefix is the root).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CloudSourceConfig<C> {
    /// The bucket or container, prefix and credentials.
    pub connection: C,
    /// Formats, globs, partitioning, schema and policies.
    pub read: FileSourceConfig,
}

impl<C: CloudConnection> CloudSourceConfig<C> {
    /// Read `read` from `connection`.
    pub fn new(connection: C, read: FileSourceConfig) -> Self {
        Self { connection, read }
    }

    /// Check without I/O.
    ///
    /// # Errors
    /// [`stratalake_core::ErrorKind::Config`] naming the key.
    pub fn validate(&self) -> Result<()> {
        self.connection.validate()?;
        no_root(&self.read.root)?;
        self.read.validate()
    }

    /// Open the source (lists the store when the schema is inferred).
    ///
    /// # Errors
    /// Config errors; store errors naming the location.
    pub async fn build(&self) -> Result<FileSource> {
        self.validate()?;
        FileSource::try_new_at(self.connection.location()?, self.read.clone()).await
    }
}

/// A Parquet sink into a cloud store: where (`connection`) and how to write (`write`; its
/// `root` stays empty).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CloudSinkConfig<C> {
    /// The bucket or container, prefix and credentials.
    pub connection: C,
    /// File size, partitioning and uploads.
    pub write: ParquetSinkConfig,
}

impl<C: CloudConnection> CloudSinkConfig<C> {
    /// Write with `write` into `connection`.
    pub fn new(connection: C, write: ParquetSinkConfig) -> Self {
        Self { connection, write }
    }

    /// Check without I/O.
    ///
    /// # Errors
    /// [`stratalake_core::ErrorKind::Config`] naming the key.
    pub fn validate(&self) -> Result<()> {
        self.connection.validate()?;
        no_root(&self.write.root)?;
        self.write.validate()
    }

    /// Build the sink (no I/O).
    ///
    /// # Errors
    /// Config errors.
    pub fn build(&self) -> Result<ParquetSink> {
        self.validate()?;
        ParquetSink::try_new_at(self.connection.location()?, self.write.clone())
    }
}

fn no_root(root: &str) -> Result<()> {
    if root.is_empty() {
        Ok(())
    } else {
        Err(Error::config(
            "`root` is not used with a cloud store: the bucket or container and `prefix` under `connection` are the root",
        )
        .with_context("root", root))
    }
}
