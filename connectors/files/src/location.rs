//! Where files live: an object store and a prefix inside it.

use crate::error::store_err;
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::path::PathPart;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use std::fmt;
use std::sync::Arc;
use stratalake_core::{Error, ErrorKind, Result};

/// An object store and a prefix in it: the root a source lists or a sink writes under.
#[derive(Clone)]
pub struct StoreLocation {
    store: Arc<dyn ObjectStore>,
    multipart: Option<Arc<dyn MultipartStore>>,
    prefix: Path,
    display: String,
    local_root: Option<std::path::PathBuf>,
}

fn check_scheme(root: &str) -> Result<()> {
    if root.trim().is_empty() {
        return Err(Error::config("`root` must not be empty"));
    }
    match root.split_once("://") {
        Some((scheme, _)) if scheme != "file" => Err(Error::config(
            "this build reads local paths and file:// URLs; use the stratalake-s3 or stratalake-azure-blob connector for cloud stores",
        )
        .with_context("root", root)),
        _ => Ok(()),
    }
}

/// How a cloud location is named: `base` (`s3://bucket`) joined with the prefix, if any.
pub fn cloud_url(base: &str, prefix: &str) -> String {
    match prefix.trim_matches('/') {
        "" => base.to_string(),
        p => format!("{base}/{p}"),
    }
}

impl fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreLocation")
            .field("location", &self.display)
            .finish()
    }
}

