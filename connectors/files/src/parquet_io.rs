//! Parquet I/O over object_store: an [`AsyncFileReader`] (range reads, footer by known size)
//! and an [`AsyncFileWriter`] that streams multipart uploads, so memory per open file is
//! bounded by part size times (concurrency + 1).
//!
//! On stores with a [`MultipartStore`] (S3, Azure) each upload's id is journaled next to the
//! staged file before its first part, so a run that finds an abandoned attempt can abort its
//! uploads (S3 keeps the parts of an unfinished upload, and bills them, until it is aborted).
//! Elsewhere (local disk) object_store's [`BufWriter`] does the same job.

use crate::location::StoreLocation;
use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::buffered::BufWriter;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{MultipartId, ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::arrow::async_writer::AsyncFileWriter;
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;

fn err(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

/// Reads a Parquet object of known size by ranges.
#[derive(Clone)]
pub(crate) struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
}

impl ObjectReader {
    pub(crate) fn new(store: Arc<dyn ObjectStore>, path: Path, size: u64) -> Self {
        Self { store, path, size }
    }
}

impl AsyncFileReader for ObjectReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, Result<Bytes>> {
        async move { self.store.get_range(&self.path, range).await.map_err(err) }.boxed()
    }

    fn get_byte_ranges(&mut self, ranges: Vec<Range<u64>>) -> BoxFuture<'_, Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(err)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

/// How files are uploaded: part size, parts in flight, and where upload ids are journaled.
#[derive(Clone, Debug)]
pub(crate) struct Uploader {
    pub(crate) location: StoreLocation,
    pub(crate) part_size: usize,
    pub(crate) concurrency: usize,
}

/// The journal record of one multipart upload.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct UploadRecord {
    /// The object being uploaded (full path in the store).
    pub(crate) path: String,
    /// The store's upload id.
    pub(crate) upload_id: String,
}

impl Uploader {
    /// A writer for `path`; multipart upload ids are journaled under `journal_dir`.
    pub(crate) fn writer(&self, path: Path, journal_dir: Path) -> ObjectWriter {
        match self.location.multipart_store() {
            Some(mp) => ObjectWriter::Multipart(Box::new(MultipartWriter {
                mp: mp.clone(),
                location: self.location.clone(),
                path,
                journal_dir,
                part_size: self.part_size,
                concurrency: self.concurrency,
                buf: BytesMut::new(),
                upload: None,
                parts: Vec::new(),
                tasks: JoinSet::new(),
            })),
            None => ObjectWriter::Buffered(Box::new(
                BufWriter::with_capacity(self.location.store().clone(), path, self.part_size)
                    .with_max_concurrency(self.concurrency),
            )),
        }
    }
}

/// Abort the multipart uploads journaled under `journal_dir` and delete their records
/// (uploads already completed or aborted are skipped).
pub(crate) async fn abort_journaled(
    location: &StoreLocation,
    journal_dir: &Path,
) -> stratalake_core::Result<()> {
    let Some(mp) = location.multipart_store() else {
        return Ok(());
    };
    for rec_path in location.list_json(journal_dir).await? {
        let rec: UploadRecord = location.get_json(&rec_path, "an upload record").await?;
        let path = Path::from(rec.path.as_str());
        match mp.abort_multipart(&path, &rec.upload_id).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => {
                return Err(crate::error::store_err(
                    "abort multipart upload",
                    location.describe(&path),
                    e,
                ));
            }
        }
        match location.store().delete(&rec_path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => {
                return Err(crate::error::store_err(
                    "delete",
                    location.describe(&rec_path),
                    e,
                ));
            }
        }
    }
    Ok(())
}

