//! [`MongoSourceConfig`]: where the documents are, which ones, and how they become Arrow.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use stratalake_core::{Error, Result};
use stratalake_records::{SchemaSource, UnknownFieldPolicy};

/// Which documents: a find (filter, projection, sort) or an aggregation pipeline.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Query {
    /// `find(filter)` with an optional projection and sort (extended JSON: `{"$date": ...}`).
    Find {
        /// The filter (default: every document).
        #[serde(default)]
        filter: serde_json::Map<String, serde_json::Value>,
        /// The projection.
        #[serde(default)]
        projection: Option<serde_json::Map<String, serde_json::Value>>,
        /// The sort.
        #[serde(default)]
        sort: Option<serde_json::Map<String, serde_json::Value>>,
    },
    /// An aggregation pipeline (read as one split).
    Aggregate {
        /// The stages.
        pipeline: Vec<serde_json::Map<String, serde_json::Value>>,
    },
}

impl Default for Query {
    fn default() -> Self {
        Query::Find {
            filter: serde_json::Map::new(),
            projection: None,
            sort: None,
        }
    }
}

/// What to do with a field whose type varies across documents.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MixedTypes {
    /// Numbers widen to the column's type (int32 < int64 < float64, decimals), scalars in a
    /// text column become their text; anything else quarantines the document.
    #[default]
    Widen,
    /// Like `widen`, and a document or array in a text column is kept as its JSON text.
    JsonText,
    /// A value that does not fit its column quarantines the document with its `_id` and the
    /// reason (numbers still widen: arrow-json reads an int into a float column).
    Quarantine,
}

/// Read preference.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReadPreference {
    /// The primary.
    #[default]
    Primary,
    /// The primary when available.
    PrimaryPreferred,
    /// A secondary.
    Secondary,
    /// A secondary when available.
    SecondaryPreferred,
    /// The nearest member.
    Nearest,
}

/// Incremental extraction by a field that only grows (`updated_at`, `_id`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct MongoIncremental {
    /// The field.
    pub field: String,
    /// Where the first run starts (extended JSON: `{"$date": "2024-01-01T00:00:00Z"}`, a
    /// number, a string); documents with the field greater than or equal to it are read.
    #[serde(default)]
    pub initial_value: Option<serde_json::Value>,
}

impl MongoIncremental {
    /// By `field`, from the start.
    pub fn new(field: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            initial_value: None,
        }
    }
}

/// Where a change stream starts on its first run (no committed resume token yet).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum InitialPosition {
    /// Read every document (rows with operation `snapshot`), then follow the changes made
    /// from the moment the snapshot started.
    #[default]
    Snapshot,
    /// Follow only the changes made from now on.
    Latest,
}

/// What update events carry.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FullDocument {
    /// The whole current document, looked up when the event is read (null columns when it
    /// has been deleted since; `_updated_fields` still says what changed).
    #[default]
    UpdateLookup,
    /// Only the key and `_updated_fields` / `_removed_fields`.
    None,
}

/// What to do when the committed resume token is older than the server's oplog (the events
/// in between are gone).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HistoryLostPolicy {
    /// Fail with an error that says so (never a silent gap).
    #[default]
    Fail,
    /// Read the whole collection again (operation `snapshot`) and follow changes from there.
    Snapshot,
}

/// Change-stream CDC: inserts, updates, replaces and deletes as rows with an operation
/// column, resumed from the resume token committed with the data.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ChangeStreamConfig {
    /// Where the first run starts.
    #[serde(default)]
    pub initial: InitialPosition,
    /// What update events carry.
    #[serde(default)]
    pub full_document: FullDocument,
    /// When the committed token's history is gone from the oplog.
    #[serde(default)]
    pub on_history_lost: HistoryLostPolicy,
    /// The operation column: `snapshot`, `insert`, `update`, `replace` or `delete`.
    #[serde(default = "default_operation_column")]
    pub operation_column: String,
    /// Events read per epoch at most (0: until caught up with the time the epoch was planned).
    #[serde(default)]
    pub max_events_per_epoch: u64,
    /// How long the server waits for new events before answering an empty batch. Range: 1..=3_600_000.
    #[serde(
        default = "default_max_await",
        deserialize_with = "stratalake_core::bounds::u64_in::<_, 1, 3_600_000>"
    )]
    pub max_await_millis: u64,
}

fn default_operation_column() -> String {
    "_op".into()
}

fn default_max_await() -> u64 {
    500
}

impl Default for ChangeStreamConfig {
    fn default() -> Self {
        Self {
            initial: InitialPosition::default(),
            full_document: FullDocument::default(),
            on_history_lost: HistoryLostPolicy::default(),
            operation_column: default_operation_column(),
            max_events_per_epoch: 0,
            max_await_millis: default_max_await(),
        }
    }
}

