//! [`MongoSink`]: epochs staged in a collection of their own, then merged into the target
//! (append, or upsert by key with deletes) and recorded in a control collection.
//!
//! Commit protocol, for pipeline `p` and epoch `e`:
//! 1. `write` inserts the rows into a staging collection `<collection>._strata_staging.<id>`,
//!    each wrapped as `{_id, s: <sequence>, d: <row>}`: invisible to readers of the target.
//! 2. `commit` records the intent in the control collection (`{_id: p, pending: {epoch: e,
//!    staging, cursor}}`), then runs one `$merge` aggregation from staging into the target
//!    (append: `whenMatched: keepExisting` on the staged `_id`; upsert: the last row per key
//!    wins, `whenMatched: replace`), deletes the keys whose last row says so, records `{epoch:
//!    e, cursor}` and drops the staging collection.
//! 3. A crash after the intent is rolled forward by the next `last_committed` (the merge is
//!    idempotent: the same staged rows, the same keys), so a rerun never loads twice.
//!    Staging collections of runs that died before their intent are dropped after
//!    `abandoned_after_secs`.

use crate::arrow_bson::batch_to_documents;
use crate::source::{client_options, driver_err};
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use bson::{Bson, Document, doc, oid::ObjectId};
use futures::TryStreamExt;
use mongodb::options::IndexOptions;
use mongodb::{Client, Collection, Database, IndexModel};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::sync::Arc;
pub use stratalake_core::DeleteWhen;
use stratalake_core::{
    CommitMarker, CommitOutcome, Context, Cursor, Delivery, Epoch, Error, ErrorKind, Prepared,
    Result, Sink, SinkCapabilities, SinkWriter, check_merge_columns, crash_point,
};

const STAGING: &str = "._strata_staging.";
/// Keys deleted per `delete` command.
const DELETE_CHUNK: usize = 1000;

pub use stratalake_core::WriteMode;

/// Configuration of a MongoDB sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct MongoSinkConfig {
    /// The connection string (a secret).
    #[serde(deserialize_with = "stratalake_core::secrets::deserialize")]
    pub uri: SecretString,
    /// The database.
    pub database: String,
    /// The target collection.
    pub collection: String,
    /// Append or upsert.
    #[serde(default)]
    pub write: WriteMode,
    /// Where commits are recorded (one document per pipeline).
    #[serde(default = "default_control")]
    pub control_collection: String,
    /// Where quarantined records go (default `<collection>_quarantine`).
    #[serde(default)]
    pub quarantine_collection: Option<String>,
    /// Documents per insert command. Range: 1..=100_000.
    #[serde(
        default = "default_insert_batch",
        deserialize_with = "stratalake_core::bounds::usize_in::<_, 1, 100_000>"
    )]
    pub insert_batch_documents: usize,
    /// Staging collections without a recorded intent and older than this are dropped. Range: 0..=31_536_000.
    #[serde(
        default = "default_abandoned",
        deserialize_with = "stratalake_core::bounds::u64_in::<_, 0, 31_536_000>"
    )]
    pub abandoned_after_secs: u64,
}

fn default_control() -> String {
    "_strata_commits".into()
}
fn default_insert_batch() -> usize {
    1000
}
fn default_abandoned() -> u64 {
    3600
}

impl MongoSinkConfig {
    /// Append to `database.collection` at `uri`.
    pub fn new(
        uri: impl Into<String>,
        database: impl Into<String>,
        collection: impl Into<String>,
    ) -> Self {
        Self {
            uri: SecretString::from(uri.into()),
            database: database.into(),
            collection: collection.into(),
            write: WriteMode::Append,
            control_collection: default_control(),
            quarantine_collection: None,
            insert_batch_documents: default_insert_batch(),
            abandoned_after_secs: default_abandoned(),
        }
    }

    /// Upsert by `key`.
    #[must_use]
    pub fn with_upsert(mut self, key: &[&str], delete_when: Option<DeleteWhen>) -> Self {
        self.write = WriteMode::Merge {
            key: key.iter().map(|k| (*k).to_string()).collect(),
            delete_when,
            version_column: None,
        };
        self
    }

    /// With the column that orders versions of a key (upsert only).
    #[must_use]
    pub fn with_version_column(mut self, column: &str) -> Self {
        if let WriteMode::Merge { version_column, .. } = &mut self.write {
            *version_column = Some(column.to_string());
        }
        self
    }

