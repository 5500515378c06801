//! The quarantine side channel: rejected records, with their raw text, the reason and where
//! they came from. Nothing is dropped silently: a component that rejects a record sends it here,
//! and the sink commits the quarantine in the same transaction as the data.

use crate::{Error, ErrorKind, Result};
use arrow_array::builder::{StringBuilder, UInt64Builder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use std::sync::{Arc, LazyLock};
use tokio::sync::mpsc;

/// One rejected record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineRecord {
    /// The component that rejected it (`source`, `transform:conform`, ...).
    pub component: String,
    /// Where it came from: a file path, a URL, a `collection/_id`.
    pub location: String,
    /// The line (files), page (REST) or position within the location, when known.
    pub position: Option<u64>,
    /// The record exactly as it arrived (for files: the line without its newline); bytes that
    /// are not UTF-8 as `base64:` and their base64 encoding (see [`raw_text`]).
    pub raw: String,
    /// Why it was rejected, naming the column and value where there is one.
    pub reason: String,
    /// The column at fault, when there is one.
    pub column: Option<String>,
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("component", DataType::Utf8, false),
        Field::new("location", DataType::Utf8, false),
        Field::new("position", DataType::UInt64, true),
        Field::new("column", DataType::Utf8, true),
        Field::new("reason", DataType::Utf8, false),
        Field::new("raw", DataType::Utf8, false),
    ]))
});

/// How the raw bytes of a record are kept in [`QuarantineRecord::raw`]: the text itself when
/// it is UTF-8, else `base64:` followed by the bytes base64-encoded (standard alphabet), so the
/// record can be restored exactly; never a lossy copy.
pub fn raw_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => {
            use base64::Engine as _;
            format!(
                "{RAW_BASE64_PREFIX}{}",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            )
        }
    }
}

/// The prefix of a [`QuarantineRecord::raw`] that holds base64-encoded bytes (see [`raw_text`]).
pub const RAW_BASE64_PREFIX: &str = "base64:";

/// The Arrow schema quarantine batches have.
pub fn quarantine_schema() -> SchemaRef {
    SCHEMA.clone()
}

/// Build a quarantine batch (see [`quarantine_schema`]) from records.
///
/// # Errors
/// Only on an Arrow invariant violation ([`ErrorKind::Internal`]).
pub fn quarantine_batch(records: &[QuarantineRecord]) -> Result<RecordBatch> {
    let mut component = StringBuilder::new();
    let mut location = StringBuilder::new();
    let mut position = UInt64Builder::with_capacity(records.len());
    let mut column = StringBuilder::new();
    let mut reason = StringBuilder::new();
    let mut raw = StringBuilder::new();
    for r in records {
        component.append_value(&r.component);
        location.append_value(&r.location);
        position.append_option(r.position);
        column.append_option(r.column.as_deref());
        reason.append_value(&r.reason);
        raw.append_value(&r.raw);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(component.finish()),
        Arc::new(location.finish()),
        Arc::new(position.finish()),
        Arc::new(column.finish()),
        Arc::new(reason.finish()),
        Arc::new(raw.finish()),
    ];
    RecordBatch::try_new(quarantine_schema(), columns)
        .map_err(|e| Error::internal("could not build the quarantine batch").with_source(e))
}

/// The sending half of the quarantine channel, handed to components through the context.
/// Sending awaits when the channel is full: quarantine is backpressured like data.
#[derive(Debug, Clone)]
pub struct QuarantineSender {
    tx: mpsc::Sender<Vec<QuarantineRecord>>,
}

/// The receiving half; the runner owns it and forwards batches to the sink writer.
pub type QuarantineReceiver = mpsc::Receiver<Vec<QuarantineRecord>>;

/// A bounded quarantine channel holding at most `capacity` groups of records.
pub fn quarantine_channel(capacity: usize) -> (QuarantineSender, QuarantineReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (QuarantineSender { tx }, rx)
}

impl QuarantineSender {
    /// Send rejected records.
    ///
    /// # Errors
    /// [`ErrorKind::Cancelled`] when the pipeline is shutting down.
    pub async fn send(&self, records: Vec<QuarantineRecord>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.tx.send(records).await.map_err(|_| {
            Error::new(
                ErrorKind::Cancelled,
                "the quarantine channel is closed: the pipeline is stopping",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_has_the_schema_and_every_field() {
        let r = QuarantineRecord {
            component: "source".into(),
            location: "orders.ndjson".into(),
            position: Some(3),
            raw: "{bad".into(),
            reason: "malformed JSON".into(),
            column: None,
        };
        let b = quarantine_batch(&[r]).unwrap();
        assert_eq!(b.schema(), quarantine_schema());
        assert_eq!(b.num_rows(), 1);
    }
}
