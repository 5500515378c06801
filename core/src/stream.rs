//! [`BatchStream`]: a stream of Arrow record batches that knows its schema.

use crate::Result;
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use futures::Stream;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

/// A stream of [`RecordBatch`]es, every one of which has [`BatchStream::schema`].
pub trait BatchStream: Stream<Item = Result<RecordBatch>> {
    /// The schema of every batch this stream yields.
    fn schema(&self) -> SchemaRef;
}

/// A boxed, sendable [`BatchStream`].
pub type SendableBatchStream = Pin<Box<dyn BatchStream + Send>>;

/// Adapts any stream of batches plus a schema into a [`BatchStream`].
#[derive(Debug)]
pub struct BatchStreamAdapter<S> {
    schema: SchemaRef,
    inner: S,
}

impl<S> BatchStreamAdapter<S>
where
    S: Stream<Item = Result<RecordBatch>> + Send + Unpin + 'static,
{
    /// Wrap `inner`, whose batches all have `schema`.
    pub fn new(schema: SchemaRef, inner: S) -> Self {
        Self { schema, inner }
    }

    /// Wrap and box in one step.
    pub fn boxed(schema: SchemaRef, inner: S) -> SendableBatchStream {
        Box::pin(Self::new(schema, inner))
    }
}

impl<S> Stream for BatchStreamAdapter<S>
where
    S: Stream<Item = Result<RecordBatch>> + Unpin,
{
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

impl<S> BatchStream for BatchStreamAdapter<S>
where
    S: Stream<Item = Result<RecordBatch>> + Unpin,
{
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

/// A stream that yields nothing, with `schema`.
pub fn empty_stream(schema: SchemaRef) -> SendableBatchStream {
    BatchStreamAdapter::boxed(schema, futures::stream::empty())
}

/// `input` cut and joined into batches of `rows` rows (the last may be shorter), for sources
/// whose reader decides its own batch sizes (a Delta scan, a warehouse's result chunks) so
/// that every source honours [`crate::Context::batch_size`]. Lazy like `input`; the first
/// error ends the stream. Rows are copied only to join short batches: a batch arriving with
/// nothing buffered leaves as zero-copy slices of `rows` rows, its tail buffered.
pub fn rebatch(input: SendableBatchStream, rows: usize) -> SendableBatchStream {
    use arrow_select::coalesce::BatchCoalescer;
    use futures::StreamExt;
    let rows = rows.max(1);
    let schema = input.schema();
    let coalescer = BatchCoalescer::new(schema.clone(), rows);
    // Slices ready to go out, in order: at most one input batch's worth, sharing its buffers.
    let ready = std::collections::VecDeque::new();
    let state = (input, coalescer, ready, false);
    let out = futures::stream::unfold(
        state,
        move |(mut input, mut co, mut ready, mut done)| async move {
            loop {
                if let Some(b) = ready.pop_front() {
                    return Some((Ok(b), (input, co, ready, done)));
                }
                if let Some(b) = co.next_completed_batch() {
                    return Some((Ok(b), (input, co, ready, done)));
                }
                if done {
                    return None;
                }
                let step = match input.next().await {
                    Some(Ok(b)) if co.get_buffered_rows() == 0 && b.num_rows() >= rows => {
                        let full = b.num_rows() / rows * rows;
                        ready.extend((0..full).step_by(rows).map(|at| b.slice(at, rows)));
                        if full < b.num_rows() {
                            co.push_batch(b.slice(full, b.num_rows() - full))
                        } else {
                            Ok(())
                        }
                    }
                    Some(Ok(b)) => co.push_batch(b),
                    Some(Err(e)) => return Some((Err(e), (input, co, ready, true))),
                    None => {
                        done = true;
                        co.finish_buffered_batch()
                    }
                };
                if let Err(e) = step {
                    ready.clear();
                    return Some((Err(e.into()), (input, co, ready, true)));
                }
            }
        },
    );
    BatchStreamAdapter::boxed(schema, Box::pin(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, Int64Array};
    use arrow_schema::{DataType, Field, Schema};
    use futures::{StreamExt, TryStreamExt};
    use std::sync::Arc;

    fn batch(schema: &SchemaRef, range: std::ops::Range<i64>) -> RecordBatch {
        let col: ArrayRef = Arc::new(Int64Array::from_iter_values(range));
        RecordBatch::try_new(schema.clone(), vec![col]).expect("batch")
    }

    #[tokio::test]
    async fn rebatch_slices_a_batch_that_arrives_with_nothing_buffered_without_copying() {
        let schema: SchemaRef =
            Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let big = batch(&schema, 0..20);
        let base = big.column(0).to_data().buffers()[0].as_ptr();
        let input = vec![
            Ok(big),
            Ok(batch(&schema, 20..23)),
            Ok(batch(&schema, 23..40)),
        ];
        let s = BatchStreamAdapter::boxed(schema.clone(), futures::stream::iter(input));
        let out: Vec<RecordBatch> = rebatch(s, 8).try_collect().await.expect("rows");
        let sizes: Vec<usize> = out.iter().map(RecordBatch::num_rows).collect();
        assert_eq!(sizes, [8, 8, 8, 8, 8]);
        // The first two are slices of the first batch: views into its buffer, rows 0 and 8 on.
        for (i, b) in out.iter().take(2).enumerate() {
            let at = b.column(0).to_data().buffers()[0].as_ptr() as usize;
            assert_eq!(at, base as usize + i * 8 * 8, "batch {i} was copied");
        }
        let all: Vec<i64> = out
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .expect("ints")
                    .values()
                    .to_vec()
            })
            .collect();
        assert_eq!(all, (0..40).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn rebatch_cuts_and_joins_to_the_asked_size_keeping_every_row_in_order() {
        let schema: SchemaRef =
            Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let input = vec![
            Ok(batch(&schema, 0..3)),
            Ok(batch(&schema, 3..20)),
            Ok(batch(&schema, 20..21)),
            Ok(batch(&schema, 21..25)),
        ];
        let s = BatchStreamAdapter::boxed(schema.clone(), futures::stream::iter(input));
        let out: Vec<RecordBatch> = rebatch(s, 8).try_collect().await.expect("rows");
        let sizes: Vec<usize> = out.iter().map(RecordBatch::num_rows).collect();
        assert_eq!(sizes, [8, 8, 8, 1]);
        let all: Vec<i64> = out
            .iter()
            .flat_map(|b| {
                let c = b
                    .column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .expect("i64");
                c.values().to_vec()
            })
            .collect();
        assert_eq!(all, (0..25).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn rebatch_passes_an_error_on_and_ends() {
        let schema: SchemaRef =
            Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let input = vec![
            Ok(batch(&schema, 0..3)),
            Err(crate::Error::internal("boom")),
            Ok(batch(&schema, 3..5)),
        ];
        let s = BatchStreamAdapter::boxed(schema, futures::stream::iter(input));
        let got: Vec<Result<RecordBatch>> = rebatch(s, 2).collect::<Vec<_>>().await;
        let sizes: Vec<std::result::Result<usize, String>> = got
            .into_iter()
            .map(|r| r.map(|b| b.num_rows()).map_err(|e| e.to_string()))
            .collect();
        assert_eq!(sizes.len(), 2, "{sizes:?}");
        assert_eq!(sizes[0], Ok(2));
        assert!(
            sizes[1].as_ref().is_err_and(|e| e.contains("boom")),
            "{sizes:?}"
        );
    }
}
