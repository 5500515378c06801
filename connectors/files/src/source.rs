//! [`FileSource`]: NDJSON, CSV and Parquet files under a root, read as parallel splits.

use crate::decode::{CsvFormat, JsonFormat, LineFormat, decode_chunk};
use crate::error::{FilesError, store_err};
use crate::location::StoreLocation;
use crate::options::{
    ChangedFilePolicy, Compression, CorruptFilePolicy, FileSourceConfig, Format, ListingMode,
    Partitioning, SOURCE_VERSION_COLUMN, SchemaSource, explicit_schema,
};
use crate::parquet_io::ObjectReader;
use crate::reader::{LineChunker, Piece, decompress, newlines_before, open_from};
use arrow_array::{ArrayRef, RecordBatch, StringArray, new_null_array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use globset::{Glob, GlobSet, GlobSetBuilder};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use stratalake_core::metrics::{COERCED_VALUES_TOTAL, RECEIVED_BYTES_TOTAL, RECEIVED_ROWS_TOTAL};
use stratalake_core::{
    BatchStreamAdapter, Context, Cursor, Error, ErrorKind, QuarantineRecord, ReadPlan, ReadRequest,
    Result, SendableBatchStream, Source, Split,
};
use tokio::runtime::Handle;
use tokio::sync::mpsc;

/// Newline counts before each split start of one file version, filled once.
type LineIndexSlot = Mutex<Option<Arc<Vec<u64>>>>;

const CURSOR_PREFIX: &str = "files/v1:";
const CHUNK_BYTES: usize = 1 << 20;
/// Files schema inference samples at most.
const MAX_SAMPLED_FILES: usize = 16;

/// Reads NDJSON, CSV or Parquet files under a root directory or prefix.
///
/// - Planning lists the files matching `include`/`exclude` (skipping `_*` and `.*`), keeps
///   those new or changed since the cursor (the cursor remembers each file's version), and cuts
///   plain NDJSON/CSV files bigger than `split_size_megabytes` into byte ranges at line
///   boundaries.
/// - Reading is lazy; each split is decoded on a blocking thread, so splits use every core.
/// - Malformed lines go to quarantine with the file, line number, raw text and reason; type
///   drift and unknown fields follow the declared policies.
#[derive(Clone)]
pub struct FileSource {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    location: StoreLocation,
    cfg: FileSourceConfig,
    schema: SchemaRef,
    include: GlobSet,
    exclude: GlobSet,
    split_bytes: AtomicU64,
    chunk_bytes: AtomicUsize,
    /// Newline counts at split starts, per file version, computed on the first bad line.
    line_index: Mutex<HashMap<String, Arc<LineIndexSlot>>>,
    warned_fields: Mutex<HashSet<String>>,
    /// Decoders returned by finished splits, by batch size and the partition columns taken
    /// from the path: reusing their buffers keeps the heap from fragmenting as split after
    /// split allocates and frees them.
    decoders: Mutex<Vec<(DecoderKey, Box<dyn LineFormat>)>>,
}

/// A pooled decoder fits a split with this batch size and these path-given columns.
type DecoderKey = (usize, Vec<String>);

/// The Hive `key=value` directory segments of a relative path (values percent-decoded; the
/// default partition is null).
fn hive_values(rel: &str) -> Vec<(String, Option<String>)> {
    let mut segs: Vec<&str> = rel.split('/').collect();
    segs.pop(); // the file name
    segs.into_iter()
        .filter_map(|seg| seg.split_once('='))
        .map(|(k, v)| {
            let v = percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned();
            let v = (v != HIVE_NULL).then_some(v);
            (k.to_string(), v)
        })
        .collect()
}

/// The directory name Hive and Spark use for a null partition value.
pub(crate) const HIVE_NULL: &str = "__HIVE_DEFAULT_PARTITION__";

impl fmt::Debug for FileSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileSource")
            .field("location", &self.inner.location)
            .field("format", &self.inner.cfg.format)
            .finish()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct SplitSpec {
    path: String,
    version: String,
    start: u64,
    end: u64,
    size: u64,
    split_bytes: u64,
    /// Where the first split of this file's plan starts: 0, or the end of its committed bytes
    /// when only its appended bytes are read.
    #[serde(default, skip_serializing_if = "is_zero")]
    from: u64,
    /// Parquet: the row groups of this split (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    row_groups: Option<Vec<usize>>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct FilesCursor {
    /// relative path -> version (ETag, or size and modification time), in `full` listing.
    #[serde(default)]
    seen: BTreeMap<String, String>,
    /// relative path -> where its committed bytes end and their fingerprint (plain NDJSON and
    /// CSV files in `full` listing): a file that only grew is read from there.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    marks: BTreeMap<String, FileMark>,
    /// The last key read, in `start_after` listing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after: Option<String>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Where a file's committed bytes end, and what they looked like.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FileMark {
    /// Committed bytes.
    size: u64,
    /// CRC-32 of the committed bytes' first and last 64 KiB (see [`FINGERPRINT_BYTES`]).
    crc: u32,
    /// The committed bytes end with a newline (else an append would extend the last record).
    newline: bool,
}

/// How much of the head and of the tail of the committed bytes the fingerprint covers.
const FINGERPRINT_BYTES: u64 = 64 << 10;

fn version_of(meta: &ObjectMeta) -> String {
    match &meta.e_tag {
        Some(tag) => tag.clone(),
        None => format!("{}@{}", meta.size, meta.last_modified.timestamp_micros()),
    }
}

fn build_globs(patterns: &[String]) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(Glob::new(p).map_err(|e| {
            Error::config("invalid glob")
                .with_context("glob", p)
                .with_source(e)
        })?);
    }
    b.build()
        .map_err(|e| Error::config("invalid glob set").with_source(e))
}

