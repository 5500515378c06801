//! [`ParquetSink`]: size-targeted zstd Parquet files committed exactly once through a
//! create-only manifest.
//!
//! Layout under the root:
//! ```text
//! part-<pipeline>-e<epoch>-<lane>-<seq>.parquet          the data (what readers glob)
//! _quarantine/part-<pipeline>-e<epoch>-<seq>.parquet      rejected records of the same epochs
//! _strata/manifests/<pipeline>/<epoch>.json               one per committed epoch: marker + files
//! _strata/staging/<pipeline>/<attempt>/...                files of epochs not yet committed
//! ```
//! An epoch is written to staging (invisible), then committed by creating its manifest with
//! `PutMode::Create` (the commit point: exactly one attempt wins), then published by renaming
//! its files into place. A crash after the manifest is rolled forward by the next
//! `last_committed`/`open`; a crash before it leaves only (invisible) staging files, which an
//! `open` deletes once they are an hour old, so a concurrent run of the same pipeline is never
//! robbed of its files; the manifest is only written once every staged file is confirmed
//! present. Readers that follow manifests see whole epochs only; a plain glob over the root can
//! see an epoch's files appear one by one during publication.

use crate::error::{FilesError, store_err};
use crate::location::StoreLocation;
use crate::options::ParquetSinkConfig;
use crate::parquet_io::{ObjectWriter, Uploader, abort_journaled};
use arrow_array::{Array, RecordBatch, StringArray, UInt32Array};
use arrow_schema::{Schema, SchemaRef};
use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use stratalake_core::{
    CommitMarker, CommitOutcome, Context, Delivery, Epoch, Error, ErrorKind, Prepared, Result,
    Sink, SinkCapabilities, SinkWriter, crash_point,
};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Writes Parquet files under a root, exactly once per epoch.
#[derive(Clone)]
pub struct ParquetSink {
    inner: Arc<SinkInner>,
}

struct SinkInner {
    location: StoreLocation,
    cfg: ParquetSinkConfig,
    uploader: Uploader,
}

impl fmt::Debug for ParquetSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParquetSink")
            .field("location", &self.inner.location)
            .finish()
    }
}

/// One committed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Path relative to the root.
    pub path: String,
    /// Where it was staged, relative to the root.
    pub staged: String,
    /// Rows in it.
    pub rows: u64,
    /// Its size.
    pub bytes: u64,
    /// `data` or `quarantine`.
    pub kind: String,
}

/// The commit record of one epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version (1).
    pub version: u32,
    /// The commit marker.
    pub marker: CommitMarker,
    /// The writer attempt that won the commit.
    pub attempt: String,
    /// The files of the epoch.
    pub files: Vec<ManifestFile>,
}

impl ParquetSink {
    /// A sink writing under the local root of `cfg`.
    ///
    /// # Errors
    /// Config errors naming the key.
    pub fn try_new(cfg: ParquetSinkConfig) -> Result<Self> {
        cfg.validate()?;
        let location = StoreLocation::parse(&cfg.root)?;
        Self::try_new_at(location, cfg)
    }

    /// A sink writing under any object store location.
    ///
    /// # Errors
    /// Config errors naming the key.
    pub fn try_new_at(location: StoreLocation, cfg: ParquetSinkConfig) -> Result<Self> {
        cfg.validate()?;
        let uploader = Uploader {
            location: location.clone(),
            part_size: usize::try_from(cfg.upload_part_size_megabytes << 20).unwrap_or(8 << 20),
            concurrency: cfg.upload_concurrency,
        };
        Ok(Self {
            inner: Arc::new(SinkInner {
                location,
                cfg,
                uploader,
            }),
        })
    }

    /// Every committed manifest of `pipeline_id`, in epoch order.
    ///
    /// # Errors
    /// Store errors naming the path.
    pub async fn manifests(&self, pipeline_id: &str) -> Result<Vec<Manifest>> {
        let mut out = Vec::new();
        for p in self.inner.manifest_paths(pipeline_id).await? {
            out.push(self.inner.read_manifest(&p).await?);
        }
        Ok(out)
    }

    /// The location written to.
    pub fn location(&self) -> &StoreLocation {
        &self.inner.location
    }
}

impl SinkInner {
    fn store(&self) -> &Arc<dyn ObjectStore> {
        self.location.store()
    }

