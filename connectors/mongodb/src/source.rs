//! [`MongoSource`]: a find split into `_id` ranges read in parallel (or an aggregation),
//! documents normalised to JSON lines in batches and decoded into Arrow with the file source's
//! policies; incremental by a high-water mark committed with the data.

use crate::changes::{self, CdcCursor, Events, OpenError};
use crate::config::{
    HistoryLostPolicy, InitialPosition, MixedTypes, MongoSourceConfig, Query, ReadPreference,
};
use crate::convert::{id_text, write_document};
use arrow_array::RecordBatch;
use arrow_schema::{DataType, SchemaRef};
use async_trait::async_trait;
use bson::{Bson, Document, doc, oid::ObjectId};
use futures::stream::{self, StreamExt, TryStreamExt};
use mongodb::options::{ClientOptions, SelectionCriteria};
use mongodb::{Client, Collection};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stratalake_core::metrics::{RECEIVED_BYTES_TOTAL, RECEIVED_ROWS_TOTAL};
use stratalake_core::{
    BatchStreamAdapter, Context, Cursor, Error, ErrorKind, QuarantineRecord, ReadPlan, ReadRequest,
    Result, SendableBatchStream, Source, Split,
};
use stratalake_records::{JsonRecordDecoder, SchemaSource, TypeDriftPolicy};

const CURSOR_PREFIX: &str = "mongodb/v1:";
/// Documents converted and decoded together.
const CHUNK_DOCS: usize = 2048;

/// Reads a MongoDB collection (or an aggregation) into Arrow batches.
#[derive(Clone)]
pub struct MongoSource {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MongoSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoSource")
            .field("collection", &self.inner.name)
            .finish()
    }
}

