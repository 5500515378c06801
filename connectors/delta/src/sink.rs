//! [`DeltaSink`]: appends epochs to a Delta table, exactly once.
//!
//! `write` streams Parquet files into the table's directory (deltalake's `RecordBatchWriter`:
//! bounded memory, files rolled at the target size); `prepare` finalizes them (durable, but
//! no reader sees a file the log does not name); `commit` writes one log entry with their `add`
//! actions and the application transaction `(pipeline, epoch)`, plus the cursor in the commit
//! info, so the data and the marker become visible together. Delta's optimistic concurrency
//! retries a commit that raced another writer; a replayed epoch finds its transaction and
//! answers `AlreadyCommitted`.

use crate::config::{DeltaSinkConfig, SchemaEvolution, WriteMode};
use crate::table::{TableLocation, create, delta_err, open};
use arrow_array::RecordBatch;
use arrow_schema::{Schema, SchemaRef};
use async_trait::async_trait;
use deltalake::DeltaTable;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, StructField, Transaction};
use deltalake::parquet::arrow::AsyncArrowWriter;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use futures::TryStreamExt;
use object_store::ObjectStoreExt as _;
use object_store::buffered::BufWriter;
use std::sync::Arc;
use stratalake_core::expect::ResultLog;
use stratalake_core::{
    CommitMarker, CommitOutcome, Context, Cursor, Delivery, Epoch, Error, ErrorKind, Prepared,
    Result, Sink, SinkCapabilities, SinkWriter, check_merge_columns, crash_point,
};

/// How far back `last_committed` looks for the commit that carries a pipeline's cursor.
const HISTORY_SCAN: usize = 1000;

/// Appends to (or MERGEs into) a Delta table exactly once; rejected records go to the
/// `_quarantine` table inside it.
#[derive(Debug, Clone)]
pub struct DeltaSink {
    loc: TableLocation,
    quarantine: TableLocation,
    cfg: DeltaSinkConfig,
    results: Option<ResultLog>,
}

impl DeltaSink {
    /// A sink writing the table at `loc` (created on first write from the rows' schema).
    ///
    /// # Errors
    /// Config for an invalid configuration.
    pub fn try_new(loc: TableLocation, cfg: DeltaSinkConfig) -> Result<Self> {
        cfg.validate()?;
        let quarantine = loc.child("_quarantine")?;
        Ok(Self {
            loc,
            quarantine,
            cfg,
            results: None,
        })
    }

    /// Record the expectations' results in `log` (what the pipeline's expectation step
    /// found) in each data commit's info, beside the marker, so they are committed with
    /// the rows they are about: a kill before they are recorded elsewhere leaves them in the
    /// table's log.
    #[must_use]
    pub fn with_results(mut self, log: ResultLog) -> Self {
        self.results = Some(log);
        self
    }

    /// The quarantine table's location.
    pub fn quarantine_location(&self) -> &TableLocation {
        &self.quarantine
    }

    /// Forget what `pipeline_id` wrote: delete every row of its quarantine, then every row of
    /// the table in a commit that records a new epoch with no cursor, so the pipeline's next
    /// run reads its source from the start (a full refresh). The quarantine goes first: a
    /// kill between the two leaves the table as it was, and rerunning the reset finishes it.
    ///
    /// # Errors
    /// When a table cannot be read or the delete cannot commit.
    pub async fn reset(&self, pipeline_id: &str) -> Result<()> {
        let last = match open(&self.loc).await? {
            Some(t) => self.loc.app_version(&t, pipeline_id).await?,
            None => return Ok(()),
        };
        for loc in [&self.quarantine, &self.loc] {
            let Some(t) = open(loc).await? else {
                continue;
            };
            let mut b = t.delete();
            if std::ptr::eq(loc, &self.loc)
                && let Some(epoch) = last
            {
                let marker = CommitMarker::new(
                    pipeline_id,
                    Epoch(u64::try_from(epoch + 1).unwrap_or(0)),
                    None,
                );
                b = b.with_commit_properties(commit_properties(&marker, None));
            }
            b.await
                .map_err(|e| delta_err(e, "cannot empty the table", &loc.url))?;
        }
        Ok(())
    }

    /// Forget where `pipeline_id` was without touching its rows: a commit with no data that
    /// records a new epoch with no cursor, so the next run reads its source from the start.
    /// Meant for keyed writes (MERGE makes the re-read idempotent); with appends the re-read
    /// would add every row again, so that is refused. Returns the new epoch, or `None` when
    /// the pipeline never committed here.
    ///
    /// # Errors
    /// Unsupported for an append sink; when the table cannot be read or the commit fails.
    pub async fn forget(&self, pipeline_id: &str) -> Result<Option<Epoch>> {
        if !matches!(self.cfg.write, WriteMode::Merge { .. }) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "forgetting an append sink's position would load every row again: drop the rows too (reset --drop)",
            )
            .with_context("table", self.loc.url.as_str()));
        }
        let Some(table) = open(&self.loc).await? else {
            return Ok(None);
        };
        let Some(last) = self.loc.app_version(&table, pipeline_id).await? else {
            return Ok(None);
        };
        let epoch = Epoch(u64::try_from(last + 1).unwrap_or(0));
        commit_adds(
            &self.loc,
            &[],
            &CommitMarker::new(pipeline_id, epoch, None),
            None,
            SaveMode::Append,
        )
        .await?;
        Ok(Some(epoch))
    }

    fn file_writer(&self, table: &DeltaTable) -> Result<RecordBatchWriter> {
        Ok(RecordBatchWriter::for_table(table)
            .map_err(|e| {
                delta_err(
                    e,
                    "cannot start writing the table",
                    &table.table_url().clone(),
                )
            })?
            .with_target_file_size(self.cfg.target_file_size_megabytes * 1024 * 1024)
            .with_writer_properties(parquet_properties()))
    }
}

