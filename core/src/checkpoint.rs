//! Checkpoint stores: where a pipeline remembers the last epoch it committed and the cursor it
//! reached. The sink's own marker is authoritative; the checkpoint is the runner's fast path and
//! a cross-check (see the runner).
//!
//! Saves are compare-and-swap on the epoch: a save that expects epoch `n` fails with
//! [`ErrorKind::Conflict`] if another run moved the checkpoint in between.
//!
//! Stores here: [`InMemoryCheckpointStore`] and [`LocalFileCheckpointStore`]. The object-store
//! one (conditional put) lives in `strata-files`, so core does not depend on object_store.

use crate::types::{CommitMarker, Epoch};
use crate::{Error, ErrorKind, Result};
use async_trait::async_trait;
use std::collections::HashMap;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Loads and saves pipeline checkpoints.
#[async_trait]
pub trait CheckpointStore: Send + Sync + Debug {
    /// The last saved checkpoint of `pipeline_id`.
    async fn load(&self, pipeline_id: &str) -> Result<Option<CommitMarker>>;

    /// Save `marker` if the stored epoch is `expected` (`Epoch(0)`: nothing stored yet).
    ///
    /// # Errors
    /// [`ErrorKind::Conflict`] when the stored epoch is not `expected`.
    async fn save(&self, marker: &CommitMarker, expected: Epoch) -> Result<()>;
}

fn conflict(pipeline_id: &str, expected: Epoch, found: Epoch) -> Error {
    Error::new(
        ErrorKind::Conflict,
        "the checkpoint moved under this run: another run of the same pipeline is active",
    )
    .with_context("pipeline", pipeline_id)
    .with_context("expected_epoch", expected)
    .with_context("found_epoch", found)
}

fn stored_epoch(m: Option<&CommitMarker>) -> Epoch {
    m.map_or(Epoch(0), |m| m.epoch)
}

/// Keeps checkpoints in memory (tests, one-shot runs).
#[derive(Debug, Default)]
pub struct InMemoryCheckpointStore {
    map: Mutex<HashMap<String, CommitMarker>>,
}

impl InMemoryCheckpointStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl CheckpointStore for InMemoryCheckpointStore {
    async fn load(&self, pipeline_id: &str) -> Result<Option<CommitMarker>> {
        Ok(self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(pipeline_id)
            .cloned())
    }

    async fn save(&self, marker: &CommitMarker, expected: Epoch) -> Result<()> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let found = stored_epoch(map.get(&marker.pipeline_id));
        if found != expected {
            return Err(conflict(&marker.pipeline_id, expected, found));
        }
        map.insert(marker.pipeline_id.clone(), marker.clone());
        Ok(())
    }
}

/// Keeps one JSON file per pipeline in a directory, replaced atomically (write to a temporary
/// file, fsync, rename). The compare-and-swap is exact within one process; across processes on
/// one machine a create-only lock file guards it.
#[derive(Debug)]
pub struct LocalFileCheckpointStore {
    dir: PathBuf,
    lock: tokio::sync::Mutex<()>,
}

impl LocalFileCheckpointStore {
    /// A store in `dir` (created on first save).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    fn path(&self, pipeline_id: &str) -> Result<PathBuf> {
        validate_pipeline_id(pipeline_id)?;
        Ok(self.dir.join(format!("{pipeline_id}.checkpoint.json")))
    }
}

/// Pipeline ids become file and object names: letters, digits, `-`, `_` and `.` only.
///
/// # Errors
/// [`ErrorKind::Config`] naming the id.
pub fn validate_pipeline_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::config("a pipeline id may hold only letters, digits, '-', '_' and '.' (at most 128, not starting with '.')")
            .with_context("pipeline", format!("{id:?}")))
    }
}

async fn read_marker(path: &Path) -> Result<Option<CommitMarker>> {
    match tokio::fs::read(path).await {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::new(ErrorKind::Data, "the checkpoint file is corrupt")
                .with_context("file", path.display())
                .with_source(e)
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::from(e).with_context("file", path.display())),
    }
}