impl ChangeStreamConfig {
    /// With the first run's starting point.
    #[must_use]
    pub fn with_initial(mut self, initial: InitialPosition) -> Self {
        self.initial = initial;
        self
    }

    /// With the policy for lost history.
    #[must_use]
    pub fn with_on_history_lost(mut self, policy: HistoryLostPolicy) -> Self {
        self.on_history_lost = policy;
        self
    }

    /// With a cap on the events per epoch.
    #[must_use]
    pub fn with_max_events_per_epoch(mut self, n: u64) -> Self {
        self.max_events_per_epoch = n;
        self
    }
}

/// Configuration of a MongoDB source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct MongoSourceConfig {
    /// The connection string (`mongodb://user:${PASSWORD}@host/?tls=true`); a secret, as it
    /// may hold a password.
    #[serde(deserialize_with = "stratalake_core::secrets::deserialize")]
    pub uri: SecretString,
    /// The database.
    pub database: String,
    /// The collection.
    pub collection: String,
    /// Which documents.
    #[serde(default)]
    pub query: Query,
    /// Documents the server returns per cursor batch (MongoDB's `batchSize`; the Arrow batch
    /// size is the run's `batch_size`). Range: 1..=1_000_000.
    #[serde(
        default = "default_batch",
        deserialize_with = "stratalake_core::bounds::u32_in::<_, 1, 1_000_000>"
    )]
    pub cursor_batch_documents: u32,
    /// Read preference.
    #[serde(default)]
    pub read_preference: ReadPreference,
    /// The schema: explicit (respected exactly) or inferred from a bounded sample.
    #[serde(default)]
    pub schema: SchemaSource,
    /// Fields whose type varies.
    #[serde(default)]
    pub mixed_types: MixedTypes,
    /// Fields not in the schema.
    #[serde(default)]
    pub unknown_fields: UnknownFieldPolicy,
    /// `_id` ranges read in parallel (find only; 0: two per core). Range: 0..=1024.
    #[serde(
        default,
        deserialize_with = "stratalake_core::bounds::usize_in::<_, 0, 1024>"
    )]
    pub splits: usize,
    /// Incremental extraction.
    #[serde(default)]
    pub incremental: Option<MongoIncremental>,
    /// Change-stream CDC instead of reading documents.
    #[serde(default)]
    pub change_stream: Option<ChangeStreamConfig>,
}

fn default_batch() -> u32 {
    2000
}

impl MongoSourceConfig {
    /// Every document of `database.collection` at `uri`, schema inferred.
    pub fn new(
        uri: impl Into<String>,
        database: impl Into<String>,
        collection: impl Into<String>,
    ) -> Self {
        Self {
            uri: SecretString::from(uri.into()),
            database: database.into(),
            collection: collection.into(),
            query: Query::default(),
            cursor_batch_documents: default_batch(),
            read_preference: ReadPreference::default(),
            schema: SchemaSource::default(),
            mixed_types: MixedTypes::default(),
            unknown_fields: UnknownFieldPolicy::default(),
            splits: 0,
            incremental: None,
            change_stream: None,
        }
    }

    /// Check without I/O.
    ///
    /// # Errors
    /// [`stratalake_core::ErrorKind::Config`] naming the key.
    pub fn validate(&self) -> Result<()> {
        let uri = self.uri.expose_secret();
        if !(uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://")) {
            return Err(Error::config(
                "`uri` must start with mongodb:// or mongodb+srv://",
            ));
        }
        if self.database.is_empty() || self.database.contains(['/', '\\', '.', ' ', '"', '$']) {
            return Err(
                Error::config("invalid `database` name").with_context("database", &self.database)
            );
        }
        if self.collection.is_empty()
            || self.collection.starts_with("system.")
            || self.collection.contains('$')
        {
            return Err(Error::config("invalid `collection` name")
                .with_context("collection", &self.collection));
        }
        if self.cursor_batch_documents == 0 {
            return Err(Error::config("`cursor_batch_documents` must be at least 1"));
        }
        if matches!(self.query, Query::Aggregate { .. }) && self.incremental.is_some() {
            return Err(Error::config(
                "`incremental` works with `find`; put the condition in the pipeline instead",
            ));
        }
        if let Some(cs) = &self.change_stream {
            if self.incremental.is_some() {
                return Err(Error::config(
                    "`change_stream` and `incremental` exclude each other: a change stream \
                     already reads only what changed",
                ));
            }
            if self.query != Query::default() {
                return Err(Error::config(
                    "`change_stream` follows the whole collection: leave `query` out \
                     (filter downstream)",
                ));
            }
            if cs.operation_column.is_empty() {
                return Err(Error::config("`change_stream.operation_column` is empty"));
            }
        }
        Ok(())
    }
}
