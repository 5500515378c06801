//! A custom [`Source`]: an append-only ledger whose entries are numbered. The source plans
//! ranges of entry numbers as splits, pins the end of the epoch in its cursor, and reads each
//! split lazily; the runner commits the cursor with the data, so a rerun reads only the
//! entries appended since.
//!
//! Run with `cargo run -p stratalake-core --example custom_source`.

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use std::sync::{Arc, Mutex};
use stratalake_core::{
    BatchStreamAdapter, Context, Cursor, InMemoryCheckpointStore, PipelineBuilder, ReadPlan,
    ReadRequest, Result, RunOutcome, SendableBatchStream, Source, Split,
};
use stratalake_testkit::MemorySink;

/// The system we read from: entries appended over time, numbered from 1.
#[derive(Debug, Default)]
struct Ledger {
    entries: Mutex<Vec<String>>,
}

/// Reads the ledger in splits of `per_split` entries.
#[derive(Debug)]
struct LedgerSource {
    ledger: Arc<Ledger>,
    per_split: usize,
    schema: SchemaRef,
}

/// The cursor: the last entry number committed. Encoded by core's codec (tagged, versioned).
const TAG: &str = "ledger:v1:";

impl LedgerSource {
    fn new(ledger: Arc<Ledger>) -> Self {
        let schema = Arc::new(Schema::new(vec![
            Field::new("entry", DataType::Int64, false),
            Field::new("text", DataType::Utf8, false),
        ]));
        Self {
            ledger,
            per_split: 2,
            schema,
        }
    }
}

#[async_trait]
impl Source for LedgerSource {
    fn name(&self) -> &str {
        "ledger"
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn plan(&self, req: &ReadRequest, _ctx: &Context) -> Result<ReadPlan> {
        let done: usize = match &req.from {
            Some(c) => c.decode(TAG, "a ledger source")?,
            None => 0,
        };
        // Pin the end now: entries appended while this epoch runs belong to the next one.
        let end = self.ledger.entries.lock().expect("ledger").len();
        let splits = (done..end)
            .step_by(self.per_split)
            .map(|from| {
                let to = (from + self.per_split).min(end);
                // The spec is the split's own description (JSON through the split codec), so
                // splits can be shipped to other workers.
                Split::encode(format!("ledger[{}..={to}]", from + 1), &(from, to), None)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ReadPlan::new(splits, Some(Cursor::encode(TAG, &end)?)))
    }

    fn read(&self, split: &Split, _ctx: &Context) -> Result<SendableBatchStream> {
        let (from, to): (usize, usize) = split.decode("a ledger source")?;
        let (ledger, schema) = (self.ledger.clone(), self.schema.clone());
        // Lazy: nothing is read until the runner polls the stream.
        let once = futures::stream::once(async move {
            let texts: Vec<String> = ledger.entries.lock().expect("ledger")[from..to].to_vec();
            let numbers = Int64Array::from_iter_values((from as i64 + 1)..=(to as i64));
            let columns: Vec<ArrayRef> =
                vec![Arc::new(numbers), Arc::new(StringArray::from(texts))];
            Ok::<_, stratalake_core::Error>(RecordBatch::try_new(schema, columns)?)
        });
        Ok(BatchStreamAdapter::boxed(
            self.schema.clone(),
            Box::pin(once),
        ))
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let ledger = Arc::new(Ledger::default());
    let append = |texts: &[&str]| {
        let mut e = ledger.entries.lock().expect("ledger");
        e.extend(texts.iter().map(|t| (*t).to_string()));
    };
    append(&["opened", "paid", "shipped"]);

    let sink = MemorySink::new();
    let pipeline = PipelineBuilder::new(
        "ledger",
        Arc::new(LedgerSource::new(ledger.clone())),
        Arc::new(sink.clone()),
        Arc::new(InMemoryCheckpointStore::new()),
    )
    .build()?;

    let first = pipeline.run().await?;
    println!(
        "epoch {}: {} rows in {} splits",
        first.epoch.0, first.rows_written, first.splits
    );
    assert_eq!(
        (first.outcome, first.rows_written, first.splits),
        (RunOutcome::Committed, 3, 2)
    );

    append(&["returned"]);
    let second = pipeline.run().await?;
    println!("epoch {}: {} rows", second.epoch.0, second.rows_written);
    assert_eq!(second.rows_written, 1, "only the entry appended since");

    assert_eq!(pipeline.run().await?.outcome, RunOutcome::NothingNew);
    assert_eq!(sink.visible_rows(), 4, "every entry once");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_example_runs() {
        super::main().expect("the example runs");
    }
}
