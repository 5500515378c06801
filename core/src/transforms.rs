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

/// A batch transform run as a stream transform: for a batch step that must come after a
/// stream step (the runner applies batch transforms per split, before stream transforms).
/// Each batch is transformed on the blocking pool, in order.
#[derive(Debug, Clone)]
pub struct OnStream(pub Arc<dyn BatchTransform>);

impl crate::StreamTransform for OnStream {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        self.0.output_schema(input)
    }

    fn transform(
        &self,
        input: crate::SendableBatchStream,
        ctx: &Context,
    ) -> Result<crate::SendableBatchStream> {
        use futures::StreamExt;
        let schema = self.0.output_schema(&input.schema())?;
        let (t, ctx) = (self.0.clone(), ctx.clone());
        let out = input.then(move |b| {
            let (t, ctx) = (t.clone(), ctx.clone());
            async move {
                let b = b?;
                let component = format!("transform {}", t.name());
                crate::panic::join_blocking(
                    &component,
                    tokio::task::spawn_blocking(move || t.apply(b, &ctx)),
                )
                .await
            }
        });
        Ok(crate::BatchStreamAdapter::boxed(schema, Box::pin(out)))
    }
}