struct Inner {
    cfg: MongoSourceConfig,
    coll: Collection<Document>,
    client: Client,
    /// `db.collection`, how errors name it.
    name: String,
    schema: SchemaRef,
    text_columns: Vec<String>,
    plans: Mutex<HashMap<String, PlanState>>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct MongoCursor {
    /// The largest value of the incremental field read (canonical extended JSON).
    #[serde(default)]
    last: Option<serde_json::Value>,
    /// The `_id`s (canonical extended JSON) of the documents at `last`.
    #[serde(default)]
    seen: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct PlanState {
    from: MongoCursor,
    max: Option<Bson>,
    at_max: BTreeSet<String>,
    /// Change streams: where this epoch starts, the stream opened at plan time (taken by the
    /// first attempt; a retry opens it again), the time it reads to, where it ended, and the
    /// columns of snapshot rows.
    cdc_from: Option<CdcCursor>,
    stream: Option<Events>,
    cdc_end: Option<bson::Timestamp>,
    cdc_next: Option<CdcCursor>,
    snapshot: Option<Document>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SplitSpec {
    token: String,
    /// `_id` bounds, canonical extended JSON: `lo <= _id < hi` (`hi` inclusive on the last).
    lo: Option<serde_json::Value>,
    hi: Option<serde_json::Value>,
    last: bool,
    /// A change-stream split (the events since the plan's start).
    #[serde(default)]
    changes: bool,
}

/// Client options from `uri` (the app name and a 10 s server selection timeout unless set).
pub(crate) async fn client_options(
    uri: &secrecy::SecretString,
    name: &str,
) -> Result<ClientOptions> {
    let mut opts = ClientOptions::parse(uri.expose_secret())
        .await
        .map_err(|e| driver_err(e, "the MongoDB connection string is invalid", name))?;
    opts.app_name = Some("strata".into());
    if opts.server_selection_timeout.is_none() {
        opts.server_selection_timeout = Some(Duration::from_secs(10));
    }
    Ok(opts)
}

/// Map a driver error to the core kinds, naming the collection.
pub(crate) fn driver_err(e: mongodb::error::Error, what: &str, name: &str) -> Error {
    use mongodb::error::ErrorKind as K;
    let kind = match e.kind.as_ref() {
        K::Authentication { .. } => ErrorKind::Auth,
        K::InvalidArgument { .. } => ErrorKind::Config,
        K::ServerSelection { .. } | K::Io(_) | K::ConnectionPoolCleared { .. } => {
            ErrorKind::Unavailable
        }
        K::Command(c) if c.code == 13 || c.code == 18 => ErrorKind::Auth,
        K::Command(c) if c.code == 26 => ErrorKind::NotFound,
        _ if e.contains_label("RetryableReadError") => ErrorKind::Unavailable,
        _ => ErrorKind::Data,
    };
    Error::new(kind, what.to_string())
        .with_context("collection", name)
        .with_source(e)
}

fn to_doc(m: &serde_json::Map<String, serde_json::Value>, key: &str) -> Result<Document> {
    Document::try_from(m.clone()).map_err(|e| {
        Error::config("not a valid (extended JSON) document")
            .with_context("key", key)
            .with_source(e)
    })
}

fn to_bson(v: &serde_json::Value) -> Result<Bson> {
    Bson::try_from(v.clone())
        .map_err(|e| Error::config("not a valid extended JSON value").with_source(e))
}

fn canonical(b: &Bson) -> serde_json::Value {
    b.clone().into_canonical_extjson()
}

/// Order two BSON values of comparable kinds (numbers, dates, ids, strings).
fn cmp_bson(a: &Bson, b: &Bson) -> Option<Ordering> {
    let num = |x: &Bson| match x {
        Bson::Int32(i) => Some(f64::from(*i)),
        Bson::Int64(i) => Some(*i as f64),
        Bson::Double(f) => Some(*f),
        _ => None,
    };
    match (a, b) {
        (Bson::DateTime(x), Bson::DateTime(y)) => Some(x.cmp(y)),
        (Bson::ObjectId(x), Bson::ObjectId(y)) => Some(x.cmp(y)),
        (Bson::String(x), Bson::String(y)) => Some(x.cmp(y)),
        _ => num(a)?.partial_cmp(&num(b)?),
    }
}

fn parse_cursor(c: &Cursor) -> Result<MongoCursor> {
    c.decode(CURSOR_PREFIX, "a MongoDB source")
}

fn encode_cursor(c: &MongoCursor) -> Result<Cursor> {
    Cursor::encode(CURSOR_PREFIX, c)
}

impl MongoSource {
    /// Connect, check that the collection exists, and fix the schema (explicit, or inferred
    /// from the first `sample_records` documents of the query).
    ///
    /// # Errors
    /// Config (a bad URI), Auth (rejected credentials), NotFound (no such collection),
    /// Unavailable (no server), each naming `db.collection`.
    pub async fn try_new(cfg: MongoSourceConfig) -> Result<Self> {
        cfg.validate()?;
        let name = format!("{}.{}", cfg.database, cfg.collection);
        let mut opts = client_options(&cfg.uri, &name).await?;
        opts.selection_criteria = Some(SelectionCriteria::ReadPreference(
            match cfg.read_preference {
                ReadPreference::Primary => mongodb::options::ReadPreference::Primary,
                ReadPreference::PrimaryPreferred => {
                    mongodb::options::ReadPreference::PrimaryPreferred { options: None }
                }
                ReadPreference::Secondary => {
                    mongodb::options::ReadPreference::Secondary { options: None }
                }
                ReadPreference::SecondaryPreferred => {
                    mongodb::options::ReadPreference::SecondaryPreferred { options: None }
                }
                ReadPreference::Nearest => {
                    mongodb::options::ReadPreference::Nearest { options: None }
                }
            },
        ));
        let client = Client::with_options(opts)
            .map_err(|e| driver_err(e, "cannot set up the MongoDB client", &name))?;
        let coll = client
            .database(&cfg.database)
            .collection::<Document>(&cfg.collection);
        let mut inner = Inner {
            schema: Arc::new(arrow_schema::Schema::empty()),
            text_columns: Vec::new(),
            plans: Mutex::new(HashMap::new()),
            coll,
            client,
            name,
            cfg,
        };
        inner.check_collection().await?;
        inner.schema = match &inner.cfg.schema {
            SchemaSource::Explicit(cols) => stratalake_records::schema::explicit_schema(cols)?,
            SchemaSource::Infer { sample_records, .. } => inner.infer(*sample_records).await?,
            _ => return Err(Error::config("unsupported schema source")),
        };
        if let Some(cs) = &inner.cfg.change_stream {
            inner.schema = changes::with_change_columns(&inner.schema, &cs.operation_column);
        }
        if inner.cfg.mixed_types == MixedTypes::JsonText {
            inner.text_columns = inner
                .schema
                .fields()
                .iter()
                .filter(|f| matches!(f.data_type(), DataType::Utf8 | DataType::LargeUtf8))
                .map(|f| f.name().clone())
                .collect();
        }
        Ok(Self {
            inner: Arc::new(inner),
        })
    }
}

impl Inner {
    fn plans(&self) -> std::sync::MutexGuard<'_, HashMap<String, PlanState>> {
        self.plans.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn decoder(&self, ctx: &Context) -> Arc<Mutex<JsonRecordDecoder>> {
        Arc::new(Mutex::new(JsonRecordDecoder::new(
            self.schema.clone(),
            ctx.batch_size(),
            TypeDriftPolicy::Quarantine,
            self.cfg.unknown_fields,
        )))
    }

    /// Decode `docs` on the blocking pool, quarantine what does not fit, count.
    async fn decode_chunk(
        self: Arc<Self>,
        ctx: &Context,
        dec: &Arc<Mutex<JsonRecordDecoder>>,
        docs: Vec<Document>,
    ) -> Result<Vec<RecordBatch>> {
        if docs.is_empty() {
            return Ok(Vec::new());
        }
        let (this, dec) = (self.clone(), dec.clone());
        let (batches, rejected, bytes) = tokio::task::spawn_blocking(move || {
            let mut dec = dec.lock().unwrap_or_else(|p| p.into_inner());
            this.decode(&docs, &mut dec)
        })
        .await
        .map_err(|e| Error::internal("document decoding panicked").with_source(e))??;
        let metrics = ctx.metrics().component("source");
        metrics.add(RECEIVED_BYTES_TOTAL, bytes as u64);
        if !rejected.is_empty() {
            ctx.quarantine("source", rejected).await?;
        }
        for b in &batches {
            metrics.add(RECEIVED_ROWS_TOTAL, b.num_rows() as u64);
        }
        Ok(batches)
    }

    async fn check_collection(&self) -> Result<()> {
        let names = self
            .client
            .database(&self.cfg.database)
            .list_collection_names()
            .filter(doc! {"name": &self.cfg.collection})
            .await
            .map_err(|e| driver_err(e, "cannot list the database's collections", &self.name))?;
        if names.is_empty() {
            return Err(
                Error::new(ErrorKind::NotFound, "the collection does not exist")
                    .with_context("collection", &self.name)
                    .with_context(
                        "hint",
                        "check `database` and `collection` (names are case-sensitive)",
                    ),
            );
        }
        Ok(())
    }

    fn base_filter(&self) -> Result<Document> {
        match &self.cfg.query {
            Query::Find { filter, .. } => to_doc(filter, "query.filter"),
            Query::Aggregate { .. } => Ok(Document::new()),
        }
    }

    async fn infer(&self, n: usize) -> Result<SchemaRef> {
        let docs: Vec<Document> = self
            .documents(self.base_filter()?, Some(n as i64))
            .await?
            .try_collect()
            .await?;
        if docs.is_empty() {
            return Err(Error::new(
                ErrorKind::NotFound,
                "cannot infer a schema: the query returns no documents; declare the schema",
            )
            .with_context("collection", &self.name));
        }
        let mut lines = String::new();
        for d in &docs {
            write_document(d, &mut lines, None);
            lines.push('\n');
        }
        Ok(Arc::new(stratalake_records::infer::infer_ndjson(
            lines.as_bytes(),
            n,
            &self.name,
        )?))
    }

    /// The documents of the query under `filter` (find) or the pipeline (aggregate).
    async fn documents(
        &self,
        filter: Document,
        limit: Option<i64>,
    ) -> Result<futures::stream::BoxStream<'static, Result<Document>>> {
        let name = self.name.clone();
        let err = move |e| driver_err(e, "reading the collection failed", &name);
        let cursor = match &self.cfg.query {
            Query::Find {
                projection, sort, ..
            } => {
                let mut f = self
                    .coll
                    .find(filter)
                    .batch_size(self.cfg.cursor_batch_documents);
                if let Some(p) = projection {
                    f = f.projection(to_doc(p, "query.projection")?);
                }
                if let Some(s) = sort {
                    f = f.sort(to_doc(s, "query.sort")?);
                }
                if let Some(l) = limit {
                    f = f.limit(l);
                }
                f.await.map_err(err.clone())?
            }
            Query::Aggregate { pipeline } => {
                let mut stages = pipeline
                    .iter()
                    .map(|s| to_doc(s, "query.pipeline"))
                    .collect::<Result<Vec<_>>>()?;
                if let Some(l) = limit {
                    stages.push(doc! {"$limit": l});
                }
                self.coll
                    .aggregate(stages)
                    .batch_size(self.cfg.cursor_batch_documents)
                    .await
                    .map_err(err.clone())?
            }
        };
        Ok(cursor.map_err(err).boxed())
    }

    /// The query's filter with the incremental condition.
    fn filter_from(&self, from: &MongoCursor) -> Result<Document> {
        let mut f = self.base_filter()?;
        if let Some(inc) = &self.cfg.incremental {
            let start = match (&from.last, &inc.initial_value) {
                (Some(v), _) | (None, Some(v)) => Some(to_bson(v)?),
                (None, None) => None,
            };
            if let Some(s) = start {
                f = doc! {"$and": [f, {inc.field.as_str(): {"$gte": s}}]};
            }
        }
        Ok(f)
    }

    /// `_id` bounds cutting `filter`'s documents into about `n` ranges.
    async fn id_bounds(
        &self,
        filter: &Document,
        n: usize,
    ) -> Result<Vec<(Option<Bson>, Option<Bson>)>> {
        let whole = vec![(None, None)];
        if n <= 1 || !matches!(self.cfg.query, Query::Find { .. }) {
            return Ok(whole);
        }
        let end = |dir: i32| {
            let filter = filter.clone();
            async move {
                self.coll
                    .find_one(filter)
                    .sort(doc! {"_id": dir})
                    .projection(doc! {"_id": 1})
                    .await
                    .map_err(|e| driver_err(e, "cannot find the _id range", &self.name))
            }
        };
        let (Some(lo), Some(hi)) = (end(1).await?, end(-1).await?) else {
            return Ok(whole);
        };
        let (lo, hi) = (lo.get("_id").cloned(), hi.get("_id").cloned());
        let cuts: Vec<Bson> = match (lo, hi) {
            (Some(Bson::ObjectId(a)), Some(Bson::ObjectId(b))) => {
                let (t0, t1) = (
                    a.timestamp().timestamp_millis() / 1000,
                    b.timestamp().timestamp_millis() / 1000,
                );
                if t1 <= t0 {
                    return Ok(whole);
                }
                let step = ((t1 - t0) as f64 / n as f64).max(1.0);
                (1..n)
                    .map(|k| t0 + (k as f64 * step) as i64)
                    .filter(|t| *t > t0 && *t <= t1)
                    .map(|t| {
                        let mut bytes = [0u8; 12];
                        bytes[..4].copy_from_slice(&(t as u32).to_be_bytes());
                        Bson::ObjectId(ObjectId::from_bytes(bytes))
                    })
                    .collect()
            }
            (Some(a), Some(b))
                if matches!(a, Bson::Int32(_) | Bson::Int64(_))
                    && matches!(b, Bson::Int32(_) | Bson::Int64(_)) =>
            {
                let as_i = |x: &Bson| match x {
                    Bson::Int32(i) => i64::from(*i),
                    Bson::Int64(i) => *i,
                    _ => 0,
                };
                let (x, y) = (as_i(&a), as_i(&b));
                if y <= x {
                    return Ok(whole);
                }
                let step = ((y - x) / n as i64).max(1);
                (1..n as i64)
                    .map(|k| x + k * step)
                    .filter(|c| *c <= y)
                    .map(Bson::Int64)
                    .collect()
            }
            _ => return Ok(whole),
        };
        let mut out = Vec::new();
        let mut prev: Option<Bson> = None;
        for c in cuts {
            out.push((prev.take(), Some(c.clone())));
            prev = Some(c);
        }
        out.push((prev, None));
        Ok(out)
    }

    /// Convert and decode one chunk of documents (on a blocking thread).
    fn decode(
        &self,
        docs: &[Document],
        dec: &mut JsonRecordDecoder,
    ) -> Result<(Vec<RecordBatch>, Vec<QuarantineRecord>, usize)> {
        let mut lines = String::with_capacity(docs.len() * 256);
        let text = (!self.text_columns.is_empty()).then_some(self.text_columns.as_slice());
        for d in docs {
            write_document(d, &mut lines, text);
            lines.push('\n');
        }
        let out = dec.decode(lines.as_bytes()).map_err(|e| {
            let i = e
                .context_value("record")
                .and_then(|r| r.parse::<usize>().ok())
                .unwrap_or(0);
            let id = docs.get(i).map(id_text).unwrap_or_default();
            e.with_context("collection", &self.name)
                .with_context("_id", id)
        })?;
        let rejected = out
            .rejected
            .into_iter()
            .map(|r| {
                let id = docs.get(r.index as usize).map(id_text).unwrap_or_default();
                QuarantineRecord {
                    component: "source".into(),
                    location: format!("{} _id={id}", self.name),
                    position: None,
                    raw: r.raw,
                    reason: r.reason,
                    column: r.column,
                }
            })
            .collect();
        Ok((out.batches, rejected, lines.len()))
    }
}

impl MongoSource {
    /// `_id`-range splits of `filter`'s documents, with `state` kept for their reads.
    async fn range_splits(&self, filter: &Document, state: PlanState) -> Result<Vec<Split>> {
        let inner = &self.inner;
        let n = if inner.cfg.splits == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get()) * 2
        } else {
            inner.cfg.splits
        };
        let token = ObjectId::new().to_hex();
        let bounds = inner.id_bounds(filter, n).await?;
        let count = bounds.len();
        let splits = bounds
            .into_iter()
            .enumerate()
            .map(|(i, (lo, hi))| {
                let spec = SplitSpec {
                    token: token.clone(),
                    lo: lo.as_ref().map(canonical),
                    hi: hi.as_ref().map(canonical),
                    last: i + 1 == count,
                    changes: false,
                };
                Split::encode(format!("{}[{}/{}]", inner.name, i + 1, count), &spec, None)
            })
            .collect::<Result<Vec<_>>>()?;
        inner.plans().insert(token, state);
        Ok(splits)
    }