/// Commit `adds` to the table at `loc` with the marker's transaction, unless it is there.
async fn commit_adds(
    loc: &TableLocation,
    adds: &[Add],
    marker: &CommitMarker,
    results: Option<&ResultLog>,
    mode: SaveMode,
) -> Result<CommitOutcome> {
    let table = open(loc).await?.ok_or_else(|| {
        Error::new(ErrorKind::NotFound, "the table disappeared")
            .with_context("table", loc.url.as_str())
    })?;
    commit_adds_to(&table, loc, adds, marker, results, mode).await
}

/// [`commit_adds`] on `table` as read: a commit since is checked for conflicts against it.
async fn commit_adds_to(
    table: &DeltaTable,
    loc: &TableLocation,
    adds: &[Add],
    marker: &CommitMarker,
    results: Option<&ResultLog>,
    mode: SaveMode,
) -> Result<CommitOutcome> {
    let url = loc.url.clone();
    let pid = marker.pipeline_id.as_str();
    if loc
        .app_version(table, pid)
        .await?
        .is_some_and(|v| v >= marker.epoch.0 as i64)
    {
        return Ok(CommitOutcome::AlreadyCommitted);
    }
    let partition_by = {
        let p: Vec<String> = table
            .snapshot()
            .map_err(|e| delta_err(e, "the table has no state", &url))?
            .metadata()
            .partition_columns()
            .to_vec();
        (!p.is_empty()).then_some(p)
    };
    let actions: Vec<Action> = adds.iter().cloned().map(Action::Add).collect();
    let snapshot = table
        .snapshot()
        .map_err(|e| delta_err(e, "the table has no state", &url))?;
    let res = CommitBuilder::from(commit_properties(marker, results))
        .with_actions(actions)
        .build(
            Some(snapshot),
            table.log_store(),
            DeltaOperation::Write {
                mode,
                partition_by,
                // An overwrite read the whole table (a first load found it empty): the read
                // predicate makes deltalake's conflict checker fail it when another writer
                // added files since, and the runner's retry then MERGEs into what is there.
                // Without it, two first loads of one table would both commit. Appends stay
                // blind: they read nothing.
                predicate: (mode == SaveMode::Overwrite).then(|| "true".to_string()),
            },
        )
        .await;
    if let Err(e) = res {
        // A concurrent run of this pipeline may have committed the epoch.
        if let Some(t) = open(loc).await?
            && loc
                .app_version(&t, pid)
                .await?
                .is_some_and(|v| v >= marker.epoch.0 as i64)
        {
            return Ok(CommitOutcome::AlreadyCommitted);
        }
        return Err(
            delta_err(e, "the Delta commit failed", &url).with_context("epoch", marker.epoch)
        );
    }
    Ok(CommitOutcome::Committed)
}

/// The application transaction `(pipeline, epoch)` and the marker in the commit info (with
/// the expectations' results, when given).
fn commit_properties(marker: &CommitMarker, results: Option<&ResultLog>) -> CommitProperties {
    let mut info = serde_json::json!({
        "pipeline": marker.pipeline_id,
        "epoch": marker.epoch.0,
        "cursor": marker.cursor.as_ref().map(|c| c.as_str()),
    });
    if let Some(r) = results {
        info["expectations"] = serde_json::to_value(r.results()).unwrap_or_default();
    }
    CommitProperties::default()
        .with_application_transaction(Transaction::new(&marker.pipeline_id, marker.epoch.0 as i64))
        .with_metadata([(MARKER_KEY.to_string(), info)])
}

/// The commit info key Strata's marker is recorded under.
const MARKER_KEY: &str = "strata";

#[async_trait]
impl Sink for DeltaSink {
    fn name(&self) -> &str {
        "delta"
    }

    fn capabilities(&self) -> SinkCapabilities {
        let mut c = SinkCapabilities::new(Delivery::ExactlyOnce).with_quarantine(true);
        c.schema_evolution = self.cfg.schema_evolution == SchemaEvolution::AddColumns;
        c.upsert = matches!(self.cfg.write, WriteMode::Merge { .. });
        c
    }

