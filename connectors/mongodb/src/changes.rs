//! Change-stream CDC: the committed position, opening the stream there, events to rows, and
//! lost history.
//!
//! Each event becomes one row: the document (the full document for inserts and replaces, the
//! looked-up current document for updates, the key for deletes) plus
//!
//! | column | type | value |
//! |---|---|---|
//! | `_op` (configurable) | utf8 | `snapshot`, `insert`, `update`, `replace`, `delete` |
//! | `_cluster_time` | int64 | the event's cluster time, `(seconds << 32) \| increment`: the order of events |
//! | `_wall_time` | timestamp(ms, UTC) | when the server applied it (null for snapshot rows) |
//! | `_updated_fields` | utf8 | updates: the changed fields as JSON |
//! | `_removed_fields` | utf8 | updates: the removed field names as a JSON array |

use crate::config::{ChangeStreamConfig, FullDocument};
use crate::convert::write_document;
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use bson::{Bson, Document, Timestamp, doc};
use mongodb::change_stream::ChangeStream;
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType, ResumeToken};
use mongodb::options::FullDocumentType;
use mongodb::{Client, Collection};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use stratalake_core::{Cursor, Error, ErrorKind, Result};

/// The stream the source reads.
pub(crate) type Events = ChangeStream<ChangeStreamEvent<Document>>;

const CDC_PREFIX: &str = "mongodb-cdc/v1:";
/// The cluster time column.
pub const CLUSTER_TIME: &str = "_cluster_time";
/// The wall time column.
pub const WALL_TIME: &str = "_wall_time";
/// The updated fields column.
pub const UPDATED_FIELDS: &str = "_updated_fields";
/// The removed fields column.
pub const REMOVED_FIELDS: &str = "_removed_fields";

/// Where a change stream goes on from: after a resume token, or at a cluster time.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct CdcCursor {
    /// Resume after this token (its canonical extended JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_after: Option<serde_json::Value>,
    /// Start at this cluster time (seconds, increment), inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<(u32, u32)>,
}

impl CdcCursor {
    pub(crate) fn after_token(token: &ResumeToken) -> Result<Self> {
        let b = bson::serialize_to_bson(token)
            .map_err(|e| Error::internal("cannot serialise a resume token").with_source(e))?;
        Ok(Self {
            resume_after: Some(b.into_canonical_extjson()),
            start_at: None,
        })
    }

    /// Just after `t`: what a snapshot taken at `t` has not seen.
    pub(crate) fn after_time(t: Timestamp) -> Self {
        Self {
            resume_after: None,
            start_at: Some((t.time, t.increment.saturating_add(1))),
        }
    }

    fn token(&self) -> Result<Option<ResumeToken>> {
        self.resume_after
            .as_ref()
            .map(|v| {
                let b = Bson::try_from(v.clone()).map_err(|e| {
                    Error::new(ErrorKind::Data, "the committed resume token is corrupt")
                        .with_source(e)
                })?;
                bson::deserialize_from_bson::<ResumeToken>(b).map_err(|e| {
                    Error::new(ErrorKind::Data, "the committed resume token is corrupt")
                        .with_source(e)
                })
            })
            .transpose()
    }

    pub(crate) fn parse(c: &Cursor) -> Result<Self> {
        c.decode(CDC_PREFIX, "a MongoDB change stream")
            .map_err(|e| {
                if e.kind() == ErrorKind::Conflict {
                    e.with_context(
                        "hint",
                        "a pipeline that switches to `change_stream` needs a new pipeline id",
                    )
                } else {
                    e
                }
            })
    }

    pub(crate) fn encode(&self) -> Result<Cursor> {
        Cursor::encode(CDC_PREFIX, self)
    }

    pub(crate) fn describe(&self) -> String {
        match (&self.resume_after, self.start_at) {
            (Some(t), _) => format!("resume token {t}"),
            (None, Some((s, i))) => format!("cluster time ({s}, {i})"),
            (None, None) => "now".into(),
        }
    }
}

/// The document schema with the change columns appended (those the user declared are kept).
pub(crate) fn with_change_columns(schema: &Schema, op_column: &str) -> SchemaRef {
    let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
    let extra = [
        Field::new(op_column, DataType::Utf8, false),
        Field::new(CLUSTER_TIME, DataType::Int64, true),
        Field::new(
            WALL_TIME,
            DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())),
            true,
        ),
        Field::new(UPDATED_FIELDS, DataType::Utf8, true),
        Field::new(REMOVED_FIELDS, DataType::Utf8, true),
    ];
    for f in extra {
        if schema.field_with_name(f.name()).is_err() {
            fields.push(Arc::new(f));
        }
    }
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The columns a snapshot row carries: operation `snapshot` at the snapshot's cluster time.
pub(crate) fn snapshot_columns(op_column: &str, at: Option<Timestamp>) -> Document {
    let mut d = Document::new();
    d.insert(op_column, "snapshot");
    d.insert(CLUSTER_TIME, at.map_or(Bson::Null, Bson::Timestamp));
    d.insert(WALL_TIME, Bson::Null);
    d.insert(UPDATED_FIELDS, Bson::Null);
    d.insert(REMOVED_FIELDS, Bson::Null);
    d
}