    /// A change-stream epoch: the events after the committed position up to now, or (first
    /// run, lost history by policy) a snapshot of the collection.
    async fn plan_changes(&self, req: &ReadRequest) -> Result<ReadPlan> {
        let inner = &self.inner;
        let cs = inner.cfg.change_stream.clone().unwrap_or_default();
        let now = changes::operation_time(&inner.client, &inner.cfg.database)
            .await
            .map_err(|e| e.with_context("collection", &inner.name))?;
        let from = match req.from.as_ref().map(CdcCursor::parse).transpose()? {
            Some(f) => f,
            None if cs.initial == InitialPosition::Snapshot => {
                return self.plan_snapshot(now).await;
            }
            None => now.map(CdcCursor::after_time).unwrap_or_default(),
        };
        if let (Some((s, i)), Some(floor)) =
            (from.start_at, changes::oplog_floor(&inner.client).await)
            && (floor.time, floor.increment) > (s, i)
        {
            return self.history_lost(&from, now).await;
        }
        let stream =
            match changes::open(&inner.coll, &cs, inner.cfg.cursor_batch_documents, &from).await {
                Ok(s) => s,
                Err(OpenError::Strata(e)) => return Err(e),
                Err(OpenError::Driver(e)) if changes::is_history_lost(&e) => {
                    return self.history_lost(&from, now).await;
                }
                Err(OpenError::Driver(e)) => {
                    return Err(open_err(e, &inner.name));
                }
            };
        let token = ObjectId::new().to_hex();
        let spec = SplitSpec {
            token: token.clone(),
            lo: None,
            hi: None,
            last: true,
            changes: true,
        };
        inner.plans().insert(
            token,
            PlanState {
                cdc_from: Some(from.clone()),
                stream: Some(stream),
                cdc_end: now,
                ..Default::default()
            },
        );
        Ok(ReadPlan::new(
            vec![Split::encode(
                format!("{} changes", inner.name),
                &spec,
                None,
            )?],
            Some(from.encode()?),
        ))
    }

