//! A [`StreamTransform`] that quarantines rows: orders with a negative total are taken out of
//! the stream and sent, with the reason and the column, to the quarantine side channel; the
//! runner commits them with the good rows in the same epoch, so nothing is dropped silently.
//!
//! Run with `cargo run -p stratalake-core --example quarantine_transform`.

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use futures::StreamExt;
use std::sync::Arc;
use stratalake_core::{
    BatchStreamAdapter, Context, InMemoryCheckpointStore, PipelineBuilder, QuarantineRecord,
    Result, SendableBatchStream, StreamTransform,
};
use stratalake_testkit::{MemorySink, MemorySource};

/// Rejects rows whose `total_cents` is negative.
#[derive(Debug)]
struct NoNegativeTotals;

impl NoNegativeTotals {
    /// The rows kept, and a quarantine record for each row rejected.
    fn split(batch: &RecordBatch) -> Result<(RecordBatch, Vec<QuarantineRecord>)> {
        let ids = batch.column(0).as_string::<i32>();
        let totals = batch.column(1).as_primitive::<Int64Type>();
        let keep: BooleanArray = totals
            .iter()
            .map(|t| Some(t.is_none_or(|t| t >= 0)))
            .collect();
        let rejected = (0..batch.num_rows())
            .filter(|&i| !keep.value(i))
            .map(|i| QuarantineRecord {
                component: "transform:no_negative_totals".into(),
                location: format!("order {}", ids.value(i)),
                position: Some(i as u64),
                raw: format!(
                    r#"{{"order_id":"{}","total_cents":{}}}"#,
                    ids.value(i),
                    totals.value(i)
                ),
                reason: format!("`total_cents` is negative: {}", totals.value(i)),
                column: Some("total_cents".into()),
            })
            .collect();
        Ok((
            arrow_select::filter::filter_record_batch(batch, &keep)?,
            rejected,
        ))
    }
}

impl StreamTransform for NoNegativeTotals {
    fn name(&self) -> &str {
        "no_negative_totals"
    }

    // Declared, so a pipeline refuses this transform in front of a sink without quarantine.
    fn quarantines(&self) -> bool {
        true
    }

    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        Ok(input.clone())
    }

    fn transform(&self, input: SendableBatchStream, ctx: &Context) -> Result<SendableBatchStream> {
        let schema = input.schema();
        let ctx = ctx.clone();
        let out = input.then(move |batch| {
            let ctx = ctx.clone();
            async move {
                let (kept, rejected) = Self::split(&batch?)?;
                // Awaiting the side channel is backpressure, like a write.
                ctx.quarantine("transform:no_negative_totals", rejected)
                    .await?;
                Ok(kept)
            }
        });
        Ok(BatchStreamAdapter::boxed(schema, Box::pin(out)))
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Utf8, false),
        Field::new("total_cents", DataType::Int64, true),
    ]));
    let source = Arc::new(MemorySource::new(schema.clone()));
    let ids: ArrayRef = Arc::new(StringArray::from(vec!["o-1", "o-2", "o-3", "o-4"]));
    let totals: ArrayRef = Arc::new(Int64Array::from(vec![
        Some(1250),
        Some(-5),
        None,
        Some(-99),
    ]));
    source.append([RecordBatch::try_new(schema, vec![ids, totals])?]);

    let sink = MemorySink::new();
    let pipeline = PipelineBuilder::new(
        "orders",
        source,
        Arc::new(sink.clone()),
        Arc::new(InMemoryCheckpointStore::new()),
    )
    .with_stream_transform(Arc::new(NoNegativeTotals))
    .build()?;
    let report = pipeline.run().await?;
    println!(
        "{} rows written, {} quarantined",
        report.rows_written, report.rows_quarantined
    );
    assert_eq!((report.rows_written, report.rows_quarantined), (2, 2));

    let quarantined = sink.visible_quarantine();
    let reasons: Vec<String> = quarantined
        .iter()
        .flat_map(|b| {
            let col = b
                .column_by_name("reason")
                .expect("reason")
                .as_string::<i32>();
            col.iter().flatten().map(str::to_string).collect::<Vec<_>>()
        })
        .collect();
    for r in &reasons {
        println!("quarantined: {r}");
    }
    assert_eq!(
        reasons,
        [
            "`total_cents` is negative: -5",
            "`total_cents` is negative: -99"
        ]
    );

    // The same transform in front of a sink that keeps no quarantine is refused up front.
    let refused = PipelineBuilder::new(
        "orders",
        Arc::new(MemorySource::new(Arc::new(Schema::empty()))),
        Arc::new(MemorySink::new().without_quarantine()),
        Arc::new(InMemoryCheckpointStore::new()),
    )
    .with_stream_transform(Arc::new(NoNegativeTotals))
    .build();
    assert!(
        refused.is_err(),
        "a quarantining transform needs a sink with a quarantine"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_example_runs() {
        super::main().expect("the example runs");
    }
}
