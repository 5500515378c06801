//! The pipeline YAML: a closed set of sources, transforms, sinks and checkpoint stores.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use stratalake_azure_blob::{AzureBlobConfig, AzureBlobSinkConfig, AzureBlobSourceConfig};
use stratalake_core::{BatchTransform, CheckpointStore, RetryPolicy, RunOptions, Sink, Source};
use stratalake_core::{Error, Result, ResultExt as _};
use stratalake_files::{
    FileSource, FileSourceConfig, ObjectStoreCheckpointStore, ParquetSink, ParquetSinkConfig,
    StoreLocation,
};
use stratalake_s3::{S3Config, S3SinkConfig, S3SourceConfig};

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
    /// Row rules every row is checked against on its way to the sink, after the
    /// transforms (`not_null`, `accepted_values`, `range`, `regex`, `length`, `type`,
    /// `expression`; action `warn`, `quarantine` or `fail`): see stratalake-project's `expect`.
    #[serde(default)]
    pub expectations: Vec<stratalake_project::expect::Expectation>,
    /// The logical date the file's placeholders were filled with (`{{ ds }}`), if it has any:
    /// its checkpoint and commits are then that date's (see [`PipelineConfig::run_id`]).
    #[serde(skip)]
    pub logical_date: Option<chrono::NaiveDate>,
}

impl PipelineConfig {
    /// The id its checkpoint and commits are kept under: the pipeline's, or for a file
    /// partitioned by logical date, `<pipeline>.<ds>`.
    pub fn run_id(&self) -> String {
        match self.logical_date {
            Some(d) => crate::logical::partition_id(&self.pipeline, d),
            None => self.pipeline.clone(),
        }
    }
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
    Rest(Box<stratalake_rest::RestSourceConfig>),
    /// A MongoDB collection or aggregation.
    Mongodb(Box<stratalake_mongodb::MongoSourceConfig>),
    /// A Delta table: its rows at a pinned version, then only newer versions' changes.
    Delta {
        /// The table: a local directory, `file://`, `s3://bucket/path`, `az://container/path`
        /// or `abfss://container@account.dfs.core.windows.net/path`.
        #[serde(default)]
        table: Option<String>,
        /// In a project's pipeline instead of `table`: a table of the project's lake
        /// (`bronze.orders`), reached through the project's lake connection.
        #[serde(default)]
        lake_table: Option<String>,
        /// How to reach a cloud table's store (`s3: ...`, `azure_blob: ...` or `file: ...`).
        #[serde(default)]
        connection: Option<crate::lake::LakeConnection>,
        /// `true` (default): every change with `_change_type`, `_commit_version` and
        /// `_commit_timestamp`; `false`: only the new and updated rows as the table holds them.
        #[serde(default = "yes")]
        change_feed: bool,
    },
    /// A Snowflake query, optionally incremental by a high-water mark.
    Snowflake(Box<stratalake_snowflake::source::SnowflakeSourceConfig>),
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
    /// Silver: cast to declared types (`types`) and check `rules`, rejected rows to
    /// quarantine (named by the pipeline id).
    Conform(stratalake_silver::ConformSettings),
    /// Mask PII by a privacy policy (stratalake-privacy), as `role` sees it: put it first in a
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
    /// A SQL query (DataFusion) run on each batch, which it reads as the table `table`
    /// (default `input`): row by row only (no joins or aggregates across batches).
    Sql {
        /// The query.
        query: String,
        /// The name the batch has in the query.
        #[serde(default = "input_table")]
        table: String,
    },
    /// One row per element of a list of structs, parent columns repeated.
    Explode {
        /// The list column.
        column: String,
        /// The parent columns kept.
        keep: Vec<String>,
    },
}

fn input_table() -> String {
    "input".into()
}

fn yes() -> bool {
    true
}

/// The table a Delta source or sink names: `table`, or `lake_table` once a project has
/// resolved it (see [`resolve_lake_tables`]).
pub fn delta_table<'a>(
    table: Option<&'a String>,
    lake_table: Option<&'a String>,
) -> Result<&'a str> {
    match (table, lake_table) {
        (Some(t), None) => Ok(t),
        (None, Some(t)) => Err(config_err(format!(
            "`lake_table: {t}` names a table of a project's lake: run this pipeline with `strata build` in its project, or give `table`"
        ))),
        (None, None) => Err(config_err(
            "give the Delta table: `table` (or `lake_table` in a project's pipeline)".into(),
        )),
        (Some(_), Some(_)) => Err(config_err("give `table` or `lake_table`, not both".into())),
    }
}