    /// The committed position's history is gone: fail, or snapshot again by policy.
    async fn history_lost(
        &self,
        from: &CdcCursor,
        now: Option<bson::Timestamp>,
    ) -> Result<ReadPlan> {
        let inner = &self.inner;
        match inner.cfg.change_stream.as_ref().map(|c| c.on_history_lost) {
            Some(HistoryLostPolicy::Snapshot) => {
                tracing::warn!(collection = %inner.name, position = %from.describe(),
                    "change-stream history lost; reading the collection again");
                self.plan_snapshot(now).await
            }
            _ => Err(changes::history_lost(&inner.name, from)),
        }
    }

    /// Every document as a `snapshot` row; the changes are followed from where the snapshot
    /// started (a resume token taken before reading, or the server's time).
    async fn plan_snapshot(&self, now: Option<bson::Timestamp>) -> Result<ReadPlan> {
        let inner = &self.inner;
        let cs = inner.cfg.change_stream.clone().unwrap_or_default();
        let next = match changes::open(&inner.coll, &cs, 1, &CdcCursor::default()).await {
            Ok(s) => s
                .resume_token()
                .map(|t| CdcCursor::after_token(&t))
                .transpose()?,
            Err(OpenError::Strata(e)) => return Err(e),
            Err(OpenError::Driver(e)) => return Err(open_err(e, &inner.name)),
        };
        let next = next.or_else(|| now.map(CdcCursor::after_time)).ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                "the server gives neither a resume token nor an operation time to follow changes from",
            )
            .with_context("collection", &inner.name)
        })?;
        let state = PlanState {
            cdc_next: Some(next.clone()),
            snapshot: Some(changes::snapshot_columns(&cs.operation_column, now)),
            ..Default::default()
        };
        let splits = self.range_splits(&inner.base_filter()?, state).await?;
        Ok(ReadPlan::new(splits, Some(next.encode()?)))
    }

    /// The events of a change-stream split, decoded in chunks.
    fn read_changes(&self, spec: SplitSpec, ctx: &Context) -> SendableBatchStream {
        let inner = self.inner.clone();
        let ctx = ctx.clone();
        let schema = inner.schema.clone();
        let stream = stream::once(async move {
            let cs = inner.cfg.change_stream.clone().unwrap_or_default();
            let (events, from, end) = {
                let mut plans = inner.plans();
                let state = plans.get_mut(&spec.token).ok_or_else(|| {
                    Error::internal("a change-stream split read without its plan")
                })?;
                state.cdc_next = None;
                (
                    state.stream.take(),
                    state.cdc_from.clone().unwrap_or_default(),
                    state.cdc_end,
                )
            };
            let events = match events {
                Some(e) => e,
                // A retried attempt: open again where the epoch starts.
                None => {
                    match changes::open(&inner.coll, &cs, inner.cfg.cursor_batch_documents, &from)
                        .await
                    {
                        Ok(e) => e,
                        Err(OpenError::Strata(e)) => return Err(e),
                        Err(OpenError::Driver(e)) if changes::is_history_lost(&e) => {
                            return Err(changes::history_lost(&inner.name, &from));
                        }
                        Err(OpenError::Driver(e)) => return Err(open_err(e, &inner.name)),
                    }
                }
            };
            let dec = inner.decoder(&ctx);
            let state = EventState {
                events,
                done: false,
                count: 0,
            };
            Ok::<_, Error>(
                stream::try_unfold(state, move |mut st| {
                    let (inner, ctx, dec, cs, token, from) = (
                        inner.clone(),
                        ctx.clone(),
                        dec.clone(),
                        cs.clone(),
                        spec.token.clone(),
                        from.clone(),
                    );
                    async move {
                        if st.done {
                            return Ok(None);
                        }
                        let mut rows = Vec::new();
                        let mut last = None;
                        while rows.len() < CHUNK_DOCS {
                            if cs.max_events_per_epoch > 0 && st.count >= cs.max_events_per_epoch {
                                st.done = true;
                                break;
                            }
                            match st.events.next_if_any().await {
                                Ok(Some(ev)) => {
                                    if changes::after(&ev, end) {
                                        st.done = true;
                                        break;
                                    }
                                    st.count += 1;
                                    let id = ev.id.clone();
                                    if let Some(row) =
                                        changes::event_row(ev, &cs.operation_column, &inner.name)?
                                    {
                                        rows.push(row);
                                    }
                                    last = Some(CdcCursor::after_token(&id)?);
                                }
                                Ok(None) => {
                                    // Caught up: the post-batch token also moves past other
                                    // collections' events.
                                    if let Some(t) = st.events.resume_token() {
                                        last = Some(CdcCursor::after_token(&t)?);
                                    }
                                    st.done = true;
                                    break;
                                }
                                Err(e) if changes::is_history_lost(&e) => {
                                    return Err(changes::history_lost(&inner.name, &from));
                                }
                                Err(e) => {
                                    return Err(driver_err(
                                        e,
                                        "reading the change stream failed",
                                        &inner.name,
                                    ));
                                }
                            }
                        }
                        let batches = inner.clone().decode_chunk(&ctx, &dec, rows).await?;
                        if let Some(l) = last
                            && let Some(state) = inner.plans().get_mut(&token)
                        {
                            state.cdc_next = Some(l);
                        }
                        Ok(Some((stream::iter(batches.into_iter().map(Ok)), st)))
                    }
                })
                .try_flatten(),
            )
        })
        .try_flatten();
        BatchStreamAdapter::boxed(schema, Box::pin(stream))
    }
}