    async fn open(&self, schema: SchemaRef, ctx: &Context) -> Result<Box<dyn SinkWriter>> {
        let loc = &self.loc;
        let mut table = match open(loc).await? {
            Some(t) => t,
            None => {
                let widened = delta_compatible(RecordBatch::new_empty(schema.clone()))?.schema();
                create(loc, &widened, &self.cfg.partition_by).await?
            }
        };
        let table_schema: Schema = table
            .snapshot()
            .map_err(|e| delta_err(e, "the table has no state", &loc.url))?
            .snapshot()
            .arrow_schema()
            .as_ref()
            .clone();
        let new: Vec<_> = schema
            .fields()
            .iter()
            .filter(|f| table_schema.field_with_name(f.name()).is_err())
            .cloned()
            .collect();
        if !new.is_empty() {
            match self.cfg.schema_evolution {
                SchemaEvolution::Freeze => {
                    return Err(Error::new(
                        ErrorKind::Schema,
                        "the rows have columns the table does not (schema_evolution: freeze)",
                    )
                    .with_context("table", loc.url.as_str())
                    .with_context(
                        "columns",
                        new.iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    )
                    .with_context("hint", "set schema_evolution: add_columns, or discard"));
                }
                SchemaEvolution::AddColumns => {
                    // A metadata commit of its own: new nullable columns are harmless to
                    // readers before the data arrives, and it works for partitioned tables.
                    let fields = new
                        .iter()
                        .map(|f| {
                            let f = f.as_ref().clone().with_nullable(true);
                            let k: StructField = (&f).try_into_kernel().map_err(|e| {
                                Error::new(ErrorKind::Schema, "the column has no Delta type")
                                    .with_context("table", loc.url.as_str())
                                    .with_context("column", f.name())
                                    .with_source(e)
                            })?;
                            Ok(k)
                        })
                        .collect::<Result<Vec<_>>>()?;
                    tracing::info!(table = %loc.url, columns = fields.len(), "adding columns");
                    table = table
                        .add_columns()
                        .with_fields(fields)
                        .await
                        .map_err(|e| delta_err(e, "cannot add the new columns", &loc.url))?;
                }
                _ => {}
            }
        }
        let keep: Option<Vec<usize>> =
            (self.cfg.schema_evolution == SchemaEvolution::Discard && !new.is_empty()).then(|| {
                schema
                    .fields()
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| table_schema.field_with_name(f.name()).is_ok())
                    .map(|(i, _)| i)
                    .collect()
            });
        let data = match &self.cfg.write {
            WriteMode::Append => {
                Data::Append(Some(Box::new(self.file_writer(&table)?)), Vec::new())
            }
            WriteMode::Merge {
                key,
                version_column,
                delete_when,
            } => {
                check_merge_columns(&schema, key, version_column.as_ref(), delete_when.as_ref())
                    .map_err(|e| e.with_context("table", loc.url.as_str()))?;
                sweep_staging(loc, ctx.pipeline_id()).await?;
                Data::Merge(Box::new(Staging::new(
                    loc,
                    ctx.pipeline_id(),
                    (self.cfg.target_file_size_megabytes as usize).saturating_mul(1 << 20),
                )?))
            }
        };
        Ok(Box::new(EpochWriter {
            sink: self.clone(),
            data,
            quarantine: None,
            q_adds: Vec::new(),
            keep,
            rows: 0,
            quarantined: 0,
        }))
    }

    async fn last_committed(
        &self,
        pipeline_id: &str,
        _ctx: &Context,
    ) -> Result<Option<CommitMarker>> {
        let Some(table) = open(&self.loc).await? else {
            return Ok(None);
        };
        let Some(epoch) = self.loc.app_version(&table, pipeline_id).await? else {
            return Ok(None);
        };
        let epoch = Epoch(u64::try_from(epoch).unwrap_or(0));
        // The cursor rides in the commit info of the commit that carried the transaction.
        let mut cursor = None;
        let mut history = table.history(Some(HISTORY_SCAN));
        while let Some(info) = history
            .try_next()
            .await
            .map_err(|e| delta_err(e, "cannot read the table's history", &self.loc.url))?
        {
            if let Some(m) = info.info.get(MARKER_KEY)
                && m.get("pipeline").and_then(|p| p.as_str()) == Some(pipeline_id)
                && m.get("epoch").and_then(serde_json::Value::as_u64) == Some(epoch.0)
            {
                cursor = m.get("cursor").and_then(|c| c.as_str()).map(Cursor::new);
                break;
            }
        }
        Ok(Some(CommitMarker::new(pipeline_id, epoch, cursor)))
    }
}

/// How every Parquet file of a table Strata writes is encoded: zstd, and dictionary pages of
/// at most 128 KiB (a column whose values do not repeat falls back to plain pages early,
/// and a writer open per partition holds a small dictionary per column, not 1 MiB).
pub fn parquet_properties() -> deltalake::parquet::file::properties::WriterProperties {
    use deltalake::parquet::basic::{Compression, ZstdLevel};
    deltalake::parquet::file::properties::WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_dictionary_page_size_limit(128 * 1024)
        .build()
}

enum Data {
    /// The streaming file writer (taken at prepare) and the files it finished.
    Append(Option<Box<RecordBatchWriter>>, Vec<Add>),
    /// The epoch's rows, staged as Parquet files in the table's store.
    Merge(Box<Staging>),
}

/// Where a MERGE epoch's rows wait for the commit: Parquet files under
/// `<table>/_strata_staging/<pipeline>/<attempt>/` (a hidden directory: no Delta reader and no
/// vacuum looks there), written as the rows stream in, so memory holds one row group at a
/// time whatever the epoch's size. The MERGE reads them back with a scan; the commit or abort
/// deletes them, and a writer opening later deletes what killed attempts left.
struct Staging {
    store: Arc<dyn object_store::ObjectStore>,
    dir: object_store::path::Path,
    writer: Option<AsyncArrowWriter<BufWriter>>,
    files: usize,
    rows: u64,
    target_bytes: usize,
}

/// Rows per staged row group (the memory a staged file holds while written).
const STAGED_ROW_GROUP_ROWS: usize = 65_536;
/// A killed attempt's staging is deleted once its newest file is this old.
const STAGING_ABANDONED_SECS: i64 = 6 * 3600;

fn store_err(
    e: impl std::error::Error + Send + Sync + 'static,
    what: &str,
    dir: &object_store::path::Path,
) -> Error {
    Error::new(ErrorKind::Unavailable, what.to_string())
        .with_retry(stratalake_core::Retry::Transient)
        .with_context("path", dir.as_ref())
        .with_source(e)
}

impl Staging {
    fn new(loc: &TableLocation, pipeline_id: &str, target_bytes: usize) -> Result<Self> {
        let attempt = format!("{:016x}", rand::random::<u64>());
        Ok(Self {
            store: loc.store.clone(),
            dir: staging_root(loc)?.join(pipeline_id).join(attempt),
            writer: None,
            files: 0,
            rows: 0,
            target_bytes,
        })
    }

    async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if self.writer.is_none() {
            let path = self
                .dir
                .clone()
                .join(format!("part-{:05}.parquet", self.files));
            self.files += 1;
            // Staged files are read back once, by the commit: plain LZ4 pages cost a fraction
            // of dictionary-encoded zstd's time to write and to read, for larger files.
            let props = parquet_properties()
                .into_builder()
                .set_compression(deltalake::parquet::basic::Compression::LZ4_RAW)
                .set_dictionary_enabled(false)
                .set_max_row_group_row_count(Some(STAGED_ROW_GROUP_ROWS))
                .build();
            let w = AsyncArrowWriter::try_new(
                BufWriter::new(self.store.clone(), path),
                batch.schema(),
                Some(props),
            )
            .map_err(|e| Error::internal("cannot stage the MERGE rows").with_source(e))?;
            self.writer = Some(w);
        }
        let dir = self.dir.clone();
        let w = self
            .writer
            .as_mut()
            .ok_or_else(|| Error::internal("no staging writer"))?;
        w.write(batch)
            .await
            .map_err(|e| store_err(e, "staging the MERGE rows failed", &dir))?;
        self.rows += batch.num_rows() as u64;
        if w.bytes_written() >= self.target_bytes {
            self.finish_file().await?;
        }
        Ok(())
    }

    async fn finish_file(&mut self) -> Result<()> {
        if let Some(w) = self.writer.take() {
            let dir = self.dir.clone();
            w.close()
                .await
                .map_err(|e| store_err(e, "finishing a staged MERGE file failed", &dir))?;
        }
        Ok(())
    }

    /// What was staged (the files are finished at prepare).
    fn staged(&self) -> Staged {
        Staged {
            store: self.store.clone(),
            dir: self.dir.clone(),
            rows: self.rows,
        }
    }
}

