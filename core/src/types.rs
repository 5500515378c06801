//! Positions and commit bookkeeping: [`Cursor`], [`Epoch`], [`CommitMarker`], splits and plans.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An opaque, versioned position owned by a connector: a page token, a high-water mark, a
/// listing watermark, a change-stream resume token. Strata stores and compares it for equality
/// only; the connector that produced it is the only one that reads it.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cursor(String);

impl Cursor {
    /// Wrap a connector-encoded position. Connectors should put a version tag inside.
    pub fn new(encoded: impl Into<String>) -> Self {
        Self(encoded.into())
    }

    /// The encoded position.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A connector's position as `<tag><json>` (`rest/v1:{...}`): the one cursor codec every
    /// connector uses. A position that cannot be serialised is an Internal error, never an
    /// empty cursor (which would commit "start over").
    ///
    /// # Errors
    /// Internal when `value` does not serialise.
    pub fn encode<T: Serialize>(tag: &str, value: &T) -> crate::Result<Self> {
        let json = serde_json::to_string(value).map_err(|e| {
            crate::Error::internal("a cursor does not serialise")
                .with_context("cursor", tag)
                .with_source(e)
        })?;
        Ok(Self(format!("{tag}{json}")))
    }

    /// The position [`Cursor::encode`] wrote under `tag`, read back; `writer` names the
    /// connector for the errors ("a REST source").
    ///
    /// # Errors
    /// Conflict when another connector (or version) wrote the cursor; Data when it is
    /// corrupt.
    pub fn decode<T: serde::de::DeserializeOwned>(
        &self,
        tag: &str,
        writer: &str,
    ) -> crate::Result<T> {
        let body = self.0.strip_prefix(tag).ok_or_else(|| {
            crate::Error::new(
                crate::ErrorKind::Conflict,
                format!("the checkpoint cursor was not written by {writer}"),
            )
            .with_context("cursor", format!("{self:?}"))
        })?;
        serde_json::from_str(body).map_err(|e| {
            crate::Error::new(
                crate::ErrorKind::Data,
                format!("the cursor of {writer} is corrupt"),
            )
            .with_context("cursor", format!("{self:?}"))
            .with_source(e)
        })
    }
}

impl fmt::Debug for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Cursors can be long (a set of file names); keep logs readable.
        if self.0.len() > 120 {
            write!(
                f,
                "Cursor({}…{} bytes)",
                &self.0[..self.0.floor_char_boundary(100)],
                self.0.len()
            )
        } else {
            write!(f, "Cursor({})", self.0)
        }
    }
}

/// A numbered unit of work: everything read between two commits. Epoch 0 means "nothing
/// committed yet"; the first epoch a pipeline commits is 1.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Epoch(pub u64);

impl Epoch {
    /// The epoch after this one.
    pub fn next(self) -> Epoch {
        Epoch(self.0 + 1)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What a sink records inside its own transaction when it commits an epoch, and what a
/// checkpoint store saves: the pipeline, the epoch and the source position it reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitMarker {
    /// The pipeline that committed.
    pub pipeline_id: String,
    /// The epoch committed.
    pub epoch: Epoch,
    /// The source position reached by this epoch (the plan's pinned end).
    pub cursor: Option<Cursor>,
}

impl CommitMarker {
    /// A marker for `pipeline_id` at `epoch`, having read up to `cursor`.
    pub fn new(pipeline_id: impl Into<String>, epoch: Epoch, cursor: Option<Cursor>) -> Self {
        Self {
            pipeline_id: pipeline_id.into(),
            epoch,
            cursor,
        }
    }
}

/// What a pipeline asks a source for.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ReadRequest {
    /// Read what comes after this position (`None`: from the beginning).
    pub from: Option<Cursor>,
}

impl ReadRequest {
    /// Read everything after `from`.
    pub fn after(from: Option<Cursor>) -> Self {
        Self { from }
    }
}

/// One independent unit of reading: a file, a byte range of a file, a page range, an `_id`
/// range. The spec is connector-encoded (JSON by convention), so splits can be shipped to
/// other workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    /// A human-readable id, unique within the plan (`orders.ndjson[0..67108864]`).
    pub id: String,
    /// The connector's own description of the unit.
    pub spec: String,
    /// The approximate number of input bytes, for scheduling and progress.
    pub size_bytes: Option<u64>,
}

impl Split {
    /// A split named `id` whose spec is `spec` as JSON (the convention every connector
    /// follows), with an optional size hint. A spec that cannot be serialised is an error,
    /// never an empty spec.
    ///
    /// # Errors
    /// Internal when `spec` does not serialise.
    pub fn encode<T: Serialize>(
        id: impl Into<String>,
        spec: &T,
        size_bytes: Option<u64>,
    ) -> crate::Result<Self> {
        let id = id.into();
        let spec = serde_json::to_string(spec).map_err(|e| {
            crate::Error::internal("a split does not serialise")
                .with_context("split", &id)
                .with_source(e)
        })?;
        Ok(Self {
            id,
            spec,
            size_bytes,
        })
    }

    /// The spec [`Split::encode`] wrote, read back; `reader` names the connector for the
    /// error ("a REST source").
    ///
    /// # Errors
    /// Internal when the spec is not one `reader` wrote (a split given to the wrong source).
    pub fn decode<T: serde::de::DeserializeOwned>(&self, reader: &str) -> crate::Result<T> {
        serde_json::from_str(&self.spec).map_err(|e| {
            crate::Error::internal(format!("not a split of {reader}"))
                .with_context("split", &self.id)
                .with_source(e)
        })
    }
}

/// The result of planning: the splits to read and the position the epoch ends at.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ReadPlan {
    /// Independent units of work, read concurrently.
    pub splits: Vec<Split>,
    /// The pinned end position; committed with the data.
    pub end: Option<Cursor>,
}

impl ReadPlan {
    /// A plan of `splits` ending at `end`.
    pub fn new(splits: Vec<Split>, end: Option<Cursor>) -> Self {
        Self { splits, end }
    }

    /// The sum of the splits' size hints.
    pub fn total_bytes(&self) -> u64 {
        self.splits.iter().filter_map(|s| s.size_bytes).sum()
    }
}

#[cfg(test)]
mod cursor_codec_tests {
    use super::Cursor;
    use crate::ErrorKind;
    use std::collections::BTreeMap;

    #[test]
    fn a_cursor_round_trips_and_never_encodes_empty() {
        let c = Cursor::encode("t/v1:", &vec![1u64, 2]).unwrap();
        assert_eq!(c.as_str(), "t/v1:[1,2]");
        assert_eq!(c.decode::<Vec<u64>>("t/v1:", "a test").unwrap(), vec![1, 2]);
        let e = c
            .decode::<Vec<u64>>("other/v1:", "another source")
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict);
        assert!(e.message().contains("not written by another source"));
        let e = Cursor::new("t/v1:[1,")
            .decode::<Vec<u64>>("t/v1:", "a test")
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Data);
        // JSON has no keys that are not text: a failure, not an empty cursor.
        let unserialisable: BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
        let e = Cursor::encode("t/v1:", &unserialisable).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Internal);
    }
}
