//! Generic batch transforms that need nothing but Arrow.

use crate::{BatchTransform, Context, Error, Result};
use arrow_array::RecordBatch;
use arrow_schema::{Schema, SchemaRef};
use std::sync::Arc;

/// Keeps the named columns, in the given order.
#[derive(Debug, Clone)]
pub struct Select {
    columns: Vec<String>,
}

impl Select {
    /// Keep `columns`.
    pub fn new(columns: Vec<String>) -> Self {
        Self { columns }
    }

    fn indices(&self, schema: &Schema) -> Result<Vec<usize>> {
        self.columns
            .iter()
            .map(|c| {
                schema.index_of(c).map_err(|_| {
                    Error::config("select names a column the input does not have")
                        .with_context("column", c)
                        .with_context(
                            "available",
                            schema
                                .fields()
                                .iter()
                                .map(|f| f.name().as_str())
                                .collect::<Vec<_>>()
                                .join(", "),
                        )
                })
            })
            .collect()
    }
}

impl BatchTransform for Select {
    fn name(&self) -> &str {
        "select"
    }

    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        Ok(Arc::new(input.project(&self.indices(input)?)?))
    }

    fn apply(&self, batch: RecordBatch, _ctx: &Context) -> Result<RecordBatch> {
        let idx = self.indices(&batch.schema())?;
        Ok(batch.project(&idx)?)
    }
}