/// Replace each `lake_table: layer.name` of a pipeline by the table in `lake` (with the
/// lake's connection); the names it read and wrote, for the project graph.
pub fn resolve_lake_tables(
    cfg: &mut PipelineConfig,
    lake: &crate::lake::Lake,
) -> Result<(Vec<String>, Option<String>)> {
    let mut inputs = Vec::new();
    let mut output = None;
    let resolve = |table: &mut Option<String>,
                   lake_table: &mut Option<String>,
                   connection: &mut Option<crate::lake::LakeConnection>|
     -> Result<Option<String>> {
        let Some(name) = lake_table.take() else {
            return Ok(None);
        };
        let Some((layer, t)) = name.split_once('.') else {
            return Err(config_err(format!(
                "`lake_table: {name}`: name a lake table as `layer.name`"
            )));
        };
        if table.is_some() || connection.is_some() {
            return Err(config_err(format!(
                "`lake_table: {name}` takes its place and connection from the project's lake: leave out `table` and `connection`"
            )));
        }
        *table = Some(lake.table_url(layer, t));
        *connection = lake
            .connection_file()
            .map(|f| crate::lake::LakeConnection::File(f.to_path_buf()));
        Ok(Some(name))
    };
    if let SourceConfig::Delta {
        table,
        lake_table,
        connection,
        ..
    } = &mut cfg.source
        && let Some(n) = resolve(table, lake_table, connection)?
    {
        inputs.push(n);
    }
    if let SinkConfig::Delta {
        table,
        lake_table,
        connection,
        ..
    } = &mut cfg.sink
    {
        output = resolve(table, lake_table, connection)?;
    }
    Ok((inputs, output))
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
    Mongodb(Box<stratalake_mongodb::MongoSinkConfig>),
    /// A Delta table: append or MERGE, exactly once; rejected records in its `_quarantine`.
    Delta {
        /// The table: a local directory, `file://`, `s3://bucket/path`, `az://container/path`
        /// or `abfss://container@account.dfs.core.windows.net/path`.
        #[serde(default)]
        table: Option<String>,
        /// In a project's pipeline instead of `table`: a table of the project's lake
        /// (`bronze.orders`), reached through the project's lake connection.
        #[serde(default)]
        lake_table: Option<String>,
        /// How to reach a cloud table's store (`s3: ...`, `azure_blob: ...` or `file: ...`).
        #[serde(default)]
        connection: Option<crate::lake::LakeConnection>,
        /// Partitions, write mode, schema evolution.
        #[serde(default)]
        options: stratalake_delta::DeltaSinkConfig,
    },
    /// A Snowflake table: PUT + COPY + append or merge, exactly once.
    Snowflake(Box<stratalake_snowflake::sink::SnowflakeSinkConfig>),
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
    /// Rows per batch. Range: 1..=1_048_576.
    #[serde(
        default = "default_batch_size",
        deserialize_with = "stratalake_core::bounds::usize_in::<_, 1, 1_048_576>"
    )]
    pub batch_size: usize,
    /// Splits read at once (0: two per core). Range: 0..=1024.
    #[serde(
        default,
        deserialize_with = "stratalake_core::bounds::usize_in::<_, 0, 1024>"
    )]
    pub read_concurrency: usize,
    /// Attempts per epoch, the first included. Range: 1..=100.
    #[serde(
        default = "default_attempts",
        deserialize_with = "stratalake_core::bounds::u32_in::<_, 1, 100>"
    )]
    pub max_attempts: u32,
    /// The first retry delay. Range: 0..=3_600_000.
    #[serde(
        default = "default_backoff_ms",
        deserialize_with = "stratalake_core::bounds::u64_in::<_, 0, 3_600_000>"
    )]
    pub initial_backoff_millis: u64,
    /// The largest retry delay. Range: 0..=86_400_000.
    #[serde(
        default = "default_max_backoff_ms",
        deserialize_with = "stratalake_core::bounds::u64_in::<_, 0, 86_400_000>"
    )]
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
    stratalake_core::context::DEFAULT_BATCH_SIZE
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

/// The largest configuration file accepted (pipeline and connection files are a few KiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// The deepest flow nesting (`[`/`{`) accepted in a configuration file.
pub const MAX_CONFIG_NESTING: usize = 64;

/// YAML text with `${VAR}`s replaced, and what replaced them (to keep them out of errors).
#[derive(Debug)]
pub struct Interpolated {
    /// The text to parse.
    pub text: String,
    /// `(name, value)` of every variable used.
    pub values: Vec<(String, String)>,
    /// Whether it used a logical-date placeholder (`{{ ds }}`: see [`crate::logical`]).
    pub templated: bool,
}

fn config_err(msg: String) -> Error {
    Error::config(msg)
}

