//! [`SnowflakeSink`]: exactly-once loads by PUT + COPY + MERGE, committed with a control row.
//!
//! An epoch:
//! 1. `write`: rows are converted to their load form ([`crate::types`]) and written as Parquet
//!    files of about `target_file_size_megabytes`, each PUT to the internal stage as soon as it
//!    is full (memory: one file).
//! 2. `prepare`: a staging table of this attempt is created and the epoch's files are COPied
//!    into it (the loaded row count is checked); nothing is visible in the target yet.
//! 3. `commit`: one transaction first takes the pipeline's commit lock (an UPDATE of its row
//!    in `<control>_LOCKS`, so two runs of a pipeline commit one after the other), then reads
//!    the control table (this epoch with this cursor, or a later epoch, already recorded
//!    answers AlreadyCommitted; this epoch with another cursor, committed by another run, is
//!    a retryable Conflict), merges the staging rows into the target by key (see
//!    [`WriteMode::Merge`]; or inserts them), inserts the quarantined rows, and records `(pipeline, epoch, cursor)` in the
//!    control table, then commits. The staging table is dropped after.
//!
//! A kill before the COMMIT leaves the target untouched (the transaction dies with the
//! session); a kill after it is recognised by the control row. Staging tables left by a killed
//! run are dropped by the next `last_committed`.

use crate::client::{Bindings, SnowflakeClient, Value};
use crate::config::SnowflakeConfig;
use crate::types::{
    ident, is_nested, literal, load_schema, snowflake_type, stored_name, to_load_batch,
};
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
pub use stratalake_core::DeleteWhen;
use stratalake_core::{
    CommitMarker, CommitOutcome, Context, Cursor, Delivery, Epoch, Error, ErrorKind, Prepared,
    Result, Sink, SinkCapabilities, SinkWriter, check_merge_columns, crash_point,
};
use tokio::sync::OnceCell;

pub use stratalake_core::WriteMode;

pub use stratalake_core::SchemaEvolution;

/// How files reach the staging table.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum LoadMethod {
    /// Parquet files PUT to the internal stage and COPied (the fast path).
    #[default]
    Copy,
    /// `INSERT ... VALUES (?, ...)` with array bindings, `rows_per_statement` rows a request
    /// (slow; for small loads and for comparison).
    Insert {
        /// Rows bound per statement.
        #[serde(default = "default_rows_per_statement")]
        rows_per_statement: usize,
    },
}

fn default_rows_per_statement() -> usize {
    1000
}

/// Options of a [`SnowflakeSink`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SnowflakeSinkConfig {
    /// The connection (its database and schema hold the tables).
    pub connection: SnowflakeConfig,
    /// The target table (created from the first schema when missing).
    pub table: String,
    /// Append or merge.
    #[serde(default)]
    pub write: WriteMode,
    /// New columns.
    #[serde(default)]
    pub schema_evolution: SchemaEvolution,
    /// Parquet file size before upload, MB (default 64). Range: 1..=16_384.
    #[serde(
        default = "default_file_size",
        deserialize_with = "stratalake_core::bounds::u64_in::<_, 1, 16_384>"
    )]
    pub target_file_size_megabytes: u64,
    /// COPY (default) or bound inserts.
    #[serde(default)]
    pub load: LoadMethod,
    /// The table recording committed epochs (default `_STRATA_COMMITS`).
    #[serde(default = "default_control")]
    pub control_table: String,
    /// The internal stage files go through (default `_STRATA_STAGE`).
    #[serde(default = "default_stage")]
    pub stage: String,
}

fn default_file_size() -> u64 {
    64
}
fn default_control() -> String {
    "_STRATA_COMMITS".into()
}
fn default_stage() -> String {
    "_STRATA_STAGE".into()
}

impl SnowflakeSinkConfig {
    /// Append into `table` with the defaults.
    pub fn new(connection: SnowflakeConfig, table: impl Into<String>) -> Self {
        Self {
            connection,
            table: table.into(),
            write: WriteMode::Append,
            schema_evolution: SchemaEvolution::AddColumns,
            target_file_size_megabytes: default_file_size(),
            load: LoadMethod::Copy,
            control_table: default_control(),
            stage: default_stage(),
        }
    }

    /// Set the write mode.
    #[must_use]
    pub fn with_write(mut self, write: WriteMode) -> Self {
        self.write = write;
        self
    }

    /// Set the schema evolution policy.
    #[must_use]
    pub fn with_schema_evolution(mut self, p: SchemaEvolution) -> Self {
        self.schema_evolution = p;
        self
    }

    /// Set the load method.
    #[must_use]
    pub fn with_load(mut self, load: LoadMethod) -> Self {
        self.load = load;
        self
    }

    /// Set the file size, MB.
    #[must_use]
    pub fn with_target_file_size_megabytes(mut self, mb: u64) -> Self {
        self.target_file_size_megabytes = mb;
        self
    }