struct EventState {
    events: Events,
    done: bool,
    count: u64,
}

fn open_err(e: mongodb::error::Error, name: &str) -> Error {
    driver_err(
        e,
        "cannot open the change stream (change streams need a replica set or a sharded cluster)",
        name,
    )
}

#[async_trait]
impl Source for MongoSource {
    fn name(&self) -> &str {
        "mongodb"
    }

    fn schema(&self) -> SchemaRef {
        self.inner.schema.clone()
    }

    async fn check(&self, _ctx: &Context) -> Result<()> {
        self.inner.check_collection().await
    }

    async fn plan(&self, req: &ReadRequest, _ctx: &Context) -> Result<ReadPlan> {
        let inner = &self.inner;
        if inner.cfg.change_stream.is_some() {
            return self.plan_changes(req).await;
        }
        let from = req
            .from
            .as_ref()
            .map(parse_cursor)
            .transpose()?
            .unwrap_or_default();
        let filter = inner.filter_from(&from)?;
        if inner.cfg.incremental.is_some() && from.last.is_some() {
            // Anything besides the documents read at the boundary?
            let probe: Vec<Document> = inner
                .coll
                .find(filter.clone())
                .projection(doc! {"_id": 1})
                .limit(from.seen.len() as i64 + 1)
                .await
                .map_err(|e| driver_err(e, "cannot probe for new documents", &inner.name))?
                .try_collect()
                .await
                .map_err(|e| driver_err(e, "cannot probe for new documents", &inner.name))?;
            let fresh = probe.iter().any(|d| {
                d.get("_id")
                    .is_none_or(|id| !from.seen.contains(&canonical(id).to_string()))
            });
            if !fresh {
                return Ok(ReadPlan::new(Vec::new(), req.from.clone()));
            }
        }
        let splits = self
            .range_splits(
                &filter,
                PlanState {
                    from: from.clone(),
                    ..Default::default()
                },
            )
            .await?;
        Ok(ReadPlan::new(splits, Some(encode_cursor(&from)?)))
    }