impl FileSource {
    /// Open the source described by `cfg` (a local root), inferring the schema if asked.
    ///
    /// # Errors
    /// Config errors; [`ErrorKind::NotFound`] when nothing matches and the schema must be inferred.
    pub async fn try_new(cfg: FileSourceConfig) -> Result<Self> {
        cfg.validate()?;
        let location = StoreLocation::parse_existing(&cfg.root)?;
        Self::try_new_at(location, cfg).await
    }

    /// Open a source over any object store location (used by the S3 and Azure connectors).
    ///
    /// # Errors
    /// As [`FileSource::try_new`].
    pub async fn try_new_at(location: StoreLocation, cfg: FileSourceConfig) -> Result<Self> {
        cfg.validate()?;
        let include = build_globs(&cfg.include)?;
        let exclude = build_globs(&cfg.exclude)?;
        let mut inner = Inner {
            split_bytes: AtomicU64::new(cfg.split_size_megabytes << 20),
            chunk_bytes: AtomicUsize::new(CHUNK_BYTES),
            name: "files".to_string(),
            location,
            schema: Arc::new(Schema::empty()),
            include,
            exclude,
            cfg,
            line_index: Mutex::new(HashMap::new()),
            warned_fields: Mutex::new(HashSet::new()),
            decoders: Mutex::new(Vec::new()),
        };
        inner.schema = match &inner.cfg.schema {
            SchemaSource::Explicit(cols) => explicit_schema(cols)?,
            SchemaSource::Infer {
                sample_records,
                sample_bytes,
            } => Arc::new(inner.infer(*sample_records, *sample_bytes).await?),
            _ => return Err(Error::config("unsupported schema source")),
        };
        if inner.cfg.on_changed_file == ChangedFilePolicy::Reread
            && inner.schema.field_with_name(SOURCE_VERSION_COLUMN).is_err()
        {
            let mut fields: Vec<Field> = inner
                .schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            fields.push(Field::new(SOURCE_VERSION_COLUMN, DataType::Utf8, false));
            inner.schema = Arc::new(Schema::new(fields));
        }
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Split plain NDJSON/CSV files into ranges of `bytes` (at least 1) instead of
    /// `split_size_megabytes`: finer than the config allows, for tests and tuning. Applies to
    /// every clone of this source, from its next plan on.
    #[must_use]
    pub fn with_split_bytes(self, bytes: u64) -> Self {
        self.inner
            .split_bytes
            .store(bytes.max(1), Ordering::Relaxed);
        self
    }

    /// Decode `bytes` of lines at a time (default 1 MiB; at least 1): for tests and tuning.
    /// Smaller chunks use less memory and make smaller batches. Applies to every clone.
    #[must_use]
    pub fn with_chunk_bytes(self, bytes: usize) -> Self {
        self.inner
            .chunk_bytes
            .store(bytes.max(1), Ordering::Relaxed);
        self
    }

    /// The location this source reads.
    pub fn location(&self) -> &StoreLocation {
        &self.inner.location
    }
}

impl Inner {
    /// The files under the root that match, sorted; only keys after `after` when given.
    async fn list(&self, after: Option<&str>) -> Result<Vec<ObjectMeta>> {
        let prefix = self.location.prefix();
        let store = self.location.store();
        let offset = after.map(|rel| self.location.child(rel));
        let listing = match &offset {
            Some(o) => store.list_with_offset(Some(prefix), o),
            None => store.list(Some(prefix)),
        };
        let mut files: Vec<ObjectMeta> = listing
            .map_err(|e| store_err("list", self.location.describe(prefix), e))
            // Some servers ignore the offset (Azurite's `startFrom`): filter here too.
            .try_filter(|m| futures::future::ready(offset.as_ref().is_none_or(|o| m.location > *o)))
            .try_filter(|m| {
                let rel = self.location.relative(&m.location);
                let hidden = rel
                    .split('/')
                    .any(|seg| seg.starts_with('_') || seg.starts_with('.'));
                futures::future::ready(
                    !hidden && self.include.is_match(&rel) && !self.exclude.is_match(&rel),
                )
            })
            .try_collect()
            .await?;
        files.sort_by(|a, b| a.location.cmp(&b.location));
        if let Some(root) = self.location.local_root()
            && !self.cfg.follow_symlinks
        {
            files = self.inside_root(root.to_path_buf(), files).await?;
        }
        Ok(files)
    }

    /// The local files whose real path is inside the root: a symbolic link out of the root
    /// (to `/etc/passwd`, to another team's directory) is skipped with a warning, never read.
    async fn inside_root(
        &self,
        root: std::path::PathBuf,
        files: Vec<ObjectMeta>,
    ) -> Result<Vec<ObjectMeta>> {
        let location = self.location.clone();
        let (kept, skipped) = tokio::task::spawn_blocking(move || {
            let Ok(real_root) = std::fs::canonicalize(&root) else {
                return (files, Vec::new());
            };
            let (mut kept, mut skipped) = (Vec::new(), Vec::new());
            for m in files {
                let rel = location.relative(&m.location);
                match std::fs::canonicalize(root.join(&rel)) {
                    Ok(real) if real.starts_with(&real_root) => kept.push(m),
                    Ok(real) => skipped.push((rel, real.display().to_string())),
                    Err(_) => kept.push(m), // gone since the listing: reading it reports that
                }
            }
            (kept, skipped)
        })
        .await
        .map_err(|e| Error::internal("the symlink check failed").with_source(e))?;
        for (rel, target) in skipped {
            tracing::warn!(file = %rel, target = %target, "a symbolic link leads out of the source root: skipped (set `follow_symlinks: true` to read it)");
        }
        Ok(kept)
    }

