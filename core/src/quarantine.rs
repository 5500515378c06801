//! The quarantine side channel: rejected records, with their raw text, the reason and where
//! they came from. Nothing is dropped silently: a component that rejects a record sends it here,
//! and the sink commits the quarantine in the same transaction as the data.

use crate::{Error, ErrorKind, Result};
use arrow_array::builder::{StringBuilder, UInt64Builder};
use arrow_array::cast::AsArray;
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

/// The records of a quarantine batch, read back by column name (a quarantine table read from
/// a lake may hold its text as `Utf8`, `LargeUtf8` or `Utf8View`, its positions as `UInt64`
/// or `Int64`): the inverse of [`quarantine_batch`].
///
/// # Errors
/// [`ErrorKind::Schema`] naming a missing or mistyped column.
pub fn quarantine_records(batch: &RecordBatch) -> Result<Vec<QuarantineRecord>> {
    let text = |name: &'static str, required: bool| -> Result<Vec<Option<String>>> {
        let Some(col) = batch.column_by_name(name) else {
            return Err(Error::new(
                ErrorKind::Schema,
                "not a quarantine batch: a column is missing",
            )
            .with_context("column", name));
        };
        let values: Vec<Option<String>> = if let Some(a) = col.as_string_opt::<i32>() {
            a.iter().map(|v| v.map(str::to_string)).collect()
        } else if let Some(a) = col.as_string_opt::<i64>() {
            a.iter().map(|v| v.map(str::to_string)).collect()
        } else if let Some(a) = col.as_string_view_opt() {
            a.iter().map(|v| v.map(str::to_string)).collect()
        } else {
            return Err(
                Error::new(ErrorKind::Schema, "a quarantine column is not text")
                    .with_context("column", name)
                    .with_context("type", col.data_type()),
            );
        };
        if required && values.iter().any(Option::is_none) {
            return Err(
                Error::new(ErrorKind::Schema, "a quarantine column holds a null")
                    .with_context("column", name),
            );
        }
        Ok(values)
    };
    let position: Vec<Option<u64>> = match batch.column_by_name("position") {
        None => vec![None; batch.num_rows()],
        Some(col) => {
            use arrow_array::types::{Int64Type, UInt64Type};
            if let Some(a) = col.as_primitive_opt::<UInt64Type>() {
                a.iter().collect()
            } else if let Some(a) = col.as_primitive_opt::<Int64Type>() {
                // A lake without unsigned types (Delta) keeps positions as int64.
                a.iter()
                    .map(|v| v.and_then(|v| u64::try_from(v).ok()))
                    .collect()
            } else {
                return Err(Error::new(
                    ErrorKind::Schema,
                    "the quarantine's `position` is not an integer",
                )
                .with_context("type", col.data_type()));
            }
        }
    };
    let (component, location, column) = (
        text("component", true)?,
        text("location", true)?,
        text("column", false)?,
    );
    let (reason, raw) = (text("reason", true)?, text("raw", true)?);
    Ok((0..batch.num_rows())
        .map(|i| QuarantineRecord {
            component: component[i].clone().unwrap_or_default(),
            location: location[i].clone().unwrap_or_default(),
            position: position[i],
            raw: raw[i].clone().unwrap_or_default(),
            reason: reason[i].clone().unwrap_or_default(),
            column: column[i].clone(),
        })
        .collect())
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
    fn records_read_back_from_a_batch_are_the_records_written() {
        let records = vec![
            QuarantineRecord {
                component: "source".into(),
                location: "orders.ndjson".into(),
                position: Some(3),
                raw: "{bad".into(),
                reason: "not JSON".into(),
                column: None,
            },
            QuarantineRecord {
                component: "transform:conform".into(),
                location: "orders.ndjson".into(),
                position: None,
                raw: "{\"qty\":-1}".into(),
                reason: "`qty` is negative: -1".into(),
                column: Some("qty".into()),
            },
        ];
        let batch = quarantine_batch(&records).unwrap();
        assert_eq!(quarantine_records(&batch).unwrap(), records);
        let cut = batch.project(&[0, 1, 2, 3, 4]).unwrap();
        let e = quarantine_records(&cut).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Schema);
        assert!(e.to_string().contains("raw"), "{e}");
    }

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