    fn read(&self, split: &Split, ctx: &Context) -> Result<SendableBatchStream> {
        let spec: SplitSpec = split.decode("a MongoDB source")?;
        if spec.changes {
            return Ok(self.read_changes(spec, ctx));
        }
        let inner = self.inner.clone();
        let ctx = ctx.clone();
        let schema = inner.schema.clone();
        let stream = stream::once(async move {
            let (from, snapshot) = inner
                .plans()
                .get(&spec.token)
                .map(|s| (s.from.clone(), s.snapshot.clone()))
                .unwrap_or_default();
            let mut filter = inner.filter_from(&from)?;
            let mut range = Document::new();
            if let Some(lo) = &spec.lo {
                range.insert("$gte", to_bson(lo)?);
            }
            if let Some(hi) = &spec.hi {
                range.insert(if spec.last { "$lte" } else { "$lt" }, to_bson(hi)?);
            }
            if !range.is_empty() {
                filter = doc! {"$and": [filter, {"_id": range}]};
            }
            let docs = inner.documents(filter, None).await?;
            let dec = inner.decoder(&ctx);
            let last = from.last.as_ref().map(to_bson).transpose()?;
            let field = inner.cfg.incremental.as_ref().map(|i| i.field.clone());
            let token = spec.token.clone();
            Ok::<_, Error>(
                docs.try_chunks(CHUNK_DOCS)
                    .map_err(|e| e.1)
                    .and_then(move |chunk| {
                        let (inner, ctx, dec, from, last, field, token, snapshot) = (
                            inner.clone(),
                            ctx.clone(),
                            dec.clone(),
                            from.clone(),
                            last.clone(),
                            field.clone(),
                            token.clone(),
                            snapshot.clone(),
                        );
                        async move {
                            // Boundary dedup and the watermark.
                            let mut keep = Vec::with_capacity(chunk.len());
                            let mut max: Option<Bson> = None;
                            let mut at_max = BTreeSet::new();
                            for mut d in chunk {
                                if let Some(f) = &field {
                                    let v = d.get(f).cloned().unwrap_or(Bson::Null);
                                    let id = d
                                        .get("_id")
                                        .map(|i| canonical(i).to_string())
                                        .unwrap_or_default();
                                    if last
                                        .as_ref()
                                        .is_some_and(|l| cmp_bson(&v, l) == Some(Ordering::Equal))
                                        && from.seen.contains(&id)
                                    {
                                        continue;
                                    }
                                    match max.as_ref().map(|m| cmp_bson(&v, m)) {
                                        None | Some(Some(Ordering::Greater)) => {
                                            max = Some(v);
                                            at_max.clear();
                                            at_max.insert(id);
                                        }
                                        Some(Some(Ordering::Equal)) => {
                                            at_max.insert(id);
                                        }
                                        _ => {}
                                    }
                                }
                                if let Some(cols) = &snapshot {
                                    for (k, v) in cols {
                                        d.insert(k.clone(), v.clone());
                                    }
                                }
                                keep.push(d);
                            }
                            let batches = inner.clone().decode_chunk(&ctx, &dec, keep).await?;
                            if let Some(m) = max
                                && let Some(state) = inner.plans().get_mut(&token)
                            {
                                match state.max.as_ref().map(|x| cmp_bson(&m, x)) {
                                    None | Some(Some(Ordering::Greater)) => {
                                        state.max = Some(m);
                                        state.at_max = at_max;
                                    }
                                    Some(Some(Ordering::Equal)) => state.at_max.extend(at_max),
                                    _ => {}
                                }
                            }
                            Ok(stream::iter(batches.into_iter().map(Ok)))
                        }
                    })
                    .try_flatten(),
            )
        })
        .try_flatten();
        Ok(BatchStreamAdapter::boxed(schema, Box::pin(stream)))
    }

