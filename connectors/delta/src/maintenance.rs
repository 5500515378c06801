//! Table maintenance: compaction (small files into large ones) and vacuum (removing files no
//! version within the retention still needs).

use crate::table::{TableLocation, delta_err, open};
use std::num::NonZeroU64;
use stratalake_core::{Error, ErrorKind, Result};

/// What [`compact`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Compacted {
    /// Small files replaced.
    pub files_removed: u64,
    /// Files written.
    pub files_added: u64,
}

/// What [`vacuum`] did (or would do, dry).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Vacuumed {
    /// The files deleted (or that would be).
    pub files: Vec<String>,
    /// Whether it was a dry run.
    pub dry_run: bool,
}

async fn table(loc: &TableLocation) -> Result<deltalake::DeltaTable> {
    open(loc).await?.ok_or_else(|| {
        Error::new(ErrorKind::NotFound, "there is no Delta table here")
            .with_context("table", loc.url.as_str())
    })
}

/// Rewrite small files into files of about `target_file_size_megabytes` (a new version with
/// the same rows; readers of older versions are unaffected).
///
/// # Errors
/// NotFound without a table; Conflict when a concurrent writer wins (retry).
pub async fn compact(loc: &TableLocation, target_file_size_megabytes: u64) -> Result<Compacted> {
    let t = table(loc).await?;
    let target =
        NonZeroU64::new(target_file_size_megabytes.max(1) * 1024 * 1024).unwrap_or(NonZeroU64::MIN);
    let (_, m) = t
        .optimize()
        .with_target_size(target)
        .await
        .map_err(|e| delta_err(e, "compaction failed", &loc.url))?;
    Ok(Compacted {
        files_removed: m.num_files_removed,
        files_added: m.num_files_added,
    })
}

/// Delete files that no version younger than `retention_hours` references (and files no
/// version ever referenced, such as those of killed writers).
///
/// # Errors
/// NotFound without a table; Config for a retention under Delta's minimum (7 days) unless
/// `force` is set.
pub async fn vacuum(
    loc: &TableLocation,
    retention_hours: u64,
    dry_run: bool,
    force: bool,
) -> Result<Vacuumed> {
    if !force && retention_hours < 168 {
        return Err(Error::config(
            "a vacuum retention under 168 hours (7 days) can break readers of older versions",
        )
        .with_context("table", loc.url.as_str())
        .with_context("retention_hours", retention_hours)
        .with_context(
            "hint",
            "keep 168 or more, or force it when no reader needs history",
        ));
    }
    let t = table(loc).await?;
    let hours = i64::try_from(retention_hours)
        .map_err(|_| Error::config("`retention_hours` is too large"))?;
    let (_, m) = t
        .vacuum()
        .with_retention_period(chrono::Duration::hours(hours))
        .with_enforce_retention_duration(!force)
        .with_dry_run(dry_run)
        .await
        .map_err(|e| delta_err(e, "vacuum failed", &loc.url))?;
    Ok(Vacuumed {
        files: m.files_deleted,
        dry_run: m.dry_run,
    })
}
