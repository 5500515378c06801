//! Where Delta tables live: a local directory, or a bucket or container named by URL with a
//! connection (`s3://retail-lake/bronze/orders`, `az://lake/silver/orders`,
//! `abfss://lake@account.dfs.core.windows.net/gold/daily_revenue`).

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use stratalake_azure_blob::AzureBlobConfig;
use stratalake_core::{Error, Result};
use stratalake_delta::TableLocation;
use stratalake_s3::S3Config;
use url::Url;

/// How to reach the object store a cloud table lives on: the S3 or Azure connection of the
/// files connectors (credentials, endpoint, `allow_http`), the bucket or container coming from
/// the table URL; or a file holding one (so many pipelines share one, secrets as `${VAR}`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum LakeConnection {
    /// An S3 (or S3-compatible) connection, for `s3://` tables.
    S3(S3Config),
    /// An Azure storage account, for `az://` and `abfss://` tables.
    AzureBlob(AzureBlobConfig),
    /// A YAML file holding `s3: ...` or `azure_blob: ...` (`${VAR}` interpolated).
    File(PathBuf),
}

/// The kind of store a table URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Local,
    S3,
    Azure,
}

fn scheme(table: &str) -> Result<(Scheme, Option<Url>)> {
    if !table.contains("://") {
        return Ok((Scheme::Local, None));
    }
    let url = Url::parse(table).map_err(|e| {
        Error::config("not a valid table URL")
            .with_context("table", table)
            .with_source(e)
    })?;
    let s = match url.scheme() {
        "file" => Scheme::Local,
        "s3" | "s3a" => Scheme::S3,
        "az" | "azure" | "abfs" | "abfss" => Scheme::Azure,
        other => {
            return Err(Error::config(format!(
                "unknown table scheme `{other}://`: a Delta table is a local path, file://, s3://, az:// or abfss://"
            ))
            .with_context("table", table));
        }
    };
    Ok((s, Some(url)))
}

/// The bucket or container a cloud table URL names, and the account when the URL names one
/// (`abfss://container@account.dfs.core.windows.net/path`).
fn store_name(url: &Url) -> (String, Option<String>) {
    match url.scheme() {
        "abfs" | "abfss" => (
            url.username().to_string(),
            url.host_str()
                .and_then(|h| h.split('.').next())
                .map(str::to_string),
        ),
        _ => (url.host_str().unwrap_or_default().to_string(), None),
    }
}

/// Check a table and its connection without I/O: a known scheme, a connection for a cloud
/// table of the matching kind, none for a local one.
///
/// # Errors
/// Config naming what is missing or does not match.
pub fn check(table: &str, conn: Option<&LakeConnection>) -> Result<()> {
    let (s, _) = scheme(table)?;
    match (s, conn) {
        (Scheme::Local, Some(_)) => Err(Error::config(
            "a local table takes no `connection` (did you mean an s3:// or az:// table?)",
        )
        .with_context("table", table)),
        (Scheme::Local, None) | (_, Some(LakeConnection::File(_))) => Ok(()),
        (Scheme::S3, Some(LakeConnection::S3(_)))
        | (Scheme::Azure, Some(LakeConnection::AzureBlob(_))) => Ok(()),
        (Scheme::S3, None) => Err(Error::config(
            "an s3:// table needs a `connection` (`s3: { region, endpoint, credentials }` or `file: lake.yaml`)",
        )
        .with_context("table", table)),
        (Scheme::Azure, None) => Err(Error::config(
            "an az:// table needs a `connection` (`azure_blob: { account, credentials }` or `file: lake.yaml`)",
        )
        .with_context("table", table)),
        (Scheme::S3, Some(_)) => Err(Error::config(
            "an s3:// table needs an `s3` connection, not an Azure one",
        )
        .with_context("table", table)),
        (Scheme::Azure, Some(_)) => Err(Error::config(
            "an az:// table needs an `azure_blob` connection, not an S3 one",
        )
        .with_context("table", table)),
    }
}

/// A connection with `file:` read (interpolated, parsed and validated).
///
/// # Errors
/// Config naming the file, line and key.
pub fn resolve(conn: &LakeConnection) -> Result<LakeConnection> {
    match conn {
        LakeConnection::File(path) => load(path),
        c => Ok(c.clone()),
    }
}

