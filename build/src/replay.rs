//! `strata quarantine replay TABLE`: re-submit the records a `merge` or `append` model's
//! rules quarantined, after a fix to the rules or to the data, exactly once.
//!
//! Each record restarts at the step that rejected it (a conform failure at conform, an
//! expectation failure at the expectations), so nothing is masked twice. Replay number `n`
//! commits the records that now pass to the table with the runner's marker (pipeline
//! `<model>.replay`, epoch `n`, the quarantine version read as its cursor), then rewrites the
//! quarantine in one commit (application transaction `strata-replay/<model>` = `n`): the
//! replayed records out, those that failed again in. A kill between the two leaves the
//! marker: the next replay finds it, recomputes the same records from the quarantine
//! version the marker names, and finishes the quarantine's commit only.

use crate::config::Step;
use crate::project::{Loaded, model_pipeline};
use arrow_array::RecordBatch;
use futures::StreamExt;
use stratalake_core::expect::ResultLog;
use stratalake_core::{
    BatchStreamAdapter, CommitMarker, Context, Cursor, Epoch, QuarantineRecord, SchemaRef,
};
use stratalake_core::{Error, ErrorKind, Result, ResultExt as _};
use stratalake_project::NodeKind;

/// What a replay did.
#[derive(Debug, Default)]
pub struct Replayed {
    /// The records re-submitted.
    pub records: u64,
    /// Rows that now pass and were committed to the table.
    pub restored: u64,
    /// Records that failed again and stay in quarantine.
    pub requarantined: u64,
    /// Whether this run finished a replay a kill had interrupted.
    pub recovered: bool,
    /// Quarantined records left alone (rejected by the source, which has no step to
    /// restart).
    pub left: u64,
}

const COMPONENTS: [(&str, &str); 2] = [
    ("transform:conform", "conform"),
    ("transform:expect", "expect"),
];

fn filter(rule: Option<&str>) -> String {
    let comps = COMPONENTS
        .iter()
        .map(|(c, _)| format!("'{c}'"))
        .collect::<Vec<_>>()
        .join(", ");
    match rule {
        Some(r) => format!(
            "component IN ({comps}) AND reason LIKE {}",
            stratalake_project::sql_quoted(&format!("%`{r}`%"))
        ),
        None => format!("component IN ({comps})"),
    }
}

/// The cursor a replay commits: the quarantine version it read, and the rule it selected.
fn cursor(version: i64, rule: Option<&str>) -> Result<Cursor> {
    Cursor::encode(
        "replay/v1:",
        &serde_json::json!({"version": version, "rule": rule}),
    )
}

fn decode(c: &Cursor) -> Result<(i64, Option<String>)> {
    let v: serde_json::Value = c.decode("replay/v1:", "a quarantine replay")?;
    Ok((
        v["version"]
            .as_i64()
            .ok_or_else(|| Error::data("a replay cursor without a version"))?,
        v["rule"].as_str().map(str::to_string),
    ))
}

