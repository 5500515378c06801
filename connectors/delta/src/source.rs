//! [`DeltaSource`]: a table's rows at a pinned version, then only the changes of the versions
//! after the committed one (Delta's change data feed), so each layer reads its upstream
//! incrementally.
//!
//! Every row carries `_change_type` (`insert` for the first snapshot; then `insert`,
//! `update_preimage`, `update_postimage`, `delete`), `_commit_version` and `_commit_timestamp`.

use crate::table::{TableLocation, delta_err, open};
use arrow_array::{RecordBatch, new_null_array};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use deltalake::DeltaTableBuilder;
use deltalake::datafusion::physical_plan::execute_stream;
use futures::{StreamExt, TryStreamExt, stream};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use stratalake_core::{
    BatchStreamAdapter, Context, Cursor, Error, ErrorKind, ReadPlan, ReadRequest, Result,
    SendableBatchStream, Source, Split,
};

const PREFIX: &str = "delta/v1:";
/// The change type column.
pub const CHANGE_TYPE: &str = "_change_type";
/// The commit version column.
pub const COMMIT_VERSION: &str = "_commit_version";
/// The commit timestamp column.
pub const COMMIT_TIMESTAMP: &str = "_commit_timestamp";

/// Reads a Delta table incrementally.
#[derive(Debug, Clone)]
pub struct DeltaSource {
    loc: TableLocation,
    schema: SchemaRef,
    /// The table's columns plus the change columns: what every batch is aligned to first.
    changes: SchemaRef,
    /// Only the rows as the table now holds them: no pre-images, no deletes, no change
    /// columns.
    rows_only: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct Spec {
    /// The version already read (`None`: read the snapshot at `to`).
    from: Option<i64>,
    to: i64,
}

impl DeltaSource {
    /// A source over the table at `loc`; its schema is the table's at its latest version plus
    /// the change columns (columns added later are not read until the source is recreated).
    ///
    /// # Errors
    /// NotFound when there is no table.
    pub async fn try_new(loc: TableLocation) -> Result<Self> {
        let table = open(&loc).await?.ok_or_else(|| {
            Error::new(ErrorKind::NotFound, "there is no Delta table here")
                .with_context("table", loc.url.as_str())
        })?;
        let base = table
            .snapshot()
            .map_err(|e| delta_err(e, "the table has no state", &loc.url))?
            .snapshot()
            .arrow_schema();
        // Delta's UTC timestamps are read with the `+00:00` zone Strata uses everywhere
        // (the same instants; arrow needs no time zone database for an offset).
        let mut fields: Vec<Arc<Field>> = base
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Timestamp(u, Some(tz)) if tz.as_ref() == "UTC" => Arc::new(
                    f.as_ref()
                        .clone()
                        .with_data_type(DataType::Timestamp(*u, Some("+00:00".into()))),
                ),
                _ => f.clone(),
            })
            .collect();
        fields.push(Arc::new(Field::new(CHANGE_TYPE, DataType::Utf8, false)));
        fields.push(Arc::new(Field::new(COMMIT_VERSION, DataType::Int64, false)));
        fields.push(Arc::new(Field::new(
            COMMIT_TIMESTAMP,
            DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())),
            true,
        )));
        let changes = Arc::new(Schema::new(fields));
        Ok(Self {
            loc,
            schema: changes.clone(),
            changes,
            rows_only: false,
        })
    }

    /// Read only the new and updated rows as the table holds them (inserts and post-images;
    /// pre-images and deletes left out) and without the change columns: what a model that
    /// MERGEs or appends its input's new rows reads.
    #[must_use]
    pub fn rows_only(mut self) -> Self {
        if !self.rows_only {
            let n = self.schema.fields().len() - 3;
            let fields: Vec<Arc<Field>> = self.schema.fields().iter().take(n).cloned().collect();
            self.schema = Arc::new(Schema::new(fields));
            self.rows_only = true;
        }
        self
    }

    /// Cast `batch`'s columns to the source schema by name (null for missing ones).
    fn align(
        schema: &SchemaRef,
        batch: &RecordBatch,
        fill: Option<(i64, bool)>,
    ) -> Result<RecordBatch> {
        let n = batch.num_rows();
        let cols = schema
            .fields()
            .iter()
            .map(|f| {
                if let Some((version, _)) = fill {
                    match f.name().as_str() {
                        CHANGE_TYPE => {
                            return Ok(Arc::new(arrow_array::StringArray::from(vec!["insert"; n]))
                                as arrow_array::ArrayRef);
                        }
                        COMMIT_VERSION => {
                            return Ok(Arc::new(arrow_array::Int64Array::from(vec![version; n]))
                                as arrow_array::ArrayRef);
                        }
                        _ => {}
                    }
                }
                match batch.column_by_name(f.name()) {
                    Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
                    Some(c) => arrow_cast::cast(c, f.data_type()).map_err(|e| {
                        Error::new(ErrorKind::Schema, "a column changed type in the table")
                            .with_context("column", f.name())
                            .with_source(e)
                    }),
                    None => Ok(new_null_array(f.data_type(), n)),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        RecordBatch::try_new(schema.clone(), cols).map_err(|e| {
            Error::new(ErrorKind::Schema, "a batch does not fit the source schema").with_source(e)
        })
    }
}

impl DeltaSource {
    /// The table version a Delta source's cursor stands at (what the source read up to).
    ///
    /// # Errors
    /// Conflict when the cursor was not written by a Delta source.
    pub fn cursor_version(c: &Cursor) -> Result<i64> {
        parse(c)
    }
}

fn parse(c: &Cursor) -> Result<i64> {
    c.as_str()
        .strip_prefix(PREFIX)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Conflict,
                "the checkpoint cursor was not written by a Delta source",
            )
        })
}