    async fn infer(&self, max_records: usize, max_bytes: u64) -> Result<Schema> {
        let files = self.list(None).await?;
        let Some(first) = files.first() else {
            return Err(Error::new(
                ErrorKind::NotFound,
                "no file matches, so no schema can be inferred: add files or declare the schema",
            )
            .with_context("root", self.location.describe(self.location.prefix()))
            .with_context("include", self.cfg.include.join(",")));
        };
        let describe = self.location.describe(&first.location);
        if self.cfg.format == Format::Parquet {
            let reader = ObjectReader::new(
                self.location.store().clone(),
                first.location.clone(),
                first.size,
            );
            let builder = parquet::arrow::ParquetRecordBatchStreamBuilder::new(reader)
                .await
                .map_err(|source| {
                    Error::from(FilesError::Parquet {
                        path: describe.clone(),
                        source,
                    })
                })?;
            return Ok(self.with_hive_columns(
                Schema::new(builder.schema().fields().clone()),
                &first.location,
            ));
        }
        // Sample up to 16 files spread over the listing (the first, the last and evenly
        // between), each its share of the byte budget, decompressed: a schema that holds for
        // the first file only is no schema.
        let k = files.len().min(MAX_SAMPLED_FILES);
        let picked: Vec<ObjectMeta> = (0..k)
            .map(|i| {
                files[if k == 1 {
                    0
                } else {
                    i * (files.len() - 1) / (k - 1)
                }]
                .clone()
            })
            .collect();
        let per_file = (max_bytes / k as u64).max(256 << 10).min(max_bytes);
        let header = matches!(&self.cfg.format, Format::Csv(c) if c.header);
        let mut sample = Vec::new();
        for (i, meta) in picked.iter().enumerate() {
            if sample.len() as u64 >= max_bytes {
                break;
            }
            let (store, path, compression) = (
                self.location.store().clone(),
                meta.location.clone(),
                self.cfg.compression.resolve(meta.location.as_ref()),
            );
            let limit = self.cfg.max_decompressed_bytes;
            let d = self.location.describe(&meta.location);
            let mut buf = crate::panic_free_blocking(move || -> Result<Vec<u8>> {
                use std::io::Read;
                let handle = Handle::current();
                let reader = open_from(&handle, &store, &path, 0, &d)?;
                let mut r =
                    decompress(reader, compression, limit).map_err(|source| FilesError::Read {
                        path: d.clone(),
                        source,
                    })?;
                let mut buf = Vec::new();
                r.by_ref()
                    .take(per_file)
                    .read_to_end(&mut buf)
                    .map_err(|source| FilesError::Read {
                        path: d.clone(),
                        source,
                    })?;
                if buf.starts_with(b"\xEF\xBB\xBF") {
                    buf.drain(..3); // a byte order mark is not part of the first record or header
                }
                Ok(buf)
            })
            .await?;
            // Whole lines only (a sample may end mid-record); one header, the first file's.
            if (buf.len() as u64) == per_file {
                let end = memchr::memrchr(b'\n', &buf).map_or(0, |i| i + 1);
                buf.truncate(end);
            }
            if header && i > 0 {
                let cut = memchr::memchr(b'\n', &buf).map_or(buf.len(), |i| i + 1);
                buf.drain(..cut);
            }
            if !buf.is_empty() && !buf.ends_with(b"\n") {
                buf.push(b'\n');
            }
            sample.extend_from_slice(&buf);
        }
        let schema = match &self.cfg.format {
            Format::Ndjson => crate::infer::infer_ndjson(&sample, max_records, &describe),
            Format::Csv(c) => crate::infer::infer_csv(
                &sample,
                c.delimiter as u8,
                c.header,
                max_records,
                &describe,
            ),
            Format::Parquet => unreachable!("handled above"),
        }?;
        Ok(self.with_hive_columns(schema, &first.location))
    }

    /// An inferred schema plus a text column per Hive key of `path` it lacks.
    fn with_hive_columns(&self, schema: Schema, path: &Path) -> Schema {
        if self.cfg.partitioning != Partitioning::Hive {
            return schema;
        }
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        for (k, _) in hive_values(&self.location.relative(path)) {
            if !fields.iter().any(|f| f.name() == &k) {
                fields.push(Field::new(k, DataType::Utf8, true));
            }
        }
        Schema::new(fields)
    }

    /// The columns a split's path gives: Hive partition values (for the schema's columns),
    /// and the file's version under `on_changed_file: reread`.
    fn partition_values(&self, spec: &SplitSpec) -> Vec<(String, Option<String>)> {
        let mut out: Vec<(String, Option<String>)> = if self.cfg.partitioning == Partitioning::Hive
        {
            hive_values(&spec.path)
                .into_iter()
                .filter(|(k, _)| self.schema.field_with_name(k).is_ok())
                .collect()
        } else {
            Vec::new()
        };
        if self.cfg.on_changed_file == ChangedFilePolicy::Reread {
            out.push((
                SOURCE_VERSION_COLUMN.to_string(),
                Some(spec.version.clone()),
            ));
        }
        out
    }

    /// Whether a file's new bytes only follow its committed ones: plain NDJSON or CSV.
    fn appendable(&self, rel: &str) -> bool {
        self.cfg.format != Format::Parquet && self.cfg.compression.resolve(rel) == Compression::None
    }