/// A MERGE epoch's finished staging files.
struct Staged {
    store: Arc<dyn object_store::ObjectStore>,
    dir: object_store::path::Path,
    rows: u64,
}

impl Staged {
    /// The staged files' directory as a URL DataFusion reads (`s3://bucket/...`).
    fn url(&self, table: &url::Url) -> url::Url {
        let mut base = table.clone();
        base.set_path(&format!("/{}/", self.dir.as_ref()));
        base
    }

    /// Delete this attempt's files (a failure is logged: a later writer sweeps them).
    async fn delete(&self) {
        if let Err(e) = delete_under(&self.store, &self.dir).await {
            tracing::warn!(path = %self.dir, error = %e.report(), "delta: cannot delete the MERGE staging files; a later run removes them");
        }
    }
}

/// `<table>/_strata_staging` as a path in the table's store.
fn staging_root(loc: &TableLocation) -> Result<object_store::path::Path> {
    let p = object_store::path::Path::from_url_path(loc.url.path()).map_err(|e| {
        Error::config("the table URL is not a valid object path")
            .with_context("table", loc.url.as_str())
            .with_source(e)
    })?;
    Ok(p.join("_strata_staging"))
}

async fn delete_under(
    store: &Arc<dyn object_store::ObjectStore>,
    dir: &object_store::path::Path,
) -> Result<()> {
    let objects = list_under(store, dir).await?;
    delete_paths(store, objects.into_iter().map(|o| o.location), dir).await
}

/// The objects under `dir` (none when it does not exist).
async fn list_under(
    store: &Arc<dyn object_store::ObjectStore>,
    dir: &object_store::path::Path,
) -> Result<Vec<object_store::ObjectMeta>> {
    match store.list(Some(dir)).try_collect().await {
        Ok(o) => Ok(o),
        Err(object_store::Error::NotFound { .. }) => Ok(Vec::new()),
        Err(e) => Err(store_err(e, "cannot list the MERGE staging files", dir)),
    }
}

async fn delete_paths(
    store: &Arc<dyn object_store::ObjectStore>,
    paths: impl IntoIterator<Item = object_store::path::Path>,
    dir: &object_store::path::Path,
) -> Result<()> {
    for p in paths {
        match store.delete(&p).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(store_err(e, "cannot delete a MERGE staging file", dir)),
        }
    }
    Ok(())
}

/// Delete the staging directories of `pipeline_id` that killed attempts left (their newest
/// file older than [`STAGING_ABANDONED_SECS`]).
async fn sweep_staging(loc: &TableLocation, pipeline_id: &str) -> Result<()> {
    let root = staging_root(loc)?.join(pipeline_id);
    let objects = list_under(&loc.store, &root).await?;
    // One listing: each attempt's objects and its newest modification time.
    let mut attempts: std::collections::BTreeMap<String, (chrono::DateTime<chrono::Utc>, Vec<_>)> =
        std::collections::BTreeMap::new();
    for o in objects {
        let attempt = o
            .location
            .prefix_match(&root)
            .and_then(|mut parts| parts.next())
            .map(|a| a.as_ref().to_string());
        if let Some(attempt) = attempt {
            let e = attempts
                .entry(attempt)
                .or_insert((o.last_modified, Vec::new()));
            e.0 = e.0.max(o.last_modified);
            e.1.push(o.location);
        }
    }
    let cutoff = chrono::Utc::now() - chrono::Duration::seconds(STAGING_ABANDONED_SECS);
    for (attempt, (newest, paths)) in attempts {
        if newest < cutoff {
            tracing::info!(table = %loc.url, attempt, "delta: deleting a killed attempt's MERGE staging files");
            delete_paths(&loc.store, paths, &root).await?;
        }
    }
    Ok(())
}

struct EpochWriter {
    sink: DeltaSink,
    data: Data,
    quarantine: Option<RecordBatchWriter>,
    q_adds: Vec<Add>,
    keep: Option<Vec<usize>>,
    rows: u64,
    quarantined: u64,
}

