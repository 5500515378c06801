//! `strata reset PIPELINE [--drop]`: make a pipeline read its source from the start.
//!
//! The destination holds the commit marker (the runner fast-forwards its checkpoint to it), so
//! the reset is a commit there: a new epoch with no cursor. Without `--drop` the rows stay
//! (only for MERGE sinks, where re-reading is idempotent); with `--drop` the rows and the
//! quarantine go too. [`Reset::plan`] checks and describes it without touching anything, so a
//! caller can ask for confirmation; [`Reset::apply`] does it.

use crate::config;
use std::path::Path;
use stratalake_core::{Error, ErrorKind, Result};
use stratalake_delta::{DeltaSink, DeltaSinkConfig, TableLocation};

/// A reset, checked and not yet done.
#[derive(Debug)]
pub struct Reset {
    id: String,
    drop: bool,
    table: TableLocation,
    options: DeltaSinkConfig,
}

impl Reset {
    /// Check that the pipeline in file `pipeline` can be reset (with `drop`: its rows deleted
    /// too).
    ///
    /// # Errors
    /// When the file does not load, its sink is not a Delta table, or `drop` would delete the
    /// rows of other logical dates.
    pub fn plan(pipeline: &Path, drop: bool) -> Result<Self> {
        let cfg = config::load(pipeline)?;
        let id = cfg.run_id();
        let config::SinkConfig::Delta {
            table,
            lake_table,
            connection,
            options,
        } = &cfg.sink
        else {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "{}: `strata reset` resets pipelines writing Delta tables (the lake); this one's sink keeps its own marker: empty the destination and remove its commit manifests by hand",
                    pipeline.display()
                ),
            ));
        };
        if drop && cfg.logical_date.is_some() {
            return Err(Error::config(format!(
                "{}: `{id}` is one logical date of `{}`, whose days share the table: --drop would delete every day's rows. One day can be forgotten (without --drop) when the sink merges by key",
                pipeline.display(),
                cfg.pipeline
            )));
        }
        let table = config::delta_table(table.as_ref(), lake_table.as_ref())?;
        let table = crate::lake::table_location(table, connection.as_ref())?;
        Ok(Self {
            id,
            drop,
            table,
            options: options.clone(),
        })
    }

    /// The pipeline id (with its logical date, if any) that the reset is for.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// What the reset will do, as the end of a sentence ("... will `describe()` make `id` read
    /// its source from the start").
    pub fn describe(&self) -> String {
        if self.drop {
            format!(
                "delete every row of {} and its quarantine, and",
                self.table.url
            )
        } else {
            "keep the rows, and".to_string()
        }
    }

    /// Do it: one commit to the table. Returns the line saying what was done.
    ///
    /// # Errors
    /// When the table cannot be read or committed to.
    pub async fn apply(self) -> Result<String> {
        let (id, url) = (self.id, self.table.url.clone());
        let sink = DeltaSink::try_new(self.table, self.options)?;
        if self.drop {
            sink.reset(&id).await?;
            Ok(format!(
                "{id}: {url} emptied; the next run reads the source from the start"
            ))
        } else {
            Ok(match sink.forget(&id).await? {
                Some(e) => format!(
                    "{id}: forgotten at epoch {e} (rows kept); the next run reads the source from the start and merges by key"
                ),
                None => format!("{id}: never committed to {url}; nothing to reset"),
            })
        }
    }
}