    /// The fingerprint of the first `size` bytes of a file.
    async fn mark_of(&self, meta: &ObjectMeta, size: u64) -> Result<FileMark> {
        let store = self.location.store();
        let describe = self.location.describe(&meta.location);
        let get = |r: std::ops::Range<u64>| {
            let (store, path, describe) = (store.clone(), meta.location.clone(), describe.clone());
            async move {
                if r.is_empty() {
                    return Ok(bytes::Bytes::new());
                }
                store
                    .get_range(&path, r)
                    .await
                    .map_err(|e| store_err("get", describe, e))
            }
        };
        let head = get(0..size.min(FINGERPRINT_BYTES)).await?;
        let tail_start = size
            .saturating_sub(FINGERPRINT_BYTES)
            .max(head.len() as u64);
        let tail = get(tail_start..size).await?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&size.to_le_bytes());
        crc.update(&head);
        crc.update(&tail);
        let last = tail.last().or(head.last()).copied();
        Ok(FileMark {
            size,
            crc: crc.finalize(),
            newline: last == Some(b'\n'),
        })
    }

    /// The schema the file's own bytes are decoded with: the source schema without the
    /// columns its path gives.
    fn file_schema(&self, parts: &[(String, Option<String>)]) -> SchemaRef {
        if parts.is_empty() {
            return self.schema.clone();
        }
        let fields: Vec<Arc<Field>> = self
            .schema
            .fields()
            .iter()
            .filter(|f| !parts.iter().any(|(k, _)| k == f.name()))
            .cloned()
            .collect();
        Arc::new(Schema::new(fields))
    }

    /// Splits of a Parquet file: groups of row groups of about `split_bytes` (compressed).
    /// A file whose footer cannot be read is one split (reading it reports the problem).
    async fn parquet_splits(&self, meta: &ObjectMeta) -> Result<Vec<Split>> {
        let split_bytes = self.split_bytes.load(Ordering::Relaxed);
        let whole = || self.splits_of(meta, None);
        if meta.size <= split_bytes {
            return whole();
        }
        let reader = ObjectReader::new(
            self.location.store().clone(),
            meta.location.clone(),
            meta.size,
        );
        let Ok(builder) = parquet::arrow::ParquetRecordBatchStreamBuilder::new(reader).await else {
            return whole();
        };
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut acc = 0u64;
        for (i, rg) in builder.metadata().row_groups().iter().enumerate() {
            let size = u64::try_from(rg.compressed_size()).unwrap_or(0);
            match groups.last_mut() {
                Some(g) if acc < split_bytes => {
                    g.push(i);
                    acc += size;
                }
                _ => {
                    groups.push(vec![i]);
                    acc = size;
                }
            }
        }
        if groups.len() <= 1 {
            return whole();
        }
        let mut out = Vec::new();
        for g in groups {
            out.extend(self.splits_of(meta, Some(g))?);
        }
        Ok(out)
    }

    fn splits_of(&self, meta: &ObjectMeta, row_groups: Option<Vec<usize>>) -> Result<Vec<Split>> {
        match row_groups {
            Some(rgs) => self.splits_at(meta, Some(rgs), 0),
            None => self.splits_at(meta, None, 0),
        }
    }

    /// Splits of the bytes of a plain file from `start` (a line boundary) on.
    fn splits_from(&self, meta: &ObjectMeta, start: u64) -> Result<Vec<Split>> {
        self.splits_at(meta, None, start)
    }

    fn splits_at(
        &self,
        meta: &ObjectMeta,
        row_groups: Option<Vec<usize>>,
        from: u64,
    ) -> Result<Vec<Split>> {
        let rel = self.location.relative(&meta.location);
        let version = version_of(meta);
        let split_bytes = self.split_bytes.load(Ordering::Relaxed);
        if let Some(rgs) = row_groups {
            let id = format!(
                "{rel}[row groups {}..={}]",
                rgs.first().copied().unwrap_or(0),
                rgs.last().copied().unwrap_or(0)
            );
            let spec = SplitSpec {
                path: rel,
                version,
                start: 0,
                end: meta.size,
                size: meta.size,
                split_bytes,
                from: 0,
                row_groups: Some(rgs),
            };
            return Ok(vec![Split::encode(id, &spec, None)?]);
        }
        let splittable = self.cfg.format != Format::Parquet
            && self.cfg.compression.resolve(&rel) == Compression::None;
        let mut out = Vec::new();
        let mut start = from;
        loop {
            let end = if splittable {
                (start + split_bytes).min(meta.size)
            } else {
                meta.size
            };
            let spec = SplitSpec {
                path: rel.clone(),
                version: version.clone(),
                start,
                end,
                size: meta.size,
                split_bytes,
                from,
                row_groups: None,
            };
            let id = if start == 0 && end == meta.size {
                rel.clone()
            } else {
                format!("{rel}[{start}..{end}]")
            };
            out.push(Split::encode(id, &spec, Some(end - start))?);
            start = end;
            if start >= meta.size {
                break;
            }
        }
        Ok(out)
    }