impl StoreLocation {
    /// Any object store (S3, Azure, memory, ...) with a prefix. `display` is how errors name it
    /// (`s3://bucket/prefix`).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: Path, display: impl Into<String>) -> Self {
        Self {
            store,
            multipart: None,
            prefix,
            display: display.into(),
            local_root: None,
        }
    }

    /// A cloud store that is also a [`MultipartStore`] (S3, Azure), under `prefix`; errors name
    /// it [`cloud_url`]`(base, prefix)` (`s3://bucket/prefix`). Its multipart uploads are
    /// journaled (see [`StoreLocation::with_multipart_store`]).
    pub fn cloud<S: ObjectStore + MultipartStore>(store: S, base: &str, prefix: &str) -> Self {
        let store = Arc::new(store);
        let multipart: Arc<dyn MultipartStore> = store.clone();
        Self::new(
            store,
            Path::from(prefix.trim_end_matches('/')),
            cloud_url(base, prefix),
        )
        .with_multipart_store(multipart)
    }

    /// The same store seen as a [`MultipartStore`] (S3 and Azure are both): sinks then
    /// journal each multipart upload's id, so an upload abandoned by a crash is aborted by the
    /// next run instead of lingering.
    #[must_use]
    pub fn with_multipart_store(mut self, store: Arc<dyn MultipartStore>) -> Self {
        self.multipart = Some(store);
        self
    }

    /// The multipart view of the store, when it has one.
    pub fn multipart_store(&self) -> Option<&Arc<dyn MultipartStore>> {
        self.multipart.as_ref()
    }

    /// A directory on local disk (`./data/orders`, `/abs/path` or `file:///abs/path`). It is
    /// created if missing, so sinks can write into a new directory.
    ///
    /// # Errors
    /// [`stratalake_core::ErrorKind::Config`] when the path cannot be created or resolved.
    pub fn local(path: &str) -> Result<Self> {
        let raw = path.strip_prefix("file://").unwrap_or(path);
        std::fs::create_dir_all(raw).map_err(|e| {
            Error::config("cannot create the local directory")
                .with_context("path", raw)
                .with_source(e)
        })?;
        let abs = std::fs::canonicalize(raw).map_err(|e| {
            Error::config("cannot resolve the local directory")
                .with_context("path", raw)
                .with_source(e)
        })?;
        let store = LocalFileSystem::new_with_prefix(&abs).map_err(|e| {
            Error::config("cannot open the local directory")
                .with_context("path", abs.display())
                .with_source(e)
        })?;
        Ok(Self {
            store: Arc::new(store),
            multipart: None,
            prefix: Path::default(),
            display: abs.display().to_string(),
            local_root: Some(abs),
        })
    }

    /// A directory on local disk that must already exist (what a source reads).
    ///
    /// # Errors
    /// [`stratalake_core::ErrorKind::NotFound`] naming the path when it does not exist.
    pub fn local_existing(path: &str) -> Result<Self> {
        let raw = path.strip_prefix("file://").unwrap_or(path);
        if !std::path::Path::new(raw).is_dir() {
            return Err(Error::new(
                stratalake_core::ErrorKind::NotFound,
                "the source directory does not exist",
            )
            .with_context("path", raw)
            .with_context(
                "hint",
                "check `root`; relative paths are resolved from the working directory",
            ));
        }
        Self::local(raw)
    }

    /// Parse a root: a local path or `file://` URL. Other schemes come from their connector
    /// crates (`stratalake-s3`, `stratalake-azure-blob`), which build a location with [`StoreLocation::new`].
    ///
    /// # Errors
    /// [`stratalake_core::ErrorKind::Config`] for an unsupported scheme.
    pub fn parse(root: &str) -> Result<Self> {
        check_scheme(root)?;
        Self::local(root)
    }

    /// Like [`StoreLocation::parse`], for a root that must exist (a source).
    ///
    /// # Errors
    /// As [`StoreLocation::parse`], and NotFound when a local root does not exist.
    pub fn parse_existing(root: &str) -> Result<Self> {
        check_scheme(root)?;
        Self::local_existing(root)
    }

    /// The object store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The prefix all paths are under.
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// A path under the prefix. Segments are kept as written (so a key listed from the store,
    /// or a percent-encoded partition value, names exactly that object); only characters no
    /// path may hold are encoded.
    pub fn child(&self, rel: &str) -> Path {
        let mut p = self.prefix.clone();
        for part in rel.split('/').filter(|s| !s.is_empty()) {
            p = match PathPart::parse(part) {
                Ok(part) => p.join(part),
                Err(_) => p.join(part),
            };
        }
        p
    }

    /// The path relative to the prefix (as users name files).
    pub fn relative(&self, p: &Path) -> String {
        let s = p.as_ref();
        let pre = self.prefix.as_ref();
        if pre.is_empty() {
            s.to_string()
        } else {
            s.strip_prefix(pre)
                .map(|r| r.trim_start_matches('/').to_string())
                .unwrap_or_else(|| s.to_string())
        }
    }

    /// How errors and reports name a path: the root joined with the relative path.
    pub fn describe(&self, p: &Path) -> String {
        format!(
            "{}/{}",
            self.display.trim_end_matches('/'),
            self.relative(p)
        )
    }

    /// Reach the location: list one level under the prefix, so a wrong endpoint, rejected
    /// credentials or a missing bucket or container fail before any work, with the store's
    /// answer.
    ///
    /// # Errors
    /// [`ErrorKind::Auth`], [`ErrorKind::NotFound`] or [`ErrorKind::Unavailable`], naming the
    /// location.
    pub async fn check(&self) -> Result<()> {
        self.store
            .list_with_delimiter(Some(&self.prefix))
            .await
            .map(|_| ())
            .map_err(|e| {
                let kind = crate::error::store_kind(&e);
                let msg = match kind {
                    ErrorKind::NotFound => {
                        "the bucket or container does not exist: create it (`strata setup`) or check its name"
                    }
                    ErrorKind::Auth => "the store rejected the credentials: check `credentials`",
                    _ => "cannot reach the store",
                };
                Error::new(kind, msg)
                    .with_context("location", &self.display)
                    .with_source(e)
            })
    }

    /// The local directory, when the store is local disk.
    pub fn local_root(&self) -> Option<&std::path::Path> {
        self.local_root.as_deref()
    }

    /// The `*.json` objects under `dir`, sorted by path.
    ///
    /// # Errors
    /// Store errors naming the directory.
    pub(crate) async fn list_json(&self, dir: &Path) -> Result<Vec<Path>> {
        let mut paths: Vec<Path> = self
            .store
            .list(Some(dir))
            .map_ok(|m| m.location)
            .try_filter(|p| futures::future::ready(p.as_ref().ends_with(".json")))
            .try_collect()
            .await
            .map_err(|e| store_err("list", self.describe(dir), e))?;
        paths.sort();
        Ok(paths)
    }

    /// Read a JSON object; `what` names it in the error when it does not parse.
    ///
    /// # Errors
    /// Store errors, or [`ErrorKind::Data`] naming the file.
    pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &Path,
        what: &str,
    ) -> Result<T> {
        let d = self.describe(path);
        let got = self
            .store
            .get(path)
            .await
            .map_err(|e| store_err("get", &d, e))?;
        let bytes = got.bytes().await.map_err(|e| store_err("get", &d, e))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::new(ErrorKind::Data, format!("{what} is corrupt"))
                .with_context("file", d)
                .with_source(e)
        })
    }

    /// Create a JSON object only if none exists at `path` (`PutMode::Create`): `Ok(true)` when
    /// this call created it, `Ok(false)` when it already existed.
    ///
    /// # Errors
    /// Store errors naming the path.
    pub(crate) async fn put_json_create<T: serde::Serialize>(
        &self,
        path: &Path,
        value: &T,
    ) -> Result<bool> {
        let body = serde_json::to_vec_pretty(value)
            .map_err(|e| Error::internal("cannot encode JSON").with_source(e))?;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(path, PutPayload::from(body), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(store_err("put (create-only)", self.describe(path), e)),
        }
    }
}
