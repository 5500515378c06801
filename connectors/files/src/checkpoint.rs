//! [`ObjectStoreCheckpointStore`]: checkpoints in any object store, compare-and-swap by
//! create-only puts.

use crate::location::StoreLocation;
use async_trait::async_trait;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use stratalake_core::checkpoint::{conflict, validate_pipeline_id};
use stratalake_core::{CheckpointStore, CommitMarker, Epoch, Result};

/// Keeps each saved epoch as its own object `<pipeline>/<epoch>.json`, created with
/// `PutMode::Create`: two runs saving the same next epoch cannot both win, on every store that
/// supports create-only puts (local disk, S3, Azure). The latest few epochs are kept.
#[derive(Debug, Clone)]
pub struct ObjectStoreCheckpointStore {
    location: StoreLocation,
    keep: usize,
}

impl ObjectStoreCheckpointStore {
    /// A store under `location`.
    pub fn new(location: StoreLocation) -> Self {
        Self { location, keep: 3 }
    }

    fn dir(&self, pid: &str) -> Path {
        self.location.child(pid)
    }
}

#[async_trait]
impl CheckpointStore for ObjectStoreCheckpointStore {
    async fn load(&self, pipeline_id: &str) -> Result<Option<CommitMarker>> {
        validate_pipeline_id(pipeline_id)?;
        match self.location.list_json(&self.dir(pipeline_id)).await?.pop() {
            Some(last) => self
                .location
                .get_json(&last, "the checkpoint object")
                .await
                .map(Some),
            None => Ok(None),
        }
    }

    async fn save(&self, marker: &CommitMarker, expected: Epoch) -> Result<()> {
        validate_pipeline_id(&marker.pipeline_id)?;
        let found = self
            .load(&marker.pipeline_id)
            .await?
            .map_or(Epoch(0), |m| m.epoch);
        if found != expected || marker.epoch <= found {
            return Err(conflict(&marker.pipeline_id, expected, found));
        }
        let path = self
            .dir(&marker.pipeline_id)
            .join(format!("{:020}.json", marker.epoch.0));
        if !self.location.put_json_create(&path, marker).await? {
            return Err(conflict(&marker.pipeline_id, expected, marker.epoch));
        }
        // Prune old epochs (best effort).
        let all = self
            .location
            .list_json(&self.dir(&marker.pipeline_id))
            .await?;
        for old in all.iter().take(all.len().saturating_sub(self.keep)) {
            let _ = self.location.store().delete(old).await;
        }
        Ok(())
    }
}