/// Where a YAML comment starts on `line` (a `#` at the start or after a space, outside
/// quotes), if it has one.
fn comment_start(line: &str) -> Option<usize> {
    let b = line.as_bytes();
    let (mut single, mut double) = (false, false);
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if double => i += 1,
            b'"' if !single => double = !double,
            b'\'' if !double => single = !single,
            b'#' if !single && !double && (i == 0 || b[i - 1] == b' ' || b[i - 1] == b'\t') => {
                return Some(i);
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// A value YAML reads as itself in a plain (unquoted) scalar.
fn plain_safe(v: &str) -> bool {
    !v.is_empty()
        && !v.contains(" #")
        && !v.contains(": ")
        && !v.contains(['\n', '\r', '\t'])
        && !v.ends_with(':')
        && !v.starts_with([
            ' ', '[', ']', '{', '}', '&', '*', '!', '|', '>', '\'', '"', '%', '@', '`', '#', ',',
            '?', '-',
        ])
        && !v.ends_with(' ')
}

fn double_quoted(v: &str) -> String {
    stratalake_project::double_quoted(v)
}

/// Replace `${VAR}` with the environment's value; a missing variable is an error naming the
/// line. `$${` escapes a literal `${`. Comments are left alone (a `${VAR}` in a comment is not
/// expanded), and a value is inserted so YAML reads it as that value: quoted when it stands
/// alone as a plain scalar and holds YAML syntax (` #`, `: `, a leading `[`), escaped inside
/// quotes; where it cannot be (part of a longer plain scalar), an error asks for quotes.
/// Values of variables whose name looks secret (`*KEY*`, `*TOKEN*`, `*SECRET*`, `*PASS*`)
/// are registered with the redaction layer.
pub fn interpolate(text: &str, file: &Path) -> Result<Interpolated> {
    interpolate_in(text, file, crate::logical::mode())
}

/// [`interpolate`], filling `{{ ds }}` placeholders by `mode`.
fn interpolate_in(text: &str, file: &Path, mode: crate::logical::Mode) -> Result<Interpolated> {
    let mut out = String::with_capacity(text.len());
    let mut values: Vec<(String, String)> = Vec::new();
    let mut templated = false;
    for (n, full) in text.lines().enumerate() {
        let (line, comment) = match comment_start(full) {
            Some(c) => full.split_at(c),
            None => (full, ""),
        };
        let (line, used) = crate::logical::render_line(line, mode)
            .map_err(|e| config_err(format!("{}:{}: {e}", file.display(), n + 1)))?;
        templated |= used;
        let mut rest = line.as_str();
        let mut done = String::new();
        while let Some(i) = rest.find("${") {
            if i > 0 && rest.as_bytes()[i - 1] == b'$' {
                done.push_str(&rest[..i - 1]);
                done.push_str("${");
                rest = &rest[i + 2..];
                continue;
            }
            done.push_str(&rest[..i]);
            let end = rest[i..].find('}').ok_or_else(|| {
                config_err(format!(
                    "{}:{}: unterminated `${{` in the configuration",
                    file.display(),
                    n + 1
                ))
            })?;
            let name = &rest[i + 2..i + end];
            let value = std::env::var(name).map_err(|_| {
                config_err(format!(
                    "{}:{}: environment variable `{name}` is not set (used as ${{{name}}})",
                    file.display(),
                    n + 1
                ))
            })?;
            let after = &rest[i + end + 1..];
            // The quoting context at the placeholder.
            let (mut single, mut double) = (false, false);
            let mut esc = false;
            for c in done.chars() {
                match c {
                    _ if esc => esc = false,
                    '\\' if double => esc = true,
                    '"' if !single => double = !double,
                    '\'' if !double => single = !single,
                    _ => {}
                }
            }
            let upper = name.to_ascii_uppercase();
            let secret = [
                "KEY",
                "TOKEN",
                "SECRET",
                "PASS",
                "PWD",
                "CREDENTIAL",
                "SAS",
                "SIGNATURE",
            ]
            .iter()
            .any(|s| upper.contains(s));
            let inserted = if double {
                let q = double_quoted(&value);
                q[1..q.len() - 1].to_string()
            } else if single {
                value.replace('\'', "''")
            } else if plain_safe(&value) && !secret {
                value.clone()
            } else {
                let lead = done.trim_end();
                let alone_before = lead.is_empty()
                    || lead.ends_with(':')
                    || lead.ends_with('-')
                    || lead.ends_with('[')
                    || lead.ends_with('{')
                    || lead.ends_with(',');
                let trail = after.trim_start();
                let alone_after = trail.is_empty()
                    || trail.starts_with(',')
                    || trail.starts_with('}')
                    || trail.starts_with(']');
                if !(alone_before && alone_after) && plain_safe(&value) {
                    // A secret inside a longer plain scalar (a URL): as written.
                    value.clone()
                } else if !(alone_before && alone_after) {
                    return Err(config_err(format!(
                        "{}:{}: the value of `{name}` holds characters YAML reads as syntax (such as ` #` or `: `): put the whole value in double quotes in the file",
                        file.display(),
                        n + 1
                    )));
                } else {
                    // Secrets are text: `token: ${TOKEN}` with TOKEN=31337 is the string.
                    double_quoted(&value)
                }
            };
            if secret {
                stratalake_core::secrets::register(&value);
            }
            values.push((name.to_string(), value));
            done.push_str(&inserted);
            rest = after;
        }
        out.push_str(&done);
        out.push_str(rest);
        out.push_str(comment);
        out.push('\n');
    }
    Ok(Interpolated {
        text: out,
        values,
        templated,
    })
}

/// Read a configuration file, refusing one over [`MAX_CONFIG_BYTES`].
pub fn read_config(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path)
        .wrap_err_with(|| format!("cannot read the configuration file {}", path.display()))?;
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(config_err(format!(
            "{}: the configuration file is {} bytes, over the {} bytes a configuration may have",
            path.display(),
            meta.len(),
            MAX_CONFIG_BYTES
        )));
    }
    std::fs::read_to_string(path)
        .wrap_err_with(|| format!("cannot read the configuration file {}", path.display()))
}