    fn manifest_dir(&self, pid: &str) -> Path {
        self.location.child(&format!("_strata/manifests/{pid}"))
    }

    fn staging_dir(&self, pid: &str) -> Path {
        self.location.child(&format!("_strata/staging/{pid}"))
    }

    async fn manifest_paths(&self, pid: &str) -> Result<Vec<Path>> {
        self.location.list_json(&self.manifest_dir(pid)).await
    }

    async fn read_manifest(&self, p: &Path) -> Result<Manifest> {
        self.location.get_json(p, "a commit manifest").await
    }

    /// Finish publishing a committed manifest (idempotent).
    async fn publish(&self, m: &Manifest) -> Result<()> {
        for f in &m.files {
            let staged = self.location.child(&f.staged);
            let dest = self.location.child(&f.path);
            match self.store().rename(&staged, &dest).await {
                Ok(()) => {}
                Err(object_store::Error::NotFound { .. }) => {
                    // Already published by an earlier run; make sure it is there.
                    self.store().head(&dest).await.map_err(|e| {
                        Error::new(
                            ErrorKind::Data,
                            "a committed file is missing: it was neither staged nor published",
                        )
                        .with_context("file", self.location.describe(&dest))
                        .with_context("pipeline", &m.marker.pipeline_id)
                        .with_context("epoch", m.marker.epoch)
                        .with_source(e)
                    })?;
                }
                Err(e) => return Err(store_err("rename", self.location.describe(&staged), e)),
            }
            crash_point("files.sink.after_publish_file").await;
        }
        Ok(())
    }

    async fn delete_prefix(&self, prefix: &Path) -> Result<()> {
        let locations = self
            .store()
            .list(Some(prefix))
            .map_ok(|m| m.location)
            .boxed();
        self.store()
            .delete_stream(locations)
            .try_collect::<Vec<_>>()
            .await
            .map_err(|e| store_err("delete", self.location.describe(prefix), e))?;
        Ok(())
    }

    /// Where the multipart uploads of an attempt are journaled.
    fn journal_dir(&self, pid: &str, attempt: &str) -> Path {
        self.staging_dir(pid).join(attempt).join("_uploads")
    }

    /// A writer for a staged file of an attempt.
    fn object_writer(&self, pid: &str, attempt: &str, staged: &str) -> ObjectWriter {
        self.uploader
            .writer(self.location.child(staged), self.journal_dir(pid, attempt))
    }

    /// Abort the multipart uploads, then delete the staging files, of attempts whose newest
    /// file is older than `abandoned_after_secs`.
    async fn delete_stale_staging(&self, pid: &str) -> Result<()> {
        let dir = self.staging_dir(pid);
        let idle = i64::try_from(self.cfg.abandoned_after_secs).unwrap_or(i64::MAX);
        let cutoff = chrono::Utc::now() - chrono::Duration::seconds(idle);
        let mut newest: std::collections::HashMap<String, chrono::DateTime<chrono::Utc>> =
            std::collections::HashMap::new();
        let metas: Vec<object_store::ObjectMeta> = self
            .store()
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(|e| store_err("list", self.location.describe(&dir), e))?;
        let attempt_of = |p: &Path| {
            self.location
                .relative(p)
                .split('/')
                .nth(3)
                .unwrap_or_default()
                .to_string()
        };
        for m in &metas {
            let t = newest
                .entry(attempt_of(&m.location))
                .or_insert(m.last_modified);
            *t = (*t).max(m.last_modified);
        }
        let stale: Vec<Path> = metas
            .into_iter()
            .filter(|m| newest[&attempt_of(&m.location)] <= cutoff)
            .map(|m| m.location)
            .collect();
        if stale.is_empty() {
            return Ok(());
        }
        for (attempt, t) in &newest {
            if *t <= cutoff {
                abort_journaled(&self.location, &self.journal_dir(pid, attempt)).await?;
            }
        }
        let locations = futures::stream::iter(stale.into_iter().map(Ok)).boxed();
        self.store()
            .delete_stream(locations)
            .try_collect::<Vec<_>>()
            .await
            .map_err(|e| store_err("delete", self.location.describe(&dir), e))?;
        Ok(())
    }

