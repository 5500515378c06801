//! The lake's `_runs` table: one row per node (pipeline or model) per build, so every worker
//! (and a scheduler) sees the same history of what ran, when, how it ended and what it wrote.

use arrow_array::{
    ArrayRef, Date32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use std::sync::{Arc, LazyLock};
use stratalake_core::{Error, Result};
use stratalake_delta::deltalake::operations::write::SchemaMode;
use stratalake_delta::deltalake::protocol::SaveMode;
use stratalake_delta::{TableLocation, delta_err};

/// One node's run in one build.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunRecord {
    /// The build's run id.
    pub run_id: String,
    /// The node (`silver.orders`).
    pub node: String,
    /// `pipeline`, `table`, `incremental`, `merge`, `append`.
    pub kind: String,
    /// When it started and ended (microseconds since the epoch, UTC).
    pub started_micros: i64,
    /// When it ended.
    pub ended_micros: i64,
    /// `built`, `up_to_date`, `skipped`, `failed`.
    pub status: String,
    /// What it did or why not (the build's line).
    pub detail: String,
    /// The error kind, when it failed.
    pub error_kind: Option<String>,
    /// Rows read from the source (pipelines and streaming models).
    pub rows_read: Option<i64>,
    /// Rows written (pipelines and streaming models).
    pub rows_written: Option<i64>,
    /// Rows quarantined.
    pub rows_quarantined: Option<i64>,
    /// Bytes written.
    pub bytes_written: Option<i64>,
    /// The epoch committed (pipelines and streaming models).
    pub epoch: Option<i64>,
    /// The table's version after the run.
    pub table_version: Option<i64>,
    /// The logical date the run was about (`--logical-date`, Airflow's `ds`), in days since
    /// 1970-01-01.
    pub logical_date_days: Option<i32>,
    /// The source position committed (the connector's opaque cursor, redacted).
    pub cursor: Option<String>,
}

impl RunRecord {
    /// A run of `node` (`kind`) in build `run_id`.
    pub fn new(run_id: &str, node: &str, kind: &str) -> Self {
        Self {
            run_id: run_id.to_string(),
            node: node.to_string(),
            kind: kind.to_string(),
            ..Self::default()
        }
    }
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("node", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("started_at", ts(), false),
        Field::new("ended_at", ts(), false),
        Field::new("status", DataType::Utf8, false),
        Field::new("detail", DataType::Utf8, false),
        Field::new("error_kind", DataType::Utf8, true),
        Field::new("rows_written", DataType::Int64, true),
        Field::new("rows_quarantined", DataType::Int64, true),
        Field::new("bytes_written", DataType::Int64, true),
        Field::new("epoch", DataType::Int64, true),
        Field::new("table_version", DataType::Int64, true),
        Field::new("logical_date", DataType::Date32, true),
        Field::new("rows_read", DataType::Int64, true),
        Field::new("cursor", DataType::Utf8, true),
    ]))
});

/// The `_runs` table.
#[derive(Debug, Clone)]
pub struct RunsTable {
    loc: TableLocation,
}

impl RunsTable {
    /// The table at `loc`.
    pub fn new(loc: TableLocation) -> Self {
        Self { loc }
    }

    /// Where it is.
    pub fn location(&self) -> &TableLocation {
        &self.loc
    }

    /// Its schema.
    pub fn schema() -> SchemaRef {
        SCHEMA.clone()
    }

    /// The records as rows.
    ///
    /// # Errors
    /// Internal when the batch cannot be made.
    pub fn batch(records: &[RunRecord]) -> Result<RecordBatch> {
        let text = |f: &dyn Fn(&RunRecord) -> String| -> ArrayRef {
            Arc::new(records.iter().map(|r| Some(f(r))).collect::<StringArray>())
        };
        let int = |f: &dyn Fn(&RunRecord) -> Option<i64>| -> ArrayRef {
            Arc::new(records.iter().map(f).collect::<Int64Array>())
        };
        let ts = |f: &dyn Fn(&RunRecord) -> i64| -> ArrayRef {
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(records.iter().map(f))
                    .with_timezone("UTC"),
            )
        };
        let cols = vec![
            text(&|r| r.run_id.clone()),
            text(&|r| r.node.clone()),
            text(&|r| r.kind.clone()),
            ts(&|r| r.started_micros),
            ts(&|r| r.ended_micros),
            text(&|r| r.status.clone()),
            text(&|r| r.detail.clone()),
            Arc::new(
                records
                    .iter()
                    .map(|r| r.error_kind.clone())
                    .collect::<StringArray>(),
            ),
            int(&|r| r.rows_written),
            int(&|r| r.rows_quarantined),
            int(&|r| r.bytes_written),
            int(&|r| r.epoch),
            int(&|r| r.table_version),
            Arc::new(
                records
                    .iter()
                    .map(|r| r.logical_date_days)
                    .collect::<Date32Array>(),
            ),
            int(&|r| r.rows_read),
            Arc::new(
                records
                    .iter()
                    .map(|r| r.cursor.clone())
                    .collect::<StringArray>(),
            ),
        ];
        RecordBatch::try_new(SCHEMA.clone(), cols)
            .map_err(|e| Error::internal("cannot assemble the run records").with_source(e))
    }

    /// Append `records` (one commit; concurrent appends from other builds do not conflict).
    ///
    /// # Errors
    /// When the table cannot be written.
    pub async fn append(&self, records: &[RunRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let batch = Self::batch(records)?;
        let table = match self.loc.load().await? {
            Some(t) => t,
            None => self.loc.handle()?,
        };
        table
            .write(vec![batch])
            .with_save_mode(SaveMode::Append)
            // A history written before a column was added takes the new column.
            .with_schema_mode(SchemaMode::Merge)
            .await
            .map_err(|e| delta_err(e, "cannot record the run", &self.loc.url))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_become_rows_with_nulls_where_nothing_is_known() {
        let mut r = RunRecord::new("run-1", "gold.x", "table");
        r.status = "built".into();
        r.table_version = Some(3);
        let b = RunsTable::batch(&[r, RunRecord::new("run-1", "silver.y", "merge")]).unwrap();
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.schema(), RunsTable::schema());
        let v = b.column_by_name("table_version").unwrap();
        assert_eq!((v.null_count(), v.len()), (1, 2));
    }
}