/// Read, interpolate and parse a pipeline file; errors name the file, line and key.
pub fn load(path: &Path) -> Result<PipelineConfig> {
    Ok(load_in(path, None)?.0)
}

/// [`load`], with each `lake_table` resolved against `lake` (default: the lake of the project
/// whose directory holds the file); also the lake tables it reads and the one it writes.
pub fn load_in(
    path: &Path,
    lake: Option<&crate::lake::Lake>,
) -> Result<(PipelineConfig, Vec<String>, Option<String>)> {
    let text = read_config(path)?;
    let it = interpolate(&text, path)?;
    let mut cfg = parse_interpolated(&it, path)?;
    if it.templated
        && let crate::logical::Mode::Date(d) = crate::logical::mode()
    {
        cfg.logical_date = Some(d);
    }
    let uses_lake = matches!(
        &cfg.source,
        SourceConfig::Delta {
            lake_table: Some(_),
            ..
        }
    ) || matches!(
        &cfg.sink,
        SinkConfig::Delta {
            lake_table: Some(_),
            ..
        }
    );
    if !uses_lake {
        return Ok((cfg, Vec::new(), None));
    }
    let found;
    let lake = match lake {
        Some(l) => l,
        None => {
            found = crate::project::enclosing_lake(path)?;
            &found
        }
    };
    let (inputs, output) =
        resolve_lake_tables(&mut cfg, lake).wrap_err_with(|| path.display().to_string())?;
    Ok((cfg, inputs, output))
}

/// Parse interpolated pipeline YAML; a parse error shows `${VAR}` where a value was inserted.
pub fn parse_interpolated(it: &Interpolated, path: &Path) -> Result<PipelineConfig> {
    parse(&it.text, path).map_err(|e| hide_values(e, &it.values))
}

/// `e` with every interpolated value (of 4 characters or more) shown as its `${VAR}`.
fn hide_values(e: Error, values: &[(String, String)]) -> Error {
    if values.is_empty() {
        return e;
    }
    let mut text = e.report();
    let mut vals: Vec<&(String, String)> = values.iter().filter(|(_, v)| v.len() >= 4).collect();
    vals.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
    for (name, v) in vals {
        text = text.replace(v.as_str(), &format!("${{{name}}}"));
    }
    Error::new(e.kind(), text)
}

/// A Snowflake connection file (`${VAR}` interpolated, validated); errors name the file, line
/// and key.
pub fn load_snowflake_connection(
    path: &Path,
) -> Result<stratalake_snowflake::config::SnowflakeConfig> {
    let conn: stratalake_snowflake::config::SnowflakeConfig = load_yaml(path)?;
    conn.validate()
        .wrap_err_with(|| format!("{}", path.display()))?;
    Ok(conn)
}

/// The deepest `[`/`{` nesting in YAML text (outside quotes and comments).
fn flow_depth(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    for line in text.lines() {
        let line = comment_start(line).map_or(line, |c| &line[..c]);
        let (mut single, mut double, mut esc) = (false, false, false);
        for b in line.bytes() {
            match b {
                _ if esc => esc = false,
                b'\\' if double => esc = true,
                b'"' if !single => double = !double,
                b'\'' if !double => single = !single,
                b'[' | b'{' if !single && !double => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                b']' | b'}' if !single && !double => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    deepest
}

/// Deserialize YAML read from `path`; an error names `path:line:column` and the key.
fn from_yaml<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
    let depth = flow_depth(text);
    if depth > MAX_CONFIG_NESTING {
        return Err(config_err(format!(
            "{}: the configuration nests {depth} levels deep, over the {MAX_CONFIG_NESTING} a configuration may",
            path.display()
        )));
    }
    stratalake_project::yaml::parse(text, path, 0)
}

/// An error at `key` (`sink.delta.table`) in the `section` (`sink`) of a pipeline file, named
/// with its line.
fn at_line<'a>(
    text: &'a str,
    path: &'a Path,
    section: &'a str,
    key: &'a str,
) -> impl Fn(stratalake_core::Error) -> Error + 'a {
    move |e| {
        let last = key.rsplit('.').next().unwrap_or(key);
        let from = text
            .lines()
            .position(|l| l.starts_with(&format!("{section}:")))
            .map_or(1, |i| i + 1);
        let place = match stratalake_project::yaml::key_line(text, from, last) {
            Some(line) => format!("{}:{line}", path.display()),
            None => path.display().to_string(),
        };
        e.wrap(format!("{place}: `{key}`"))
    }
}

