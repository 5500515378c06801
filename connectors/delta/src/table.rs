//! Where a Delta table lives, and opening or creating it on any object store.

use deltalake::kernel::StructField;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::logstore::{
    LogStore, LogStoreFactory, ObjectStoreRef, StorageConfig, default_logstore, logstore_factories,
};
use deltalake::{DeltaResult, DeltaTable, DeltaTableBuilder, DeltaTableError};
use object_store::ObjectStore;
use std::sync::{Arc, Once};
use stratalake_core::{Error, ErrorKind, Result};
use url::Url;

/// A Delta table's location: an object store whose root is the bucket/container/filesystem
/// root, and the table's URL in it (`file:///lake/bronze/orders`,
/// `s3://lake/bronze/orders`, `az://lake/bronze/orders`).
#[derive(Clone)]
pub struct TableLocation {
    /// The store (root).
    pub store: Arc<dyn ObjectStore>,
    /// The table's URL.
    pub url: Url,
}

impl std::fmt::Debug for TableLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableLocation")
            .field("url", &self.url.as_str())
            .finish()
    }
}

impl TableLocation {
    /// A table in `store` at `url`.
    pub fn new(store: Arc<dyn ObjectStore>, url: Url) -> Self {
        Self { store, url }
    }

    /// The table `name` inside this one's directory (`_quarantine`): a table of its own,
    /// hidden from this table's readers and from vacuum (names starting `_`).
    ///
    /// # Errors
    /// Config when the URL cannot be extended.
    pub fn child(&self, name: &str) -> Result<Self> {
        let mut base = self.url.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let url = base.join(&format!("{name}/")).map_err(|e| {
            Error::config("cannot name a table inside this one")
                .with_context("table", self.url.as_str())
                .with_source(e)
        })?;
        Ok(Self {
            store: self.store.clone(),
            url,
        })
    }

    /// The table loaded at its latest version, or `None` when there is none yet.
    ///
    /// # Errors
    /// Unavailable when the store cannot be read.
    pub async fn load(&self) -> Result<Option<DeltaTable>> {
        open(self).await
    }

    /// A handle on the location without loading it (for creating writes).
    ///
    /// # Errors
    /// Config for an invalid URL.
    pub fn handle(&self) -> Result<DeltaTable> {
        register_schemes();
        DeltaTableBuilder::from_url(self.url.clone())
            .map_err(|e| delta_err(e, "invalid table URL", &self.url))?
            .with_storage_backend(self.store.clone(), self.url.clone())
            .build()
            .map_err(|e| delta_err(e, "cannot open the table", &self.url))
    }

    /// The version of application transaction `app_id` recorded in the table.
    ///
    /// # Errors
    /// When the table's log cannot be read.
    pub async fn app_version(&self, table: &DeltaTable, app_id: &str) -> Result<Option<i64>> {
        let state = table
            .snapshot()
            .map_err(|e| delta_err(e, "the table has no state", &self.url))?;
        state
            .transaction_version(table.log_store().as_ref(), app_id)
            .await
            .map_err(|e| delta_err(e, "cannot read the table's transactions", &self.url))
    }

    /// The expectations' results the table's latest commit carries (under `strata` in its
    /// commit info, as the sink and the model builds write them), with that commit's
    /// version; none when there is no table or the commit carries none.
    ///
    /// # Errors
    /// When the log cannot be read; Data when the results do not parse.
    pub async fn last_results(
        &self,
    ) -> Result<Option<(i64, Vec<stratalake_core::expect::RuleResult>)>> {
        use futures::StreamExt as _;
        let Some(t) = self.load().await? else {
            return Ok(None);
        };
        let Some(info) = t.history(Some(1)).next().await else {
            return Ok(None);
        };
        let info = info.map_err(|e| delta_err(e, "cannot read the table's history", &self.url))?;
        let Some(r) = info.info.get("strata").and_then(|s| s.get("expectations")) else {
            return Ok(None);
        };
        let results = serde_json::from_value(r.clone()).map_err(|e| {
            Error::new(
                ErrorKind::Data,
                "the results in the table's last commit do not parse",
            )
            .with_context("table", self.url.as_str())
            .with_source(e)
        })?;
        let version = t.version().and_then(|v| i64::try_from(v).ok()).unwrap_or(0);
        Ok(Some((version, results)))
    }

    /// A table in a local directory (created when missing).
    ///
    /// # Errors
    /// Config when the path cannot be made absolute or created.
    pub fn local(dir: impl AsRef<std::path::Path>) -> Result<Self> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::config("cannot create the table directory")
                .with_context("path", dir.display())
                .with_source(e)
        })?;
        let abs = std::fs::canonicalize(dir).map_err(|e| {
            Error::config("cannot resolve the table directory")
                .with_context("path", dir.display())
                .with_source(e)
        })?;
        let url = Url::from_directory_path(&abs).map_err(|()| {
            Error::config("not an absolute directory").with_context("path", abs.display())
        })?;
        Ok(Self {
            store: Arc::new(object_store::local::LocalFileSystem::new()),
            url,
        })
    }
}

/// deltalake registers log stores for `file://` and `memory://` only unless its cloud features
/// are on; Strata brings its own object stores (conditional puts on S3 and Azure), so the
/// default log store serves the cloud schemes too.
#[derive(Debug, Default)]
struct ConditionalPutLogStores;