fn sql_text(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

impl EpochWriter {
    /// The MERGE commit of staged rows: AlreadyCommitted when the table has the transaction.
    async fn commit_merge(
        &mut self,
        staged: &Staged,
        marker: &CommitMarker,
    ) -> Result<CommitOutcome> {
        let table = open(&self.sink.loc).await?.ok_or_else(|| {
            Error::new(ErrorKind::NotFound, "the table disappeared")
                .with_context("table", self.sink.loc.url.as_str())
        })?;
        if self
            .sink
            .loc
            .app_version(&table, &marker.pipeline_id)
            .await?
            .is_some_and(|v| v >= marker.epoch.0 as i64)
        {
            Ok(CommitOutcome::AlreadyCommitted)
        } else if staged.rows == 0 {
            // Nothing to merge: record the transaction with an empty commit.
            commit_adds(
                &self.sink.loc,
                &[],
                marker,
                self.sink.results.as_ref(),
                SaveMode::Append,
            )
            .await
        } else {
            self.merge(table, staged, marker).await
        }
    }

    /// MERGE the epoch's rows: the newest version per key within the epoch, then against the
    /// table, deletes included; the transaction rides in the same commit.
    async fn merge(
        &mut self,
        table: DeltaTable,
        staged: &Staged,
        marker: &CommitMarker,
    ) -> Result<CommitOutcome> {
        use deltalake::datafusion::prelude::{col, lit};
        let WriteMode::Merge {
            key,
            version_column,
            delete_when,
        } = &self.sink.cfg.write
        else {
            return Err(Error::internal(
                "a MERGE commit of a sink that does not merge",
            ));
        };
        let loc = &self.sink.loc;
        let url = loc.url.clone();
        let df_err = |e: deltalake::datafusion::error::DataFusionError| {
            Error::new(ErrorKind::Internal, "preparing the MERGE failed")
                .with_context("table", url.as_str())
                .with_source(e)
        };

        let empty = table
            .snapshot()
            .map_err(|e| delta_err(e, "the table has no state", &url))?
            .log_data()
            .num_files()
            == 0;
        // Memory is bounded: the deduplication's aggregate and sort and the MERGE's join
        // spill to the local temporary directory beyond `merge_memory_megabytes` (a
        // sort-merge join, which spills, instead of a hash join, which holds its build side).
        let mut state = deltalake::delta_datafusion::create_session_state_with_spill_config(
            Some((self.sink.cfg.merge_memory_megabytes as usize).saturating_mul(1 << 20)),
            None,
        );
        let opts = state.config_mut().options_mut();
        opts.optimizer.prefer_hash_join = false;
        // Each sorter reserves this for its merge phase up front (10 MB by default, too much
        // of a small pool shared by every partition's sorter).
        opts.execution.sort_spill_reservation_bytes = 1 << 20;
        // The staged rows come back with the types they were written with (not as string
        // views), which is the table's schema a first load's file writers expect.
        opts.execution.parquet.schema_force_view_types = false;
        // The MERGE's sorters must each hold at least one batch of the table's rows within
        // their share of the pool: small batches keep wide rows (nested orders) inside it. A
        // first load sorts no wide rows and keeps the default batch size.
        if !empty && let Err(e) = opts.set("datafusion.execution.batch_size", "1024") {
            tracing::debug!(error = %e, "delta: cannot set the MERGE batch size");
        }
        let ctx = deltalake::datafusion::prelude::SessionContext::new_with_state(state);
        let mut store_url = url.clone();
        store_url.set_path("/");
        ctx.register_object_store(&store_url, staged.store.clone());
        let staged_df = ctx
            .read_parquet(
                staged.url(&url).as_str(),
                deltalake::datafusion::prelude::ParquetReadOptions::default(),
            )
            .await
            .map_err(df_err)?;
        let schema: SchemaRef = Arc::new(staged_df.schema().as_arrow().clone());
        // One row per key: the highest version, ties and no version by arrival (SEQ).
        let started = std::time::Instant::now();
        let mut df = newest_per_key(
            staged_df,
            key,
            version_column.as_deref(),
            staged.rows,
            REPEATED_KEYS_HELD,
        )
        .await
        .map_err(df_err)?;
        tracing::debug!(table = %url, rows = staged.rows, elapsed_ms = started.elapsed().as_millis() as u64, "delta: the newest version per key found");
        if empty {
            // Nothing to match (a first load): write the newest rows per key directly,
            // committed as an overwrite of the table as it was found empty. Two runs of this
            // pipeline carry the same application transaction: one commits the epoch.
            if let Some(d) = delete_when {
                // A null operation is not a delete.
                df = df
                    .filter(
                        col(d.column.as_str())
                            .is_null()
                            .or(col(d.column.as_str()).not_eq(lit(d.equals.as_str()))),
                    )
                    .map_err(df_err)?;
            }
            // Each of the plan's partitions encodes its own files (deltalake's `write` funnels
            // every partition into one Parquet encoder: one core for the whole table), then
            // one commit adds them all, with the same operation `write` would record.
            let plan = df.create_physical_plan().await.map_err(df_err)?;
            let streams = deltalake::datafusion::physical_plan::execute_stream_partitioned(
                plan,
                ctx.task_ctx(),
            )
            .map_err(df_err)?;
            let mut writers = tokio::task::JoinSet::new();
            for mut rows in streams {
                let mut w = self.sink.file_writer(&table)?;
                let url = url.clone();
                writers.spawn(async move {
                    while let Some(b) = futures::StreamExt::next(&mut rows).await {
                        let b = b.map_err(|e| {
                            Error::new(ErrorKind::Internal, "reading the staged MERGE rows failed")
                                .with_context("table", url.as_str())
                                .with_source(e)
                        })?;
                        w.write(b)
                            .await
                            .map_err(|e| delta_err(e, "writing the first load failed", &url))?;
                    }
                    w.flush()
                        .await
                        .map_err(|e| delta_err(e, "finishing the first load's files failed", &url))
                });
            }
            let mut adds = Vec::new();
            while let Some(done) = writers.join_next().await {
                adds.extend(done.map_err(|e| {
                    Error::internal("a first-load writer stopped").with_source(e)
                })??);
            }
            let outcome = commit_adds_to(
                &table,
                &self.sink.loc,
                &adds,
                marker,
                self.sink.results.as_ref(),
                SaveMode::Overwrite,
            )
            .await?;
            tracing::debug!(table = %url, files = adds.len(), elapsed_ms = started.elapsed().as_millis() as u64, "delta: first load written");
            return Ok(outcome);
        }
        let columns: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|n| n != SEQ)
            .collect();
        let predicate = key
            .iter()
            .map(|k| format!("target.{k} = source.{k}"))
            .collect::<Vec<_>>()
            .join(" AND ");
        let newer = version_column
            .as_ref()
            .map(|v| format!("source.{v} >= target.{v}"));
        let is_delete = delete_when.as_ref().map(|d| {
            format!(
                "coalesce(source.{} = {}, false)",
                d.column,
                sql_text(&d.equals)
            )
        });
        let mut m = table
            .merge(df, predicate)
            .with_source_alias("source")
            .with_target_alias("target")
            .with_merge_schema(self.sink.cfg.schema_evolution == SchemaEvolution::AddColumns)
            .with_commit_properties(commit_properties(marker, self.sink.results.as_ref()));
        let merr = |e| delta_err(e, "building the MERGE failed", &url);
        if let Some(del) = &is_delete {
            let p = match &newer {
                Some(n) => format!("{del} AND {n}"),
                None => del.clone(),
            };
            m = m.when_matched_delete(|d| d.predicate(p)).map_err(merr)?;
        }
        let update_pred = match (&newer, &is_delete) {
            (Some(n), Some(d)) => Some(format!("{n} AND NOT ({d})")),
            (Some(n), None) => Some(n.clone()),
            (None, Some(d)) => Some(format!("NOT ({d})")),
            (None, None) => None,
        };
        let cols = columns.clone();
        m = m
            .when_matched_update(|u| {
                let mut u = match update_pred {
                    Some(p) => u.predicate(p),
                    None => u,
                };
                for c in &cols {
                    u = u.update(c.as_str(), format!("source.{c}"));
                }
                u
            })
            .map_err(merr)?;
        let insert_pred = is_delete.as_ref().map(|d| format!("NOT ({d})"));
        m = m
            .when_not_matched_insert(|i| {
                let mut i = match insert_pred {
                    Some(p) => i.predicate(p),
                    None => i,
                };
                for c in &columns {
                    i = i.set(c.as_str(), format!("source.{c}"));
                }
                i
            })
            .map_err(merr)?;
        m.await.map_err(|e| {
            delta_err(e, "the MERGE failed", &url).with_context("epoch", marker.epoch)
        })?;
        Ok(CommitOutcome::Committed)
    }
}