/// Read, interpolate and parse a YAML file (a connection file); errors name the file, line
/// and key, with `${VAR}` shown in place of the values inserted.
pub fn load_yaml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = read_config(path)?;
    let it = interpolate(&text, path)?;
    from_yaml(&it.text, path).map_err(|e| hide_values(e, &it.values))
}

/// Parse pipeline YAML (already interpolated).
pub fn parse(text: &str, path: &Path) -> Result<PipelineConfig> {
    let cfg: PipelineConfig = from_yaml(text, path)?;
    stratalake_core::checkpoint::validate_pipeline_id(&cfg.pipeline)
        .map_err(|e| e.wrap(format!("{}: `pipeline`", path.display())))?;
    let at = |key: &str| {
        let p = path.display().to_string();
        let key = key.to_string();
        move |e: stratalake_core::Error| e.wrap(format!("{p}: `{key}`"))
    };
    match &cfg.source {
        SourceConfig::Files(c) => c.validate().map_err(at("source.files"))?,
        SourceConfig::S3(c) => c.validate().map_err(at("source.s3"))?,
        SourceConfig::AzureBlob(c) => c.validate().map_err(at("source.azure_blob"))?,
        SourceConfig::Rest(c) => c.validate().map_err(at("source.rest"))?,
        SourceConfig::Mongodb(c) => c.validate().map_err(at("source.mongodb"))?,
        SourceConfig::Delta {
            table: Some(table),
            connection,
            ..
        } => crate::lake::check(table, connection.as_ref()).map_err(at_line(
            text,
            path,
            "source",
            "source.delta.table",
        ))?,
        SourceConfig::Delta { .. } => {}
        SourceConfig::Snowflake(c) => c.connection.validate().map_err(at("source.snowflake"))?,
    }
    match &cfg.sink {
        SinkConfig::Parquet(c) => c.validate().map_err(at("sink.parquet"))?,
        SinkConfig::S3(c) => c.validate().map_err(at("sink.s3"))?,
        SinkConfig::AzureBlob(c) => c.validate().map_err(at("sink.azure_blob"))?,
        SinkConfig::Mongodb(c) => c.validate().map_err(at("sink.mongodb"))?,
        SinkConfig::Delta {
            table,
            connection,
            options,
            ..
        } => {
            if let Some(table) = table {
                crate::lake::check(table, connection.as_ref()).map_err(at_line(
                    text,
                    path,
                    "sink",
                    "sink.delta.table",
                ))?;
            }
            options.validate().map_err(at("sink.delta"))?;
        }
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
        let what = stratalake_s3::create_bucket(c)
            .await
            .wrap_err_with(|| format!("bucket {}", c.bucket))?;
        done.push(format!("s3://{}: {what:?}", c.bucket));
    }
    for c in azure {
        let what = stratalake_azure_blob::create_container(c)
            .await
            .wrap_err_with(|| format!("container {}", c.container))?;
        done.push(format!(
            "az://{}/{}: {what:?}",
            c.account_name(),
            c.container
        ));
    }
    Ok(done)
}

/// A transform step: per batch, or over the stream.
#[derive(Debug)]
pub enum Step {
    /// A stateless batch transform.
    Batch(Arc<dyn BatchTransform>),
    /// A stream transform (it may quarantine rows).
    Stream(Arc<dyn stratalake_core::StreamTransform>),
}

/// The built components of a pipeline, ready for [`stratalake_core::PipelineBuilder`] (see
/// [`crate::run_pipeline`]).
#[derive(Debug)]
pub struct Built {
    /// The source.
    pub source: Arc<dyn Source>,
    /// The transform steps, in order (see [`crate::with_steps`]).
    pub transforms: Vec<Step>,
    /// The sink.
    pub sink: Arc<dyn Sink>,
    /// Where the runner keeps its checkpoints.
    pub checkpoints: Arc<dyn CheckpointStore>,
    /// The runner's options.
    pub options: RunOptions,
    /// The sink's root (a directory, bucket URL or table URL), for naming the files written.
    pub sink_root: String,
}

/// Where a pipeline reads files from: a local directory or an object store URL.
fn source_root(cfg: &PipelineConfig) -> Option<String> {
    match &cfg.source {
        SourceConfig::Files(c) => Some(c.root.clone()),
        SourceConfig::S3(c) => Some(c.connection.url()),
        SourceConfig::AzureBlob(c) => Some(c.connection.url()),
        _ => None,
    }
}