    /// With the age after which unclaimed staging collections are dropped.
    #[must_use]
    pub fn with_abandoned_after_secs(mut self, secs: u64) -> Self {
        self.abandoned_after_secs = secs;
        self
    }

    /// Check without I/O.
    ///
    /// # Errors
    /// Config naming the key.
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
        for (key, c) in [
            ("collection", &self.collection),
            ("control_collection", &self.control_collection),
        ] {
            if c.is_empty() || c.starts_with("system.") || c.contains('$') {
                return Err(Error::config("invalid collection name").with_context(key, c));
            }
        }
        if self.insert_batch_documents == 0 {
            return Err(Error::config("`insert_batch_documents` must be at least 1"));
        }
        if let WriteMode::Merge { key, .. } = &self.write
            && (key.is_empty() || key.iter().any(String::is_empty))
        {
            return Err(Error::config("`write.key` needs at least one field name"));
        }
        Ok(())
    }
}

/// Writes epochs into a MongoDB collection exactly once.
#[derive(Clone)]
pub struct MongoSink {
    inner: Arc<SinkInner>,
}

struct SinkInner {
    cfg: MongoSinkConfig,
    db: Database,
    name: String,
    quarantine: String,
}

impl std::fmt::Debug for MongoSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoSink")
            .field("collection", &self.inner.name)
            .field("write", &self.inner.cfg.write)
            .finish()
    }
}

/// A commit in progress, as recorded in the control collection.
#[derive(Debug, Clone)]
struct Pending {
    epoch: Epoch,
    cursor: Option<String>,
    staging: String,
}

impl MongoSink {
    /// Connect (no I/O until first use).
    ///
    /// # Errors
    /// Config for a bad configuration or URI.
    pub async fn try_new(cfg: MongoSinkConfig) -> Result<Self> {
        cfg.validate()?;
        let name = format!("{}.{}", cfg.database, cfg.collection);
        let opts = client_options(&cfg.uri, &name).await?;
        let client = Client::with_options(opts)
            .map_err(|e| driver_err(e, "cannot set up the MongoDB client", &name))?;
        let quarantine = cfg
            .quarantine_collection
            .clone()
            .unwrap_or_else(|| format!("{}_quarantine", cfg.collection));
        Ok(Self {
            inner: Arc::new(SinkInner {
                db: client.database(&cfg.database),
                name,
                quarantine,
                cfg,
            }),
        })
    }
}