    /// Check the options without I/O.
    ///
    /// # Errors
    /// Config naming the option.
    pub fn validate(&self) -> Result<()> {
        self.connection.validate()?;
        if self.table.trim().is_empty() {
            return Err(Error::config("snowflake sink: `table` is empty"));
        }
        if self.target_file_size_megabytes == 0 {
            return Err(Error::config(
                "snowflake sink: `target_file_size_megabytes` must be above zero",
            ));
        }
        if let WriteMode::Merge { key, .. } = &self.write
            && key.is_empty()
        {
            return Err(Error::config(
                "snowflake sink: merge needs at least one `key` column",
            ));
        }
        if let LoadMethod::Insert {
            rows_per_statement: 0,
        } = self.load
        {
            return Err(Error::config(
                "snowflake sink: `rows_per_statement` must be above zero",
            ));
        }
        Ok(())
    }
}

/// The columns of a quarantine batch as loaded (core's quarantine schema).
const QUARANTINE_COLUMNS: &str = "COMPONENT VARCHAR, LOCATION VARCHAR, POSITION NUMBER(20,0), \"COLUMN\" VARCHAR, REASON VARCHAR, RAW VARCHAR";

/// The sequence column that orders rows of an epoch (last written wins).
const SEQ: &str = "_STRATA_SEQ";

/// A Snowflake table as an exactly-once sink. See the module docs.
pub struct SnowflakeSink {
    cfg: SnowflakeSinkConfig,
    client: OnceCell<SnowflakeClient>,
    name: String,
}

impl fmt::Debug for SnowflakeSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnowflakeSink")
            .field("table", &self.qualified(&self.cfg.table))
            .field("write", &self.cfg.write)
            .finish_non_exhaustive()
    }
}

fn short_hash(s: &str) -> String {
    // FNV-1a: a stable short name part for a pipeline id.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:08X}", h as u32)
}

