//! The pipeline YAML: a closed set of sources, transforms, sinks and checkpoint stores.

use anyhow::{Context as _, Result, anyhow, bail};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use strata_azure_blob::{AzureBlobConfig, AzureBlobSinkConfig, AzureBlobSourceConfig};
use strata_core::{BatchTransform, CheckpointStore, RetryPolicy, RunOptions, Sink, Source};
use strata_files::{
    FileSource, FileSourceConfig, ObjectStoreCheckpointStore, ParquetSink, ParquetSinkConfig,
    StoreLocation,
};
use strata_s3::{S3Config, S3SinkConfig, S3SourceConfig};

/// A pipeline file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// The pipeline id: names checkpoints and commits (letters, digits, `-`, `_`, `.`).
    pub pipeline: String,
    /// Where data comes from.
    #[serde(with = "serde_yaml_ng::with::singleton_map_recursive")]
    pub source: SourceConfig,
    /// Batch transforms, applied in order.
    #[serde(default, with = "serde_yaml_ng::with::singleton_map_recursive")]
    pub transforms: Vec<TransformConfig>,
    /// Where data goes.
    #[serde(with = "serde_yaml_ng::with::singleton_map_recursive")]
    pub sink: SinkConfig,
    /// Where the runner keeps its checkpoint.
    #[serde(with = "serde_yaml_ng::with::singleton_map_recursive")]
    pub checkpoint: CheckpointConfig,
    /// Tuning.
    #[serde(default)]
    pub options: OptionsConfig,
}

/// The sources this binary knows.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// Files on local disk (NDJSON, CSV, Parquet).
    Files(FileSourceConfig),
    /// Objects in an S3 bucket: `connection` (bucket, prefix, credentials) and `read`.
    S3(S3SourceConfig),
    /// Blobs in an Azure container: `connection` and `read`.
    AzureBlob(AzureBlobSourceConfig),
    /// A paginated JSON API.
    Rest(Box<strata_rest::RestSourceConfig>),
    /// A MongoDB collection or aggregation.
    Mongodb(Box<strata_mongodb::MongoSourceConfig>),
    /// A Delta table: its rows at a pinned version, then only newer versions' changes.
    Delta {
        /// The table's directory (or file:// URL).
        table: String,
    },
    /// A Snowflake query, optionally incremental by a high-water mark.
    Snowflake(Box<strata_snowflake::source::SnowflakeSourceConfig>),
}

/// The transforms this binary knows, applied in the order written.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TransformConfig {
    /// Keep these columns, in this order.
    Select {
        /// The columns.
        columns: Vec<String>,
    },
    /// Bronze lineage columns (`_ingested_at`, `_ingest_date`, `_source`, `_pipeline`,
    /// `_epoch`, `_source_position`).
    Lineage {
        /// The source's name recorded in `_source`.
        source: String,
    },
    /// Silver: cast to declared types and check rules, rejected rows to quarantine. `model`
    /// names a table of the retail model (`orders`, `customers`, `partners`, `products`), or
    /// `spec` declares one.
    Conform {
        /// A retail model table.
        #[serde(default)]
        model: Option<String>,
        /// A declared spec.
        #[serde(default)]
        spec: Option<strata_silver::ConformSpec>,
    },
    /// Mask PII by a privacy policy (strata-privacy), as `role` sees it: put it first in a
    /// silver pipeline, so nothing unmasked is conformed, quarantined or written.
    Mask {
        /// The policy file (relative to the working directory).
        policy: PathBuf,
        /// The table the policy's `table.column` names refer to.
        table: String,
        /// The role the output is for (default `silver`).
        #[serde(default = "silver_role")]
        role: String,
    },
    /// One row per element of a list of structs, parent columns repeated.
    Explode {
        /// The list column.
        column: String,
        /// The parent columns kept.
        keep: Vec<String>,
    },
}

fn silver_role() -> String {
    "silver".into()
}