/// Read a lake connection file (`s3: ...` or `azure_blob: ...`).
///
/// # Errors
/// Config naming the file, line and key; a file naming another file.
pub fn load(path: &Path) -> Result<LakeConnection> {
    #[derive(Deserialize)]
    struct InFile(#[serde(with = "serde_yaml_ng::with::singleton_map_recursive")] LakeConnection);
    let InFile(c) = crate::config::load_yaml(path)?;
    let checked = match &c {
        LakeConnection::S3(s3) => s3_without_bucket(s3).validate(),
        LakeConnection::AzureBlob(az) => azure_without_container(az).validate(),
        LakeConnection::File(_) => Ok(()),
    };
    checked.map_err(|e| e.wrap(path.display().to_string()))?;
    if matches!(c, LakeConnection::File(_)) {
        return Err(Error::config(format!(
            "{}: a lake connection file holds `s3:` or `azure_blob:`, not another `file:`",
            path.display()
        )));
    }
    Ok(c)
}

/// The connection with a placeholder bucket, to check the rest of it before a URL names one.
fn s3_without_bucket(c: &S3Config) -> S3Config {
    let mut c = c.clone();
    if c.bucket.is_empty() {
        c.bucket = "bucket".into();
    }
    c
}

fn azure_without_container(c: &AzureBlobConfig) -> AzureBlobConfig {
    let mut c = c.clone();
    if c.container.is_empty() {
        c.container = "container".into();
    }
    c
}

/// Where `table` lives, its store built from `conn` (no I/O; a local directory is created).
///
/// # Errors
/// Config for an unknown scheme, a missing or mismatched connection, or a bucket/container
/// in the connection that differs from the URL's.
pub fn table_location(table: &str, conn: Option<&LakeConnection>) -> Result<TableLocation> {
    let resolved = conn.map(resolve).transpose()?;
    check(table, resolved.as_ref())?;
    let (s, url) = scheme(table)?;
    let Some(url) = url.filter(|_| s != Scheme::Local) else {
        let path = table.strip_prefix("file://").unwrap_or(table);
        return TableLocation::local(path);
    };
    let path = url.path().trim_matches('/').to_string();
    if path.is_empty() {
        return Err(
            Error::config("a table URL names a path inside its bucket or container")
                .with_context("table", table),
        );
    }
    let differs = |what: &str, configured: &str, named: &str| {
        Error::config(format!(
            "the connection's {what} `{configured}` is not the table URL's `{named}`: leave it out of a lake connection"
        ))
        .with_context("table", table)
    };
    let (store, base): (Arc<dyn object_store::ObjectStore>, String) = match resolved {
        Some(LakeConnection::S3(c)) => {
            let (bucket, _) = store_name(&url);
            if !c.bucket.is_empty() && c.bucket != bucket {
                return Err(differs("bucket", &c.bucket, &bucket));
            }
            let mut c = c;
            c.bucket = bucket.clone();
            c.prefix = String::new();
            (Arc::new(c.build_store()?), format!("s3://{bucket}"))
        }
        Some(LakeConnection::AzureBlob(c)) => {
            let (container, account) = store_name(&url);
            if container.is_empty() {
                return Err(
                    Error::config("the table URL names no container").with_context("table", table)
                );
            }
            if !c.container.is_empty() && c.container != container {
                return Err(differs("container", &c.container, &container));
            }
            let mut c = c;
            if let Some(a) = account {
                if !c.account.is_empty() && c.account != a {
                    return Err(differs("account", &c.account, &a));
                }
                c.account = a;
            }
            c.container = container.clone();
            c.prefix = String::new();
            (Arc::new(c.build_store()?), format!("az://{container}"))
        }
        _ => unreachable!("checked: a cloud table has a resolved connection"),
    };
    let url = Url::parse(&format!("{base}/{path}/")).map_err(|e| {
        Error::config("not a valid table URL")
            .with_context("table", table)
            .with_source(e)
    })?;
    Ok(TableLocation::new(store, url))
}

/// A lake: a root (local directory or URL) under which each layer's tables live
/// (`<root>/<layer>/<name>`), and the connection its tables share.
#[derive(Debug, Clone)]
pub struct Lake {
    root: String,
    connection: Option<LakeConnection>,
    /// The file the connection came from (written into generated pipelines instead of it).
    connection_file: Option<PathBuf>,
}

impl Lake {
    /// A lake at `root`, with the connection in `connection_file` for a cloud root.
    ///
    /// # Errors
    /// Config for an unknown scheme or a missing or mismatched connection.
    pub fn open(root: &str, connection_file: Option<&Path>) -> Result<Self> {
        let connection = connection_file.map(load).transpose()?;
        check(root, connection.as_ref())?;
        let (s, _) = scheme(root)?;
        let root = if s == Scheme::Local {
            let p = Path::new(root.strip_prefix("file://").unwrap_or(root));
            std::fs::create_dir_all(p)?;
            std::fs::canonicalize(p)?.display().to_string()
        } else {
            root.trim_end_matches('/').to_string()
        };
        let connection_file =
            connection_file.map(|f| std::fs::canonicalize(f).unwrap_or_else(|_| f.to_path_buf()));
        Ok(Self {
            root,
            connection,
            connection_file,
        })
    }

    /// Whether the lake is on local disk.
    pub fn is_local(&self) -> bool {
        self.connection.is_none()
    }

    /// The root as given (a local directory made absolute).
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The connection file, for generated pipelines.
    pub fn connection_file(&self) -> Option<&Path> {
        self.connection_file.as_deref()
    }

    /// `<root>/<layer>/<name>` as written in pipeline files.
    pub fn table_url(&self, layer: &str, name: &str) -> String {
        if self.is_local() {
            Path::new(&self.root)
                .join(layer)
                .join(name)
                .display()
                .to_string()
        } else {
            format!("{}/{layer}/{name}", self.root)
        }
    }

    /// A table of the lake's own (`_expectations`), at its root.
    ///
    /// # Errors
    /// As [`table_location`].
    pub fn meta_table(&self, name: &str) -> Result<TableLocation> {
        let url = if self.is_local() {
            Path::new(&self.root).join(name).display().to_string()
        } else {
            format!("{}/{name}", self.root)
        };
        table_location(&url, self.connection.as_ref())
    }

    /// The table `name` of `layer`.
    ///
    /// # Errors
    /// As [`table_location`].
    pub fn table(&self, layer: &str, name: &str) -> Result<TableLocation> {
        table_location(&self.table_url(layer, name), self.connection.as_ref())
    }

    /// Create the bucket or container when missing (a local lake's directory exists already).
    ///
    /// # Errors
    /// When the store refuses.
    pub async fn setup(&self) -> Result<()> {
        let Some(url) = scheme(&self.root)?.1 else {
            return Ok(());
        };
        match &self.connection {
            Some(LakeConnection::S3(c)) => {
                let mut c = c.clone();
                c.bucket = store_name(&url).0;
                stratalake_s3::create_bucket(&c).await?;
            }
            Some(LakeConnection::AzureBlob(c)) => {
                let mut c = c.clone();
                c.container = store_name(&url).0;
                stratalake_azure_blob::create_container(&c).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3() -> LakeConnection {
        LakeConnection::S3(S3Config::local_server("", "http://127.0.0.1:5000"))
    }

    #[test]
    fn schemes_and_connections_are_checked_without_io() {
        check("/lake/bronze/orders", None).unwrap();
        check("file:///lake/bronze/orders", None).unwrap();
        check("s3://lake/bronze/orders", Some(&s3())).unwrap();
        let e = check("s3://lake/bronze/orders", None).unwrap_err();
        assert!(
            e.message().contains("needs a `connection`"),
            "{}",
            e.message()
        );
        let e = check("gs://lake/bronze/orders", Some(&s3())).unwrap_err();
        assert!(
            e.message().contains("unknown table scheme `gs://`"),
            "{}",
            e.message()
        );
        let e = check("az://lake/bronze/orders", Some(&s3())).unwrap_err();
        assert!(
            e.message().contains("`azure_blob` connection"),
            "{}",
            e.message()
        );
        let e = check("/lake/orders", Some(&s3())).unwrap_err();
        assert!(
            e.message().contains("takes no `connection`"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn a_cloud_table_is_located_in_its_bucket() {
        let loc = table_location("s3://retail-lake/bronze/orders", Some(&s3())).unwrap();
        assert_eq!(loc.url.as_str(), "s3://retail-lake/bronze/orders/");
        let mut c = S3Config::local_server("other", "http://127.0.0.1:5000");
        c.prefix = String::new();
        let e = table_location(
            "s3://retail-lake/bronze/orders",
            Some(&LakeConnection::S3(c)),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("`other` is not the table URL's `retail-lake`"));
        let az = LakeConnection::AzureBlob(AzureBlobConfig::emulator("", "http://127.0.0.1:10000"));
        let loc = table_location(
            "abfss://lake@devstoreaccount1.dfs.core.windows.net/gold/daily_revenue",
            Some(&az),
        )
        .unwrap();
        assert_eq!(loc.url.as_str(), "az://lake/gold/daily_revenue/");
    }
}
