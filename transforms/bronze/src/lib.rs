#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

use arrow_array::{
    ArrayRef, Date32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use std::sync::Arc;
use stratalake_core::{BatchTransform, Context, Error, ErrorKind, Result};
use stratalake_delta::{DeltaSink, DeltaSinkConfig, SchemaEvolution, TableLocation};

/// When the row was ingested (UTC).
pub const INGESTED_AT: &str = "_ingested_at";
/// The ingest date, the partition column.
pub const INGEST_DATE: &str = "_ingest_date";
/// Where the row came from (the source's name: `orders.ndjson`, `rest:/orders`).
pub const SOURCE: &str = "_source";
/// The pipeline that loaded it.
pub const PIPELINE: &str = "_pipeline";
/// The epoch that loaded it.
pub const EPOCH: &str = "_epoch";
/// The source position the epoch read up to (its cursor).
pub const SOURCE_POSITION: &str = "_source_position";

/// The lineage columns, appended to every row as it arrived.
pub fn lineage_fields() -> Vec<Field> {
    vec![
        Field::new(
            INGESTED_AT,
            DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
            false,
        ),
        Field::new(INGEST_DATE, DataType::Date32, false),
        Field::new(SOURCE, DataType::Utf8, false),
        Field::new(PIPELINE, DataType::Utf8, false),
        Field::new(EPOCH, DataType::Int64, false),
        Field::new(SOURCE_POSITION, DataType::Utf8, true),
    ]
}

/// Appends the lineage columns (a stateless batch transform).
#[derive(Debug, Clone)]
pub struct Lineage {
    source: String,
    /// A fixed clock for reproducible tests; the wall clock otherwise.
    now: Option<chrono::DateTime<chrono::Utc>>,
}

impl Lineage {
    /// Lineage for rows read from `source`.
    pub fn new(source: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            now: None,
        }
    }

    /// With a fixed ingest time.
    #[must_use]
    pub fn with_clock(mut self, now: chrono::DateTime<chrono::Utc>) -> Self {
        self.now = Some(now);
        self
    }
}

impl BatchTransform for Lineage {
    fn name(&self) -> &str {
        "bronze_lineage"
    }

    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        let mut fields: Vec<Arc<Field>> = input.fields().iter().cloned().collect();
        for f in lineage_fields() {
            if input.field_with_name(f.name()).is_ok() {
                return Err(Error::new(
                    ErrorKind::Schema,
                    "the input already has a lineage column",
                )
                .with_context("column", f.name()));
            }
            fields.push(Arc::new(f));
        }
        Ok(Arc::new(Schema::new_with_metadata(
            fields,
            input.metadata().clone(),
        )))
    }

    fn apply(&self, batch: RecordBatch, ctx: &Context) -> Result<RecordBatch> {
        let n = batch.num_rows();
        let now = self.now.unwrap_or_else(chrono::Utc::now);
        let days = (now.timestamp().div_euclid(86_400)) as i32;
        let epoch = ctx.epoch().map_or(0, |e| e.0 as i64);
        let position = ctx.position().map(|c| c.as_str().to_string());
        let schema = self.output_schema(&batch.schema())?;
        let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
        cols.push(Arc::new(
            TimestampMicrosecondArray::from(vec![now.timestamp_micros(); n])
                .with_timezone("+00:00"),
        ));
        cols.push(Arc::new(Date32Array::from(vec![days; n])));
        cols.push(Arc::new(StringArray::from(vec![self.source.as_str(); n])));
        cols.push(Arc::new(StringArray::from(vec![ctx.pipeline_id(); n])));
        cols.push(Arc::new(Int64Array::from(vec![epoch; n])));
        cols.push(Arc::new(StringArray::from(vec![position.as_deref(); n])));
        RecordBatch::try_new(schema, cols)
            .map_err(|e| Error::internal("cannot append the lineage columns").with_source(e))
    }
}

/// The bronze sink for a table: append-only, partitioned by ingest date, new columns added
/// (bronze keeps whatever arrives), rejected records in `<table>/_quarantine`.
///
/// # Errors
/// Config for an invalid location.
pub fn bronze_sink(table: TableLocation) -> Result<DeltaSink> {
    DeltaSink::try_new(
        table,
        DeltaSinkConfig::default()
            .with_partition_by(&[INGEST_DATE])
            .with_schema_evolution(SchemaEvolution::AddColumns),
    )
}
