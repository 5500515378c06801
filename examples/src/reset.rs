//! `strata reset PIPELINE [--drop]`: make a pipeline read its source from the start.
//!
//! The destination holds the commit marker (the runner fast-forwards its checkpoint to it), so
//! the reset is a commit there: a new epoch with no cursor. Without `--drop` the rows stay
//! (only for MERGE sinks, where re-reading is idempotent); with `--drop` the rows and the
//! quarantine go too. Destructive, so it asks on a terminal and needs `--yes` elsewhere.

use crate::config;
use anyhow::{Result, bail};
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::Path;

/// What `reset` did, for the command's line.
pub async fn run(pipeline: &Path, drop: bool, yes: bool) -> Result<String> {
    let cfg = config::load(pipeline)?;
    let id = cfg.run_id();
    let config::SinkConfig::Delta {
        table,
        lake_table,
        connection,
        options,
    } = &cfg.sink
    else {
        return Err(stratalake_core::Error::new(
            stratalake_core::ErrorKind::Unsupported,
            format!(
                "{}: `strata reset` resets pipelines writing Delta tables (the lake); this one's sink keeps its own marker: empty the destination and remove its commit manifests by hand",
                pipeline.display()
            ),
        )
        .into());
    };
    if drop && cfg.logical_date.is_some() {
        bail!(
            "{}: `{id}` is one logical date of `{}`, whose days share the table: --drop would delete every day's rows. One day can be forgotten (without --drop) when the sink merges by key",
            pipeline.display(),
            cfg.pipeline
        );
    }
    let table = config::delta_table(table.as_ref(), lake_table.as_ref())?;
    let loc = crate::lake::table_location(table, connection.as_ref())?;
    let what = if drop {
        format!("delete every row of {} and its quarantine, and", loc.url)
    } else {
        "keep the rows, and".to_string()
    };
    if !yes {
        if !std::io::stdin().is_terminal() {
            bail!(
                "strata reset {id}: would {what} read the source from the start; pass --yes to do it (there is no terminal to ask)"
            );
        }
        eprint!(
            "strata reset: this will {what} make `{id}` read its source from the start.\nType the pipeline id to confirm: "
        );
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if answer.trim() != id {
            bail!("strata reset {id}: not confirmed; nothing changed");
        }
    }
    let sink = stratalake_delta::DeltaSink::try_new(loc.clone(), options.clone())?;
    if drop {
        sink.reset(&id).await?;
        Ok(format!(
            "{id}: {} emptied; the next run reads the source from the start",
            loc.url
        ))
    } else {
        Ok(match sink.forget(&id).await? {
            Some(e) => format!(
                "{id}: forgotten at epoch {e} (rows kept); the next run reads the source from the start and merges by key"
            ),
            None => format!("{id}: never committed to {}; nothing to reset", loc.url),
        })
    }
}