    /// Lines before the first line of the split starting at `start` (computed once per file).
    fn lines_before(&self, handle: &Handle, spec: &SplitSpec, describe: &str) -> Result<u64> {
        if spec.start == 0 {
            return Ok(0);
        }
        let key = format!("{}#{}#{}", spec.path, spec.version, spec.from);
        let cell = self
            .line_index
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default()
            .clone();
        let mut slot = cell.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            let starts: Vec<u64> = (0..)
                .map(|i| spec.from + i * spec.split_bytes)
                .filter(|s| *s > 0)
                .take_while(|s| *s < spec.size)
                .map(|s| s - 1)
                .collect();
            let reader = open_from(
                handle,
                self.location.store(),
                &self.location.child(&spec.path),
                0,
                describe,
            )?;
            let counts = newlines_before(reader, &starts).map_err(|source| FilesError::Read {
                path: describe.to_string(),
                source,
            })?;
            *slot = Some(Arc::new(counts));
        }
        let counts = slot.as_ref().expect("filled above");
        let i = usize::try_from((spec.start - spec.from) / spec.split_bytes).unwrap_or(0)
            - usize::from(spec.from == 0);
        // The split's first line follows the first newline at or after start-1.
        Ok(counts.get(i).copied().unwrap_or(0) + 1)
    }

    fn line_format(&self, batch_size: usize, schema: SchemaRef) -> Box<dyn LineFormat> {
        match &self.cfg.format {
            Format::Csv(c) => Box::new(CsvFormat {
                schema,
                batch_size,
                delimiter: c.delimiter as u8,
                drift: self.cfg.type_drift,
            }),
            _ => Box::new(
                JsonFormat::new(
                    schema,
                    batch_size,
                    self.cfg.type_drift,
                    self.cfg.unknown_fields,
                )
                .with_max_depth(self.cfg.max_nesting_depth),
            ),
        }
    }

    /// Read one NDJSON/CSV split on a blocking thread, sending batches to `tx`.
    fn run_line_split(
        self: &Arc<Self>,
        spec: &SplitSpec,
        ctx: &Context,
        tx: &mpsc::Sender<Result<RecordBatch>>,
    ) -> Result<()> {
        let parts = self.partition_values(spec);
        let key: DecoderKey = (
            ctx.batch_size(),
            parts.iter().map(|(k, _)| k.clone()).collect(),
        );
        let pooled = {
            let mut pool = self.decoders.lock().unwrap_or_else(|p| p.into_inner());
            pool.iter()
                .position(|(k, _)| *k == key)
                .map(|i| pool.swap_remove(i).1)
        };
        let mut format =
            pooled.unwrap_or_else(|| self.line_format(ctx.batch_size(), self.file_schema(&parts)));
        let result = self.decode_split(spec, ctx, tx, format.as_mut(), &parts);
        self.decoders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((key, format));
        result
    }

    fn decode_split(
        &self,
        spec: &SplitSpec,
        ctx: &Context,
        tx: &mpsc::Sender<Result<RecordBatch>>,
        format: &mut dyn LineFormat,
        parts: &[(String, Option<String>)],
    ) -> Result<()> {
        let handle = Handle::current();
        let path = self.location.child(&spec.path);
        let describe = self.location.describe(&path);
        stratalake_core::panic_point("files.decoder");
        let compression = self.cfg.compression.resolve(&spec.path);
        let skip = spec.start > 0;
        let from = if skip { spec.start - 1 } else { 0 };
        let raw = open_from(&handle, self.location.store(), &path, from, &describe)?;
        let reader =
            decompress(raw, compression, self.cfg.max_decompressed_bytes).map_err(|source| {
                FilesError::Read {
                    path: describe.clone(),
                    source,
                }
            })?;
        let end = (compression == Compression::None).then_some(spec.end);
        let max_record = usize::try_from(self.cfg.max_record_bytes).unwrap_or(usize::MAX);
        let mut chunker = LineChunker::new(
            reader,
            from,
            end,
            skip,
            self.chunk_bytes.load(Ordering::Relaxed),
            max_record,
        );
        let header = matches!(&self.cfg.format, Format::Csv(c) if c.header) && spec.start == 0;
        let metrics = ctx.metrics().component("source");
        let file_schema = self.file_schema(parts);
        let mut first = true;
        let mut dirty = false;
        let mut next_line = 0;
        loop {
            if ctx.is_cancelled() {
                return Err(Error::cancelled());
            }
            let started = std::time::Instant::now();
            let chunk = match chunker.next_chunk() {
                Ok(Some(Piece::Lines(c))) => c,
                Ok(Some(Piece::Oversized(o))) => {
                    // A poison record must not stop the pipeline for good: quarantine it with
                    // where it is and how big, keep its first KiB, go on.
                    let b = self.lines_before(&handle, spec, &describe)?;
                    next_line = o.line + 1;
                    first = false;
                    let line = b + o.line + 1;
                    let rec = QuarantineRecord {
                        component: "source".into(),
                        location: describe.clone(),
                        position: Some(line),
                        raw: oversized_prefix(&o.prefix),
                        reason: format!(
                            "the record at line {line} (byte offset {}) is {} bytes, over `max_record_bytes` ({max_record}); its first {} bytes are kept",
                            o.offset,
                            o.len,
                            o.prefix.len()
                        ),
                        column: None,
                    };
                    metrics.add(RECEIVED_BYTES_TOTAL, o.len);
                    handle.block_on(ctx.quarantine("source", vec![rec]))?;
                    continue;
                }
                Ok(None) => break,
                Err(source)
                    if self.cfg.on_corrupt_file == CorruptFilePolicy::Quarantine
                        && is_corruption(&source) =>
                {
                    // The bytes after this point cannot be read: record the file and the
                    // line where reading broke; the lines before it were delivered.
                    let b = self.lines_before(&handle, spec, &describe)?;
                    let reason = format!(
                        "the file cannot be read from this line on ({}): {source}",
                        compression_name(compression)
                    );
                    handle.block_on(quarantine_file(
                        ctx,
                        &describe,
                        Some(b + next_line + 1),
                        reason,
                    ))?;
                    return Ok(());
                }
                Err(source) => {
                    return Err(FilesError::Read {
                        path: describe,
                        source,
                    }
                    .into());
                }
            };
            next_line = chunk.first_line + newline_count(&chunk.bytes);
            metrics.add(RECEIVED_BYTES_TOTAL, chunk.bytes.len() as u64);
            let mut bytes = &chunk.bytes[..];
            let mut first_line = chunk.first_line;
            if first && spec.start == 0 {
                // A UTF-8 byte order mark opens many exported files: not part of the first record.
                bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
            }
            if header && first {
                // Check the header against the schema, then drop it.
                let cut = memchr::memchr(b'\n', bytes).map_or(bytes.len(), |i| i + 1);
                self.check_csv_header(&bytes[..cut], &describe, &file_schema)?;
                bytes = &bytes[cut..];
                first_line += 1;
            }
            first = false;
            let out = match decode_chunk(format, bytes, dirty) {
                Ok(out) => out,
                Err((line, e)) => {
                    let b = self.lines_before(&handle, spec, &describe)?;
                    return Err(e
                        .with_context("file", &describe)
                        .with_context("line", b + first_line + line + 1));
                }
            };
            dirty = !out.rejected.is_empty();
            if out.coerced > 0 {
                metrics.add(COERCED_VALUES_TOTAL, out.coerced);
            }
            for f in &out.unknown_fields {
                if self
                    .warned_fields
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(f.clone())
                {
                    tracing::warn!(file = %describe, field = %f, "a field not in the schema is ignored (unknown_fields: ignore)");
                }
            }
            if !out.rejected.is_empty() {
                // Computed once per file (cached in `line_index`), only when a line is rejected.
                let b = self.lines_before(&handle, spec, &describe)?;
                let records = out
                    .rejected
                    .into_iter()
                    .map(|r| QuarantineRecord {
                        component: "source".into(),
                        location: describe.clone(),
                        position: Some(b + first_line + r.line_in_chunk + 1),
                        raw: r.raw,
                        reason: r.reason,
                        column: r.column,
                    })
                    .collect();
                handle.block_on(ctx.quarantine("source", records))?;
            }
            let batches = coalesce(&file_schema, out.batches, ctx.batch_size())?;
            let batches = if parts.is_empty() {
                batches
            } else {
                batches
                    .iter()
                    .map(|b| align(b, &self.schema, &describe, parts))
                    .collect::<Result<Vec<_>>>()?
            };
            metrics.add_busy(started.elapsed());
            for batch in batches {
                metrics.add(RECEIVED_ROWS_TOTAL, batch.num_rows() as u64);
                if tx.blocking_send(Ok(batch)).is_err() {
                    return Ok(()); // the stream was dropped
                }
            }
        }
        Ok(())
    }

    /// A CSV file whose header names other columns, or the same in another order, would be
    /// misread silently: fail instead, naming the file and both lists.
    fn check_csv_header(&self, line: &[u8], describe: &str, schema: &Schema) -> Result<()> {
        let Format::Csv(c) = &self.cfg.format else {
            return Ok(());
        };
        let text = String::from_utf8_lossy(line);
        let found: Vec<&str> = text
            .trim_end_matches(['\r', '\n'])
            .split(c.delimiter)
            .map(|h| h.trim().trim_matches('"'))
            .collect();
        let expected: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        if found == expected {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Schema,
            "the CSV header does not match the schema's columns",
        )
        .with_context("file", describe)
        .with_context("line", 1)
        .with_context("expected", expected.join(","))
        .with_context("found", found.join(",")))
    }

    fn read_parquet(self: &Arc<Self>, spec: SplitSpec, ctx: &Context) -> SendableBatchStream {
        let this = self.clone();
        let batch_size = ctx.batch_size();
        let schema = self.schema.clone();
        let metrics = ctx.metrics().component("source");
        let ctx = ctx.clone();
        let stream = futures::stream::once(async move {
            let path = this.location.child(&spec.path);
            let describe = this.location.describe(&path);
            let reader = ObjectReader::new(this.location.store().clone(), path, spec.size);
            let parts = this.partition_values(&spec);
            let quarantine = this.cfg.on_corrupt_file == CorruptFilePolicy::Quarantine;
            let d = describe.clone();
            let built = parquet::arrow::ParquetRecordBatchStreamBuilder::new(reader)
                .await
                .and_then(|b| {
                    let b = b.with_batch_size(batch_size);
                    match spec.row_groups.clone() {
                        Some(rgs) => b.with_row_groups(rgs).build(),
                        None => b.build(),
                    }
                });
            let stream = match built {
                Ok(s) => s,
                Err(source) if quarantine && parquet_corruption(&source) => {
                    quarantine_file(&ctx, &d, None, format!("the file cannot be read: {source}"))
                        .await?;
                    return Ok(futures::stream::empty().boxed());
                }
                Err(source) => return Err(Error::from(FilesError::Parquet { path: d, source })),
            };
            metrics.add(RECEIVED_BYTES_TOTAL, spec.size);
            let target = this.schema.clone();
            // A batch that fails to decode ends the file: quarantined (policy) or an error.
            let stream = stream.scan(false, move |done, b| {
                let item = match b {
                    _ if *done => None,
                    Ok(b) => {
                        metrics.add(RECEIVED_ROWS_TOTAL, b.num_rows() as u64);
                        Some(futures::future::Either::Left(futures::future::ready(Some(
                            align(&b, &target, &describe, &parts),
                        ))))
                    }
                    Err(source) if quarantine && parquet_corruption(&source) => {
                        *done = true;
                        let (ctx, describe) = (ctx.clone(), describe.clone());
                        Some(futures::future::Either::Right(async move {
                            quarantine_file(
                                &ctx,
                                &describe,
                                None,
                                format!("the file cannot be read: {source}"),
                            )
                            .await
                            .err()
                            .map(Err)
                        }))
                    }
                    Err(source) => {
                        *done = true;
                        Some(futures::future::Either::Left(futures::future::ready(Some(
                            Err(Error::from(FilesError::Parquet {
                                path: describe.clone(),
                                source,
                            })),
                        ))))
                    }
                };
                futures::future::ready(item)
            });
            Ok::<_, Error>(
                stream
                    .then(|f| f)
                    .filter_map(futures::future::ready)
                    .boxed(),
            )
        })
        .try_flatten();
        BatchStreamAdapter::boxed(schema, Box::pin(stream))
    }
}