/// Replay the quarantine of `table` (`silver.orders`), only `rule`'s records when given.
///
/// # Errors
/// When the table is not a merge or append model, has no quarantine, or a step fails.
pub async fn replay(l: &Loaded, table: &str, rule: Option<&str>) -> Result<Replayed> {
    let node = l.graph.node(table).ok_or_else(|| {
        Error::new(
            ErrorKind::NotFound,
            format!("`{table}` is not a node of this project"),
        )
    })?;
    let NodeKind::Model(m) = &node.kind else {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "`{table}` is a pipeline's table: its quarantined records are raw input; fix the input and run the pipeline again"
            ),
        ));
    };
    if !m.settings.materialized.is_streaming() {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "`{table}` is a `{}` model, which quarantines nothing (its rows are computed from its inputs)",
                m.settings.materialized.as_str()
            ),
        ));
    }
    let privacy = l.project.config().privacy.clone();
    let cfg = model_pipeline(&l.lake, m, privacy.as_deref())?;
    let built = crate::config::build_logged(&cfg, &ResultLog::new()).await?;
    let loc = l.lake.table(&m.layer, &m.table)?;
    let qloc = loc.child("_quarantine")?;
    let pid = format!("{}.replay", m.name);
    let app = format!("strata-replay/{}", m.name);
    let ctx = Context::new(&pid);
    let n = stratalake_gold::expect::replays_done(&qloc, &app).await? + 1;
    let mark = built.sink.last_committed(&pid, &ctx).await?;
    let (version, rule, pending) = match mark {
        Some(mk) if mk.epoch.0 == u64::try_from(n).unwrap_or(0) => {
            let (v, r) = decode(
                mk.cursor
                    .as_ref()
                    .ok_or_else(|| Error::data("a replay marker without a cursor"))?,
            )?;
            (v, r, true)
        }
        _ => (
            stratalake_gold::expect::quarantine_version(&qloc)
                .await?
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::NotFound,
                        format!("{table} has no quarantine: nothing was ever quarantined there"),
                    )
                })?,
            rule.map(str::to_string),
            false,
        ),
    };
    let f = filter(rule.as_deref());
    let records = stratalake_gold::expect::quarantined(&qloc, version, &f).await?;
    let mut out = Replayed {
        recovered: pending,
        ..Replayed::default()
    };
    out.left =
        stratalake_gold::expect::quarantined(&qloc, version, &format!("NOT ({})", filter(None)))
            .await?
            .iter()
            .map(|b| b.num_rows() as u64)
            .sum();
    // The schema each step reads, to decode the records restarting there.
    let mut schemas: Vec<SchemaRef> = Vec::new();
    let mut schema = built.source.schema();
    for s in &built.transforms {
        schemas.push(schema.clone());
        schema = match s {
            Step::Batch(t) => t.output_schema(&schema)?,
            Step::Stream(t) => t.output_schema(&schema)?,
        };
    }
    let (qtx, mut qrx) = stratalake_core::quarantine::quarantine_channel(16);
    let run_ctx = Context::builder(&pid).with_quarantine(qtx).build();
    let mut passing: Vec<RecordBatch> = Vec::new();
    let mut refailed: Vec<QuarantineRecord> = Vec::new();
    for (component, step) in COMPONENTS {
        let Some(start) = built.transforms.iter().position(|s| match s {
            Step::Batch(t) => t.name() == step,
            Step::Stream(t) => t.name() == step,
        }) else {
            continue;
        };
        let raws: Vec<String> = raw_of(&records, component)?;
        if raws.is_empty() {
            continue;
        }
        out.records += raws.len() as u64;
        let batch = json_batch(&raws, &schemas[start], table)?;
        let mut stream =
            BatchStreamAdapter::boxed(batch.schema(), Box::pin(futures::stream::iter([Ok(batch)])));
        for s in &built.transforms[start..] {
            stream = match s {
                Step::Batch(t) => {
                    let (t, c) = (t.clone(), run_ctx.clone());
                    let sch = t.output_schema(&stream.schema())?;
                    BatchStreamAdapter::boxed(
                        sch,
                        Box::pin(stream.map(move |b| b.and_then(|b| t.apply(b, &c)))),
                    )
                }
                Step::Stream(t) => t.transform(stream, &run_ctx)?,
            };
        }
        // Drain the stream and the quarantine channel together (the channel is bounded).
        loop {
            tokio::select! {
                b = stream.next() => match b {
                    Some(b) => passing.push(b?),
                    None => break,
                },
                Some(r) = qrx.recv() => refailed.extend(r),
            }
        }
    }
    drop(run_ctx);
    while let Ok(r) = qrx.try_recv() {
        refailed.extend(r);
    }
    out.requarantined = refailed.len() as u64;
    out.restored = passing.iter().map(|b| b.num_rows() as u64).sum();
    if !pending {
        let schema = passing.first().map_or(schema, RecordBatch::schema);
        let mut w = built.sink.open(schema, &ctx).await?;
        for b in passing {
            w.write(b).await?;
        }
        let epoch = Epoch(u64::try_from(n).unwrap_or(0));
        let prepared = w.prepare(epoch).await?;
        w.commit(
            prepared,
            &CommitMarker::new(&pid, epoch, Some(cursor(version, rule.as_deref())?)),
        )
        .await?;
        stratalake_core::crash_point("replay.after_table_commit").await;
    }
    stratalake_gold::expect::finish_replay(&qloc, version, &f, &refailed, &app, n).await?;
    Ok(out)
}

fn raw_of(batches: &[RecordBatch], component: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for b in batches {
        let records = stratalake_core::quarantine_records(b)?;
        out.extend(
            records
                .into_iter()
                .filter(|r| r.component == component)
                .map(|r| r.raw),
        );
    }
    Ok(out)
}

/// The records (one JSON object each) as one batch of `schema`.
fn json_batch(raws: &[String], schema: &SchemaRef, table: &str) -> Result<RecordBatch> {
    let text = raws.join("\n");
    let mut reader = arrow_json::ReaderBuilder::new(schema.clone())
        .with_batch_size(raws.len().max(1))
        .with_coerce_primitive(true)
        .build(std::io::Cursor::new(text.into_bytes()))?;
    let mut batches = Vec::new();
    for b in reader.by_ref() {
        batches.push(b.wrap_err_with(|| {
            format!("{table}: a quarantined record no longer decodes as the step's input")
        })?);
    }
    Ok(arrow_select::concat::concat_batches(schema, &batches)?)
}

impl std::fmt::Display for Replayed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} records replayed: {} rows now pass and were committed, {} failed again and stay quarantined",
            self.records, self.restored, self.requarantined
        )?;
        if self.left > 0 {
            write!(
                f,
                "; {} records rejected by the source left alone",
                self.left
            )?;
        }
        if self.recovered {
            write!(f, " (finished a replay a kill had interrupted)")?;
        }
        Ok(())
    }
}
