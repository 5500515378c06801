//! HTTP client and retry settings shared by the cloud connectors (S3, Azure Blob), mapped onto
//! object_store's [`ClientOptions`] and [`RetryConfig`]: object_store retries 5xx answers,
//! timeouts and connection resets with exponential backoff and jitter.

use crate::{FileSource, FileSourceConfig, ParquetSink, ParquetSinkConfig, StoreLocation};
use object_store::{BackoffConfig, ClientOptions, RetryConfig};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use strata_core::{Error, Result};

/// Timeouts and retries of a cloud store's HTTP client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct HttpSettings {
    /// Retries of one request after a transient failure (5xx, timeout, reset). Range: 0..=100.
    #[serde(deserialize_with = "strata_core::bounds::usize_in::<_, 0, 100>")]
    pub max_retries: usize,
    /// The first backoff; each retry doubles it, with jitter. Range: 1..=3_600_000.
    #[serde(deserialize_with = "strata_core::bounds::u64_in::<_, 1, 3_600_000>")]
    pub initial_backoff_millis: u64,
    /// The longest backoff. Range: 1..=86_400.
    #[serde(deserialize_with = "strata_core::bounds::u64_in::<_, 1, 86_400>")]
    pub max_backoff_secs: u64,
    /// No retry starts after a request has been failing this long. Range: 0..=604_800.
    #[serde(deserialize_with = "strata_core::bounds::u64_in::<_, 0, 604_800>")]
    pub retry_timeout_secs: u64,
    /// One request (including its body) may take this long. Range: 1..=86_400.
    #[serde(deserialize_with = "strata_core::bounds::u64_in::<_, 1, 86_400>")]
    pub request_timeout_secs: u64,
    /// Connecting may take this long. Range: 1..=3600.
    #[serde(deserialize_with = "strata_core::bounds::u64_in::<_, 1, 3600>")]
    pub connect_timeout_secs: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            max_retries: 10,
            initial_backoff_millis: 100,
            max_backoff_secs: 15,
            retry_timeout_secs: 180,
            request_timeout_secs: 300,
            connect_timeout_secs: 5,
        }
    }
}

impl HttpSettings {
    /// Check the settings without I/O.
    ///
    /// # Errors
    /// [`strata_core::ErrorKind::Config`] naming the key.
    pub fn validate(&self) -> Result<()> {
        for (key, v) in [
            ("initial_backoff_millis", self.initial_backoff_millis),
            ("max_backoff_secs", self.max_backoff_secs),
            ("request_timeout_secs", self.request_timeout_secs),
            ("connect_timeout_secs", self.connect_timeout_secs),
        ] {
            if v == 0 {
                return Err(Error::config("must be at least 1").with_context("key", key));
            }
        }
        if self.max_retries > 100 {
            return Err(Error::config("`max_retries` must be at most 100")
                .with_context("max_retries", self.max_retries));
        }
        Ok(())
    }

    /// object_store's retry settings.
    pub fn retry_config(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(self.initial_backoff_millis),
                max_backoff: Duration::from_secs(self.max_backoff_secs),
                base: 2.0,
            },
            max_retries: self.max_retries,
            retry_timeout: Duration::from_secs(self.retry_timeout_secs),
        }
    }

    /// object_store's client options (`allow_http` for local servers).
    pub fn client_options(&self, allow_http: bool) -> ClientOptions {
        ClientOptions::new()
            .with_allow_http(allow_http)
            .with_timeout(Duration::from_secs(self.request_timeout_secs))
            .with_connect_timeout(Duration::from_secs(self.connect_timeout_secs))
    }
}

/// A cloud store's connection settings (S3, Azure Blob): validated without I/O, resolved to a
/// location (bucket or container and prefix).
pub trait CloudConnection {
    /// Check without I/O.
    ///
    /// # Errors
    /// [`strata_core::ErrorKind::Config`] naming the key.
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
    /// [`strata_core::ErrorKind::Config`] naming the key.
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
    /// [`strata_core::ErrorKind::Config`] naming the key.
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