/// Writes an object in parts of `part_size`, at most `concurrency` in flight; an object
/// smaller than one part is a single put.
pub(crate) struct MultipartWriter {
    mp: Arc<dyn MultipartStore>,
    location: StoreLocation,
    path: Path,
    journal_dir: Path,
    part_size: usize,
    concurrency: usize,
    buf: BytesMut,
    /// The upload id and its journal record, once the first part is due.
    upload: Option<(MultipartId, Path)>,
    parts: Vec<Option<PartId>>,
    tasks: JoinSet<object_store::Result<(usize, PartId)>>,
}

impl MultipartWriter {
    async fn start(&mut self) -> Result<()> {
        if self.upload.is_some() {
            return Ok(());
        }
        let id = self.mp.create_multipart(&self.path).await.map_err(err)?;
        let name = self.path.filename().unwrap_or("part").to_string();
        let record = self.journal_dir.clone().join(format!("{name}.json"));
        let body = UploadRecord {
            path: self.path.to_string(),
            upload_id: id.clone(),
        };
        let bytes = serde_json::to_vec(&body).map_err(|e| ParquetError::External(Box::new(e)))?;
        self.location
            .store()
            .put(&record, PutPayload::from(bytes))
            .await
            .map_err(err)?;
        self.upload = Some((id, record));
        Ok(())
    }

    async fn send_part(&mut self, data: Bytes) -> Result<()> {
        self.start().await?;
        while self.tasks.len() >= self.concurrency {
            self.join_one().await?;
        }
        let (id, _) = self.upload.clone().expect("started above");
        let idx = self.parts.len();
        self.parts.push(None);
        let (mp, path) = (self.mp.clone(), self.path.clone());
        self.tasks.spawn(async move {
            let part = mp.put_part(&path, &id, idx, PutPayload::from(data)).await?;
            Ok((idx, part))
        });
        Ok(())
    }

    async fn join_one(&mut self) -> Result<()> {
        if let Some(done) = self.tasks.join_next().await {
            let (idx, part) = done
                .map_err(|e| ParquetError::External(Box::new(e)))?
                .map_err(err)?;
            self.parts[idx] = Some(part);
            stratalake_core::crash_point("files.upload.after_part").await;
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<()> {
        if self.upload.is_none() {
            let data = self.buf.split().freeze();
            self.location
                .store()
                .put(&self.path, PutPayload::from(data))
                .await
                .map_err(err)?;
            return Ok(());
        }
        if !self.buf.is_empty() {
            let data = self.buf.split().freeze();
            self.send_part(data).await?;
        }
        while !self.tasks.is_empty() {
            self.join_one().await?;
        }
        let parts: Vec<PartId> = self.parts.drain(..).map(|p| p.expect("joined")).collect();
        let (id, record) = self.upload.take().expect("started");
        self.mp
            .complete_multipart(&self.path, &id, parts)
            .await
            .map_err(err)?;
        match self.location.store().delete(&record).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(err(e)),
        }
    }
}

/// Writes a Parquet object: multipart with a journal, or object_store's [`BufWriter`].
pub(crate) enum ObjectWriter {
    Multipart(Box<MultipartWriter>),
    Buffered(Box<BufWriter>),
}

impl AsyncFileWriter for ObjectWriter {
    fn write(&mut self, bs: Bytes) -> BoxFuture<'_, Result<()>> {
        async move {
            match self {
                ObjectWriter::Buffered(w) => w
                    .write_all(&bs)
                    .await
                    .map_err(|e| ParquetError::External(Box::new(e))),
                ObjectWriter::Multipart(w) => {
                    w.buf.extend_from_slice(&bs);
                    while w.buf.len() >= w.part_size {
                        let data = w.buf.split_to(w.part_size).freeze();
                        w.send_part(data).await?;
                    }
                    Ok(())
                }
            }
        }
        .boxed()
    }

    fn complete(&mut self) -> BoxFuture<'_, Result<()>> {
        async move {
            match self {
                ObjectWriter::Buffered(w) => w
                    .shutdown()
                    .await
                    .map_err(|e| ParquetError::External(Box::new(e))),
                ObjectWriter::Multipart(w) => w.finish().await,
            }
        }
        .boxed()
    }
}