/// The epoch's staged rows without the versions that a newer one of the same key supersedes
/// (the highest `version` wins; ties and rows without a version by arrival, `SEQ`), `SEQ`
/// dropped.
///
/// Only narrow columns are ever sorted, and usually none: an aggregate over the key finds
/// the keys that arrived more than once (the usual epoch, and every epoch whose input is
/// already one row per key, has none: the rows pass as they are). When up to `keys_held`
/// ([`REPEATED_KEYS_HELD`]) did, a hash semi join picks their rows' key, version and `SEQ` and a
/// window numbers each key's versions; when more did, the window runs over those narrow
/// columns of every row (its sort spills beyond the session's memory pool, as the aggregate
/// does). The losers' arrival numbers are set in a bitmap of one bit per staged row, which
/// a filter then applies to the full rows.
async fn newest_per_key(
    staged: deltalake::datafusion::prelude::DataFrame,
    key: &[String],
    version_column: Option<&str>,
    rows: u64,
    keys_held: usize,
) -> deltalake::datafusion::error::Result<deltalake::datafusion::prelude::DataFrame> {
    use arrow_array::cast::AsArray as _;
    use deltalake::datafusion::common::JoinType;
    use deltalake::datafusion::functions_aggregate::expr_fn::count;
    use deltalake::datafusion::functions_window::expr_fn::row_number;
    use deltalake::datafusion::logical_expr::{
        ColumnarValue, ExprFunctionExt, Volatility, create_udf,
    };
    use deltalake::datafusion::prelude::{SessionContext, col, lit};
    use futures::StreamExt as _;
    let keys: Vec<_> = key.iter().map(|k| col(k.as_str())).collect();
    let mut repeated_keys = staged
        .clone()
        .aggregate(keys.clone(), vec![count(lit(1)).alias("__n")])?
        .filter(col("__n").gt(lit(1_i64)))?
        .select(
            key.iter()
                .enumerate()
                .map(|(i, k)| col(k.as_str()).alias(format!("__k{i}")))
                .collect::<Vec<_>>(),
        )?
        .execute_stream()
        .await?;
    let mut held = Vec::new();
    let mut repeated = 0;
    let mut all_held = true;
    while let Some(b) = repeated_keys.next().await {
        let b = b?;
        repeated += b.num_rows();
        if repeated > keys_held {
            all_held = false;
            break;
        }
        held.push(b);
    }
    drop(repeated_keys);
    if repeated == 0 {
        return staged.drop_columns(&[SEQ]);
    }
    let rows = usize::try_from(rows).map_err(|_| {
        deltalake::datafusion::error::DataFusionError::Execution(
            "too many rows in one MERGE epoch".into(),
        )
    })?;
    let mut order = Vec::new();
    let mut narrow = keys.clone();
    if let Some(v) = version_column {
        order.push(col(v).sort(false, false));
        narrow.push(col(v));
    }
    order.push(col(SEQ).sort(false, false));
    narrow.push(col(SEQ));
    let candidates = if all_held {
        // The repeated keys are few: a hash join (its build side is them) finds their rows
        // without sorting the epoch. Keys compare as the window's partitions do (NULL with
        // NULL).
        let (mut state, plan) = staged.clone().into_parts();
        state.config_mut().options_mut().optimizer.prefer_hash_join = true;
        let ctx = SessionContext::new_with_state(state);
        let narrow_rows =
            deltalake::datafusion::prelude::DataFrame::new(ctx.state(), plan).select(narrow)?;
        let keys_df = ctx.read_batches(held)?;
        let on: Vec<_> = key
            .iter()
            .enumerate()
            .map(|(i, k)| {
                deltalake::datafusion::logical_expr::binary_expr(
                    col(k.as_str()),
                    deltalake::datafusion::logical_expr::Operator::IsNotDistinctFrom,
                    col(format!("__k{i}")),
                )
            })
            .collect();
        narrow_rows.join_on(keys_df, JoinType::LeftSemi, on)?
    } else {
        staged.clone().select(narrow)?
    };
    let rn = row_number()
        .partition_by(keys)
        .order_by(order)
        .build()?
        .alias("__rn");
    let mut losers = candidates
        .window(vec![rn])?
        .filter(col("__rn").gt(lit(1_u64)))?
        .select(vec![col(SEQ)])?
        .execute_stream()
        .await?;
    let mut superseded = arrow_array::builder::BooleanBufferBuilder::new(rows);
    superseded.append_n(rows, false);
    while let Some(b) = losers.next().await {
        let b = b?;
        for &seq in b
            .column(0)
            .as_primitive::<arrow_array::types::UInt64Type>()
            .values()
        {
            match usize::try_from(seq) {
                Ok(i) if i < rows => superseded.set_bit(i, true),
                _ => {
                    return Err(deltalake::datafusion::error::DataFusionError::Internal(
                        format!("arrival number {seq} beyond the epoch's {rows} rows"),
                    ));
                }
            }
        }
    }
    let superseded = superseded.finish();
    let newest = create_udf(
        "strata_newest_version",
        vec![arrow_schema::DataType::UInt64],
        arrow_schema::DataType::Boolean,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let seqs = args[0].to_array(1)?;
            let seqs = seqs.as_primitive::<arrow_array::types::UInt64Type>();
            let keep = arrow_array::BooleanArray::from(
                deltalake::arrow::buffer::BooleanBuffer::collect_bool(seqs.len(), |i| {
                    usize::try_from(seqs.value(i))
                        .ok()
                        .filter(|&s| s < superseded.len())
                        .is_none_or(|s| !superseded.value(s))
                }),
            );
            Ok(ColumnarValue::Array(Arc::new(keep)))
        }),
    );
    staged
        .filter(newest.call(vec![col(SEQ)]))?
        .drop_columns(&[SEQ])
}