#[async_trait]
impl Source for DeltaSource {
    fn name(&self) -> &str {
        "delta"
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn check(&self, _ctx: &Context) -> Result<()> {
        open(&self.loc).await?.map(|_| ()).ok_or_else(|| {
            Error::new(ErrorKind::NotFound, "there is no Delta table here")
                .with_context("table", self.loc.url.as_str())
        })
    }

    async fn plan(&self, req: &ReadRequest, _ctx: &Context) -> Result<ReadPlan> {
        let table = open(&self.loc).await?.ok_or_else(|| {
            Error::new(ErrorKind::NotFound, "there is no Delta table here")
                .with_context("table", self.loc.url.as_str())
        })?;
        let to = table.version().unwrap_or(0) as i64;
        let from = req.from.as_ref().map(parse).transpose()?;
        if from.is_some_and(|f| f >= to) {
            return Ok(ReadPlan::new(Vec::new(), req.from.clone()));
        }
        let spec = Spec { from, to };
        Ok(ReadPlan::new(
            vec![Split::encode(
                match from {
                    Some(f) => format!("{} versions {}..={to}", self.loc.url, f + 1),
                    None => format!("{} at version {to}", self.loc.url),
                },
                &spec,
                None,
            )?],
            Some(Cursor::new(format!("{PREFIX}{to}"))),
        ))
    }

    fn read(&self, split: &Split, ctx: &Context) -> Result<SendableBatchStream> {
        let spec: Spec = split.decode("a Delta source")?;
        let (loc, out) = (self.loc.clone(), self.schema.clone());
        let rows_only = self.rows_only;
        // Batches are aligned to the full change schema, then cut down when only rows are read.
        let schema = self.changes.clone();
        let kept = out.clone();
        let s = stream::once(async move {
            let url = loc.url.clone();
            let table = DeltaTableBuilder::from_url(url.clone())
                .map_err(|e| delta_err(e, "invalid table URL", &url))?
                .with_storage_backend(loc.store.clone(), url.clone())
                .with_version(spec.to as u64)
                .load()
                .await
                .map_err(|e| delta_err(e, "cannot load the table version", &url))?;
            let df_err = move |e: deltalake::datafusion::error::DataFusionError| {
                Error::new(ErrorKind::Data, "reading the table failed")
                    .with_context("table", url.as_str())
                    .with_source(e)
            };
            let (batches, fill) = match spec.from {
                None => {
                    let (_, st) = table
                        .scan_table()
                        .await
                        .map_err(|e| delta_err(e, "cannot scan the table", &loc.url))?;
                    (st, Some((spec.to, true)))
                }
                Some(from) => {
                    let ctx = deltalake::delta_datafusion::create_session().into_inner();
                    let plan = table
                        .scan_cdf()
                        .with_starting_version((from + 1) as u64)
                        .with_ending_version(spec.to as u64)
                        .build(&ctx.state(), None)
                        .await
                        .map_err(|e| delta_err(e, "cannot read the table's changes", &loc.url))?;
                    let st = execute_stream(plan, ctx.task_ctx()).map_err(df_err.clone())?;
                    (st, None)
                }
            };
            Ok::<_, Error>(batches.map(move |b| {
                let b = b.map_err(df_err.clone())?;
                let b = DeltaSource::align(&schema, &b, fill)?;
                if rows_only {
                    current_rows(&b, &kept)
                } else {
                    Ok(b)
                }
            }))
        })
        .try_flatten();
        let s = BatchStreamAdapter::boxed(out, Box::pin(s));
        Ok(stratalake_core::rebatch(s, ctx.batch_size()))
    }
}

/// The inserts and post-images of a change batch, without the change columns.
fn current_rows(b: &RecordBatch, out: &SchemaRef) -> Result<RecordBatch> {
    use arrow_array::cast::AsArray;
    let kinds = b
        .column(b.num_columns() - 3)
        .as_string_opt::<i32>()
        .ok_or_else(|| Error::internal("the change type is not text"))?;
    let keep: arrow_array::BooleanArray = kinds
        .iter()
        .map(|k| Some(matches!(k, Some("insert" | "update_postimage"))))
        .collect();
    let cols = b.columns()[..out.fields().len()].to_vec();
    let rows = RecordBatch::try_new(out.clone(), cols)
        .map_err(|e| Error::internal("cannot cut the change columns").with_source(e))?;
    arrow_select::filter::filter_record_batch(&rows, &keep)
        .map_err(|e| Error::internal("cannot filter the changes").with_source(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_foreign_cursor_is_a_conflict() {
        assert_eq!(
            parse(&Cursor::new("files/v1:x")).unwrap_err().kind(),
            ErrorKind::Conflict
        );
        assert_eq!(parse(&Cursor::new("delta/v1:7")).unwrap(), 7);
    }
}