/// Where a pipeline writes files to.
fn sink_files_root(cfg: &PipelineConfig) -> Option<String> {
    match &cfg.sink {
        SinkConfig::Parquet(c) => Some(c.root.clone()),
        SinkConfig::S3(c) => Some(c.connection.url()),
        SinkConfig::AzureBlob(c) => Some(c.connection.url()),
        SinkConfig::Delta { table, .. } => table.clone(),
        _ => None,
    }
}

/// A root as a comparable absolute form ending in `/`: a local path made absolute (resolved
/// through symbolic links where it exists), a URL as written.
fn normal_root(root: &str) -> String {
    let mut r = if root.contains("://") && !root.starts_with("file://") {
        root.to_string()
    } else {
        let p = Path::new(root.strip_prefix("file://").unwrap_or(root));
        let abs = std::fs::canonicalize(p).unwrap_or_else(|_| {
            std::env::current_dir().map_or_else(|_| p.to_path_buf(), |d| d.join(p))
        });
        abs.display().to_string()
    };
    if !r.ends_with('/') {
        r.push('/');
    }
    r
}

/// Refuse a sink whose root is the source's root or inside it (the next run would read its
/// own output), or a source inside the sink's root.
fn check_roots(cfg: &PipelineConfig) -> Result<()> {
    if let (Some(src), Some(dst)) = (source_root(cfg), sink_files_root(cfg)) {
        let (s, d) = (normal_root(&src), normal_root(&dst));
        if d.starts_with(&s) || s.starts_with(&d) {
            return Err(config_err(format!(
                "the sink writes to `{dst}`, which overlaps the source root `{src}`: the next run would read the pipeline's own output; give the sink a root outside the source's"
            )));
        }
    }
    Ok(())
}

/// Build every component (may touch the disk: listing, schema inference).
pub async fn build(cfg: &PipelineConfig) -> Result<Built> {
    build_logged(cfg, &stratalake_core::expect::ResultLog::new()).await
}

/// A pipeline's table checks (its expectations that are not row rules) on its lake table
/// `table` (`bronze.orders`, as the checks' SQL names it): run after each commit in a project build, so they can only warn.
///
/// # Errors
/// Config naming the pipeline and the rule.
pub fn table_checks(
    cfg: &PipelineConfig,
    table: &str,
) -> Result<stratalake_core::expect::Expectations> {
    let checks: Vec<_> = cfg
        .expectations
        .iter()
        .filter(|e| !e.expect.is_row_rule())
        .cloned()
        .collect();
    let label = format!("pipeline `{}`", cfg.pipeline);
    stratalake_project::expect::compile(
        &checks,
        table,
        Path::new(&label),
        stratalake_project::expect::Checked::Streaming,
    )
}

/// The columns that name a pipeline's row in expectation results: the conform step's key,
/// else the Delta sink's merge key.
fn row_key(cfg: &PipelineConfig) -> Vec<String> {
    cfg.transforms
        .iter()
        .find_map(|t| match t {
            TransformConfig::Conform(c) if !c.key.is_empty() => Some(c.key.clone()),
            _ => None,
        })
        .or_else(|| match &cfg.sink {
            SinkConfig::Delta { options, .. } => match &options.write {
                stratalake_delta::WriteMode::Merge { key, .. } => Some(key.clone()),
                _ => None,
            },
            _ => None,
        })
        .unwrap_or_default()
}