    async fn end_cursor(&self, plan: &ReadPlan, _ctx: &Context) -> Result<Option<Cursor>> {
        if self.inner.cfg.change_stream.is_some() {
            let next = plan
                .splits
                .first()
                .and_then(|s| serde_json::from_str::<SplitSpec>(&s.spec).ok())
                .and_then(|s| self.inner.plans().remove(&s.token))
                .and_then(|s| s.cdc_next);
            return match next {
                Some(n) => n.encode().map(Some),
                None => Ok(plan.end.clone()),
            };
        }
        if self.inner.cfg.incremental.is_none() {
            return Ok(plan.end.clone());
        }
        let Some(token) = plan
            .splits
            .first()
            .and_then(|s| serde_json::from_str::<SplitSpec>(&s.spec).ok())
            .map(|s| s.token)
        else {
            return Ok(plan.end.clone());
        };
        let state = self.inner.plans().remove(&token).unwrap_or_default();
        let Some(max) = state.max else {
            return Ok(plan.end.clone());
        };
        let mut seen = state.at_max;
        let old = state.from.last.as_ref().map(to_bson).transpose()?;
        if old.is_some_and(|o| cmp_bson(&o, &max) == Some(Ordering::Equal)) {
            seen.extend(state.from.seen);
        }
        Ok(Some(encode_cursor(&MongoCursor {
            last: Some(canonical(&max)),
            seen,
        })?))
    }
}
