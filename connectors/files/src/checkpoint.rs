//! [`ObjectStoreCheckpointStore`]: checkpoints in any object store, compare-and-swap by
//! create-only puts.

use crate::error::store_err;
use crate::location::StoreLocation;
use async_trait::async_trait;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use strata_core::checkpoint::validate_pipeline_id;
use strata_core::{CheckpointStore, CommitMarker, Epoch, Error, ErrorKind, Result};

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

    async fn epochs(&self, pid: &str) -> Result<Vec<Path>> {
        let dir = self.dir(pid);
        let mut v: Vec<Path> = self
            .location
            .store()
            .list(Some(&dir))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(|e| store_err("list", self.location.describe(&dir), e))?;
        v.retain(|p| p.as_ref().ends_with(".json"));
        v.sort();
        Ok(v)
    }
}

#[async_trait]
impl CheckpointStore for ObjectStoreCheckpointStore {
    async fn load(&self, pipeline_id: &str) -> Result<Option<CommitMarker>> {
        validate_pipeline_id(pipeline_id)?;
        let Some(last) = self.epochs(pipeline_id).await?.pop() else {
            return Ok(None);
        };
        let d = self.location.describe(&last);
        let bytes = self
            .location
            .store()
            .get(&last)
            .await
            .map_err(|e| store_err("get", &d, e))?
            .bytes()
            .await
            .map_err(|e| store_err("get", &d, e))?;
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::new(ErrorKind::Data, "the checkpoint object is corrupt")
                .with_context("file", d)
                .with_source(e)
        })
    }

    async fn save(&self, marker: &CommitMarker, expected: Epoch) -> Result<()> {
        validate_pipeline_id(&marker.pipeline_id)?;
        let found = self
            .load(&marker.pipeline_id)
            .await?
            .map_or(Epoch(0), |m| m.epoch);
        if found != expected || marker.epoch <= found {
            return Err(Error::new(
                ErrorKind::Conflict,
                "the checkpoint moved under this run: another run of the same pipeline is active",
            )
            .with_context("pipeline", &marker.pipeline_id)
            .with_context("expected_epoch", expected)
            .with_context("found_epoch", found));
        }
        let path = self
            .dir(&marker.pipeline_id)
            .join(format!("{:020}.json", marker.epoch.0));
        let body = serde_json::to_vec_pretty(marker)
            .map_err(|e| Error::internal("cannot encode the checkpoint").with_source(e))?;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .location
            .store()
            .put_opts(&path, PutPayload::from(body), opts)
            .await
        {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => {
                return Err(
                    Error::new(ErrorKind::Conflict, "another run saved this epoch first")
                        .with_context("pipeline", &marker.pipeline_id)
                        .with_context("epoch", marker.epoch),
                );
            }
            Err(e) => return Err(store_err("put", self.location.describe(&path), e)),
        }
        // Prune old epochs (best effort).
        let all = self.epochs(&marker.pipeline_id).await?;
        for old in all.iter().take(all.len().saturating_sub(self.keep)) {
            let _ = self.location.store().delete(old).await;
        }
        Ok(())
    }
}