impl SnowflakeSink {
    /// A sink; connects on first use.
    ///
    /// # Errors
    /// Config from [`SnowflakeSinkConfig::validate`].
    pub fn try_new(cfg: SnowflakeSinkConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            name: format!("snowflake:{}", cfg.table),
            cfg,
            client: OnceCell::new(),
        })
    }

    /// Load through this session instead of logging in on first use: several sinks (one per
    /// table of a sync) then share one login. The session must be for the account of the
    /// sink's connection (every statement names the database and schema in full); the sink
    /// never closes it, its owner does.
    #[must_use]
    pub fn with_client(self, client: SnowflakeClient) -> Self {
        Self {
            client: OnceCell::new_with(Some(client)),
            ..self
        }
    }

    /// The options.
    pub fn config(&self) -> &SnowflakeSinkConfig {
        &self.cfg
    }

    /// The session (connected on first use).
    ///
    /// # Errors
    /// Those of [`SnowflakeClient::connect`].
    pub async fn client(&self) -> Result<&SnowflakeClient> {
        self.client
            .get_or_try_init(|| SnowflakeClient::connect(self.cfg.connection.clone()))
            .await
    }

    fn qualified(&self, table: &str) -> String {
        format!(
            "{}.{}.{}",
            ident(&self.cfg.connection.database),
            ident(&self.cfg.connection.schema),
            ident(table)
        )
    }

    fn target(&self) -> String {
        self.qualified(&self.cfg.table)
    }

    fn quarantine_table(&self) -> String {
        format!("{}_QUARANTINE", stored_name(&self.cfg.table))
    }

    fn staging_prefix(&self, pipeline_id: &str) -> String {
        format!(
            "{}__STG_{}_",
            stored_name(&self.cfg.table),
            short_hash(pipeline_id)
        )
    }

    async fn ensure_base(&self, c: &SnowflakeClient) -> Result<()> {
        let conn = &self.cfg.connection;
        c.query(&format!(
            "CREATE DATABASE IF NOT EXISTS {}",
            ident(&conn.database)
        ))
        .await?;
        c.query(&format!(
            "CREATE SCHEMA IF NOT EXISTS {}.{}",
            ident(&conn.database),
            ident(&conn.schema)
        ))
        .await?;
        c.query(&format!(
            "CREATE STAGE IF NOT EXISTS {}",
            self.qualified(&self.cfg.stage)
        ))
        .await?;
        c.query(&format!(
            "CREATE TABLE IF NOT EXISTS {} (PIPELINE_ID VARCHAR, TARGET_TABLE VARCHAR, EPOCH NUMBER(20,0), \
             CURSOR VARCHAR, ROWS_LOADED NUMBER(20,0), COMMITTED_AT TIMESTAMP_TZ)",
            self.qualified(&self.cfg.control_table)
        ))
        .await?;
        c.query(&format!(
            "CREATE TABLE IF NOT EXISTS {} (PIPELINE_ID VARCHAR, LOCKED_AT TIMESTAMP_TZ)",
            self.qualified(&self.lock_table())
        ))
        .await?;
        Ok(())
    }

    /// The table of commit locks: one row per pipeline, updated first in every commit
    /// transaction so that two runs of the pipeline commit one after the other.
    fn lock_table(&self) -> String {
        format!("{}_LOCKS", self.cfg.control_table)
    }

    /// The pipeline's lock row, inserted when missing (outside any transaction: two runs
    /// racing here may insert two rows, and the commit's UPDATE takes both).
    async fn ensure_lock_row(&self, c: &SnowflakeClient, pipeline_id: &str) -> Result<()> {
        let locks = self.qualified(&self.lock_table());
        c.query_with(
            &format!(
                "INSERT INTO {locks} (PIPELINE_ID, LOCKED_AT) SELECT s.P, CURRENT_TIMESTAMP() FROM (SELECT ? AS P) s \
                 WHERE NOT EXISTS (SELECT 1 FROM {locks} t WHERE t.PIPELINE_ID = s.P)"
            ),
            &Bindings::Positional(vec![Value::Text(pipeline_id.to_string())]),
        )
        .await?;
        Ok(())
    }

    /// The target's columns (stored names), empty when it does not exist.
    async fn target_columns(&self, c: &SnowflakeClient, table: &str) -> Result<Vec<String>> {
        let r = c
            .query_with(
                &format!(
                    "SELECT COLUMN_NAME FROM {}.INFORMATION_SCHEMA.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                    ident(&self.cfg.connection.database)
                ),
                &Bindings::Positional(vec![
                    Value::Text(stored_name(&self.cfg.connection.schema)),
                    Value::Text(stored_name(table)),
                ]),
            )
            .await?;
        let mut out = Vec::new();
        for b in &r.batches {
            let col = arrow_cast::cast(b.column(0), &DataType::Utf8)
                .map_err(|e| Error::internal("snowflake: information_schema").with_source(e))?;
            out.extend(col.as_string::<i32>().iter().flatten().map(str::to_string));
        }
        Ok(out)
    }

    /// Create the target from `schema`, or reconcile its columns by the evolution policy.
    /// Returns the input columns to keep.
    async fn ensure_target(&self, c: &SnowflakeClient, schema: &Schema) -> Result<Vec<usize>> {
        let stored_cols = self.target_columns(c, &self.cfg.table).await?;
        let op_column = match &self.cfg.write {
            WriteMode::Merge {
                delete_when: Some(d),
                ..
            } => Some(stored_name(&d.column)),
            _ => None,
        };
        let wanted: Vec<(usize, &Field)> = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| Some(stored_name(f.name())) != op_column)
            .map(|(i, f)| (i, f.as_ref()))
            .collect();
        if stored_cols.is_empty() {
            let cols = wanted
                .iter()
                .map(|(_, f)| Ok(format!("{} {}", ident(f.name()), snowflake_type(f)?)))
                .collect::<Result<Vec<_>>>()?;
            c.query(&format!(
                "CREATE TABLE IF NOT EXISTS {} ({})",
                self.target(),
                cols.join(", ")
            ))
            .await?;
            return Ok((0..schema.fields().len()).collect());
        }
        let have: BTreeSet<String> = stored_cols.iter().map(|s| s.to_uppercase()).collect();
        let new: Vec<&Field> = wanted
            .iter()
            .filter(|(_, f)| !have.contains(&stored_name(f.name()).to_uppercase()))
            .map(|(_, f)| *f)
            .collect();
        if new.is_empty() {
            return Ok((0..schema.fields().len()).collect());
        }
        let names: Vec<&str> = new.iter().map(|f| f.name().as_str()).collect();
        match self.cfg.schema_evolution {
            SchemaEvolution::AddColumns => {
                for f in &new {
                    c.query(&format!(
                        "ALTER TABLE {} ADD COLUMN {} {}",
                        self.target(),
                        ident(f.name()),
                        snowflake_type(f)?
                    ))
                    .await?;
                }
                tracing::info!(table = %self.target(), columns = ?names, "snowflake: added columns");
                Ok((0..schema.fields().len()).collect())
            }
            SchemaEvolution::Freeze => Err(Error::new(
                ErrorKind::Schema,
                format!(
                    "snowflake: table {} has no column(s) {}; the schema is frozen (schema_evolution: freeze)",
                    self.target(),
                    names.join(", ")
                ),
            )
            .with_context("table", self.target())),
            SchemaEvolution::Discard => Ok(schema
                .fields()
                .iter()
                .enumerate()
                .filter(|(_, f)| !names.contains(&f.name().as_str()))
                .map(|(i, _)| i)
                .collect()),
        }
    }

    async fn drop_leftovers(&self, c: &SnowflakeClient, pipeline_id: &str) -> Result<()> {
        let prefix = self.staging_prefix(pipeline_id);
        let r = c
            .query_with(
                &format!(
                    "SELECT TABLE_NAME FROM {}.INFORMATION_SCHEMA.TABLES WHERE TABLE_SCHEMA = ? AND STARTSWITH(TABLE_NAME, ?)",
                    ident(&self.cfg.connection.database)
                ),
                &Bindings::Positional(vec![
                    Value::Text(stored_name(&self.cfg.connection.schema)),
                    Value::Text(prefix),
                ]),
            )
            .await?;
        for b in &r.batches {
            let col = arrow_cast::cast(b.column(0), &DataType::Utf8)
                .map_err(|e| Error::internal("snowflake: information_schema").with_source(e))?;
            for t in col.as_string::<i32>().iter().flatten() {
                tracing::info!(
                    table = t,
                    "snowflake: dropping a staging table a previous run left"
                );
                c.query(&format!("DROP TABLE IF EXISTS {}", self.qualified(t)))
                    .await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for SnowflakeSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> SinkCapabilities {
        let mut c = SinkCapabilities::new(Delivery::ExactlyOnce).with_quarantine(true);
        c.upsert = matches!(self.cfg.write, WriteMode::Merge { .. });
        c.schema_evolution = self.cfg.schema_evolution == SchemaEvolution::AddColumns;
        c
    }

    async fn open(&self, schema: SchemaRef, ctx: &Context) -> Result<Box<dyn SinkWriter>> {
        let c = self.client().await?.clone();
        self.ensure_base(&c).await?;
        self.ensure_lock_row(&c, ctx.pipeline_id()).await?;
        if let WriteMode::Merge {
            key,
            version_column,
            delete_when,
        } = &self.cfg.write
        {
            check_merge_columns(&schema, key, version_column.as_ref(), delete_when.as_ref())
                .map_err(|e| e.with_context("table", self.target()))?;
        }
        let keep = self.ensure_target(&c, &schema).await?;
        let input = Arc::new(
            schema
                .project(&keep)
                .map_err(|e| Error::internal("projection").with_source(e))?,
        );
        let mut load = load_schema(&input)?.as_ref().clone();
        let merge = matches!(self.cfg.write, WriteMode::Merge { .. });
        if merge {
            let mut fields: Vec<Field> = load.fields().iter().map(|f| f.as_ref().clone()).collect();
            fields.push(Field::new(SEQ, DataType::Int64, false));
            load = Schema::new(fields);
        }
        let attempt = format!("{:08X}", rand::random::<u32>());
        let staging = format!("{}{attempt}", self.staging_prefix(ctx.pipeline_id()));
        let stage_dir = format!(
            "@{}/{}/{}",
            self.qualified(&self.cfg.stage),
            stored_name(&self.cfg.table),
            staging
        );
        Ok(Box::new(SnowflakeWriter {
            sink: SinkRef {
                cfg: self.cfg.clone(),
                target: self.target(),
                control: self.qualified(&self.cfg.control_table),
                locks: self.qualified(&self.lock_table()),
                quarantine: self.qualified(&self.quarantine_table()),
                staging_q: self.qualified(&format!("{staging}_Q")),
                staging: self.qualified(&staging),
            },
            client: c,
            keep,
            input_schema: schema,
            load: Arc::new(load),
            main: Lane::new(format!("{stage_dir}/data")),
            quarantine: Lane::new(format!("{stage_dir}/quarantine")),
            seq: 0,
            rows: 0,
            staged: false,
            insert_buffer: Vec::new(),
        }))
    }

    async fn last_committed(
        &self,
        pipeline_id: &str,
        _ctx: &Context,
    ) -> Result<Option<CommitMarker>> {
        let c = self.client().await?;
        self.ensure_base(c).await?;
        self.drop_leftovers(c, pipeline_id).await?;
        let r = c
            .query_with(
                &format!(
                    "SELECT EPOCH, CURSOR FROM {} WHERE PIPELINE_ID = ? ORDER BY EPOCH DESC LIMIT 1",
                    self.qualified(&self.cfg.control_table)
                ),
                &Bindings::Positional(vec![Value::Text(pipeline_id.to_string())]),
            )
            .await?;
        Ok(control_row(&r.batches)?.map(|(epoch, cursor)| {
            CommitMarker::new(pipeline_id, Epoch(epoch), cursor.map(Cursor::new))
        }))
    }
}

/// The `(EPOCH, CURSOR)` of a control-table query's first row.
fn control_row(batches: &[RecordBatch]) -> Result<Option<(u64, Option<String>)>> {
    let Some(b) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok(None);
    };
    let epoch = arrow_cast::cast(b.column(0), &DataType::UInt64)
        .map_err(|e| Error::internal("snowflake: control table epoch").with_source(e))?;
    let epoch = epoch.as_primitive::<arrow_array::types::UInt64Type>();
    if epoch.is_null(0) {
        return Ok(None);
    }
    let cursor = arrow_cast::cast(b.column(1), &DataType::Utf8)
        .map_err(|e| Error::internal("snowflake: control table cursor").with_source(e))?;
    let cursor = cursor.as_string::<i32>();
    Ok(Some((
        epoch.value(0),
        (!cursor.is_null(0)).then(|| cursor.value(0).to_string()),
    )))
}

/// The parts of the sink a writer needs.
#[derive(Debug, Clone)]
struct SinkRef {
    cfg: SnowflakeSinkConfig,
    target: String,
    control: String,
    locks: String,
    quarantine: String,
    staging: String,
    staging_q: String,
}

/// Parquet files of one kind of rows, uploaded as they fill.
struct Lane {
    dir: String,
    writer: Option<ArrowWriter<Vec<u8>>>,
    files: usize,
    rows: u64,
    bytes: u64,
}

impl Lane {
    fn new(dir: String) -> Self {
        Self {
            dir,
            writer: None,
            files: 0,
            rows: 0,
            bytes: 0,
        }
    }

    async fn write(
        &mut self,
        c: &SnowflakeClient,
        batch: &RecordBatch,
        target_bytes: u64,
    ) -> Result<()> {
        if self.writer.is_none() {
            let props = WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .build();
            self.writer = Some(
                ArrowWriter::try_new(Vec::new(), batch.schema(), Some(props))
                    .map_err(|e| Error::internal("snowflake: Parquet writer").with_source(e))?,
            );
        }
        let w = self
            .writer
            .as_mut()
            .ok_or_else(|| Error::internal("no writer"))?;
        w.write(batch)
            .map_err(|e| Error::internal("snowflake: writing Parquet").with_source(e))?;
        self.rows += batch.num_rows() as u64;
        if (w.bytes_written() + w.in_progress_size()) as u64 >= target_bytes {
            self.flush(c).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, c: &SnowflakeClient) -> Result<()> {
        let Some(w) = self.writer.take() else {
            return Ok(());
        };
        let bytes = w
            .into_inner()
            .map_err(|e| Error::internal("snowflake: finishing Parquet").with_source(e))?;
        self.bytes += bytes.len() as u64;
        let name = format!("part-{:05}.parquet", self.files);
        self.files += 1;
        c.put(&self.dir, &name, Bytes::from(bytes)).await
    }
}

struct SnowflakeWriter {
    sink: SinkRef,
    client: SnowflakeClient,
    keep: Vec<usize>,
    input_schema: SchemaRef,
    load: SchemaRef,
    main: Lane,
    quarantine: Lane,
    seq: i64,
    rows: u64,
    staged: bool,
    insert_buffer: Vec<RecordBatch>,
}

impl SnowflakeWriter {
    fn target_bytes(&self) -> u64 {
        self.sink.cfg.target_file_size_megabytes * 1024 * 1024
    }

    fn load_batch(&mut self, batch: &RecordBatch) -> Result<RecordBatch> {
        if batch.schema().fields() != self.input_schema.fields() {
            return Err(Error::new(
                ErrorKind::Schema,
                "snowflake sink: a batch's schema differs from the schema the writer was opened with",
            ));
        }
        let projected = batch
            .project(&self.keep)
            .map_err(|e| Error::internal("projection").with_source(e))?;
        if let WriteMode::Merge { key, .. } = &self.sink.cfg.write {
            for k in key {
                if let Ok(col) = projected.column_by_name(k).ok_or(())
                    && col.null_count() > 0
                {
                    return Err(Error::data(format!(
                            "snowflake sink: key column {k} is NULL in {} row(s); a merge key must be set",
                            col.null_count()
                        ))
                        .with_context("column", k));
                }
            }
        }
        let mut load_fields = self.load.fields().to_vec();
        let merge = load_fields.last().is_some_and(|f| f.name() == SEQ);
        if merge {
            load_fields.pop();
        }
        let without_seq = Arc::new(Schema::new(load_fields));
        let b = to_load_batch(&projected, &without_seq)?;
        if !merge {
            return Ok(b);
        }
        let n = b.num_rows() as i64;
        let seq: ArrayRef = Arc::new(Int64Array::from_iter_values(self.seq..self.seq + n));
        self.seq += n;
        let mut cols = b.columns().to_vec();
        cols.push(seq);
        RecordBatch::try_new(self.load.clone(), cols)
            .map_err(|e| Error::internal("snowflake: load batch").with_source(e))
    }

    /// Binary columns travel as hex text with bound inserts (see [`array_bindings`]).
    fn hex_staged(&self, f: &Field) -> bool {
        matches!(self.sink.cfg.load, LoadMethod::Insert { .. })
            && f.data_type() == &DataType::Binary
    }

    fn staging_columns(&self) -> Result<String> {
        Ok(self
            .load
            .fields()
            .iter()
            .map(|f| {
                let t = if f.name() == SEQ {
                    "NUMBER(20,0)".to_string()
                } else if self.hex_staged(f) {
                    "VARCHAR".to_string()
                } else {
                    snowflake_type(f)?
                };
                Ok(format!("{} {t}", ident(f.name())))
            })
            .collect::<Result<Vec<_>>>()?
            .join(", "))
    }

    async fn create_staging(&mut self) -> Result<()> {
        if self.staged {
            return Ok(());
        }
        self.client
            .query(&format!(
                "CREATE TABLE IF NOT EXISTS {} ({})",
                self.sink.staging,
                self.staging_columns()?
            ))
            .await?;
        self.staged = true;
        Ok(())
    }

    async fn insert_rows(&mut self, table: &str, batches: &[RecordBatch]) -> Result<u64> {
        let LoadMethod::Insert { rows_per_statement } = self.sink.cfg.load else {
            return Ok(0);
        };
        let mut n = 0;
        for b in batches {
            let mut off = 0;
            while off < b.num_rows() {
                let len = rows_per_statement.min(b.num_rows() - off);
                let part = b.slice(off, len);
                let cols = part
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| ident(f.name()))
                    .collect::<Vec<_>>();
                let marks = vec!["?"; cols.len()].join(", ");
                let r = self
                    .client
                    .query_with(
                        &format!("INSERT INTO {table} ({}) VALUES ({marks})", cols.join(", ")),
                        &array_bindings(&part)?,
                    )
                    .await?;
                n += r.rows_affected().max(len as u64);
                off += len;
            }
        }
        Ok(n)
    }

    async fn copy_into(&mut self, table: &str, dir: &str) -> Result<u64> {
        let r = self
            .client
            .query(&format!(
                "COPY INTO {table} FROM {dir}/ FILE_FORMAT = (TYPE = PARQUET) MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE PURGE = TRUE"
            ))
            .await?;
        // One row per file: file, status, rows_parsed, rows_loaded, ...
        let mut loaded = 0;
        for b in &r.batches {
            if let Some(idx) = b
                .schema()
                .fields()
                .iter()
                .position(|f| f.name().eq_ignore_ascii_case("rows_loaded"))
            {
                let col = arrow_cast::cast(b.column(idx), &DataType::UInt64)
                    .map_err(|e| Error::internal("snowflake: COPY result").with_source(e))?;
                loaded += col
                    .as_primitive::<arrow_array::types::UInt64Type>()
                    .iter()
                    .flatten()
                    .sum::<u64>();
            }
        }
        Ok(loaded)
    }

    /// The statements that apply the staged rows to the target, in the commit transaction.
    ///
    /// A merge is a DELETE of the stored rows the staged ones replace or delete (a stored row
    /// with a newer version stays), then an INSERT of the staged rows whose key has no stored
    /// row left: the result of a MERGE, as two statements that run inside one transaction
    /// everywhere (fakesnow cannot run a MERGE inside a transaction).
    fn apply_sql(&self) -> Vec<String> {
        let s = &self.sink;
        let cols: Vec<&Field> = self
            .load
            .fields()
            .iter()
            .map(|f| f.as_ref())
            .filter(|f| f.name() != SEQ)
            .collect();
        let delete_col = match &s.cfg.write {
            WriteMode::Merge {
                delete_when: Some(d),
                ..
            } => Some(stored_name(&d.column)),
            _ => None,
        };
        let stored: Vec<&Field> = cols
            .iter()
            .copied()
            .filter(|f| Some(f.name().clone()) != delete_col)
            .collect();
        let nested: BTreeSet<String> = self
            .keep
            .iter()
            .map(|i| self.input_schema.field(*i))
            .filter(|f| is_nested(f.data_type()))
            .map(|f| stored_name(f.name()))
            .collect();
        let value = |f: &Field| {
            if nested.contains(f.name()) {
                format!("PARSE_JSON(s.{})", ident(f.name()))
            } else if self.hex_staged(f) {
                format!("TO_BINARY(s.{}, 'HEX')", ident(f.name()))
            } else {
                format!("s.{}", ident(f.name()))
            }
        };
        let names = stored
            .iter()
            .map(|f| ident(f.name()))
            .collect::<Vec<_>>()
            .join(", ");
        let values = stored
            .iter()
            .map(|f| value(f))
            .collect::<Vec<_>>()
            .join(", ");
        match &s.cfg.write {
            WriteMode::Append => vec![format!(
                "INSERT INTO {} ({names}) SELECT {values} FROM {} s",
                s.target, s.staging
            )],
            WriteMode::Merge {
                key,
                version_column,
                delete_when,
            } => {
                let key: Vec<String> = key.iter().map(|k| ident(k)).collect();
                let mut order = Vec::new();
                if let Some(v) = version_column {
                    order.push(format!("{} DESC NULLS LAST", ident(v)));
                }
                order.push(format!("{} DESC", ident(SEQ)));
                let latest = format!(
                    "(SELECT * FROM {} QUALIFY ROW_NUMBER() OVER (PARTITION BY {} ORDER BY {}) = 1)",
                    s.staging,
                    key.join(", "),
                    order.join(", ")
                );
                let on = key
                    .iter()
                    .map(|k| format!("t.{k} = s.{k}"))
                    .collect::<Vec<_>>()
                    .join(" AND ");
                let newer = version_column
                    .as_ref()
                    .map(|v| format!(" AND (t.{0} IS NULL OR s.{0} >= t.{0})", ident(v)))
                    .unwrap_or_default();
                let keep = delete_when
                    .as_ref()
                    .map(|d| {
                        format!(
                            " AND NOT COALESCE(s.{} = {}, FALSE)",
                            ident(&d.column),
                            literal(&d.equals)
                        )
                    })
                    .unwrap_or_default();
                vec![
                    format!(
                        "DELETE FROM {} t USING {latest} s WHERE {on}{newer}",
                        s.target
                    ),
                    format!(
                        "INSERT INTO {} ({names}) SELECT {values} FROM {latest} s WHERE NOT EXISTS (SELECT 1 FROM {} t WHERE {on}){keep}",
                        s.target, s.target
                    ),
                ]
            }
        }
    }

    async fn drop_staging(&mut self) -> Result<()> {
        self.client
            .query(&format!("DROP TABLE IF EXISTS {}", self.sink.staging))
            .await?;
        self.client
            .query(&format!("DROP TABLE IF EXISTS {}", self.sink.staging_q))
            .await?;
        Ok(())
    }

    async fn transaction(
        &mut self,
        prepared: &Prepared,
        marker: &CommitMarker,
    ) -> Result<CommitOutcome> {
        let c = self.client.clone();
        // The lock first: on Snowflake an UPDATE holds the table's write lock until COMMIT,
        // so a second run of the pipeline waits here and then reads the first one's control
        // row (the control table is read only after the lock is held). DuckDB (fakesnow)
        // refuses the second UPDATE at once as a write-write conflict instead.
        c.query_with(
            &format!(
                "UPDATE {} SET LOCKED_AT = CURRENT_TIMESTAMP() WHERE PIPELINE_ID = ?",
                self.sink.locks
            ),
            &Bindings::Positional(vec![Value::Text(marker.pipeline_id.clone())]),
        )
        .await?;
        let r = c
            .query_with(
                &format!(
                    "SELECT EPOCH, CURSOR FROM {} WHERE PIPELINE_ID = ? ORDER BY EPOCH DESC LIMIT 1",
                    self.sink.control
                ),
                &Bindings::Positional(vec![Value::Text(marker.pipeline_id.clone())]),
            )
            .await?;
        if let Some((epoch, cursor)) = control_row(&r.batches)? {
            if epoch == marker.epoch.0
                && cursor.as_deref() != marker.cursor.as_ref().map(stratalake_core::Cursor::as_str)
            {
                // Another run of the pipeline committed this epoch with other data: this one
                // must start again from what that run committed.
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "snowflake: another run of pipeline `{}` committed epoch {epoch} first; this run's epoch {} is not applied and is planned again from it",
                        marker.pipeline_id, marker.epoch
                    ),
                )
                .with_retry(stratalake_core::Retry::Transient)
                .with_context("pipeline", &marker.pipeline_id)
                .with_context("epoch", marker.epoch));
            }
            if epoch >= marker.epoch.0 {
                // This commit landed before (its answer was lost), or a later epoch superseded
                // it: the runner fast-forwards to the sink's marker.
                return Ok(CommitOutcome::AlreadyCommitted);
            }
        }
        if prepared.rows > 0 {
            for sql in self.apply_sql() {
                c.query(&sql).await?;
            }
        }
        if prepared.quarantined_rows > 0 {
            // The quarantine table was created in `prepare`: no DDL inside this transaction.
            c.query_with(
                &format!(
                    "INSERT INTO {} SELECT COMPONENT, LOCATION, POSITION, \"COLUMN\", REASON, RAW, ?, ? FROM {}",
                    self.sink.quarantine, self.sink.staging_q
                ),
                &Bindings::Positional(vec![
                    Value::Text(marker.pipeline_id.clone()),
                    Value::Int(marker.epoch.0 as i64),
                ]),
            )
            .await?;
        }
        c.query_with(
            &format!(
                "INSERT INTO {} (PIPELINE_ID, TARGET_TABLE, EPOCH, CURSOR, ROWS_LOADED, COMMITTED_AT) VALUES (?, ?, ?, ?, ?, CURRENT_TIMESTAMP())",
                self.sink.control
            ),
            &Bindings::Positional(vec![
                Value::Text(marker.pipeline_id.clone()),
                Value::Text(self.sink.target.clone()),
                Value::Int(marker.epoch.0 as i64),
                marker.cursor.as_ref().map_or(Value::Null, |c| Value::Text(c.as_str().to_string())),
                Value::Int(prepared.rows as i64),
            ]),
        )
        .await?;
        crash_point("snowflake.commit.before_commit").await;
        Ok(CommitOutcome::Committed)
    }
}