/// The sinks this binary knows.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkConfig {
    /// Parquet files on local disk committed exactly once.
    Parquet(ParquetSinkConfig),
    /// Parquet files in an S3 bucket: `connection` and `write`.
    S3(S3SinkConfig),
    /// Parquet files in an Azure container: `connection` and `write`.
    AzureBlob(AzureBlobSinkConfig),
    /// A MongoDB collection: append, or upsert by key (with deletes), exactly once.
    Mongodb(Box<strata_mongodb::MongoSinkConfig>),
    /// A Delta table: append or MERGE, exactly once; rejected records in its `_quarantine`.
    Delta {
        /// The table's directory (or file:// URL).
        table: String,
        /// Partitions, write mode, schema evolution.
        #[serde(default)]
        options: strata_delta::DeltaSinkConfig,
    },
    /// A Snowflake table: PUT + COPY + append or merge, exactly once.
    Snowflake(Box<strata_snowflake::sink::SnowflakeSinkConfig>),
}

/// Checkpoint stores.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CheckpointConfig {
    /// A directory on local disk (or file:// URL), compare-and-swap by create-only files.
    Local {
        /// The directory.
        dir: String,
    },
    /// In memory: forgotten when the process ends (the sink's marker still prevents duplicates).
    Memory,
    /// Objects in an S3 bucket, compare-and-swap by create-only puts.
    S3 {
        /// The bucket and prefix.
        connection: S3Config,
    },
    /// Blobs in an Azure container, compare-and-swap by create-only puts.
    AzureBlob {
        /// The container and prefix.
        connection: AzureBlobConfig,
    },
}

/// Run tuning.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptionsConfig {
    /// Rows per batch.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Splits read at once (0: two per core).
    #[serde(default)]
    pub read_concurrency: usize,
    /// Attempts per epoch, the first included.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// The first retry delay.
    #[serde(default = "default_backoff_ms")]
    pub initial_backoff_millis: u64,
    /// The largest retry delay.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_millis: u64,
}

impl Default for OptionsConfig {
    fn default() -> Self {
        Self {
            batch_size: default_batch_size(),
            read_concurrency: 0,
            max_attempts: default_attempts(),
            initial_backoff_millis: default_backoff_ms(),
            max_backoff_millis: default_max_backoff_ms(),
        }
    }
}

fn default_batch_size() -> usize {
    8192
}
fn default_attempts() -> u32 {
    3
}
fn default_backoff_ms() -> u64 {
    200
}
fn default_max_backoff_ms() -> u64 {
    30_000
}

/// Replace `${VAR}` with the environment's value; a missing variable is an error naming the
/// line. `$${` escapes a literal `${`.
pub fn interpolate(text: &str, file: &Path) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    for (n, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(i) = rest.find("${") {
            if i > 0 && rest.as_bytes()[i - 1] == b'$' {
                out.push_str(&rest[..i - 1]);
                out.push_str("${");
                rest = &rest[i + 2..];
                continue;
            }
            out.push_str(&rest[..i]);
            let end = rest[i..].find('}').ok_or_else(|| {
                anyhow!(
                    "{}:{}: unterminated `${{` in the configuration",
                    file.display(),
                    n + 1
                )
            })?;
            let name = &rest[i + 2..i + end];
            let value = std::env::var(name).map_err(|_| {
                anyhow!(
                    "{}:{}: environment variable `{name}` is not set (used as ${{{name}}})",
                    file.display(),
                    n + 1
                )
            })?;
            out.push_str(&value);
            rest = &rest[i + end + 1..];
        }
        out.push_str(rest);
        out.push('\n');
    }
    Ok(out)
}

/// Read, interpolate and parse a pipeline file; errors name the file, line and key.
pub fn load(path: &Path) -> Result<PipelineConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the pipeline file {}", path.display()))?;
    parse(&interpolate(&text, path)?, path)
}

