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
