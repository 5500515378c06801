//! A bucket on moto or a container on Azurite, fresh per test, behind one interface.

use arrow_array::RecordBatch;
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStoreExt, PutPayload};
use std::sync::atomic::{AtomicU64, Ordering};
use stratalake_azure_blob::AzureBlobConfig;
use stratalake_core::{Context, ReadRequest, Result};
use stratalake_files::cloud::CloudConnection;
use stratalake_files::{FileSourceConfig, Format, Partitioning, SchemaSource, StoreLocation};
use stratalake_s3::S3Config;

/// Which local server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    S3,
    Azure,
}

/// A unique suffix for bucket and container names.
pub fn unique() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    format!("{:x}{}", t, N.fetch_add(1, Ordering::Relaxed))
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

impl Cloud {
    pub fn s3_endpoint() -> String {
        env_or("STRATA_S3_ENDPOINT", "http://127.0.0.1:5000")
    }
    pub fn s3_auth_endpoint() -> String {
        env_or("STRATA_S3_AUTH_ENDPOINT", "http://127.0.0.1:5001")
    }
    pub fn azurite_endpoint() -> String {
        env_or("STRATA_AZURITE_ENDPOINT", "http://127.0.0.1:10000")
    }

    /// A connection to a bucket or container that is not created.
    pub fn unmade(self, name: &str) -> Conn {
        let name = format!("{name}-{}", unique());
        match self {
            Cloud::S3 => Conn::S3(S3Config::local_server(name, Self::s3_endpoint())),
            Cloud::Azure => Conn::Azure(AzureBlobConfig::emulator(name, Self::azurite_endpoint())),
        }
    }

    /// A new, empty bucket or container.
    ///
    /// # Panics
    /// When the server is not running, saying how to start it.
    pub async fn fresh(self, name: &str) -> Conn {
        let conn = self.unmade(name);
        let made = match &conn {
            Conn::S3(c) => stratalake_s3::create_bucket(c).await.map(|_| ()),
            Conn::Azure(c) => stratalake_azure_blob::create_container(c).await.map(|_| ()),
        };
        if let Err(e) = made {
            panic!(
                "{self:?}: cannot create {}: {e:#}. Start the local servers first: scripts/services.sh install && scripts/services.sh start",
                conn.name()
            );
        }
        conn
    }
}

/// A bucket (moto) or container (Azurite) and a prefix.
#[derive(Debug, Clone)]
pub enum Conn {
    S3(S3Config),
    Azure(AzureBlobConfig),
}

impl CloudConnection for Conn {
    fn validate(&self) -> Result<()> {
        match self {
            Conn::S3(c) => c.validate(),
            Conn::Azure(c) => c.validate(),
        }
    }

    fn location(&self) -> Result<StoreLocation> {
        match self {
            Conn::S3(c) => c.location(),
            Conn::Azure(c) => c.location(),
        }
    }
}

impl Conn {
    /// The Delta table `name` under the prefix (`s3://bucket/prefix/name`,
    /// `az://container/prefix/name`) on this store.
    ///
    /// # Panics
    /// On an invalid config.
    pub fn delta_table(&self, name: &str) -> stratalake_delta::TableLocation {
        let (store, base, prefix): (std::sync::Arc<dyn object_store::ObjectStore>, String, &str) =
            match self {
                Conn::S3(c) => (
                    std::sync::Arc::new(c.build_store().unwrap()),
                    format!("s3://{}", c.bucket),
                    &c.prefix,
                ),
                Conn::Azure(c) => (
                    std::sync::Arc::new(c.build_store().unwrap()),
                    format!("az://{}", c.container),
                    &c.prefix,
                ),
            };
        let path = [prefix.trim_matches('/'), name]
            .iter()
            .filter(|p| !p.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("/");
        let url = url::Url::parse(&format!("{base}/{path}/")).unwrap();
        stratalake_delta::TableLocation::new(store, url)
    }

    /// The bucket or container name.
    pub fn name(&self) -> String {
        match self {
            Conn::S3(c) => c.bucket.clone(),
            Conn::Azure(c) => c.container.clone(),
        }
    }

    /// The same store, under `prefix/sub`.
    pub fn with_prefix(&self, sub: &str) -> Conn {
        let join = |p: &str| {
            if p.is_empty() {
                sub.to_string()
            } else {
                format!("{}/{sub}", p.trim_end_matches('/'))
            }
        };
        match self {
            Conn::S3(c) => {
                let p = join(&c.prefix);
                Conn::S3(c.clone().with_prefix(p))
            }
            Conn::Azure(c) => {
                let p = join(&c.prefix);
                Conn::Azure(c.clone().with_prefix(p))
            }
        }
    }

    /// The location.
    ///
    /// # Panics
    /// On an invalid config.
    pub fn location(&self) -> StoreLocation {
        CloudConnection::location(self).unwrap()
    }

    /// The first-level directory names under the prefix, sorted.
    pub async fn list_dirs(&self) -> Vec<String> {
        let loc = self.location();
        let listed = loc
            .store()
            .list_with_delimiter(Some(loc.prefix()))
            .await
            .unwrap();
        let mut dirs: Vec<String> = listed
            .common_prefixes
            .iter()
            .map(|p| loc.relative(p))
            .filter(|d| !d.starts_with('_'))
            .collect();
        dirs.sort();
        dirs
    }

    /// Delete every object under the prefix.
    pub async fn delete_all(&self) {
        let loc = self.location();
        let paths = loc
            .store()
            .list(Some(loc.prefix()))
            .map_ok(|m| m.location)
            .boxed();
        loc.store()
            .delete_stream(paths)
            .try_collect::<Vec<_>>()
            .await
            .unwrap();
    }
}

/// Put one object under the connection's prefix.
pub async fn put(conn: &Conn, rel: &str, bytes: Vec<u8>) {
    let loc = conn.location();
    loc.store()
        .put(&loc.child(rel), PutPayload::from(bytes))
        .await
        .unwrap();
}

/// Every row of the Parquet files a reader globbing the prefix sees (Hive partitions as
/// columns, `_` directories skipped); empty when there are none.
pub async fn read_parquet_at(conn: &Conn, schema: SchemaSource) -> Vec<RecordBatch> {
    let mut read = FileSourceConfig::new("", Format::Parquet);
    read.schema = schema;
    read.partitioning = Partitioning::Hive;
    read.include = vec!["**/*.parquet".into()];
    let source = stratalake_files::FileSource::try_new_at(conn.location(), read)
        .await
        .unwrap();
    let ctx = Context::builder("test").build();
    stratalake_core::read_all(&source, &ReadRequest::after(None), &ctx)
        .await
        .unwrap()
        .0
}