impl LogStoreFactory for ConditionalPutLogStores {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

fn register_schemes() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let registry = logstore_factories();
        for scheme in [
            "s3://", "s3a://", "az://", "abfs://", "abfss://", "azure://",
        ] {
            if let Ok(u) = Url::parse(scheme)
                && !registry.contains_key(&u)
            {
                registry.insert(u, Arc::new(ConditionalPutLogStores));
            }
        }
    });
}

/// Map a deltalake error to the core kinds, naming the table (a commit that lost a race is a
/// retryable Conflict).
pub fn delta_err(e: DeltaTableError, what: &str, table: &Url) -> Error {
    use DeltaTableError as D;
    let kind = match &e {
        D::NotATable(_) => ErrorKind::NotFound,
        // Another writer committed first and the conflict checker could not reconcile: the
        // epoch is retried against the new version (its transaction guards against doubles).
        D::Transaction { .. } | D::VersionAlreadyExists(_) => {
            return Error::new(ErrorKind::Conflict, what.to_string())
                .with_retry(stratalake_core::Retry::Transient)
                .with_context("table", table.as_str())
                .with_source(e);
        }
        D::ObjectStore { .. } => ErrorKind::Unavailable,
        D::SchemaMismatch { .. } | D::Arrow { .. } => ErrorKind::Schema,
        _ => ErrorKind::Internal,
    };
    Error::new(kind, what.to_string())
        .with_context("table", table.as_str())
        .with_source(e)
}

/// The table, loaded at its latest version, or `None` when nothing is there yet.
pub(crate) async fn open(loc: &TableLocation) -> Result<Option<DeltaTable>> {
    register_schemes();
    if !has_log(loc).await? {
        return Ok(None);
    }
    let mut table = DeltaTableBuilder::from_url(loc.url.clone())
        .map_err(|e| delta_err(e, "invalid table URL", &loc.url))?
        .with_storage_backend(loc.store.clone(), loc.url.clone())
        .build()
        .map_err(|e| delta_err(e, "cannot open the table", &loc.url))?;
    match table.load().await {
        Ok(()) => Ok(Some(table)),
        Err(DeltaTableError::NotATable(_)) => Ok(None),
        // A location that does not exist yet (a local directory, a prefix) holds no table.
        Err(e) if !has_log(loc).await? => {
            tracing::debug!(table = %loc.url, error = %e, "no table yet");
            Ok(None)
        }
        Err(e) => Err(delta_err(e, "cannot load the table", &loc.url)),
    }
}

/// Whether anything is under the table's `_delta_log/`.
async fn has_log(loc: &TableLocation) -> Result<bool> {
    use futures::StreamExt;
    let path = object_store::path::Path::from_url_path(format!(
        "{}/_delta_log/",
        loc.url.path().trim_end_matches('/')
    ))
    .map_err(|e| {
        Error::config("the table URL is not a valid object path")
            .with_context("table", loc.url.as_str())
            .with_source(e)
    })?;
    match loc.store.list(Some(&path)).next().await {
        None => Ok(false),
        Some(Ok(_)) => Ok(true),
        Some(Err(object_store::Error::NotFound { .. })) => Ok(false),
        Some(Err(e)) => Err(
            Error::new(ErrorKind::Unavailable, "cannot list the table's log")
                .with_context("table", loc.url.as_str())
                .with_source(e),
        ),
    }
}

/// Create the table from `schema` with `partition_by` and change data feed on (so readers can
/// follow it incrementally); a concurrent creator winning is fine.
pub(crate) async fn create(
    loc: &TableLocation,
    schema: &arrow_schema::Schema,
    partition_by: &[String],
) -> Result<DeltaTable> {
    register_schemes();
    let kernel: deltalake::kernel::StructType = schema.try_into_kernel().map_err(|e| {
        Error::new(ErrorKind::Schema, "the schema has no Delta equivalent")
            .with_context("table", loc.url.as_str())
            .with_source(e)
    })?;
    for p in partition_by {
        if schema.field_with_name(p).is_err() {
            return Err(
                Error::config("a partition column is not in the rows written")
                    .with_context("table", loc.url.as_str())
                    .with_context("column", p),
            );
        }
    }
    let table = DeltaTableBuilder::from_url(loc.url.clone())
        .map_err(|e| delta_err(e, "invalid table URL", &loc.url))?
        .with_storage_backend(loc.store.clone(), loc.url.clone())
        .build()
        .map_err(|e| delta_err(e, "cannot open the table", &loc.url))?;
    let fields: Vec<StructField> = kernel.fields().cloned().collect();
    let created = table
        .create()
        .with_columns(fields)
        .with_partition_columns(partition_by.to_vec())
        .with_configuration_property(deltalake::TableProperty::EnableChangeDataFeed, Some("true"))
        .with_save_mode(deltalake::protocol::SaveMode::Ignore)
        .await;
    match created {
        Ok(t) => Ok(t),
        Err(e) => match open(loc).await? {
            Some(t) => Ok(t),
            None => Err(delta_err(e, "cannot create the table", &loc.url)),
        },
    }
}