/// Array bindings for every column of a batch, as text (Snowflake converts it to the column
/// type; binary as hex text, converted with `TO_BINARY(.., 'HEX')` when applied).
///
/// # Errors
/// Internal when a column cannot be formatted.
pub fn array_bindings(batch: &RecordBatch) -> Result<Bindings> {
    let opts = arrow_cast::display::FormatOptions::default();
    let mut cols = Vec::with_capacity(batch.num_columns());
    for c in batch.columns() {
        let f = arrow_cast::display::ArrayFormatter::try_new(c.as_ref(), &opts)
            .map_err(|e| Error::internal("snowflake: formatting a binding").with_source(e))?;
        let values = (0..c.len())
            .map(|i| (!c.is_null(i)).then(|| f.value(i).to_string()))
            .collect();
        cols.push(("TEXT", values));
    }
    Ok(Bindings::Array(cols))
}

#[async_trait]
impl SinkWriter for SnowflakeWriter {
    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let b = self.load_batch(&batch)?;
        self.rows += b.num_rows() as u64;
        match self.sink.cfg.load {
            LoadMethod::Copy => {
                let target = self.target_bytes();
                self.main.write(&self.client, &b, target).await
            }
            LoadMethod::Insert { rows_per_statement } => {
                self.create_staging().await?;
                self.insert_buffer.push(b);
                let buffered: usize = self.insert_buffer.iter().map(RecordBatch::num_rows).sum();
                if buffered >= rows_per_statement {
                    let bs = std::mem::take(&mut self.insert_buffer);
                    let table = self.sink.staging.clone();
                    self.insert_rows(&table, &bs).await?;
                }
                Ok(())
            }
        }
    }

    async fn write_quarantine(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let load = load_schema(&batch.schema())?;
        let b = to_load_batch(&batch, &load)?;
        let target = self.target_bytes();
        self.quarantine.write(&self.client, &b, target).await
    }

    async fn prepare(&mut self, epoch: Epoch) -> Result<Prepared> {
        let mut items = Vec::new();
        match self.sink.cfg.load {
            LoadMethod::Copy => {
                self.main.flush(&self.client).await?;
                if self.main.rows > 0 {
                    self.create_staging().await?;
                    let loaded = self
                        .copy_into(&self.sink.staging.clone(), &self.main.dir.clone())
                        .await?;
                    if loaded != self.main.rows {
                        return Err(Error::data(format!(
                            "snowflake: COPY loaded {loaded} of the {} rows staged for epoch {epoch}",
                            self.main.rows
                        ))
                        .with_context("table", &self.sink.staging));
                    }
                }
            }
            LoadMethod::Insert { .. } => {
                let bs = std::mem::take(&mut self.insert_buffer);
                let table = self.sink.staging.clone();
                self.insert_rows(&table, &bs).await?;
            }
        }
        if self.staged {
            items.push(self.sink.staging.clone());
        }
        self.quarantine.flush(&self.client).await?;
        if self.quarantine.rows > 0 {
            let q = self.sink.staging_q.clone();
            self.client
                .query(&format!(
                    "CREATE TABLE IF NOT EXISTS {q} ({QUARANTINE_COLUMNS})"
                ))
                .await?;
            // The destination quarantine table too, now: on Snowflake a CREATE inside the
            // commit transaction would commit the target's rows before the control row.
            self.client
                .query(&format!(
                    "CREATE TABLE IF NOT EXISTS {} ({QUARANTINE_COLUMNS}, PIPELINE_ID VARCHAR, EPOCH NUMBER(20,0))",
                    self.sink.quarantine
                ))
                .await?;
            self.copy_into(&q, &self.quarantine.dir.clone()).await?;
            items.push(q);
        }
        Ok(Prepared::new(
            epoch,
            self.rows,
            self.quarantine.rows,
            self.main.bytes + self.quarantine.bytes,
            items,
        ))
    }

    async fn commit(&mut self, prepared: Prepared, marker: &CommitMarker) -> Result<CommitOutcome> {
        self.client.query("BEGIN").await?;
        let outcome = match self.transaction(&prepared, marker).await {
            Ok(CommitOutcome::Committed) => {
                self.client.query("COMMIT").await?;
                crash_point("snowflake.commit.after_commit").await;
                CommitOutcome::Committed
            }
            Ok(other) => {
                self.client.query("ROLLBACK").await?;
                other
            }
            Err(e) => {
                if let Err(r) = self.client.query("ROLLBACK").await {
                    tracing::warn!(error = %r.report(), "snowflake: ROLLBACK after a failed commit failed");
                }
                return Err(e.with_context("table", &self.sink.target));
            }
        };
        self.drop_staging().await?;
        Ok(outcome)
    }

    async fn abort(&mut self, _prepared: Option<Prepared>) -> Result<()> {
        self.drop_staging().await?;
        for dir in [&self.main.dir, &self.quarantine.dir] {
            if let Err(e) = self.client.query(&format!("REMOVE {dir}/")).await {
                tracing::debug!(error = %e.report(), "snowflake: removing staged files failed");
            }
        }
        Ok(())
    }
}