/// [`build`], the expectations' results going to `log`.
pub async fn build_logged(
    cfg: &PipelineConfig,
    log: &stratalake_core::expect::ResultLog,
) -> Result<Built> {
    check_roots(cfg)?;
    let at = |key: &'static str| move |e: stratalake_core::Error| e.wrap(key);
    let source: Arc<dyn Source> = match &cfg.source {
        SourceConfig::Files(c) => Arc::new(
            FileSource::try_new(c.clone())
                .await
                .map_err(at("source.files"))?,
        ),
        SourceConfig::S3(c) => Arc::new(c.build().await.map_err(at("source.s3"))?),
        SourceConfig::AzureBlob(c) => Arc::new(c.build().await.map_err(at("source.azure_blob"))?),
        SourceConfig::Rest(c) => Arc::new(
            stratalake_rest::RestSource::try_new(c.as_ref().clone())
                .await
                .map_err(at("source.rest"))?,
        ),
        SourceConfig::Mongodb(c) => Arc::new(
            stratalake_mongodb::MongoSource::try_new(c.as_ref().clone())
                .await
                .map_err(at("source.mongodb"))?,
        ),
        SourceConfig::Delta {
            table,
            lake_table,
            connection,
            change_feed,
        } => {
            let table =
                delta_table(table.as_ref(), lake_table.as_ref()).wrap_err("source.delta")?;
            let s = stratalake_delta::DeltaSource::try_new(
                crate::lake::table_location(table, connection.as_ref()).wrap_err("source.delta")?,
            )
            .await
            .map_err(at("source.delta"))?;
            Arc::new(if *change_feed { s } else { s.rows_only() })
        }
        SourceConfig::Snowflake(c) => Arc::new(
            stratalake_snowflake::source::SnowflakeSource::try_new(c.as_ref().clone())
                .await
                .map_err(at("source.snowflake"))?,
        ),
    };
    let mut transforms = Vec::new();
    let mut schema = source.schema();
    for (i, t) in cfg.transforms.iter().enumerate() {
        transforms.push(match t {
            TransformConfig::Mask {
                policy,
                table,
                role,
            } => {
                let at = |e: stratalake_core::Error| e.wrap(format!("transforms[{i}].mask"));
                let p = stratalake_privacy::Policy::load(policy).map_err(at)?;
                let key = p.key().map_err(at)?;
                Step::Batch(Arc::new(
                    stratalake_privacy::Mask::try_new(&p, table, role, &schema, &key)
                        .map_err(at)?,
                ))
            }
            TransformConfig::Select { columns } => Step::Batch(Arc::new(
                stratalake_core::transforms::Select::new(columns.clone()),
            )),
            TransformConfig::Lineage { source } => {
                Step::Batch(Arc::new(stratalake_bronze::Lineage::new(source)))
            }
            TransformConfig::Conform(c) => {
                let spec = c.spec(&cfg.pipeline, &[]);
                Step::Stream(Arc::new(
                    stratalake_silver::Conform::try_new(spec)
                        .wrap_err_with(|| format!("transforms[{i}].conform"))?,
                ))
            }
            TransformConfig::Sql { query, table } => Step::Batch(Arc::new(
                stratalake_gold::model::SqlTransform::try_new(&cfg.pipeline, query, table, &schema)
                    .wrap_err_with(|| format!("transforms[{i}].sql"))?,
            )),
            TransformConfig::Explode { column, keep } => {
                let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
                Step::Batch(Arc::new(stratalake_silver::Explode::new(column, &keep)))
            }
        });
        schema = match transforms.last() {
            Some(Step::Batch(t)) => t.output_schema(&schema),
            Some(Step::Stream(t)) => t.output_schema(&schema),
            None => Ok(schema),
        }
        .wrap_err_with(|| format!("transforms[{i}]"))?;
    }
    let rows: Vec<_> = cfg
        .expectations
        .iter()
        .filter(|e| e.expect.is_row_rule())
        .cloned()
        .collect();
    if !rows.is_empty() {
        let label = format!("pipeline `{}`", cfg.pipeline);
        let exp = stratalake_project::expect::compile(
            &rows,
            &cfg.pipeline,
            Path::new(&label),
            stratalake_project::expect::Checked::Pipeline,
        )?;
        // Raw input (an ingestion pipeline, bronze: not masked yet) is named by key in
        // results and errors, never by value; a pipeline that masks, or reads a lake table
        // (a model's), shows values.
        let masked = matches!(cfg.source, SourceConfig::Delta { .. })
            || cfg
                .transforms
                .iter()
                .any(|t| matches!(t, TransformConfig::Mask { .. }));
        let t = stratalake_gold::expect::ExpectTransform::new(
            &cfg.pipeline,
            exp.rows,
            row_key(cfg),
            log.clone(),
        )
        .with_values(masked);
        stratalake_core::StreamTransform::output_schema(&t, &schema).wrap_err("expectations")?;
        transforms.push(Step::Stream(Arc::new(t)));
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
                stratalake_mongodb::MongoSink::try_new(c.as_ref().clone())
                    .await
                    .map_err(at("sink.mongodb"))?,
            ),
            format!("mongodb {}.{}", c.database, c.collection),
        ),
        SinkConfig::Delta {
            table,
            lake_table,
            connection,
            options,
        } => {
            let table = delta_table(table.as_ref(), lake_table.as_ref()).wrap_err("sink.delta")?;
            let loc =
                crate::lake::table_location(table, connection.as_ref()).wrap_err("sink.delta")?;
            let root = loc.url.to_string();
            let mut sink = stratalake_delta::DeltaSink::try_new(loc, options.clone())
                .map_err(at("sink.delta"))?;
            if !cfg.expectations.is_empty() {
                // The results go into each data commit, so a kill cannot lose them.
                sink = sink.with_results(log.clone());
            }
            (Arc::new(sink), root)
        }
        SinkConfig::Snowflake(c) => (
            Arc::new(
                stratalake_snowflake::sink::SnowflakeSink::try_new(c.as_ref().clone())
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
        CheckpointConfig::Memory => Arc::new(stratalake_core::InMemoryCheckpointStore::new()),
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
    fn logical_dates_reach_rest_params_and_mongodb_filters() {
        let day = crate::logical::Mode::Date(crate::logical::parse("2024-01-31").unwrap());
        let text = "pipeline: p\nsource:\n  rest:\n    base_url: \"http://127.0.0.1:9\"\n    path: /orders\n    params: { updated_since: \"{{ data_interval_start }}\", until: \"{{ data_interval_end }}\" } # not {{ here }}\nsink:\n  parquet:\n    root: /tmp/o\ncheckpoint: memory\n";
        let it = interpolate_in(text, Path::new("p.yaml"), day).unwrap();
        assert!(it.templated);
        let cfg = parse(&it.text, Path::new("p.yaml")).unwrap();
        let SourceConfig::Rest(r) = &cfg.source else {
            panic!("a REST source")
        };
        assert_eq!(r.params["updated_since"], "2024-01-31T00:00:00Z");
        assert_eq!(r.params["until"], "2024-02-01T00:00:00Z");
        let text = "pipeline: m\nsource:\n  mongodb:\n    uri: \"mongodb://127.0.0.1:9\"\n    database: shop\n    collection: orders\n    query:\n      type: find\n      filter: { day: \"{{ ds }}\", batch: \"b{{ds_nodash}}\" }\nsink:\n  parquet:\n    root: /tmp/o\ncheckpoint: memory\n";
        let it = interpolate_in(text, Path::new("m.yaml"), day).unwrap();
        assert!(
            it.text
                .contains("filter: { day: \"2024-01-31\", batch: \"b20240131\" }"),
            "{}",
            it.text
        );
        parse(&it.text, Path::new("m.yaml")).unwrap();
        // Without a date a run refuses the file, naming the line; planning leaves it as written.
        let e =
            interpolate_in(text, Path::new("m.yaml"), crate::logical::Mode::Missing).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("m.yaml:9: `{{ ds }}` needs a logical date"),
            "{e}"
        );
        let it = interpolate_in(text, Path::new("m.yaml"), crate::logical::Mode::Planning).unwrap();
        assert!(it.templated && it.text.contains("{{ ds }}"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, .. Default::default() })]

        /// The YAML loader on arbitrary text: an answer (a pipeline or an error), never a
        /// panic, a stack overflow or a hang.
        #[test]
        fn the_yaml_loader_never_panics(parts in proptest::collection::vec(proptest::prop_oneof![
            proptest::prelude::Just("pipeline: p\n".to_string()),
            proptest::prelude::Just("source:\n  files:\n    root: /tmp\n    format: ndjson\n".to_string()),
            proptest::prelude::Just("sink:\n  parquet:\n    root: /tmp/o\n".to_string()),
            proptest::prelude::Just("checkpoint: memory\n".to_string()),
            proptest::prelude::Just("[[[[{{{".to_string()),
            proptest::prelude::Just("&a [*a, *a]\n".to_string()),
            proptest::prelude::Just("key: ${PATH} # ${NOPE}\n".to_string()),
            proptest::prelude::Just("$${x} \"q\\\" '".to_string()),
            proptest::prelude::Just("    split_size_megabytes: 99999999999999999999\n".to_string()),
            proptest::prelude::Just("- !tag\n".to_string()),
            proptest::prelude::Just("\t\r\n".to_string()),
            "\\PC{0,30}",
        ], 0..20)) {
            let text = parts.concat();
            let _ = interpolate(&text, Path::new("fuzz.yaml")).and_then(|it| parse_interpolated(&it, Path::new("fuzz.yaml")));
            let _ = parse(&text, Path::new("fuzz.yaml"));
        }
    }

    #[test]
    fn unknown_keys_name_the_line() {
        let yaml = "pipeline: p\nsource:\n  files:\n    root: /tmp\n    format: ndjson\n    colour: red\nsink:\n  parquet:\n    root: /tmp/o\ncheckpoint: memory\n";
        let e = parse(yaml, Path::new("p.yaml")).unwrap_err().report();
        assert!(e.contains("p.yaml:6"), "{e}");
        assert!(e.contains("unknown field `colour`"), "{e}");
    }

    #[test]
    fn variables_are_interpolated_and_missing_ones_named() {
        // SAFETY-free: set_var is unsafe in edition 2024; use a variable every shell has.
        let home = std::env::var("PATH").unwrap();
        assert_eq!(
            interpolate("a: ${PATH}\nb: $${x}", Path::new("f"))
                .unwrap()
                .text,
            format!("a: {home}\nb: ${{x}}\n")
        );
        let e = interpolate("x: 1\ny: ${STRATA_SURELY_UNSET_VAR}", Path::new("f.yaml"))
            .unwrap_err()
            .report();
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
        let e = parse(&bad, Path::new("p.yaml")).unwrap_err().report();
        assert!(e.contains("source.s3") && e.contains("Raw_Bucket"), "{e}");
    }

    #[test]
    fn bad_pipeline_ids_are_rejected() {
        let yaml = "pipeline: ../x\nsource:\n  files:\n    root: /tmp\n    format: ndjson\nsink:\n  parquet:\n    root: /tmp/o\ncheckpoint: memory\n";
        assert!(
            parse(yaml, Path::new("p.yaml"))
                .unwrap_err()
                .report()
                .contains("`pipeline`")
        );
    }
}