    /// Roll the latest committed epoch forward and return its marker.
    async fn recover(&self, pid: &str) -> Result<Option<Manifest>> {
        let Some(last) = self.manifest_paths(pid).await?.pop() else {
            return Ok(None);
        };
        let m = self.read_manifest(&last).await?;
        self.publish(&m).await?;
        Ok(Some(m))
    }
}

#[async_trait]
impl Sink for ParquetSink {
    fn name(&self) -> &str {
        "parquet"
    }

    fn capabilities(&self) -> SinkCapabilities {
        SinkCapabilities::new(Delivery::ExactlyOnce).with_quarantine(true)
    }

    async fn open(&self, schema: SchemaRef, ctx: &Context) -> Result<Box<dyn SinkWriter>> {
        let pid = ctx.pipeline_id().to_string();
        stratalake_core::checkpoint::validate_pipeline_id(&pid)?;
        let s = &self.inner;
        s.recover(&pid).await?;
        // Staging holds only uncommitted attempts. Delete those abandoned long enough ago that
        // no live run can still be writing them (a concurrent run of the same pipeline keeps
        // its files, and loses at the manifest instead).
        s.delete_stale_staging(&pid).await?;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let lanes = if s.cfg.write_concurrency == 0 {
            cores
        } else {
            s.cfg.write_concurrency
        };
        let attempt = format!("{:016x}", rand::random::<u64>());
        let file_schema = if s.cfg.partition_by.is_empty() {
            schema.clone()
        } else {
            for c in &s.cfg.partition_by {
                schema.field_with_name(c).map_err(|_| {
                    Error::config("a `partition_by` column is not in the data")
                        .with_context("column", c)
                        .with_context(
                            "sink",
                            self.inner.location.describe(self.inner.location.prefix()),
                        )
                })?;
            }
            Arc::new(Schema::new(
                schema
                    .fields()
                    .iter()
                    .filter(|f| !s.cfg.partition_by.contains(f.name()))
                    .cloned()
                    .collect::<Vec<_>>(),
            ))
        };
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(s.cfg.zstd_level).map_err(|e| {
                    Error::config("invalid zstd_level")
                        .with_context("zstd_level", s.cfg.zstd_level)
                        .with_source(e)
                })?,
            ))
            .set_max_row_group_row_count(Some(s.cfg.row_group_rows))
            .set_dictionary_page_size_limit(128 << 10)
            .build();
        Ok(Box::new(ParquetWriter {
            sink: self.inner.clone(),
            pid,
            attempt,
            file_schema,
            props,
            lanes: (0..lanes.max(1)).map(|_| None).collect(),
            tasks: JoinSet::new(),
            next_lane: 0,
            quarantine: None,
            quarantine_files: Vec::new(),
            files: Vec::new(),
            committed: false,
        }))
    }

    async fn last_committed(
        &self,
        pipeline_id: &str,
        _ctx: &Context,
    ) -> Result<Option<CommitMarker>> {
        stratalake_core::checkpoint::validate_pipeline_id(pipeline_id)?;
        Ok(self.inner.recover(pipeline_id).await?.map(|m| m.marker))
    }
}

/// A file being written.
struct OpenFile {
    writer: AsyncArrowWriter<ObjectWriter>,
    /// The published path (relative), with the attempt id in place of the epoch.
    rel: String,
    staged: String,
    rows: u64,
}

impl OpenFile {
    fn open(
        sink: &SinkInner,
        pid: &str,
        attempt: &str,
        rel: String,
        schema: SchemaRef,
        props: WriterProperties,
    ) -> Result<Self> {
        let staged = staged_path(pid, attempt, &rel);
        let obj = sink.object_writer(pid, attempt, &staged);
        let writer = AsyncArrowWriter::try_new(obj, schema, Some(props)).map_err(|source| {
            Error::from(FilesError::Parquet {
                path: staged.clone(),
                source,
            })
        })?;
        Ok(Self {
            writer,
            rel,
            staged,
            rows: 0,
        })
    }

    async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writer.write(batch).await.map_err(|source| {
            Error::from(FilesError::Parquet {
                path: self.staged.clone(),
                source,
            })
        })?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    fn size(&self) -> u64 {
        (self.writer.bytes_written() + self.writer.in_progress_size()) as u64
    }

    async fn close(self, kind: &str) -> Result<ManifestFile> {
        let mut w = self.writer;
        w.finish().await.map_err(|source| {
            Error::from(FilesError::Parquet {
                path: self.staged.clone(),
                source,
            })
        })?;
        Ok(ManifestFile {
            path: self.rel,
            staged: self.staged,
            rows: self.rows,
            bytes: w.bytes_written() as u64,
            kind: kind.to_string(),
        })
    }
}