/// A Snowflake connection file (`${VAR}` interpolated, validated); errors name the file, line
/// and key.
pub fn load_snowflake_connection(path: &Path) -> Result<strata_snowflake::config::SnowflakeConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let conn: strata_snowflake::config::SnowflakeConfig =
        from_yaml(&interpolate(&text, path)?, path)?;
    conn.validate()
        .map_err(|e| anyhow!("{}: {}", path.display(), e.report()))?;
    Ok(conn)
}

/// Deserialize YAML read from `path`; an error names `path:line:column` and the key.
fn from_yaml<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
    serde_yaml_ng::from_str(text).map_err(|e| match e.location() {
        Some(l) => anyhow!("{}:{}:{}: {e}", path.display(), l.line(), l.column()),
        None => anyhow!("{}: {e}", path.display()),
    })
}

/// Parse pipeline YAML (already interpolated).
pub fn parse(text: &str, path: &Path) -> Result<PipelineConfig> {
    let cfg: PipelineConfig = from_yaml(text, path)?;
    strata_core::checkpoint::validate_pipeline_id(&cfg.pipeline)
        .map_err(|e| anyhow!("{}: `pipeline`: {e}", path.display()))?;
    let at = |key: &str| {
        let p = path.display().to_string();
        let key = key.to_string();
        move |e: strata_core::Error| anyhow!("{p}: `{key}`: {}", e.report())
    };
    match &cfg.source {
        SourceConfig::Files(c) => c.validate().map_err(at("source.files"))?,
        SourceConfig::S3(c) => c.validate().map_err(at("source.s3"))?,
        SourceConfig::AzureBlob(c) => c.validate().map_err(at("source.azure_blob"))?,
        SourceConfig::Rest(c) => c.validate().map_err(at("source.rest"))?,
        SourceConfig::Mongodb(c) => c.validate().map_err(at("source.mongodb"))?,
        SourceConfig::Delta { .. } => {}
        SourceConfig::Snowflake(c) => c.connection.validate().map_err(at("source.snowflake"))?,
    }
    match &cfg.sink {
        SinkConfig::Parquet(c) => c.validate().map_err(at("sink.parquet"))?,
        SinkConfig::S3(c) => c.validate().map_err(at("sink.s3"))?,
        SinkConfig::AzureBlob(c) => c.validate().map_err(at("sink.azure_blob"))?,
        SinkConfig::Mongodb(c) => c.validate().map_err(at("sink.mongodb"))?,
        SinkConfig::Delta { options, .. } => options.validate().map_err(at("sink.delta"))?,
        SinkConfig::Snowflake(c) => c.validate().map_err(at("sink.snowflake"))?,
    }
    match &cfg.checkpoint {
        CheckpointConfig::S3 { connection } => {
            connection.validate().map_err(at("checkpoint.s3"))?;
        }
        CheckpointConfig::AzureBlob { connection } => {
            connection.validate().map_err(at("checkpoint.azure_blob"))?;
        }
        _ => {}
    }
    if cfg.options.batch_size == 0 {
        bail!(
            "{}: `options.batch_size` must be at least 1",
            path.display()
        );
    }
    Ok(cfg)
}

