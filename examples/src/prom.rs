//! `--metrics-file`: a run's or a build's numbers as Prometheus text (format 0.0.4, written
//! by the `prometheus` crate's encoder), for node_exporter's textfile collector or a push to a
//! Pushgateway. Written whole to a temporary file, then renamed, so a collector never reads half
//! a file; a failed run writes its file too (`strata_run_success 0`), so alerts can fire.

use anyhow::{Context as _, Result};
use prometheus::{Encoder as _, GaugeVec, IntCounterVec, Opts, Registry, TextEncoder};
use std::path::Path;
use stratalake_core::RunReport;

/// One pipeline run (or a build's node) to export.
pub struct Sample<'a> {
    /// The pipeline id or node name (the `pipeline` label).
    pub pipeline: &'a str,
    /// `pipeline`, `table`, `incremental`, `merge`, `append`.
    pub kind: &'a str,
    /// Whether it ended well (built or up to date).
    pub success: bool,
    /// Its wall time.
    pub seconds: f64,
    /// Its run report, when it ran through the runner.
    pub report: Option<&'a RunReport>,
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> Result<GaugeVec> {
    let g = GaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

/// The Prometheus text for `samples`.
///
/// # Errors
/// When a metric cannot be registered or encoded (a bug).
pub fn render(samples: &[Sample<'_>]) -> Result<String> {
    let r = Registry::new();
    let success = gauge(
        &r,
        "strata_run_success",
        "1 when the run succeeded, 0 when it failed.",
        &["pipeline", "kind"],
    )?;
    let seconds = gauge(
        &r,
        "strata_run_duration_seconds",
        "Wall time of the run.",
        &["pipeline", "kind"],
    )?;
    let finished = gauge(
        &r,
        "strata_run_last_timestamp_seconds",
        "When the run ended (Unix time).",
        &["pipeline", "kind"],
    )?;
    let rows = gauge(
        &r,
        "strata_run_rows_written",
        "Rows the run committed.",
        &["pipeline"],
    )?;
    let quarantined = gauge(
        &r,
        "strata_run_rows_quarantined",
        "Rows the run sent to quarantine.",
        &["pipeline"],
    )?;
    let read = gauge(
        &r,
        "strata_run_bytes_read",
        "Input bytes the run read.",
        &["pipeline"],
    )?;
    let written = gauge(
        &r,
        "strata_run_bytes_written",
        "Bytes the run wrote.",
        &["pipeline"],
    )?;
    let epoch = gauge(
        &r,
        "strata_run_epoch",
        "The epoch the run committed or found committed.",
        &["pipeline"],
    )?;
    let now = chrono::Utc::now().timestamp_micros() as f64 / 1e6;
    let mut counters: Vec<(String, IntCounterVec)> = Vec::new();
    for s in samples {
        let l = [s.pipeline, s.kind];
        success
            .with_label_values(&l)
            .set(if s.success { 1.0 } else { 0.0 });
        seconds.with_label_values(&l).set(s.seconds);
        finished.with_label_values(&l).set(now);
        let Some(rep) = s.report else { continue };
        let p = [s.pipeline];
        rows.with_label_values(&p).set(rep.rows_written as f64);
        quarantined
            .with_label_values(&p)
            .set(rep.rows_quarantined as f64);
        read.with_label_values(&p).set(rep.input_bytes as f64);
        written.with_label_values(&p).set(rep.bytes_written as f64);
        epoch.with_label_values(&p).set(rep.epoch.0 as f64);
        // The runner's per-component counters (busy time included), by their core names.
        for (component, values) in &rep.metrics.components {
            for (name, v) in values {
                let c = match counters.iter().find(|(n, _)| n == name) {
                    Some((_, c)) => c.clone(),
                    None => {
                        let c = IntCounterVec::new(
                            Opts::new(
                                name.as_str(),
                                format!("Strata's {name} (see stratalake_core::metrics)."),
                            ),
                            &["pipeline", "component"],
                        )?;
                        r.register(Box::new(c.clone()))?;
                        counters.push((name.clone(), c.clone()));
                        c
                    }
                };
                c.with_label_values(&[s.pipeline, component.as_str()])
                    .inc_by(*v);
            }
        }
    }
    let mut out = Vec::new();
    TextEncoder::new().encode(&r.gather(), &mut out)?;
    Ok(String::from_utf8(out)?)
}

/// Write [`render`]'s text to `path`, atomically.
///
/// # Errors
/// When the file cannot be written.
pub fn write(path: &Path, samples: &[Sample<'_>]) -> Result<()> {
    let text = render(samples)?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, text)
        .with_context(|| format!("cannot write the metrics file {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot write the metrics file {}", path.display()))?;
    Ok(())
}
