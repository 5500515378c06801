//! [`DeltaSink`]: appends epochs to a Delta table, exactly once.
//!
//! `write` streams Parquet files into the table's directory (deltalake's `RecordBatchWriter`:
//! bounded memory, files rolled at the target size); `prepare` finalizes them (durable, but
//! no reader sees a file the log does not name); `commit` writes one log entry with their `add`
//! actions and the application transaction `(pipeline, epoch)`, plus the cursor in the commit
//! info, so the data and the marker become visible together. Delta's optimistic concurrency
//! retries a commit that raced another writer; a replayed epoch finds its transaction and
//! answers `AlreadyCommitted`.

use crate::config::{DeltaSinkConfig, SchemaEvolution};
use crate::table::{TableLocation, create, delta_err, open};
use arrow_array::RecordBatch;
use arrow_schema::{Schema, SchemaRef};
use async_trait::async_trait;
use deltalake::DeltaTable;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, StructField, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use futures::TryStreamExt;
use strata_core::{
    CommitMarker, CommitOutcome, Context, Cursor, Delivery, Epoch, Error, ErrorKind, Prepared,
    Result, Sink, SinkCapabilities, SinkWriter, crash_point,
};

/// How far back `last_committed` looks for the commit that carries a pipeline's cursor.
const HISTORY_SCAN: usize = 1000;

/// Appends to a Delta table exactly once.
#[derive(Debug, Clone)]
pub struct DeltaSink {
    loc: TableLocation,
    cfg: DeltaSinkConfig,
}

impl DeltaSink {
    /// A sink writing the table at `loc` (created on first write from the rows' schema).
    ///
    /// # Errors
    /// Config for an invalid configuration.
    pub fn try_new(loc: TableLocation, cfg: DeltaSinkConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self { loc, cfg })
    }
}

/// The commit info key Strata's marker is recorded under.
const MARKER_KEY: &str = "strata";

async fn transaction_version(table: &DeltaTable, pid: &str) -> Result<Option<i64>> {
    let state = table
        .snapshot()
        .map_err(|e| delta_err(e, "the table has no state", &table.table_url().clone()))?;
    state
        .transaction_version(table.log_store().as_ref(), pid)
        .await
        .map_err(|e| {
            delta_err(
                e,
                "cannot read the table's transactions",
                &table.table_url().clone(),
            )
        })
}

#[async_trait]
impl Sink for DeltaSink {
    fn name(&self) -> &str {
        "delta"
    }

    fn capabilities(&self) -> SinkCapabilities {
        let mut c = SinkCapabilities::new(Delivery::ExactlyOnce);
        c.schema_evolution = self.cfg.schema_evolution == SchemaEvolution::AddColumns;
        c
    }