/// Merge the many small batches a dirty chunk decodes into batches of up to `rows` rows.
fn coalesce(
    schema: &SchemaRef,
    batches: Vec<RecordBatch>,
    rows: usize,
) -> Result<Vec<RecordBatch>> {
    if batches.len() <= 1 {
        return Ok(batches);
    }
    let mut out = Vec::new();
    let mut group: Vec<RecordBatch> = Vec::new();
    let mut n = 0;
    for b in batches {
        if n + b.num_rows() > rows && !group.is_empty() {
            out.push(arrow_select::concat::concat_batches(schema, &group)?);
            group.clear();
            n = 0;
        }
        n += b.num_rows();
        group.push(b);
    }
    if !group.is_empty() {
        out.push(arrow_select::concat::concat_batches(schema, &group)?);
    }
    Ok(out)
}

/// True for read errors that mean the bytes are bad (a truncated or corrupt compressed
/// stream), not that the store failed.
fn is_corruption(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::InvalidData
            | std::io::ErrorKind::InvalidInput
            | std::io::ErrorKind::UnexpectedEof
    )
}

/// True for Parquet errors that mean the file is corrupt, not that the store failed.
fn parquet_corruption(e: &parquet::errors::ParquetError) -> bool {
    !matches!(e, parquet::errors::ParquetError::External(_))
}

fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
        _ => "plain",
    }
}

fn newline_count(bytes: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', bytes).count() as u64
}

/// Quarantine an unreadable file (from `position`, the line where reading broke, when known).
async fn quarantine_file(
    ctx: &Context,
    describe: &str,
    position: Option<u64>,
    reason: String,
) -> Result<()> {
    let record = QuarantineRecord {
        component: "source".into(),
        location: describe.to_string(),
        position,
        raw: String::new(),
        reason,
        column: None,
    };
    ctx.quarantine("source", vec![record]).await
}

/// A column of `rows` copies of a partition value, cast to the column's type.
fn partition_column(
    field: &Field,
    value: Option<&str>,
    rows: usize,
    describe: &str,
) -> Result<ArrayRef> {
    let Some(v) = value else {
        return Ok(new_null_array(field.data_type(), rows));
    };
    let text: ArrayRef = Arc::new(StringArray::from_iter_values(std::iter::repeat_n(v, rows)));
    let opts = arrow_cast::CastOptions {
        safe: false,
        ..Default::default()
    };
    arrow_cast::cast_with_options(&text, field.data_type(), &opts).map_err(|e| {
        Error::new(
            ErrorKind::Schema,
            "a partition value in the path does not fit its column's type",
        )
        .with_context("file", describe)
        .with_context("column", field.name())
        .with_context("value", v)
        .with_context("type", field.data_type())
        .with_source(e)
    })
}

/// Project a decoded batch onto the source schema by column name: columns given by the path
/// (Hive partitions) are filled in; missing nullable columns become nulls; a type difference
/// is cast (an impossible cast is a Schema error).
fn align(
    batch: &RecordBatch,
    target: &SchemaRef,
    describe: &str,
    parts: &[(String, Option<String>)],
) -> Result<RecordBatch> {
    if parts.is_empty() && batch.schema().fields() == target.fields() {
        return Ok(RecordBatch::try_new(
            target.clone(),
            batch.columns().to_vec(),
        )?);
    }
    let cols = target
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            _ if parts.iter().any(|(k, _)| k == f.name()) => {
                let v = parts
                    .iter()
                    .find(|(k, _)| k == f.name())
                    .and_then(|(_, v)| v.as_deref());
                partition_column(f, v, batch.num_rows(), describe)
            }
            Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
            Some(c) => arrow_cast::cast(c, f.data_type()).map_err(|e| {
                Error::new(
                    ErrorKind::Schema,
                    "a Parquet column has a type the schema cannot take",
                )
                .with_context("file", describe)
                .with_context("column", f.name())
                .with_context("found", c.data_type())
                .with_source(e)
            }),
            None if f.is_nullable() => Ok(new_null_array(f.data_type(), batch.num_rows())),
            None => Err(Error::new(
                ErrorKind::Schema,
                "a required column is missing from a Parquet file",
            )
            .with_context("file", describe)
            .with_context("column", f.name())),
        })
        .collect::<Result<Vec<_>>>()?;
    let opts = arrow_array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        target.clone(),
        cols,
        &opts,
    )?)
}

/// An oversized record's kept prefix as quarantine text: cut at a character boundary when it
/// is UTF-8 (a cut may split a character), base64 otherwise.
fn oversized_prefix(prefix: &[u8]) -> String {
    let keep = match std::str::from_utf8(prefix) {
        Ok(_) => prefix.len(),
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        Err(_) => prefix.len(),
    };
    format!(
        "{}…",
        stratalake_core::quarantine::raw_text(&prefix[..keep])
    )
}