#[async_trait]
impl CheckpointStore for LocalFileCheckpointStore {
    async fn load(&self, pipeline_id: &str) -> Result<Option<CommitMarker>> {
        read_marker(&self.path(pipeline_id)?).await
    }

    async fn save(&self, marker: &CommitMarker, expected: Epoch) -> Result<()> {
        let path = self.path(&marker.pipeline_id)?;
        let _guard = self.lock.lock().await;
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| Error::from(e).with_context("dir", self.dir.display()))?;
        let lock_path = path.with_extension("lock");
        // Create-only lock file: a second process saving at the same moment gets a Conflict.
        let lock = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock_path)
            .await;
        if let Err(e) = lock {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                return Err(Error::new(ErrorKind::Conflict, "another process is saving this checkpoint (remove a stale lock file if none is)")
                    .with_context("file", lock_path.display()));
            }
            return Err(Error::from(e).with_context("file", lock_path.display()));
        }
        let result = async {
            let found = stored_epoch(read_marker(&path).await?.as_ref());
            if found != expected {
                return Err(conflict(&marker.pipeline_id, expected, found));
            }
            let tmp = path.with_extension("json.tmp");
            let bytes = serde_json::to_vec_pretty(marker)
                .map_err(|e| Error::internal("could not encode the checkpoint").with_source(e))?;
            let mut f = tokio::fs::File::create(&tmp)
                .await
                .map_err(|e| Error::from(e).with_context("file", tmp.display()))?;
            tokio::io::AsyncWriteExt::write_all(&mut f, &bytes).await?;
            f.sync_all().await?;
            tokio::fs::rename(&tmp, &path)
                .await
                .map_err(|e| Error::from(e).with_context("file", path.display()))?;
            Ok(())
        }
        .await;
        let _ = tokio::fs::remove_file(&lock_path).await;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Cursor;

    async fn cas_contract(store: &dyn CheckpointStore) {
        assert_eq!(store.load("p1").await.unwrap(), None);
        let m1 = CommitMarker::new("p1", Epoch(1), Some(Cursor::new("c1")));
        store.save(&m1, Epoch(0)).await.unwrap();
        assert_eq!(store.load("p1").await.unwrap(), Some(m1.clone()));
        // A stale writer expecting epoch 0 again conflicts.
        let err = store
            .save(&CommitMarker::new("p1", Epoch(1), None), Epoch(0))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict);
        assert_eq!(err.context_value("found_epoch"), Some("1"));
        let m2 = CommitMarker::new("p1", Epoch(2), Some(Cursor::new("c2")));
        store.save(&m2, Epoch(1)).await.unwrap();
        assert_eq!(store.load("p1").await.unwrap(), Some(m2));
        // Pipelines are independent.
        assert_eq!(store.load("p2").await.unwrap(), None);
    }

    #[tokio::test]
    async fn in_memory_store_is_compare_and_swap() {
        cas_contract(&InMemoryCheckpointStore::new()).await;
    }

    #[tokio::test]
    async fn local_file_store_is_compare_and_swap_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        cas_contract(&LocalFileCheckpointStore::new(dir.path())).await;
        let reopened = LocalFileCheckpointStore::new(dir.path());
        assert_eq!(reopened.load("p1").await.unwrap().unwrap().epoch, Epoch(2));
    }

    #[tokio::test]
    async fn local_file_store_reports_corruption_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.checkpoint.json"), b"{not json").unwrap();
        let err = LocalFileCheckpointStore::new(dir.path())
            .load("p")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Data);
        assert!(
            err.context_value("file")
                .unwrap()
                .ends_with("p.checkpoint.json")
        );
    }

    #[test]
    fn pipeline_ids_are_checked() {
        assert!(validate_pipeline_id("orders_to_parquet-1").is_ok());
        assert_eq!(
            validate_pipeline_id("../etc").unwrap_err().kind(),
            ErrorKind::Config
        );
        assert!(validate_pipeline_id("").is_err());
    }
}