    async fn open(&self, schema: SchemaRef, _ctx: &Context) -> Result<Box<dyn SinkWriter>> {
        let loc = &self.loc;
        let mut table = match open(loc).await? {
            Some(t) => t,
            None => create(loc, &schema, &self.cfg.partition_by).await?,
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
        let mut writer = RecordBatchWriter::for_table(&table)
            .map_err(|e| delta_err(e, "cannot start writing the table", &loc.url))?
            .with_target_file_size(self.cfg.target_file_size_megabytes * 1024 * 1024);
        writer = writer.with_writer_properties(parquet_properties());
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
        Ok(Box::new(EpochWriter {
            loc: loc.clone(),
            writer: Some(writer),
            adds: Vec::new(),
            keep,
            rows: 0,
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
        let Some(epoch) = transaction_version(&table, pipeline_id).await? else {
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

fn parquet_properties() -> deltalake::parquet::file::properties::WriterProperties {
    use deltalake::parquet::basic::{Compression, ZstdLevel};
    deltalake::parquet::file::properties::WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_dictionary_page_size_limit(128 * 1024)
        .build()
}

struct EpochWriter {
    loc: TableLocation,
    writer: Option<RecordBatchWriter>,
    adds: Vec<Add>,
    keep: Option<Vec<usize>>,
    rows: u64,
}

impl EpochWriter {
    fn writer(&mut self) -> Result<&mut RecordBatchWriter> {
        self.writer
            .as_mut()
            .ok_or_else(|| Error::internal("the Delta writer was already prepared"))
    }
}

#[async_trait]
impl SinkWriter for EpochWriter {
    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        let batch = match &self.keep {
            Some(idx) => batch.project(idx).map_err(|e| {
                Error::new(ErrorKind::Schema, "cannot drop the new columns").with_source(e)
            })?,
            None => batch,
        };
        self.rows += batch.num_rows() as u64;
        let url = self.loc.url.clone();
        self.writer()?
            .write(batch)
            .await
            .map_err(|e| delta_err(e, "writing the table's files failed", &url))
    }

    async fn prepare(&mut self, epoch: Epoch) -> Result<Prepared> {
        let url = self.loc.url.clone();
        let mut w = self
            .writer
            .take()
            .ok_or_else(|| Error::internal("the Delta writer was already prepared"))?;
        self.adds = w
            .flush()
            .await
            .map_err(|e| delta_err(e, "finishing the table's files failed", &url))?;
        let bytes = self.adds.iter().map(|a| a.size.max(0) as u64).sum();
        Ok(Prepared::new(
            epoch,
            self.rows,
            0,
            bytes,
            self.adds.iter().map(|a| a.path.clone()).collect(),
        ))
    }

    async fn commit(&mut self, prepared: Prepared, marker: &CommitMarker) -> Result<CommitOutcome> {
        let url = self.loc.url.clone();
        let table = open(&self.loc).await?.ok_or_else(|| {
            Error::new(ErrorKind::NotFound, "the table disappeared")
                .with_context("table", url.as_str())
        })?;
        let pid = marker.pipeline_id.as_str();
        if transaction_version(&table, pid)
            .await?
            .is_some_and(|v| v >= marker.epoch.0 as i64)
        {
            return Ok(CommitOutcome::AlreadyCommitted);
        }
        let info = serde_json::json!({
            "pipeline": pid,
            "epoch": marker.epoch.0,
            "cursor": marker.cursor.as_ref().map(|c| c.as_str()),
        });
        let props = CommitProperties::default()
            .with_application_transaction(Transaction::new(pid, marker.epoch.0 as i64))
            .with_metadata([(MARKER_KEY.to_string(), info)]);
        let partition_by = {
            let p: Vec<String> = table
                .snapshot()
                .map_err(|e| delta_err(e, "the table has no state", &url))?
                .metadata()
                .partition_columns()
                .to_vec();
            (!p.is_empty()).then_some(p)
        };
        let actions: Vec<Action> = self.adds.iter().cloned().map(Action::Add).collect();
        let snapshot = table
            .snapshot()
            .map_err(|e| delta_err(e, "the table has no state", &url))?;
        let res = CommitBuilder::from(props)
            .with_actions(actions)
            .build(
                Some(snapshot),
                table.log_store(),
                DeltaOperation::Write {
                    mode: SaveMode::Append,
                    partition_by,
                    predicate: None,
                },
            )
            .await;
        match res {
            Ok(_) => {}
            Err(e) => {
                // A concurrent run of this pipeline may have committed the epoch.
                let again = open(&self.loc).await?;
                if let Some(t) = again
                    && transaction_version(&t, pid)
                        .await?
                        .is_some_and(|v| v >= marker.epoch.0 as i64)
                {
                    return Ok(CommitOutcome::AlreadyCommitted);
                }
                return Err(delta_err(e, "the Delta commit failed", &url)
                    .with_context("epoch", prepared.epoch));
            }
        }
        crash_point("delta.sink.after_commit").await;
        Ok(CommitOutcome::Committed)
    }

    async fn abort(&mut self, _prepared: Option<Prepared>) -> Result<()> {
        // Files already finalized are named by no log entry: invisible, removed by vacuum.
        if let Some(mut w) = self.writer.take() {
            w.reset();
        }
        self.adds.clear();
        Ok(())
    }
}