fn parse_cursor(c: &Cursor) -> Result<FilesCursor> {
    c.decode(CURSOR_PREFIX, "a file source")
}

#[async_trait]
impl Source for FileSource {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn schema(&self) -> SchemaRef {
        self.inner.schema.clone()
    }

    async fn plan(&self, req: &ReadRequest, _ctx: &Context) -> Result<ReadPlan> {
        let from = req
            .from
            .as_ref()
            .map(parse_cursor)
            .transpose()?
            .unwrap_or_default();
        let start_after = self.inner.cfg.listing == ListingMode::StartAfter;
        let files = self
            .inner
            .list(if start_after {
                from.after.as_deref()
            } else {
                None
            })
            .await?;
        let mut fresh: Vec<(ObjectMeta, u64)> = Vec::new();
        let mut next = FilesCursor::default();
        for meta in &files {
            let rel = self.inner.location.relative(&meta.location);
            let version = version_of(meta);
            if start_after {
                if meta.size > 0 {
                    fresh.push((meta.clone(), 0));
                }
                next.after = Some(rel);
                continue;
            }
            let appendable = self.inner.appendable(&rel);
            let old = from.seen.get(&rel);
            if old == Some(&version) {
                // Unchanged: keep what the last commit knew of it.
                if let Some(m) = from.marks.get(&rel) {
                    next.marks.insert(rel.clone(), m.clone());
                }
                next.seen.insert(rel, version);
                continue;
            }
            let mark = if appendable {
                Some(self.inner.mark_of(meta, meta.size).await?)
            } else {
                None
            };
            let start = match (old, from.marks.get(&rel)) {
                (None, _) => Some(0),
                // Grown, with the committed bytes as they were: read only what follows.
                (Some(_), Some(m))
                    if appendable
                        && m.newline
                        && meta.size >= m.size
                        && self.inner.mark_of(meta, m.size).await? == *m =>
                {
                    Some(m.size)
                }
                (Some(_), _) => match self.inner.cfg.on_changed_file {
                    ChangedFilePolicy::Reread => Some(0),
                    ChangedFilePolicy::Skip => {
                        tracing::warn!(file = %self.inner.location.describe(&meta.location), "the file changed since its last commit (not only appended to): skipped (on_changed_file: skip)");
                        None
                    }
                    ChangedFilePolicy::Fail => {
                        return Err(Error::new(
                            ErrorKind::Conflict,
                            "a file changed since it was committed, other than by appending to it: reading it again would duplicate its rows",
                        )
                        .with_context("file", self.inner.location.describe(&meta.location))
                        .with_context("committed_version", old.map_or("", String::as_str))
                        .with_context("version", &version)
                        .with_context("hint", "set `on_changed_file: reread` (rows carry `_source_version` for a downstream merge) or `skip`"));
                    }
                },
            };
            if let Some(start) = start
                && meta.size > start
            {
                fresh.push((meta.clone(), start));
            }
            if let Some(m) = mark {
                next.marks.insert(rel.clone(), m);
            }
            next.seen.insert(rel, version);
        }
        if start_after && next.after.is_none() {
            next.after = from.after;
        }
        let splits: Vec<Result<Vec<Split>>> = futures::stream::iter(fresh)
            .map(|(meta, start)| {
                let inner = self.inner.clone();
                async move {
                    if inner.cfg.format == Format::Parquet {
                        inner.parquet_splits(&meta).await
                    } else {
                        inner.splits_from(&meta, start)
                    }
                }
            })
            .buffered(8)
            .collect()
            .await;
        let end = Cursor::encode(CURSOR_PREFIX, &next)?;
        let mut all = Vec::new();
        for s in splits {
            all.extend(s?);
        }
        Ok(ReadPlan::new(all, Some(end)))
    }

    async fn check(&self, _ctx: &Context) -> Result<()> {
        self.inner.location.check().await
    }

    fn read(&self, split: &Split, ctx: &Context) -> Result<SendableBatchStream> {
        let spec: SplitSpec = split.decode("a file source")?;
        if self.inner.cfg.format == Format::Parquet {
            return Ok(self.inner.read_parquet(spec, ctx));
        }
        let inner = self.inner.clone();
        let ctx = ctx.clone();
        // Nothing starts until the first poll; dropping the stream closes the channel, which
        // stops the blocking reader at its next batch.
        let component = format!("source {} (decoder of {})", inner.name, spec.path);
        let stream = futures::stream::once(async move {
            let (tx, rx) = mpsc::channel::<Result<RecordBatch>>(1);
            let reader = tokio::task::spawn_blocking(move || {
                stratalake_core::panic::guard_sync(&component, || {
                    inner.run_line_split(&spec, &ctx, &tx)
                })
                .or_else(|e| {
                    // The reader's error is the stream's last item (a closed receiver means
                    // the run is stopping: nothing to report to).
                    let _ = tx.blocking_send(Err(e));
                    Ok(())
                })
            });
            // Batches until the reader drops its sender; then the reader's own end: a panic
            // or a lost task is an error, never a quietly shorter split.
            let batches = futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            });
            let end = futures::stream::once(async move {
                stratalake_core::panic::join_blocking("source (decoder thread)", reader).await
            })
            .filter_map(|r: Result<()>| async move { r.err().map(Err) });
            batches.chain(end)
        })
        .flatten();
        Ok(BatchStreamAdapter::boxed(
            self.inner.schema.clone(),
            Box::pin(stream),
        ))
    }
}
