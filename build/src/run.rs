//! Run one pipeline: build its components from the config, assemble them on the runner, run
//! one epoch under the session's cancellation.

use crate::Session;
use crate::config::{self, PipelineConfig, Step};
use std::sync::Arc;
use stratalake_core::expect::ResultLog;
use stratalake_core::{Metrics, PipelineBuilder, ResultExt as _, RunObserver, RunReport};

/// How a caller watches a run: the metrics the run updates and an observer of its plan (a
/// progress bar reads both).
#[derive(Debug, Clone)]
pub struct Watch {
    /// The run's metrics (updated per batch).
    pub metrics: Metrics,
    /// Told of the plan and each epoch.
    pub observer: Arc<dyn RunObserver>,
}

/// Add the transform steps in order: batch steps before the first stream step run per split,
/// later ones follow the stream.
pub fn with_steps(mut b: PipelineBuilder, steps: Vec<Step>) -> PipelineBuilder {
    let mut streaming = false;
    for t in steps {
        match t {
            Step::Batch(t) if !streaming => b = b.with_batch_transform(t),
            Step::Batch(t) => {
                b = b.with_stream_transform(Arc::new(stratalake_core::transforms::OnStream(t)));
            }
            Step::Stream(t) => {
                streaming = true;
                b = b.with_stream_transform(t);
            }
        }
    }
    b
}

/// Build and run one epoch of the pipeline `cfg` (`label`, usually its file, names it in
/// errors); its expectations' results go to `log`. The report's items are the files written,
/// under the sink's root.
///
/// # Errors
/// When a component cannot be built (configuration, credentials, an unreachable service), or
/// the run fails; a cancelled run fails with [`stratalake_core::ErrorKind::Cancelled`] and
/// leaves nothing partial visible.
pub async fn run_pipeline(
    cfg: &PipelineConfig,
    label: &str,
    session: &Session,
    log: &ResultLog,
    watch: Option<Watch>,
) -> stratalake_core::Result<RunReport> {
    let built = config::build_logged(cfg, log).await?;
    let id = cfg.run_id();
    let mut b = PipelineBuilder::new(&id, built.source, built.sink, built.checkpoints)
        .with_options(built.options);
    if let Some(w) = watch {
        b = b.with_metrics(w.metrics).with_observer(w.observer);
    }
    b = with_steps(b, built.transforms);
    let pipeline = b.build().wrap_err(label.to_string())?;
    let mut report = pipeline
        .run_with_cancellation(session.cancellation().clone())
        .await
        .wrap_err_with(|| format!("pipeline `{id}` failed"))?;
    report
        .items
        .iter_mut()
        .for_each(|i| *i = format!("{}/{}", built.sink_root.trim_end_matches('/'), i));
    Ok(report)
}