/// A batch for one partition directory (`""` when the table is not partitioned).
type Routed = (String, RecordBatch);

struct ParquetWriter {
    sink: Arc<SinkInner>,
    pid: String,
    attempt: String,
    /// The schema of the files: without the partition columns.
    file_schema: SchemaRef,
    props: WriterProperties,
    lanes: Vec<Option<mpsc::Sender<Routed>>>,
    tasks: JoinSet<Result<Vec<ManifestFile>>>,
    next_lane: usize,
    quarantine: Option<OpenFile>,
    quarantine_files: Vec<ManifestFile>,
    files: Vec<ManifestFile>,
    /// This attempt's manifest landed: the epoch is committed, and its staged files are the
    /// committed data until published. Abort must not delete them.
    committed: bool,
}

/// Characters percent-encoded in partition directory names (as Hive does).
const PARTITION_ESCAPES: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b'/')
    .add(b'\\')
    .add(b'=')
    .add(b'%')
    .add(b':')
    .add(b'#')
    .add(b'?')
    .add(b'*')
    .add(b'"')
    .add(b'<')
    .add(b'>')
    .add(b'|')
    .add(b'{')
    .add(b'}')
    .add(b'[')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'\'');

impl ParquetWriter {
    fn start_lane(&mut self, lane: usize) -> mpsc::Sender<Routed> {
        let (tx, mut rx) = mpsc::channel::<Routed>(1);
        let sink = self.sink.clone();
        let schema = self.file_schema.clone();
        let props = self.props.clone();
        let target = self.sink.cfg.target_file_size_megabytes << 20;
        let max_open = self.sink.cfg.max_open_files;
        let (pid, attempt) = (self.pid.clone(), self.attempt.clone());
        self.tasks.spawn(async move {
            let mut done = Vec::new();
            let mut open: HashMap<String, OpenFile> = HashMap::new();
            let mut seq = 0u32;
            while let Some((dir, batch)) = rx.recv().await {
                if !open.contains_key(&dir) {
                    if open.len() >= max_open
                        && let Some(k) = open
                            .iter()
                            .max_by_key(|(_, f)| f.size())
                            .map(|(k, _)| k.clone())
                        && let Some(f) = open.remove(&k)
                    {
                        done.push(f.close("data").await?);
                    }
                    // The epoch is not known before prepare: name by attempt, lane and
                    // sequence; the final name gets the epoch at commit.
                    let name = format!("part-{pid}-{attempt}-{lane:02}-{seq:04}.parquet");
                    let rel = if dir.is_empty() {
                        name
                    } else {
                        format!("{dir}/{name}")
                    };
                    seq += 1;
                    let f =
                        OpenFile::open(&sink, &pid, &attempt, rel, schema.clone(), props.clone())?;
                    open.insert(dir.clone(), f);
                }
                let f = open.get_mut(&dir).expect("opened above");
                f.write(&batch).await?;
                if f.size() >= target
                    && let Some(f) = open.remove(&dir)
                {
                    done.push(f.close("data").await?);
                }
            }
            let mut rest: Vec<(String, OpenFile)> = open.into_iter().collect();
            rest.sort_by(|a, b| a.0.cmp(&b.0));
            for (_, f) in rest {
                done.push(f.close("data").await?);
            }
            Ok(done)
        });
        tx
    }

    async fn join_lanes(&mut self) -> Result<()> {
        for l in &mut self.lanes {
            *l = None;
        }
        while let Some(joined) = self.tasks.join_next().await {
            let files = joined
                .map_err(|e| Error::internal("a Parquet writer task failed").with_source(e))??;
            self.files.extend(files);
        }
        Ok(())
    }