impl SinkInner {
    fn err(&self, what: &str) -> impl Fn(mongodb::error::Error) -> Error + '_ {
        let what = what.to_string();
        move |e| driver_err(e, &what, &self.name)
    }

    fn control(&self) -> Collection<Document> {
        self.db.collection(&self.cfg.control_collection)
    }

    fn staged(&self, staging: &str) -> Collection<Document> {
        self.db.collection(staging)
    }

    /// The merge of a staging collection's data rows (`q: false`) into `into`.
    fn merge_pipeline(&self, quarantine: bool) -> Vec<Document> {
        let into = if quarantine {
            &self.quarantine
        } else {
            &self.cfg.collection
        };
        let only = doc! {"$match": {"q": quarantine}};
        match (&self.cfg.write, quarantine) {
            (
                WriteMode::Merge {
                    key,
                    delete_when,
                    version_column,
                },
                false,
            ) => {
                let mut stages = latest_per_key(key, version_column.as_deref());
                stages.insert(0, only);
                stages.push(doc! {"$replaceRoot": {"newRoot": "$d"}});
                if let Some(dw) = delete_when {
                    stages.push(doc! {"$match": {dw.column.as_str(): {"$ne": dw.equals.as_str()}}});
                }
                let when_matched = match version_column {
                    // Keep the stored document when it is the newer version.
                    Some(v) => Bson::Array(vec![Bson::Document(doc! {"$replaceWith": {"$cond": [
                        {"$gte": [format!("$$new.{v}"), format!("${v}")]}, "$$new", "$$ROOT",
                    ]}})]),
                    None => Bson::String("replace".into()),
                };
                stages.push(doc! {"$merge": {
                    "into": into, "on": key.clone(),
                    "whenMatched": when_matched, "whenNotMatched": "insert",
                }});
                stages
            }
            _ => vec![
                only,
                doc! {"$replaceRoot": {"newRoot": {"$mergeObjects": [{"_id": "$_id"}, "$d"]}}},
                doc! {"$merge": {
                    "into": into, "on": "_id",
                    "whenMatched": "keepExisting", "whenNotMatched": "insert",
                }},
            ],
        }
    }

    /// Merge a staging collection into the target and the quarantine, and apply its deletes.
    /// Idempotent: running it twice leaves the same documents.
    async fn publish(&self, staging: &str) -> Result<()> {
        let coll = self.staged(staging);
        for q in [false, true] {
            coll.aggregate(self.merge_pipeline(q))
                .allow_disk_use(true)
                .await
                .map_err(self.err("merging the staged epoch failed"))?
                .try_collect::<Vec<_>>()
                .await
                .map_err(self.err("merging the staged epoch failed"))?;
        }
        crash_point("mongodb.commit.after_merge").await;
        if let WriteMode::Merge {
            key,
            delete_when: Some(dw),
            version_column,
        } = &self.cfg.write
        {
            let mut stages = latest_per_key(key, version_column.as_deref());
            stages.insert(0, doc! {"$match": {"q": false}});
            stages.push(doc! {"$match": {format!("d.{}", dw.column): dw.equals.as_str()}});
            stages.push(match version_column {
                Some(v) => doc! {"$project": {"_id": 1, "v": format!("$d.{v}")}},
                None => doc! {"$project": {"_id": 1}},
            });
            let mut keys = coll
                .aggregate(stages)
                .allow_disk_use(true)
                .await
                .map_err(self.err("finding the deleted keys failed"))?;
            let target = self.db.collection::<Document>(&self.cfg.collection);
            let mut chunk = Vec::with_capacity(DELETE_CHUNK);
            loop {
                let next = keys
                    .try_next()
                    .await
                    .map_err(self.err("finding the deleted keys failed"))?;
                if let Some(d) = &next
                    && let Ok(k) = d.get_document("_id")
                {
                    let mut cond = k.clone();
                    // A stored version newer than the delete survives it.
                    if let (Some(v), Some(at)) = (version_column, d.get("v")) {
                        cond.insert(v.clone(), doc! {"$lte": at.clone()});
                    }
                    chunk.push(Bson::Document(cond));
                }
                if chunk.len() >= DELETE_CHUNK || (next.is_none() && !chunk.is_empty()) {
                    target
                        .delete_many(doc! {"$or": std::mem::take(&mut chunk)})
                        .await
                        .map_err(self.err("deleting documents failed"))?;
                }
                if next.is_none() {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Record epoch `p.epoch` as committed and drop its staging.
    async fn finish(&self, pipeline: &str, p: &Pending) -> Result<()> {
        self.control()
            .update_one(
                doc! {"_id": pipeline},
                doc! {
                    "$set": {"epoch": p.epoch.0 as i64, "cursor": p.cursor.clone(),
                             "committed_at": bson::DateTime::now()},
                    "$unset": {"pending": ""},
                },
            )
            .await
            .map_err(self.err("recording the commit failed"))?;
        self.staged(&p.staging)
            .drop()
            .await
            .map_err(self.err("dropping the staging collection failed"))?;
        Ok(())
    }

    /// The pipeline's control document.
    async fn control_doc(&self, pipeline: &str) -> Result<Option<Document>> {
        self.control()
            .find_one(doc! {"_id": pipeline})
            .await
            .map_err(self.err("reading the control collection failed"))
    }

    /// Drop staging collections that no intent names and that are older than the limit.
    async fn clean_abandoned(&self) -> Result<()> {
        let prefix = format!("{}{STAGING}", self.cfg.collection);
        let names = self
            .db
            .list_collection_names()
            .await
            .map_err(self.err("listing collections failed"))?;
        let claimed: Vec<String> = self
            .control()
            .find(doc! {"pending": {"$exists": true}})
            .await
            .map_err(self.err("reading the control collection failed"))?
            .try_collect::<Vec<_>>()
            .await
            .map_err(self.err("reading the control collection failed"))?
            .iter()
            .filter_map(|d| d.get_document("pending").ok()?.get_str("staging").ok())
            .map(str::to_string)
            .collect();
        let now = bson::DateTime::now().timestamp_millis() / 1000;
        for n in names {
            let Some(id) = n.strip_prefix(&prefix) else {
                continue;
            };
            let Ok(oid) = ObjectId::parse_str(id) else {
                continue;
            };
            let age = now - oid.timestamp().timestamp_millis() / 1000;
            if age >= self.cfg.abandoned_after_secs as i64 && !claimed.contains(&n) {
                tracing::info!(collection = %n, age_secs = age, "dropping an abandoned staging collection");
                self.staged(&n)
                    .drop()
                    .await
                    .map_err(self.err("dropping an abandoned staging collection failed"))?;
            }
        }
        Ok(())
    }
}

/// Stages that keep, per key, the staged row with the highest version (then the last
/// written): `{_id: <key>, d: <row>}`.
fn latest_per_key(key: &[String], version: Option<&str>) -> Vec<Document> {
    let mut group = Document::new();
    for k in key {
        group.insert(k.clone(), format!("$d.{k}"));
    }
    let sort = match version {
        Some(v) => doc! {format!("d.{v}"): 1, "s": 1},
        None => doc! {"s": 1},
    };
    vec![
        doc! {"$sort": sort},
        doc! {"$group": {"_id": group, "d": {"$last": "$d"}}},
    ]
}

fn pending_of(d: &Document) -> Option<Pending> {
    let p = d.get_document("pending").ok()?;
    Some(Pending {
        epoch: Epoch(u64::try_from(p.get_i64("epoch").ok()?).ok()?),
        cursor: p.get_str("cursor").ok().map(str::to_string),
        staging: p.get_str("staging").ok()?.to_string(),
    })
}

fn committed_epoch(d: Option<&Document>) -> Option<Epoch> {
    d.and_then(|d| d.get_i64("epoch").ok())
        .and_then(|e| u64::try_from(e).ok())
        .map(Epoch)
}

#[async_trait]
impl Sink for MongoSink {
    fn name(&self) -> &str {
        "mongodb"
    }

    fn capabilities(&self) -> SinkCapabilities {
        let mut c = SinkCapabilities::new(Delivery::ExactlyOnce).with_quarantine(true);
        c.upsert = true;
        c
    }

    async fn open(&self, schema: SchemaRef, _ctx: &Context) -> Result<Box<dyn SinkWriter>> {
        let inner = &self.inner;
        if let WriteMode::Merge {
            key,
            delete_when,
            version_column,
        } = &inner.cfg.write
        {
            check_merge_columns(&schema, key, version_column.as_ref(), delete_when.as_ref())
                .map_err(|e| e.with_context("collection", &inner.name))?;
            if key != &["_id".to_string()] {
                let mut spec = Document::new();
                for k in key {
                    spec.insert(k.clone(), 1);
                }
                inner
                    .db
                    .collection::<Document>(&inner.cfg.collection)
                    .create_index(
                        IndexModel::builder()
                            .keys(spec)
                            .options(IndexOptions::builder().unique(true).build())
                            .build(),
                    )
                    .await
                    .map_err(inner.err("creating the unique index on the key failed"))?;
            }
        }
        inner.clean_abandoned().await?;
        let staging = format!(
            "{}{STAGING}{}",
            inner.cfg.collection,
            ObjectId::new().to_hex()
        );
        let key = match &inner.cfg.write {
            WriteMode::Merge { key, .. } => key.clone(),
            WriteMode::Append => Vec::new(),
        };
        Ok(Box::new(MongoWriter {
            inner: inner.clone(),
            staged: inner.staged(&staging),
            staging,
            key,
            seq: 0,
            rows: 0,
            quarantined: 0,
        }))
    }

    async fn last_committed(
        &self,
        pipeline_id: &str,
        _ctx: &Context,
    ) -> Result<Option<CommitMarker>> {
        let inner = &self.inner;
        let Some(mut d) = inner.control_doc(pipeline_id).await? else {
            return Ok(None);
        };
        // Roll a commit forward whose intent was recorded before a crash.
        if let Some(p) = pending_of(&d) {
            tracing::info!(
                pipeline = pipeline_id,
                epoch = p.epoch.0,
                "finishing an interrupted commit"
            );
            inner.publish(&p.staging).await?;
            inner.finish(pipeline_id, &p).await?;
            d = inner.control_doc(pipeline_id).await?.unwrap_or_default();
        }
        Ok(committed_epoch(Some(&d))
            .map(|e| CommitMarker::new(pipeline_id, e, d.get_str("cursor").ok().map(Cursor::new))))
    }
}

struct MongoWriter {
    inner: Arc<SinkInner>,
    staging: String,
    staged: Collection<Document>,
    key: Vec<String>,
    seq: i64,
    rows: u64,
    quarantined: u64,
}

impl MongoWriter {
    async fn stage(&mut self, batch: RecordBatch, quarantine: bool) -> Result<u64> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(0);
        }
        let first = self.seq;
        self.seq += n as i64;
        let key = if quarantine {
            Vec::new()
        } else {
            self.key.clone()
        };
        let name = self.inner.name.clone();
        // Conversion is CPU work: off the async runtime.
        let docs = tokio::task::spawn_blocking(move || -> Result<Vec<Document>> {
            let rows = batch_to_documents(&batch)?;
            rows.into_iter()
                .enumerate()
                .map(|(i, row)| {
                    for k in &key {
                        if matches!(row.get(k), None | Some(Bson::Null)) {
                            return Err(Error::new(ErrorKind::Data, "a row has no value for a key field")
                                .with_context("collection", &name)
                                .with_context("column", k)
                                .with_context("row", i));
                        }
                    }
                    Ok(doc! {"_id": ObjectId::new(), "s": first + i as i64, "q": quarantine, "d": row})
                })
                .collect()
        })
        .await
        .map_err(|e| Error::internal("BSON conversion panicked").with_source(e))??;
        let mut it = docs.into_iter().peekable();
        while it.peek().is_some() {
            let chunk: Vec<Document> = it
                .by_ref()
                .take(self.inner.cfg.insert_batch_documents)
                .collect();
            self.staged
                .insert_many(chunk)
                .await
                .map_err(self.inner.err("staging rows failed"))?;
        }
        Ok(n as u64)
    }
}

#[async_trait]
impl SinkWriter for MongoWriter {
    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        self.rows += self.stage(batch, false).await?;
        Ok(())
    }

    async fn write_quarantine(&mut self, batch: RecordBatch) -> Result<()> {
        self.quarantined += self.stage(batch, true).await?;
        Ok(())
    }

    async fn prepare(&mut self, epoch: Epoch) -> Result<Prepared> {
        // Inserts are acknowledged (majority or the server default): staged rows are durable.
        Ok(Prepared::new(
            epoch,
            self.rows,
            self.quarantined,
            0,
            vec![format!("{}.{}", self.inner.cfg.database, self.staging)],
        ))
    }

    async fn commit(&mut self, prepared: Prepared, marker: &CommitMarker) -> Result<CommitOutcome> {
        let inner = &self.inner;
        let pid = marker.pipeline_id.as_str();
        let control = inner.control_doc(pid).await?;
        if committed_epoch(control.as_ref()).is_some_and(|e| e >= marker.epoch) {
            self.staged
                .drop()
                .await
                .map_err(inner.err("dropping the staging collection failed"))?;
            return Ok(CommitOutcome::AlreadyCommitted);
        }
        if let Some(p) = control.as_ref().and_then(pending_of) {
            // An earlier attempt recorded its intent: finish it first (same epoch: done).
            inner.publish(&p.staging).await?;
            inner.finish(pid, &p).await?;
            if p.epoch >= marker.epoch {
                self.staged
                    .drop()
                    .await
                    .map_err(inner.err("dropping the staging collection failed"))?;
                return Ok(CommitOutcome::AlreadyCommitted);
            }
        }
        let p = Pending {
            epoch: prepared.epoch,
            cursor: marker.cursor.as_ref().map(|c| c.as_str().to_string()),
            staging: self.staging.clone(),
        };
        inner
            .control()
            .update_one(
                doc! {"_id": pid},
                doc! {"$set": {"pending": {
                    "epoch": p.epoch.0 as i64, "cursor": p.cursor.clone(), "staging": &p.staging,
                }}},
            )
            .upsert(true)
            .await
            .map_err(inner.err("recording the commit intent failed"))?;
        crash_point("mongodb.commit.after_intent").await;
        inner.publish(&p.staging).await?;
        inner.finish(pid, &p).await?;
        Ok(CommitOutcome::Committed)
    }

    async fn abort(&mut self, _prepared: Option<Prepared>) -> Result<()> {
        self.staged
            .drop()
            .await
            .map_err(self.inner.err("dropping the staging collection failed"))
    }
}
