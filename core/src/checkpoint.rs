//! Checkpoint stores: where a pipeline remembers the last epoch it committed and the cursor it
//! reached. The sink's own marker is authoritative; the checkpoint is the runner's fast path and
//! a cross-check (see the runner).
//!
//! Saves are compare-and-swap on the epoch: a save that expects epoch `n` fails with
//! [`ErrorKind::Conflict`] if another run moved the checkpoint in between.
//!
//! Stores here: [`InMemoryCheckpointStore`] and [`LocalFileCheckpointStore`]. The object-store
//! one (conditional put) lives in `stratalake-files`, so core does not depend on object_store.

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

/// The error a [`CheckpointStore::save`] returns when the stored epoch is not the one the
/// run expected: another run of the same pipeline saved first. Every store uses it, so the
/// runner and the user see one message and one set of context keys.
pub fn conflict(pipeline_id: &str, expected: Epoch, found: Epoch) -> Error {
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

/// Keeps checkpoints on local disk as one JSON file per saved epoch,
/// `<dir>/<pipeline>/<epoch>.json`. A save writes a temporary file, syncs it, and hard-links it
/// to its final name, which fails if that name exists: the compare-and-swap holds across
/// processes, and a crash at any moment leaves either the old checkpoint or the new one, never
/// a torn file or a stale lock. The latest three epochs are kept.
#[derive(Debug)]
pub struct LocalFileCheckpointStore {
    dir: PathBuf,
}

impl LocalFileCheckpointStore {
    /// A store in `dir` (created on first save).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn pipeline_dir(&self, pipeline_id: &str) -> Result<PathBuf> {
        validate_pipeline_id(pipeline_id)?;
        Ok(self.dir.join(pipeline_id))
    }

    /// The saved epoch files of a pipeline, oldest first.
    async fn epochs(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        let mut rd = match tokio::fs::read_dir(dir).await {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::from(e).with_context("dir", dir.display())),
        };
        while let Some(entry) = rd
            .next_entry()
            .await
            .map_err(|e| Error::from(e).with_context("dir", dir.display()))?
        {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.len() == 25
                && name.ends_with(".json")
                && name[..20].bytes().all(|b| b.is_ascii_digit())
            {
                out.push(entry.path());
            }
        }
        out.sort();
        Ok(out)
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

async fn read_marker(path: &Path) -> Result<CommitMarker> {
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| Error::from(e).with_context("file", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::new(ErrorKind::Data, "the checkpoint file is corrupt")
            .with_context("file", path.display())
            .with_source(e)
    })
}

#[async_trait]
impl CheckpointStore for LocalFileCheckpointStore {
    async fn load(&self, pipeline_id: &str) -> Result<Option<CommitMarker>> {
        let dir = self.pipeline_dir(pipeline_id)?;
        match self.epochs(&dir).await?.pop() {
            Some(last) => read_marker(&last).await.map(Some),
            None => Ok(None),
        }
    }

    async fn save(&self, marker: &CommitMarker, expected: Epoch) -> Result<()> {
        let dir = self.pipeline_dir(&marker.pipeline_id)?;
        let found = stored_epoch(self.load(&marker.pipeline_id).await?.as_ref());
        if found != expected || marker.epoch <= found {
            return Err(conflict(&marker.pipeline_id, expected, found));
        }
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| Error::from(e).with_context("dir", dir.display()))?;
        let path = dir.join(format!("{:020}.json", marker.epoch.0));
        let tmp = dir.join(format!(
            ".{:020}.{:016x}.tmp",
            marker.epoch.0,
            rand_suffix()
        ));
        let bytes = serde_json::to_vec_pretty(marker)
            .map_err(|e| Error::internal("could not encode the checkpoint").with_source(e))?;
        let written = async {
            let mut f = tokio::fs::File::create(&tmp).await?;
            tokio::io::AsyncWriteExt::write_all(&mut f, &bytes).await?;
            f.sync_all().await?;
            tokio::fs::hard_link(&tmp, &path).await
        }
        .await;
        let _ = tokio::fs::remove_file(&tmp).await;
        match written {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(conflict(&marker.pipeline_id, expected, marker.epoch));
            }
            Err(e) => return Err(Error::from(e).with_context("file", path.display())),
        }
        // Keep the latest three epochs (best effort).
        let all = self.epochs(&dir).await?;
        for old in all.iter().take(all.len().saturating_sub(3)) {
            let _ = tokio::fs::remove_file(old).await;
        }
        Ok(())
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
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
        std::fs::create_dir_all(dir.path().join("p")).unwrap();
        std::fs::write(
            dir.path().join("p").join(format!("{:020}.json", 1)),
            b"{not json",
        )
        .unwrap();
        let err = LocalFileCheckpointStore::new(dir.path())
            .load("p")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Data);
        assert!(
            err.context_value("file")
                .unwrap()
                .ends_with("00000000000000000001.json")
        );
    }

    #[tokio::test]
    async fn two_processes_cannot_both_save_the_same_epoch_and_leftovers_do_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            LocalFileCheckpointStore::new(dir.path()),
            LocalFileCheckpointStore::new(dir.path()),
        );
        a.save(&CommitMarker::new("p", Epoch(1), None), Epoch(0))
            .await
            .unwrap();
        // A temporary file left by a killed save is ignored.
        std::fs::write(
            dir.path().join("p").join(".00000000000000000002.dead.tmp"),
            b"{",
        )
        .unwrap();
        let (ma, mb) = (
            CommitMarker::new("p", Epoch(2), Some(Cursor::new("a"))),
            CommitMarker::new("p", Epoch(2), Some(Cursor::new("b"))),
        );
        let (ra, rb) = tokio::join!(a.save(&ma, Epoch(1)), b.save(&mb, Epoch(1)));
        assert!(ra.is_ok() != rb.is_ok(), "exactly one wins: {ra:?} {rb:?}");
        assert_eq!(ra.err().or(rb.err()).unwrap().kind(), ErrorKind::Conflict);
        assert_eq!(a.load("p").await.unwrap().unwrap().epoch, Epoch(2));
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