/// Create every bucket and container the pipeline names (source, sink, checkpoints); returns
/// one line per store saying what was done.
pub async fn setup(cfg: &PipelineConfig) -> Result<Vec<String>> {
    let mut s3: Vec<&S3Config> = Vec::new();
    let mut azure: Vec<&AzureBlobConfig> = Vec::new();
    match &cfg.source {
        SourceConfig::S3(c) => s3.push(&c.connection),
        SourceConfig::AzureBlob(c) => azure.push(&c.connection),
        SourceConfig::Files(_)
        | SourceConfig::Rest(_)
        | SourceConfig::Mongodb(_)
        | SourceConfig::Snowflake(_)
        | SourceConfig::Delta { .. } => {}
    }
    match &cfg.sink {
        SinkConfig::S3(c) => s3.push(&c.connection),
        SinkConfig::AzureBlob(c) => azure.push(&c.connection),
        SinkConfig::Parquet(_)
        | SinkConfig::Mongodb(_)
        | SinkConfig::Snowflake(_)
        | SinkConfig::Delta { .. } => {}
    }
    match &cfg.checkpoint {
        CheckpointConfig::S3 { connection } => s3.push(connection),
        CheckpointConfig::AzureBlob { connection } => azure.push(connection),
        _ => {}
    }
    let mut done = Vec::new();
    for c in s3 {
        let what = strata_s3::create_bucket(c)
            .await
            .map_err(|e| anyhow!("bucket {}: {}", c.bucket, e.report()))?;
        done.push(format!("s3://{}: {what:?}", c.bucket));
    }
    for c in azure {
        let what = strata_azure_blob::create_container(c)
            .await
            .map_err(|e| anyhow!("container {}: {}", c.container, e.report()))?;
        done.push(format!(
            "az://{}/{}: {what:?}",
            c.account_name(),
            c.container
        ));
    }
    Ok(done)
}

/// A transform step: per batch, or over the stream.
pub enum Step {
    /// A stateless batch transform.
    Batch(Arc<dyn BatchTransform>),
    /// A stream transform (it may quarantine rows).
    Stream(Arc<dyn strata_core::StreamTransform>),
}

/// A table of the retail model for `conform: { model: ... }`.
fn retail_spec(model: &str) -> Option<strata_silver::ConformSpec> {
    Some(match model {
        "orders" => strata_silver::retail::orders(),
        "customers" => strata_silver::retail::customers(),
        "partners" => strata_silver::retail::partners(),
        "products" => strata_silver::retail::products(),
        _ => return None,
    })
}

/// A Delta table location from a local path or `file://` URL.
pub fn table_location(table: &str) -> strata_core::Result<strata_delta::TableLocation> {
    let path = table.strip_prefix("file://").unwrap_or(table);
    strata_delta::TableLocation::local(path)
}

/// The built components of a pipeline.
pub struct Built {
    pub source: Arc<dyn Source>,
    pub transforms: Vec<Step>,
    pub sink: Arc<dyn Sink>,
    pub checkpoints: Arc<dyn CheckpointStore>,
    pub options: RunOptions,
    pub sink_root: String,
}