    /// Split a batch by the values of the partition columns into (directory, rows without
    /// those columns), in order of first appearance.
    fn route(&self, batch: RecordBatch) -> Result<Vec<Routed>> {
        let cols = &self.sink.cfg.partition_by;
        if cols.is_empty() {
            return Ok(vec![(String::new(), batch)]);
        }
        let texts = cols
            .iter()
            .map(|c| {
                let col = batch.column_by_name(c).ok_or_else(|| {
                    Error::new(
                        ErrorKind::Schema,
                        "a partition column is missing from a batch",
                    )
                    .with_context("column", c)
                })?;
                let text = arrow_cast::cast(col, &arrow_schema::DataType::Utf8).map_err(|e| {
                    Error::new(
                        ErrorKind::Schema,
                        "a partition column cannot be written as text",
                    )
                    .with_context("column", c)
                    .with_context("type", col.data_type())
                    .with_source(e)
                })?;
                Ok(text
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .cloned()
                    .expect("cast to Utf8 gives a StringArray"))
            })
            .collect::<Result<Vec<StringArray>>>()?;
        let mut order: Vec<String> = Vec::new();
        let mut rows: HashMap<String, Vec<u32>> = HashMap::new();
        let mut dir = String::new();
        for i in 0..batch.num_rows() {
            dir.clear();
            for (c, t) in cols.iter().zip(&texts) {
                if !dir.is_empty() {
                    dir.push('/');
                }
                dir.push_str(c);
                dir.push('=');
                if t.is_null(i) {
                    dir.push_str(crate::source::HIVE_NULL);
                } else {
                    let v = t.value(i);
                    dir.extend(percent_encoding::utf8_percent_encode(v, PARTITION_ESCAPES));
                }
            }
            match rows.get_mut(&dir) {
                Some(r) => r.push(u32::try_from(i).unwrap_or(u32::MAX)),
                None => {
                    order.push(dir.clone());
                    rows.insert(dir.clone(), vec![u32::try_from(i).unwrap_or(u32::MAX)]);
                }
            }
        }
        let keep: Vec<usize> = batch
            .schema()
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| !cols.contains(f.name()))
            .map(|(i, _)| i)
            .collect();
        let data = batch.project(&keep)?;
        let data = RecordBatch::try_new(self.file_schema.clone(), data.columns().to_vec())?;
        if order.len() == 1 {
            return Ok(vec![(order.pop().expect("one"), data)]);
        }
        order
            .into_iter()
            .map(|d| {
                let idx = UInt32Array::from(rows.remove(&d).unwrap_or_default());
                let part = arrow_select::take::take_record_batch(&data, &idx)?;
                Ok((d, part))
            })
            .collect()
    }

    async fn send(&mut self, lane: usize, item: Routed) -> Result<()> {
        let tx = match &self.lanes[lane] {
            Some(tx) => tx.clone(),
            None => {
                let tx = self.start_lane(lane);
                self.lanes[lane] = Some(tx.clone());
                tx
            }
        };
        if tx.send(item).await.is_err() {
            // The lane task ended early: surface its error.
            self.join_lanes().await?;
            return Err(Error::internal("a Parquet writer lane stopped"));
        }
        Ok(())
    }
}