/// Delta has no unsigned integers: such columns are written as the next wider signed type
/// (`uint64` as `int64`; values above `i64::MAX` are a Data error); timestamps become
/// microseconds in UTC (the same instants) or without a zone.
fn delta_compatible(batch: RecordBatch) -> Result<RecordBatch> {
    use arrow_schema::DataType as T;
    let wider = |t: &T| match t {
        T::UInt8 => Some(T::Int16),
        T::UInt16 => Some(T::Int32),
        T::UInt32 | T::UInt64 => Some(T::Int64),
        // Delta timestamps are microseconds, UTC (`timestamp`) or without a zone
        // (`timestamp_ntz`).
        T::Timestamp(u, tz)
            if *u != arrow_schema::TimeUnit::Microsecond
                || tz.as_deref().is_some_and(|z| z != "UTC") =>
        {
            Some(T::Timestamp(
                arrow_schema::TimeUnit::Microsecond,
                tz.as_ref().map(|_| "UTC".into()),
            ))
        }
        _ => None,
    };
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| wider(f.data_type()).is_some())
    {
        return Ok(batch);
    }
    let mut fields = Vec::new();
    let mut cols = Vec::new();
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        match wider(f.data_type()) {
            Some(t) => {
                let opts = arrow_cast::CastOptions {
                    safe: false,
                    ..Default::default()
                };
                cols.push(arrow_cast::cast_with_options(c, &t, &opts).map_err(|e| {
                    Error::new(ErrorKind::Data, "an unsigned value does not fit int64")
                        .with_context("column", f.name())
                        .with_source(e)
                })?);
                fields.push(Arc::new(f.as_ref().clone().with_data_type(t)));
            }
            None => {
                cols.push(c.clone());
                fields.push(f.clone());
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)
        .map_err(|e| Error::internal("cannot widen unsigned columns").with_source(e))
}

/// The most repeated keys of one MERGE epoch held in memory to find their rows with a hash
/// join (beyond it, a window over every row's key, version and arrival number; spills).
const REPEATED_KEYS_HELD: usize = 1 << 20;

/// The arrival order column added to buffered MERGE rows.
const SEQ: &str = "__strata_seq";