/// Build every component (may touch the disk: listing, schema inference).
pub async fn build(cfg: &PipelineConfig) -> Result<Built> {
    let at = |key: &'static str| move |e: strata_core::Error| anyhow!("{key}: {}", e.report());
    let source: Arc<dyn Source> = match &cfg.source {
        SourceConfig::Files(c) => Arc::new(
            FileSource::try_new(c.clone())
                .await
                .map_err(at("source.files"))?,
        ),
        SourceConfig::S3(c) => Arc::new(c.build().await.map_err(at("source.s3"))?),
        SourceConfig::AzureBlob(c) => Arc::new(c.build().await.map_err(at("source.azure_blob"))?),
        SourceConfig::Rest(c) => Arc::new(
            strata_rest::RestSource::try_new(c.as_ref().clone())
                .await
                .map_err(at("source.rest"))?,
        ),
        SourceConfig::Mongodb(c) => Arc::new(
            strata_mongodb::MongoSource::try_new(c.as_ref().clone())
                .await
                .map_err(at("source.mongodb"))?,
        ),
        SourceConfig::Delta { table } => Arc::new(
            strata_delta::DeltaSource::try_new(table_location(table).map_err(at("source.delta"))?)
                .await
                .map_err(at("source.delta"))?,
        ),
        SourceConfig::Snowflake(c) => Arc::new(
            strata_snowflake::source::SnowflakeSource::try_new(c.as_ref().clone())
                .await
                .map_err(at("source.snowflake"))?,
        ),
    };
    let mut transforms = Vec::new();
    let mut schema = source.schema();
    for (i, t) in cfg.transforms.iter().enumerate() {
        transforms.push(match t {
            TransformConfig::Mask { policy, table, role } => {
                let at = |e: strata_core::Error| anyhow!("transforms[{i}].mask: {}", e.report());
                let p = strata_privacy::Policy::load(policy).map_err(at)?;
                let key = p.key().map_err(at)?;
                Step::Batch(Arc::new(
                    strata_privacy::Mask::try_new(&p, table, role, &schema, &key).map_err(at)?,
                ))
            }
            TransformConfig::Select { columns } => Step::Batch(Arc::new(
                strata_core::transforms::Select::new(columns.clone()),
            )),
            TransformConfig::Lineage { source } => {
                Step::Batch(Arc::new(strata_bronze::Lineage::new(source)))
            }
            TransformConfig::Conform { model, spec } => {
                let spec = match (model.as_deref(), spec) {
                    (Some(m), None) => retail_spec(m)
                        .ok_or_else(|| anyhow!("transforms[{i}].conform.model: unknown model `{m}` (orders, customers, partners, products)"))?,
                    (None, Some(s)) => s.clone(),
                    _ => bail!("transforms[{i}].conform: give either `model` or `spec`"),
                };
                Step::Stream(Arc::new(
                    strata_silver::Conform::try_new(spec).map_err(|e| anyhow!("transforms[{i}].conform: {}", e.report()))?,
                ))
            }
            TransformConfig::Explode { column, keep } => {
                let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
                Step::Batch(Arc::new(strata_silver::Explode::new(column, &keep)))
            }
        });
        schema = match transforms.last() {
            Some(Step::Batch(t)) => t.output_schema(&schema),
            Some(Step::Stream(t)) => t.output_schema(&schema),
            None => Ok(schema),
        }
        .map_err(|e| anyhow!("transforms[{i}]: {}", e.report()))?;
    }
    let (sink, sink_root): (Arc<dyn Sink>, String) = match &cfg.sink {
        SinkConfig::Parquet(c) => (
            Arc::new(ParquetSink::try_new(c.clone()).map_err(at("sink.parquet"))?),
            c.root.clone(),
        ),
        SinkConfig::S3(c) => (
            Arc::new(c.build().map_err(at("sink.s3"))?),
            c.connection.url(),
        ),
        SinkConfig::AzureBlob(c) => (
            Arc::new(c.build().map_err(at("sink.azure_blob"))?),
            c.connection.url(),
        ),
        SinkConfig::Mongodb(c) => (
            Arc::new(
                strata_mongodb::MongoSink::try_new(c.as_ref().clone())
                    .await
                    .map_err(at("sink.mongodb"))?,
            ),
            format!("mongodb {}.{}", c.database, c.collection),
        ),
        SinkConfig::Delta { table, options } => {
            let loc = table_location(table).map_err(at("sink.delta"))?;
            let root = loc.url.to_string();
            (
                Arc::new(
                    strata_delta::DeltaSink::try_new(loc, options.clone())
                        .map_err(at("sink.delta"))?,
                ),
                root,
            )
        }
        SinkConfig::Snowflake(c) => (
            Arc::new(
                strata_snowflake::sink::SnowflakeSink::try_new(c.as_ref().clone())
                    .map_err(at("sink.snowflake"))?,
            ),
            format!(
                "snowflake {}.{}.{}",
                c.connection.database, c.connection.schema, c.table
            ),
        ),
    };
    let checkpoints: Arc<dyn CheckpointStore> = match &cfg.checkpoint {
        CheckpointConfig::Local { dir } => Arc::new(ObjectStoreCheckpointStore::new(
            StoreLocation::parse(dir).map_err(at("checkpoint.local"))?,
        )),
        CheckpointConfig::Memory => Arc::new(strata_core::InMemoryCheckpointStore::new()),
        CheckpointConfig::S3 { connection } => Arc::new(ObjectStoreCheckpointStore::new(
            connection.location().map_err(at("checkpoint.s3"))?,
        )),
        CheckpointConfig::AzureBlob { connection } => Arc::new(ObjectStoreCheckpointStore::new(
            connection.location().map_err(at("checkpoint.azure_blob"))?,
        )),
    };
    let o = &cfg.options;
    let mut options = RunOptions::default()
        .with_batch_size(o.batch_size)
        .with_retry(RetryPolicy::new(
            o.max_attempts,
            Duration::from_millis(o.initial_backoff_millis),
            Duration::from_millis(o.max_backoff_millis),
        ));
    if o.read_concurrency > 0 {
        options = options.with_read_concurrency(o.read_concurrency);
    }
    Ok(Built {
        source,
        transforms,
        sink,
        checkpoints,
        options,
        sink_root,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_name_the_line() {
        let yaml = "pipeline: p\nsource:\n  files:\n    root: /tmp\n    format: ndjson\n    colour: red\nsink:\n  parquet:\n    root: /tmp/o\ncheckpoint: memory\n";
        let e = parse(yaml, Path::new("p.yaml")).unwrap_err().to_string();
        assert!(e.contains("p.yaml:6"), "{e}");
        assert!(e.contains("unknown field `colour`"), "{e}");
    }

    #[test]
    fn variables_are_interpolated_and_missing_ones_named() {
        // SAFETY-free: set_var is unsafe in edition 2024; use a variable every shell has.
        let home = std::env::var("PATH").unwrap();
        assert_eq!(
            interpolate("a: ${PATH}\nb: $${x}", Path::new("f")).unwrap(),
            format!("a: {home}\nb: ${{x}}\n")
        );
        let e = interpolate("x: 1\ny: ${STRATA_SURELY_UNSET_VAR}", Path::new("f.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("f.yaml:2") && e.contains("STRATA_SURELY_UNSET_VAR"),
            "{e}"
        );
    }

    #[test]
    fn cloud_sources_and_sinks_parse_with_tagged_credentials() {
        let yaml = "pipeline: copy\nsource:\n  s3:\n    connection:\n      bucket: raw\n      prefix: orders\n      endpoint: http://127.0.0.1:5000\n      allow_http: true\n      path_style: true\n      credentials:\n        type: static\n        access_key_id: a\n        secret_access_key: b\n    read:\n      format: parquet\n      partitioning: hive\nsink:\n  azure_blob:\n    connection:\n      container: lake\n      credentials:\n        type: emulator\n    write:\n      partition_by: [dt]\ncheckpoint:\n  s3:\n    connection:\n      bucket: raw\n      prefix: _checkpoints\n      endpoint: http://127.0.0.1:5000\n      allow_http: true\n      path_style: true\n";
        let cfg = parse(yaml, Path::new("p.yaml")).unwrap();
        assert!(matches!(cfg.source, SourceConfig::S3(_)));
        assert!(matches!(cfg.sink, SinkConfig::AzureBlob(_)));
        let bad = yaml.replace("bucket: raw\n      prefix: orders", "bucket: Raw_Bucket");
        let e = parse(&bad, Path::new("p.yaml")).unwrap_err().to_string();
        assert!(e.contains("source.s3") && e.contains("Raw_Bucket"), "{e}");
    }

    #[test]
    fn bad_pipeline_ids_are_rejected() {
        let yaml = "pipeline: ../x\nsource:\n  files:\n    root: /tmp\n    format: ndjson\nsink:\n  parquet:\n    root: /tmp/o\ncheckpoint: memory\n";
        assert!(
            parse(yaml, Path::new("p.yaml"))
                .unwrap_err()
                .to_string()
                .contains("`pipeline`")
        );
    }
}