#[async_trait]
impl SinkWriter for ParquetWriter {
    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        stratalake_core::panic_point("files.sink.write");
        if self.sink.cfg.partition_by.is_empty() {
            let lane = self.next_lane % self.lanes.len();
            self.next_lane = self.next_lane.wrapping_add(1);
            return self.send(lane, (String::new(), batch)).await;
        }
        for (dir, part) in self.route(batch)? {
            // One partition always goes to the same lane, so it gets as few files as possible.
            let lane = usize::try_from(hash_of(&dir) % self.lanes.len() as u64).unwrap_or(0);
            self.send(lane, (dir, part)).await?;
        }
        Ok(())
    }

    async fn write_quarantine(&mut self, batch: RecordBatch) -> Result<()> {
        if self.quarantine.is_none() {
            let rel = format!(
                "_quarantine/part-{}-{}-{:04}.parquet",
                self.pid,
                self.attempt,
                self.quarantine_files.len()
            );
            self.quarantine = Some(OpenFile::open(
                &self.sink,
                &self.pid,
                &self.attempt,
                rel,
                batch.schema(),
                self.props.clone(),
            )?);
        }
        let q = self.quarantine.as_mut().expect("opened above");
        q.write(&batch).await
    }

    async fn prepare(&mut self, epoch: Epoch) -> Result<Prepared> {
        self.join_lanes().await?;
        if let Some(q) = self.quarantine.take() {
            self.quarantine_files.push(q.close("quarantine").await?);
        }
        let rows = self.files.iter().map(|f| f.rows).sum();
        let quarantined = self.quarantine_files.iter().map(|f| f.rows).sum();
        let bytes = self
            .files
            .iter()
            .chain(&self.quarantine_files)
            .map(|f| f.bytes)
            .sum();
        let items = self
            .files
            .iter()
            .chain(&self.quarantine_files)
            .map(|f| final_name(&f.path, &self.attempt, epoch))
            .collect();
        Ok(Prepared::new(epoch, rows, quarantined, bytes, items))
    }

    async fn commit(&mut self, prepared: Prepared, marker: &CommitMarker) -> Result<CommitOutcome> {
        stratalake_core::panic_point("files.sink.commit");
        let epoch = prepared.epoch;
        let files: Vec<ManifestFile> = self
            .files
            .iter()
            .chain(&self.quarantine_files)
            .map(|f| ManifestFile {
                path: final_name(&f.path, &self.attempt, epoch),
                ..f.clone()
            })
            .collect();
        // Every staged file must be there before the commit point: a manifest never names a
        // file that cannot be published.
        for f in &files {
            let staged = self.sink.location.child(&f.staged);
            self.sink.store().head(&staged).await.map_err(|e| {
                Error::new(ErrorKind::Conflict, "a staged file disappeared before the commit: another run of this pipeline cleaned it up")
                    .with_context("file", self.sink.location.describe(&staged))
                    .with_source(e)
            })?;
        }
        let manifest = Manifest {
            version: 1,
            marker: marker.clone(),
            attempt: self.attempt.clone(),
            files,
        };
        let path = self
            .sink
            .manifest_dir(&marker.pipeline_id)
            .join(format!("{:020}.json", marker.epoch.0));
        let created = self.sink.location.put_json_create(&path, &manifest).await?;
        self.committed = created;
        if !created {
            let existing = self.sink.read_manifest(&path).await?;
            if existing.attempt != self.attempt {
                // Another attempt (an earlier run) committed this epoch: ours is a replay.
                self.sink.publish(&existing).await?;
                self.abort(None).await?;
                return Ok(CommitOutcome::AlreadyCommitted);
            }
        }
        crash_point("files.sink.after_manifest").await;
        stratalake_core::panic_point("files.sink.after_manifest");
        self.sink.publish(&manifest).await?;
        Ok(CommitOutcome::Committed)
    }

    async fn abort(&mut self, _prepared: Option<Prepared>) -> Result<()> {
        self.tasks.abort_all();
        for l in &mut self.lanes {
            *l = None;
        }
        self.quarantine = None;
        if self.committed {
            // The commit point passed (a failure or panic while publishing): the staged files
            // are committed data, published by the next run's recovery.
            return Ok(());
        }
        abort_journaled(
            &self.sink.location,
            &self.sink.journal_dir(&self.pid, &self.attempt),
        )
        .await?;
        let dir = self.sink.staging_dir(&self.pid).join(self.attempt.as_str());
        self.sink.delete_prefix(&dir).await
    }
}

fn hash_of(s: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(s)
}

/// Where a file of an attempt is staged before its epoch is committed.
fn staged_path(pid: &str, attempt: &str, rel: &str) -> String {
    format!("_strata/staging/{pid}/{attempt}/{rel}")
}

/// The published name of a staged file: the attempt id replaced by the epoch.
fn final_name(rel: &str, attempt: &str, epoch: Epoch) -> String {
    rel.replace(&format!("-{attempt}-"), &format!("-e{:08}-", epoch.0))
}

/// Read every `*.parquet` file directly under a local directory, in name order: what a reader
/// globbing `<dir>/*.parquet` sees (e.g. the sink's root, or its `_quarantine/`). Blocking;
/// an absent directory reads as empty.
///
/// # Errors
/// A file that cannot be read, naming it.
pub fn read_parquet_dir(dir: &std::path::Path) -> Result<Vec<RecordBatch>> {
    let mut files: Vec<std::path::PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::from(e).with_context("dir", dir.display())),
    };
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let name = f.display().to_string();
        let file =
            std::fs::File::open(&f).map_err(|e| Error::from(e).with_context("file", &name))?;
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .map_err(|source| {
                Error::from(FilesError::Parquet {
                    path: name.clone(),
                    source,
                })
            })?;
        for b in reader {
            out.push(b.map_err(|e| Error::from(e).with_context("file", &name))?);
        }
    }
    Ok(out)
}