#[async_trait]
impl SinkWriter for EpochWriter {
    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        let batch = match &self.keep {
            Some(idx) => batch.project(idx).map_err(|e| {
                Error::new(ErrorKind::Schema, "cannot drop the new columns").with_source(e)
            })?,
            None => batch,
        };
        let batch = delta_compatible(batch)?;
        let n = batch.num_rows();
        let url = self.sink.loc.url.clone();
        let first = self.rows;
        self.rows += n as u64;
        match &mut self.data {
            Data::Append(w, _) => w
                .as_mut()
                .ok_or_else(|| Error::internal("the Delta writer was already prepared"))?
                .write(batch)
                .await
                .map_err(|e| delta_err(e, "writing the table's files failed", &url)),
            Data::Merge(staging) => {
                let seq = arrow_array::UInt64Array::from_iter_values(first..first + n as u64);
                let mut fields: Vec<_> = batch.schema().fields().iter().cloned().collect();
                fields.push(Arc::new(arrow_schema::Field::new(
                    SEQ,
                    arrow_schema::DataType::UInt64,
                    false,
                )));
                let mut cols = batch.columns().to_vec();
                cols.push(Arc::new(seq));
                let b = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)
                    .map_err(|e| Error::internal("cannot number the rows").with_source(e))?;
                staging.write(&b).await
            }
        }
    }

    async fn write_quarantine(&mut self, batch: RecordBatch) -> Result<()> {
        let batch = delta_compatible(batch)?;
        let qloc = self.sink.quarantine.clone();
        if self.quarantine.is_none() {
            let table = match open(&qloc).await? {
                Some(t) => t,
                None => create(&qloc, &batch.schema(), &[]).await?,
            };
            self.quarantine = Some(self.sink.file_writer(&table)?);
        }
        self.quarantined += batch.num_rows() as u64;
        if let Some(w) = self.quarantine.as_mut() {
            w.write(batch)
                .await
                .map_err(|e| delta_err(e, "writing the quarantine failed", &qloc.url))?;
        }
        Ok(())
    }

    async fn prepare(&mut self, epoch: Epoch) -> Result<Prepared> {
        let url = self.sink.loc.url.clone();
        let mut items = Vec::new();
        let mut bytes = 0u64;
        if let Data::Append(w, adds) = &mut self.data
            && let Some(mut w) = w.take()
        {
            *adds = w
                .flush()
                .await
                .map_err(|e| delta_err(e, "finishing the table's files failed", &url))?;
            bytes += adds.iter().map(|a| a.size.max(0) as u64).sum::<u64>();
            items.extend(adds.iter().map(|a| a.path.clone()));
        }
        if let Data::Merge(staging) = &mut self.data {
            staging.finish_file().await?;
        }
        if let Some(mut q) = self.quarantine.take() {
            self.q_adds = q
                .flush()
                .await
                .map_err(|e| delta_err(e, "finishing the quarantine files failed", &url))?;
        }
        Ok(Prepared::new(
            epoch,
            self.rows,
            self.quarantined,
            bytes,
            items,
        ))
    }

    async fn commit(
        &mut self,
        _prepared: Prepared,
        marker: &CommitMarker,
    ) -> Result<CommitOutcome> {
        // The quarantine first, under the same transaction: a crash between the two commits
        // leaves the epoch uncommitted (the data table decides), and the rerun skips the
        // quarantine's.
        if !self.q_adds.is_empty() {
            commit_adds(
                &self.sink.quarantine,
                &self.q_adds,
                marker,
                None,
                SaveMode::Append,
            )
            .await?;
            crash_point("delta.sink.after_quarantine_commit").await;
        }
        let outcome = match std::mem::replace(&mut self.data, Data::Append(None, Vec::new())) {
            Data::Append(_, adds) => {
                commit_adds(
                    &self.sink.loc,
                    &adds,
                    marker,
                    self.sink.results.as_ref(),
                    SaveMode::Append,
                )
                .await?
            }
            Data::Merge(staging) => {
                let staged = staging.staged();
                drop(staging);
                let outcome = self.commit_merge(&staged, marker).await;
                staged.delete().await;
                outcome?
            }
        };
        crash_point("delta.sink.after_commit").await;
        Ok(outcome)
    }

    async fn abort(&mut self, _prepared: Option<Prepared>) -> Result<()> {
        // Files already finalized are named by no log entry: invisible, removed by vacuum.
        if let Data::Append(w, adds) = &mut self.data {
            if let Some(mut w) = w.take() {
                w.reset();
            }
            adds.clear();
        }
        if let Some(mut q) = self.quarantine.take() {
            q.reset();
        }
        if let Data::Merge(staged) =
            std::mem::replace(&mut self.data, Data::Append(None, Vec::new()))
        {
            let mut staged = staged;
            // Close the open file (an upload in progress) before deleting what was staged.
            if let Some(w) = staged.writer.take() {
                let _ = w.close().await;
            }
            staged.staged().delete().await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{SEQ, newest_per_key};
    use arrow_array::{Array as _, ArrayRef, Int64Array, RecordBatch, StringArray, UInt64Array};
    use deltalake::datafusion::prelude::SessionContext;
    use std::sync::Arc;

    /// Rows of `(key, version, arrival)`: the newest version of each key wins, ties and
    /// missing versions by the later arrival; a NULL key is one key, as in the window.
    fn staged(rows: &[(Option<&str>, Option<i64>)]) -> RecordBatch {
        let keys: StringArray = rows.iter().map(|r| r.0).collect();
        let versions: Int64Array = rows.iter().map(|r| r.1).collect();
        let tags: StringArray = (0..rows.len()).map(|i| Some(format!("r{i}"))).collect();
        let seq = UInt64Array::from_iter_values(0..rows.len() as u64);
        RecordBatch::try_from_iter(vec![
            ("id", Arc::new(keys) as ArrayRef),
            ("v", Arc::new(versions) as ArrayRef),
            ("tag", Arc::new(tags) as ArrayRef),
            (SEQ, Arc::new(seq) as ArrayRef),
        ])
        .unwrap()
    }

    async fn kept(b: &RecordBatch, keys_held: usize) -> Vec<String> {
        let ctx = SessionContext::new();
        let df = ctx.read_batch(b.clone()).unwrap();
        let out = newest_per_key(
            df,
            &["id".to_string()],
            Some("v"),
            b.num_rows() as u64,
            keys_held,
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
        let mut tags: Vec<String> = out
            .iter()
            .flat_map(|b| {
                assert!(
                    b.schema().index_of(SEQ).is_err(),
                    "the arrival number is dropped"
                );
                let i = b.schema().index_of("tag").unwrap();
                let t = arrow_array::cast::AsArray::as_string::<i32>(b.column(i)).clone();
                (0..t.len()).map(move |j| t.value(j).to_string())
            })
            .collect();
        tags.sort();
        tags
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_newest_version_per_key_is_the_same_by_join_and_by_window() {
        let b = staged(&[
            (Some("a"), Some(1)), // r0: superseded by r2
            (Some("b"), Some(5)), // r1: alone
            (Some("a"), Some(3)), // r2: newest a
            (Some("a"), Some(2)), // r3
            (Some("c"), Some(7)), // r4: tie with r5, earlier
            (Some("c"), Some(7)), // r5: tie, later: wins
            (Some("d"), None),    // r6: no version, earlier
            (Some("d"), None),    // r7: later: wins
            (None, Some(1)),      // r8: NULL key, older
            (None, Some(2)),      // r9: NULL key, newest
            (Some("e"), None),    // r10: a missing version loses to a version
            (Some("e"), Some(0)), // r11
        ]);
        let want = ["r1", "r11", "r2", "r5", "r7", "r9"];
        // Up to a million repeated keys held: the hash semi join; none held: the window over
        // every row's narrow columns.
        assert_eq!(kept(&b, 1 << 20).await, want);
        assert_eq!(kept(&b, 0).await, want);
        assert_eq!(kept(&b, 2).await, want, "more repeated keys than held");
        // No key twice: every row passes.
        let unique = staged(&[(Some("x"), Some(1)), (Some("y"), None), (None, Some(3))]);
        assert_eq!(kept(&unique, 1 << 20).await, ["r0", "r1", "r2"]);
    }
}