/// The server's latest operation time (`operationTime` of a `ping`), the end an epoch reads to.
pub(crate) async fn operation_time(client: &Client, db: &str) -> Result<Option<Timestamp>> {
    let reply = client
        .database(db)
        .run_command(doc! {"ping": 1})
        .await
        .map_err(|e| {
            Error::new(ErrorKind::Unavailable, "cannot ask the server for its time").with_source(e)
        })?;
    Ok(reply.get_timestamp("operationTime").ok())
}

/// The oldest entry's time in the oplog, when this user may read it (best effort: servers
/// answer a lost resume point with error 286 themselves; this also covers start times).
pub(crate) async fn oplog_floor(client: &Client) -> Option<Timestamp> {
    let first = client
        .database("local")
        .collection::<Document>("oplog.rs")
        .find_one(doc! {})
        .sort(doc! {"$natural": 1})
        .projection(doc! {"ts": 1})
        .await
        .ok()??;
    first.get_timestamp("ts").ok()
}

/// Whether a driver error says the resume point is gone from the oplog.
pub(crate) fn is_history_lost(e: &mongodb::error::Error) -> bool {
    use mongodb::error::ErrorKind as K;
    // 286 ChangeStreamHistoryLost, 280 ChangeStreamFatalError, 136 CappedPositionLost.
    matches!(e.kind.as_ref(), K::Command(c) if matches!(c.code, 286 | 280 | 136))
}

/// The error for a resume point whose history is gone.
pub(crate) fn history_lost(name: &str, from: &CdcCursor) -> Error {
    Error::new(
        ErrorKind::Conflict,
        "the change stream cannot resume: the events after the committed position are no \
         longer in the server's oplog, so changes were lost",
    )
    .with_context("collection", name)
    .with_context("position", from.describe())
    .with_context(
        "hint",
        "set `change_stream.on_history_lost: snapshot` to read the collection again, or start \
         a new pipeline id; and raise the oplog size or run more often",
    )
}

/// Open the change stream at `from`.
///
/// # Errors
/// The driver's error, unchanged (the caller classifies lost history).
pub(crate) async fn open(
    coll: &Collection<Document>,
    cfg: &ChangeStreamConfig,
    batch_size: u32,
    from: &CdcCursor,
) -> std::result::Result<Events, OpenError> {
    let mut w = coll
        .watch()
        .batch_size(batch_size)
        .max_await_time(Duration::from_millis(cfg.max_await_millis));
    if cfg.full_document == FullDocument::UpdateLookup {
        w = w.full_document(FullDocumentType::UpdateLookup);
    }
    if let Some(t) = from.token().map_err(OpenError::Strata)? {
        w = w.resume_after(t);
    } else if let Some((s, i)) = from.start_at {
        w = w.start_at_operation_time(Timestamp {
            time: s,
            increment: i,
        });
    }
    w.await.map_err(OpenError::Driver)
}

/// Why [`open`] failed.
pub(crate) enum OpenError {
    Driver(mongodb::error::Error),
    Strata(Error),
}

/// One event as a row document; `None` for event kinds that carry no row.
///
/// # Errors
/// Conflict when the collection was dropped or renamed (the stream has ended).
pub(crate) fn event_row(
    ev: ChangeStreamEvent<Document>,
    op_column: &str,
    name: &str,
) -> Result<Option<Document>> {
    let op = match &ev.operation_type {
        OperationType::Insert => "insert",
        OperationType::Update => "update",
        OperationType::Replace => "replace",
        OperationType::Delete => "delete",
        OperationType::Drop
        | OperationType::Rename
        | OperationType::DropDatabase
        | OperationType::Invalidate => {
            return Err(Error::new(
                ErrorKind::Conflict,
                "the collection was dropped or renamed: its change stream has ended",
            )
            .with_context("collection", name)
            .with_context("event", format!("{:?}", ev.operation_type))
            .with_context(
                "hint",
                "recreate the collection, then start a new pipeline id (or reset its \
                 checkpoint) to snapshot it again",
            ));
        }
        other => {
            tracing::warn!(collection = name, event = ?other, "change event without a row skipped");
            return Ok(None);
        }
    };
    let key = ev.document_key.unwrap_or_default();
    let mut row = match (op, ev.full_document) {
        ("delete", _) | (_, None) => key.clone(),
        (_, Some(d)) => d,
    };
    if !row.contains_key("_id")
        && let Some(id) = key.get("_id")
    {
        row.insert("_id", id.clone());
    }
    row.insert(op_column, op);
    row.insert(
        CLUSTER_TIME,
        ev.cluster_time.map_or(Bson::Null, Bson::Timestamp),
    );
    row.insert(WALL_TIME, ev.wall_time.map_or(Bson::Null, Bson::DateTime));
    match ev.update_description {
        Some(u) => {
            let mut set = String::new();
            write_document(&u.updated_fields, &mut set, None);
            row.insert(UPDATED_FIELDS, set);
            row.insert(
                REMOVED_FIELDS,
                serde_json::to_string(&u.removed_fields).unwrap_or_default(),
            );
        }
        None => {
            row.insert(UPDATED_FIELDS, Bson::Null);
            row.insert(REMOVED_FIELDS, Bson::Null);
        }
    }
    Ok(Some(row))
}

/// Whether an event happened after `end`.
pub(crate) fn after(ev: &ChangeStreamEvent<Document>, end: Option<Timestamp>) -> bool {
    match (ev.cluster_time, end) {
        (Some(t), Some(e)) => (t.time, t.increment) > (e.time, e.increment),
        _ => false,
    }
}
