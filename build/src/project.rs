//! `strata build`, `strata ls`, `strata dag`: a project's pipelines and models, in dependency
//! order. Planning is stratalake-project's; the table and incremental materialisations are
//! stratalake-gold's; merge and append models run as ordinary pipelines (Delta source of the
//! input's new rows -> mask -> SQL -> conform -> explode -> Delta MERGE or append), so each
//! commits exactly once through the runner and the Delta sink's application transactions.

use crate::config::{
    CheckpointConfig, OptionsConfig, PipelineConfig, SinkConfig, SourceConfig, TransformConfig,
};
use crate::lake::{Lake, LakeConnection};
use crate::{Session, run_pipeline};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use stratalake_core::RunOutcome;
use stratalake_core::expect::{Expectations, ResultLog, RuleResult};
use stratalake_core::{Error, ErrorKind, Result, ResultExt as _};
use stratalake_delta::{DeltaSinkConfig, SchemaEvolution, WriteMode};
use stratalake_gold::expect::{ResultsOf, ResultsTable};
use stratalake_gold::model::{ModelAction, TableModel};
use stratalake_project::{Graph, Materialized, Model, Node, NodeKind, PipelineNode, Project};

/// A project opened for building: its files read, its lake resolved, its graph made.
#[derive(Debug)]
pub struct Loaded {
    /// The project's files, read and parsed.
    pub project: Project,
    /// Its lake.
    pub lake: Lake,
    /// Its pipelines, models and reports in dependency order.
    pub graph: Graph,
}

/// Open the project in `dir` and make it the working directory (paths in its files are
/// relative to it).
///
/// # Errors
/// When a file does not parse, a name is unknown, or the graph has a cycle.
pub fn open(dir: &Path) -> Result<Loaded> {
    std::env::set_current_dir(dir)
        .wrap_err_with(|| format!("cannot enter the project directory {}", dir.display()))?;
    let project = Project::load(Path::new("."))?;
    let lake = lake_of(&project)?;
    let mut nodes = Vec::new();
    for f in &project.config().pipelines {
        let (cfg, inputs, output) = pipeline(f, &lake)?;
        nodes.push(PipelineNode::new(output.unwrap_or(cfg.pipeline), f, inputs));
    }
    let graph = project.graph(nodes)?;
    Ok(Loaded {
        project,
        lake,
        graph,
    })
}

/// A project pipeline, its lake tables resolved: the config, what it reads, what it writes.
fn pipeline(f: &Path, lake: &Lake) -> Result<(PipelineConfig, Vec<String>, Option<String>)> {
    crate::config::load_in(f, Some(lake))
}

/// The project's lake (its `lake` and `lake_connection` relative to the project directory).
fn lake_of(project: &Project) -> Result<Lake> {
    let c = project.config();
    let root = if c.lake.contains("://") {
        c.lake.clone()
    } else {
        project.path(Path::new(&c.lake)).display().to_string()
    };
    let conn = c.lake_connection.as_deref().map(|f| project.path(f));
    Lake::open(&root, conn.as_deref()).wrap_err_with(|| {
        format!(
            "{}: `lake`",
            project
                .path(Path::new(stratalake_project::PROJECT_FILE))
                .display()
        )
    })
}

/// The lake of the project whose directory holds pipeline file `path` (or one above it).
///
/// # Errors
/// When no directory above the file holds a `strata.yaml`, or it does not load.
pub fn enclosing_lake(path: &Path) -> Result<Lake> {
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = abs
        .ancestors()
        .skip(1)
        .find(|d| d.join(stratalake_project::PROJECT_FILE).is_file())
        .ok_or_else(|| {
            Error::config(format!(
                "{}: `lake_table` names a table of a project's lake, but no directory above the file holds a {}",
                path.display(),
                stratalake_project::PROJECT_FILE
            ))
        })?;
    lake_of(&Project::load(dir)?)
}

/// What became of a node in a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Written, with what.
    Built(String),
    /// Nothing to do, and why.
    UpToDate(String),
    /// Not run, and why.
    Skipped(String),
    /// Failed, with the error and its kind (for the exit status).
    Failed(String, Option<stratalake_core::ErrorKind>),
}

/// One node's line of the build summary.
#[derive(Debug, Clone)]
pub struct NodeRun {
    /// The node (`silver.orders`).
    pub name: String,
    /// Its kind (see [`kind_name`]).
    pub kind: &'static str,
    /// What became of it.
    pub status: Status,
    /// How long it took, in seconds.
    pub secs: f64,
    /// Its expectations' results (also when it failed on one).
    pub results: Vec<RuleResult>,
    /// Its run report, when it ran through the runner (pipelines, merge and append models).
    pub report: Option<stratalake_core::RunReport>,
}

/// Told how a build goes, for a progress display; every method has a default that does
/// nothing. Called from the build's own task, never concurrently.
pub trait BuildObserver: Send + Sync {
    /// The nodes selected, in dependency order, before any starts.
    fn planned(&self, _nodes: &[String]) {}
    /// The nodes running now (one more has started).
    fn running(&self, _active: &BTreeSet<String>) {}
    /// A node ended (built, up to date or failed; skipped nodes are not reported), with those
    /// still running.
    fn finished(&self, _run: &NodeRun, _active: &BTreeSet<String>) {}
}

/// The observer that watches nothing.
impl BuildObserver for () {}

/// The name of a node's kind in the build summary: `pipeline`, the model's materialisation
/// (`table`, `incremental`, `merge`, `append`) or `report`.
pub fn kind_name(n: &Node) -> &'static str {
    match &n.kind {
        NodeKind::Pipeline(_) => "pipeline",
        NodeKind::Model(m) => m.settings.materialized.as_str(),
        NodeKind::Report(_) => "report",
        _ => "node",
    }
}

/// A model's inputs as lake tables.
fn inputs_of(lake: &Lake, m: &Model) -> Result<BTreeMap<String, stratalake_delta::TableLocation>> {
    m.references
        .iter()
        .map(|r| {
            let (l, t) = r.name.split_once('.').unwrap_or(("", &r.name));
            Ok((r.name.clone(), lake.table(l, t)?))
        })
        .collect()
}

fn lake_connection(lake: &Lake) -> Option<LakeConnection> {
    lake.connection_file()
        .map(|f| LakeConnection::File(f.to_path_buf()))
}

/// A merge or append model as a pipeline over its input's new rows.
pub fn model_pipeline(lake: &Lake, m: &Model, privacy: Option<&Path>) -> Result<PipelineConfig> {
    let s = &m.settings;
    let input = &m.references[0].name;
    let (il, it) = input.split_once('.').unwrap_or(("", input));
    let sees_changes = s
        .delete_when
        .as_ref()
        .is_some_and(|d| d.column.starts_with('_'));
    let mut transforms = Vec::new();
    if let Some(table) = &s.mask {
        let Some(policy) = privacy else {
            return Err(Error::config(format!(
                "{}: `mask: {table}` needs the project's privacy policy: set `privacy:` in strata.yaml",
                m.file.display()
            )));
        };
        transforms.push(TransformConfig::Mask {
            policy: policy.to_path_buf(),
            table: table.clone(),
            role: "silver".into(),
        });
    }
    if !m.is_pass_through() {
        transforms.push(TransformConfig::Sql {
            query: m.sql.clone(),
            table: input.clone(),
        });
    }
    if let Some(c) = &s.conform {
        let mut c = c.clone();
        if c.key.is_empty() {
            c.key.clone_from(&s.key);
        }
        transforms.push(TransformConfig::Conform(c));
    }
    if let Some(e) = &s.explode {
        transforms.push(TransformConfig::Explode {
            column: e.column.clone(),
            keep: e.keep.clone(),
        });
    }
    let mut options = DeltaSinkConfig::default();
    options.partition_by = s.partition_by.iter().cloned().collect();
    if s.materialized == Materialized::Merge {
        options.write = WriteMode::Merge {
            key: s.key.clone(),
            version_column: s.version_column.clone(),
            delete_when: s.delete_when.clone(),
        };
        options.schema_evolution = s.schema_evolution.unwrap_or(SchemaEvolution::Freeze);
    } else {
        options.schema_evolution = s.schema_evolution.unwrap_or_default();
    }
    Ok(PipelineConfig {
        pipeline: m.name.clone(),
        source: SourceConfig::Delta {
            table: Some(lake.table_url(il, it)),
            lake_table: None,
            connection: lake_connection(lake),
            change_feed: sees_changes,
        },
        transforms,
        sink: SinkConfig::Delta {
            table: Some(lake.table_url(&m.layer, &m.table)),
            lake_table: None,
            connection: lake_connection(lake),
            options,
        },
        checkpoint: CheckpointConfig::Memory,
        options: OptionsConfig::default(),
        // The row rules check each row as it streams in; the table checks run after the
        // commit (check_after_commit).
        expectations: s
            .expectations
            .iter()
            .filter(|e| e.expect.is_row_rule())
            .cloned()
            .collect(),
        // Models follow their inputs' change feeds, not the calendar.
        logical_date: None,
    })
}

/// A table or incremental model, ready for stratalake-gold, its expectations' results to `log`.
pub fn table_model(lake: &Lake, m: &Model, log: &ResultLog) -> Result<TableModel> {
    let s = &m.settings;
    let mut t = TableModel::new(
        &m.name,
        &m.sql,
        inputs_of(lake, m)?,
        lake.table(&m.layer, &m.table)?,
        &m.fingerprint(),
    );
    if s.materialized == Materialized::Incremental {
        t = t.incremental_by(
            s.partition_by.as_deref().unwrap_or_default(),
            s.partition_from.clone(),
        );
    } else if let Some(p) = &s.partition_by {
        t = t.partitioned_by(p);
    }
    Ok(t.with_expectations(m.expectations.clone(), s.key.clone(), log.clone()))
}

/// The lake's `_expectations` table.
pub fn results_table(lake: &Lake) -> Result<ResultsTable> {
    Ok(ResultsTable::new(lake.meta_table("_expectations")?))
}

/// The tables a model's table checks read, as lake tables.
fn check_inputs(
    lake: &Lake,
    m: &Model,
) -> Result<BTreeMap<String, stratalake_delta::TableLocation>> {
    m.expectations
        .tables
        .iter()
        .flat_map(|c| c.reads.iter())
        .map(|n| {
            let (l, t) = n.split_once('.').unwrap_or(("", n));
            Ok((n.clone(), lake.table(l, t)?))
        })
        .collect()
}

/// A streaming model's table checks, on its table after the commit (`before`: its version
/// before the run, for `row_count_change`).
async fn check_after_commit(
    lake: &Lake,
    m: &Model,
    before: Option<i64>,
    log: &ResultLog,
) -> Result<()> {
    if m.expectations.tables.is_empty() {
        return Ok(());
    }
    let exp = Expectations::new(Vec::new(), m.expectations.tables.clone());
    stratalake_gold::expect::check_table(
        &m.name,
        &lake.table(&m.layer, &m.table)?,
        &check_inputs(lake, m)?,
        &exp,
        &m.settings.key,
        before,
        log,
    )
    .await?;
    Ok(())
}

/// Results a kill left unrecorded (the table committed with its results in the commit, the
/// append to `_expectations` not done), with the table version they are about.
async fn left_results(
    lake: &Lake,
    name: &str,
    loc: &stratalake_delta::TableLocation,
) -> Result<Option<(i64, Vec<RuleResult>)>> {
    Ok(match loc.last_results().await? {
        Some((v, results))
            if results_table(lake)?
                .recorded_version(name)
                .await?
                .is_none_or(|r| r < v) =>
        {
            Some((v, results))
        }
        _ => None,
    })
}

/// Record `results` of `name` at table version `v` (once per version).
async fn record(
    lake: &Lake,
    run_id: &str,
    name: &str,
    v: i64,
    results: &[RuleResult],
) -> Result<()> {
    results_table(lake)?
        .append(&ResultsOf::new(run_id, "build", name, Some(v)), results)
        .await?;
    Ok(())
}

async fn version_of(loc: &stratalake_delta::TableLocation) -> Result<Option<i64>> {
    Ok(loc
        .load()
        .await?
        .and_then(|t| t.version())
        .and_then(|v| i64::try_from(v).ok()))
}

fn rows_text(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Build one node; its expectations' results go to `log`. Returns what became of it and
/// the version of its table the results are about.
async fn run_node(
    l: Arc<Loaded>,
    name: String,
    full_refresh: bool,
    session: Session,
    log: ResultLog,
) -> Result<(Status, Option<i64>, Option<stratalake_core::RunReport>)> {
    let node = l
        .graph
        .node(&name)
        .ok_or_else(|| Error::internal(format!("no node {name}")))?;
    let privacy = l.project.config().privacy.clone();
    match &node.kind {
        NodeKind::Pipeline(p) => {
            let (cfg, _, output) = pipeline(&p.file, &l.lake)?;
            // A pipeline writing a lake table has its results keyed by the table's version.
            let loc = match output.as_deref().and_then(|o| o.split_once('.')) {
                Some((layer, t)) if !cfg.expectations.is_empty() => Some(l.lake.table(layer, t)?),
                _ => None,
            };
            if let Some(loc) = &loc
                && let Some((v, results)) = left_results(&l.lake, &name, loc).await?
            {
                record(&l.lake, session.run_id(), &name, v, &results).await?;
            }
            let checks = crate::config::table_checks(&cfg, &name)?;
            let before = match &loc {
                Some(loc) => version_of(loc).await?,
                None => None,
            };
            let r = run_pipeline(&cfg, &p.file.display().to_string(), &session, &log, None).await?;
            if let Some(loc) = &loc
                && r.outcome != RunOutcome::NothingNew
                && !checks.is_empty()
            {
                let others = checks
                    .tables
                    .iter()
                    .flat_map(|c| c.reads.iter())
                    .map(|n| {
                        let (l2, t) = n.split_once('.').unwrap_or(("", n));
                        Ok((n.clone(), l.lake.table(l2, t)?))
                    })
                    .collect::<Result<BTreeMap<_, _>>>()?;
                stratalake_gold::expect::check_table(
                    &name,
                    loc,
                    &others,
                    &checks,
                    &[],
                    before,
                    &log,
                )
                .await?;
            }
            let version = match &loc {
                Some(loc) => version_of(loc).await?,
                None => None,
            };
            Ok((status_of_run(&r, node), version, Some(r)))
        }
        NodeKind::Model(m) if m.settings.materialized.is_streaming() => {
            let cfg = model_pipeline(&l.lake, m, privacy.as_deref())?;
            if full_refresh {
                // Everything the run needs is checked before anything is emptied.
                drop(crate::config::build(&cfg).await?);
                stratalake_delta::DeltaSink::try_new(
                    l.lake.table(&m.layer, &m.table)?,
                    DeltaSinkConfig::default(),
                )?
                .reset(&m.name)
                .await?;
            }
            let loc = l.lake.table(&m.layer, &m.table)?;
            if !m.expectations.is_empty()
                && let Some((v, mut results)) = left_results(&l.lake, &m.name, &loc).await?
            {
                // The commit holds the row rules' results; the table checks run again.
                let checks = ResultLog::new();
                check_after_commit(&l.lake, m, None, &checks).await?;
                results.extend(checks.results());
                record(&l.lake, session.run_id(), &m.name, v, &results).await?;
            }
            let before = version_of(&loc).await?;
            let r = run_pipeline(&cfg, &m.file.display().to_string(), &session, &log, None).await?;
            if r.outcome != RunOutcome::NothingNew {
                check_after_commit(&l.lake, m, before, &log).await?;
            }
            let after = version_of(&loc).await?;
            Ok((status_of_run(&r, node), after, Some(r)))
        }
        NodeKind::Model(m) => {
            // SIGTERM/SIGINT drop the build at its next await: its commit is atomic, so
            // nothing partial becomes visible.
            let token = session.cancellation().clone();
            let model = table_model(&l.lake, m, &log)?;
            if !m.expectations.is_empty()
                && let Some((v, results)) = left_results(&l.lake, &m.name, &model.target).await?
            {
                record(&l.lake, session.run_id(), &m.name, v, &results).await?;
            }
            let out = tokio::select! {
                r = model.build(full_refresh) => r?,
                () = token.cancelled() => return Err(Error::cancelled()),
            };
            let version = Some(out.version);
            Ok((
                match out.action {
                    ModelAction::UpToDate => Status::UpToDate(format!(
                        "inputs unchanged ({})",
                        versions_text(&out.input_versions)
                    )),
                    ModelAction::Rebuilt(why) => {
                        Status::Built(format!("rebuilt whole ({why}), version {}", out.version))
                    }
                    ModelAction::Replaced(parts) => Status::Built(format!(
                        "{} partition{} replaced{}",
                        parts.len(),
                        if parts.len() == 1 { "" } else { "s" },
                        if parts.len() <= 4 {
                            format!(" ({})", parts.join(", "))
                        } else {
                            String::new()
                        }
                    )),
                    _ => Status::Built(String::new()),
                },
                version,
                None,
            ))
        }
        NodeKind::Report(r) => {
            let status = match crate::report::draw(&l, r, None, full_refresh).await? {
                crate::report::Drawn::Written(path, n) => {
                    Status::Built(format!("{n} sections drawn into {}", path.display()))
                }
                crate::report::Drawn::UpToDate(path) => Status::UpToDate(format!(
                    "its tables are unchanged since {} was drawn",
                    path.display()
                )),
            };
            Ok((status, None, None))
        }
        _ => Err(Error::new(
            ErrorKind::Unsupported,
            format!("{name}: a kind of node this version cannot build"),
        )),
    }
}

fn status_of_run(report: &stratalake_core::RunReport, node: &Node) -> Status {
    match report.outcome {
        RunOutcome::NothingNew => Status::UpToDate(match &node.kind {
            NodeKind::Model(m) => format!("no new rows in {}", m.references[0].name),
            _ => "no new data".into(),
        }),
        _ => Status::Built(format!(
            "epoch {}: {} rows, {} quarantined",
            report.epoch,
            rows_text(report.rows_written),
            rows_text(report.rows_quarantined)
        )),
    }
}

fn versions_text(v: &BTreeMap<String, i64>) -> String {
    v.iter()
        .map(|(k, v)| format!("{k} v{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A node of the graph the build is walking (every name it holds came from the graph).
fn node_of<'a>(graph: &'a Graph, name: &str) -> Result<&'a Node> {
    graph
        .node(name)
        .ok_or_else(|| Error::internal(format!("node {name} left the graph")))
}

/// Build the selected nodes in dependency order, independent ones at once (up to the
/// project's `concurrency`); a node whose input failed is skipped. Returns every node's line.
///
/// # Errors
/// When the project does not load; the nodes' own failures are in the lines.
pub async fn build(
    l: Arc<Loaded>,
    selectors: &[String],
    full_refresh: bool,
    session: &Session,
    observer: &dyn BuildObserver,
) -> Result<Vec<NodeRun>> {
    let run_id = session.run_id();
    let selected: Vec<String> = l
        .graph
        .select(selectors)?
        .iter()
        .map(|n| n.name.clone())
        .collect();
    let chosen: BTreeSet<&str> = selected.iter().map(String::as_str).collect();
    observer.planned(&selected);
    let mut active: BTreeSet<String> = BTreeSet::new();
    let limit = l.project.config().concurrency;
    let mut results: BTreeMap<String, NodeRun> = BTreeMap::new();
    let mut waiting: Vec<String> = selected.clone();
    let mut running = tokio::task::JoinSet::new();
    let mut in_flight = 0usize;
    loop {
        // Start what is ready; skip what an input's failure blocks.
        let mut i = 0;
        while i < waiting.len() {
            let name = waiting[i].clone();
            let node = node_of(&l.graph, &name)?;
            let inputs: Vec<&String> = node
                .inputs
                .iter()
                .filter(|n| chosen.contains(n.as_str()))
                .collect();
            if let Some(bad) = inputs.iter().find(|n| {
                matches!(
                    results.get(n.as_str()).map(|r| &r.status),
                    Some(Status::Failed(..) | Status::Skipped(_))
                )
            }) {
                let now = chrono::Utc::now().timestamp_micros();
                let skipped = Status::Skipped(format!("{bad} did not build"));
                let facts = Facts {
                    started: now,
                    ended: now,
                    version: None,
                    report: None,
                };
                runs_table(&l.lake)?
                    .append(&[run_record(run_id, &name, kind_name(node), &skipped, &facts)])
                    .await?;
                results.insert(
                    name.clone(),
                    NodeRun {
                        name: name.clone(),
                        kind: kind_name(node),
                        status: skipped,
                        secs: 0.0,
                        results: Vec::new(),
                        report: None,
                    },
                );
                waiting.remove(i);
                continue;
            }
            if session.is_cancelled() {
                // Stopping: start nothing new; what runs stops by itself.
                waiting.clear();
                break;
            }
            if in_flight < limit && inputs.iter().all(|n| results.contains_key(n.as_str())) {
                let (l2, n2, s2) = (l.clone(), name.clone(), session.clone());
                running.spawn(async move {
                    let t = Instant::now();
                    let started = chrono::Utc::now().timestamp_micros();
                    let log = ResultLog::new();
                    let r = run_node(
                        l2.clone(),
                        n2.clone(),
                        full_refresh,
                        s2.clone(),
                        log.clone(),
                    )
                    .await;
                    let results = log.results();
                    // The results, also of a failed build (without a version: nothing of it
                    // was committed); once per table version.
                    let version = r.as_ref().ok().and_then(|(_, v, _)| *v);
                    let report = r.as_ref().ok().and_then(|(_, _, rep)| rep.clone());
                    let recorded = async {
                        results_table(&l2.lake)?
                            .append(
                                &ResultsOf::new(s2.run_id(), "build", &n2, version),
                                &results,
                            )
                            .await?;
                        Ok::<(), Error>(())
                    }
                    .await;
                    let r = match (r, recorded) {
                        (Ok((s, _, _)), Ok(())) => Ok(s),
                        (Ok(_), Err(e)) => Err(e.wrap(
                            "the expectations' results could not be recorded in _expectations",
                        )),
                        (Err(e), _) => Err(e),
                    };
                    let facts = Facts {
                        started,
                        ended: chrono::Utc::now().timestamp_micros(),
                        version,
                        report,
                    };
                    (n2, r, t.elapsed().as_secs_f64(), results, facts)
                });
                in_flight += 1;
                active.insert(name.clone());
                observer.running(&active);
                waiting.remove(i);
                continue;
            }
            i += 1;
        }
        let Some(done) = running.join_next().await else {
            break;
        };
        in_flight -= 1;
        let (name, r, secs, rule_results, facts) =
            done.map_err(|e| Error::internal("a build task panicked").with_source(e))?;
        active.remove(&name);
        let node = node_of(&l.graph, &name)?;
        let status = match r {
            Ok(s) => s,
            Err(e) if e.kind() == ErrorKind::Cancelled => return Err(e),
            Err(e) => Status::Failed(e.report(), Some(e.kind())),
        };
        runs_table(&l.lake)?
            .append(&[run_record(run_id, &name, kind_name(node), &status, &facts)])
            .await?;
        let run = NodeRun {
            name: name.clone(),
            kind: kind_name(node),
            status,
            secs,
            results: rule_results,
            report: facts.report,
        };
        observer.finished(&run, &active);
        results.insert(name, run);
    }
    if session.is_cancelled() {
        return Err(Error::cancelled());
    }
    Ok(selected.iter().filter_map(|n| results.remove(n)).collect())
}

/// The longest cursor text kept in `_runs`.
const CURSOR_CHARS: usize = 2048;

/// What a node's run left besides its status.
struct Facts {
    started: i64,
    ended: i64,
    version: Option<i64>,
    report: Option<stratalake_core::RunReport>,
}

/// Record a `strata run` of a project's pipeline (one writing the lake table `node`) in the
/// lake's `_runs`, as a build records its nodes.
///
/// # Errors
/// When `_runs` cannot be written.
pub async fn record_pipeline_run(
    lake: &Lake,
    run_id: &str,
    node: &str,
    started_micros: i64,
    result: &Result<stratalake_core::RunReport>,
) -> Result<()> {
    let status = match result {
        Ok(r) if r.outcome == RunOutcome::NothingNew => Status::UpToDate("no new data".into()),
        Ok(r) => Status::Built(format!(
            "epoch {}: {} rows, {} quarantined",
            r.epoch,
            rows_text(r.rows_written),
            rows_text(r.rows_quarantined)
        )),
        Err(e) => Status::Failed(e.report(), Some(e.kind())),
    };
    let facts = Facts {
        started: started_micros,
        ended: chrono::Utc::now().timestamp_micros(),
        version: None,
        report: result.as_ref().ok().cloned(),
    };
    runs_table(lake)?
        .append(&[run_record(run_id, node, "pipeline", &status, &facts)])
        .await?;
    Ok(())
}

/// The lake's `_runs` table.
pub fn runs_table(lake: &Lake) -> Result<stratalake_gold::runs::RunsTable> {
    Ok(stratalake_gold::runs::RunsTable::new(
        lake.meta_table("_runs")?,
    ))
}

fn run_record(
    run_id: &str,
    name: &str,
    kind: &str,
    status: &Status,
    f: &Facts,
) -> stratalake_gold::runs::RunRecord {
    let mut r = stratalake_gold::runs::RunRecord::new(run_id, name, kind);
    r.started_micros = f.started;
    r.ended_micros = f.ended;
    let (word, detail) = match status {
        Status::Built(d) => ("built", d.clone()),
        Status::UpToDate(d) => ("up_to_date", d.clone()),
        Status::Skipped(d) => ("skipped", d.clone()),
        Status::Failed(d, k) => {
            r.error_kind = Some(k.map_or_else(|| "Internal".to_string(), |k| format!("{k:?}")));
            ("failed", d.clone())
        }
    };
    r.status = word.to_string();
    r.detail = detail;
    if let crate::logical::Mode::Date(d) = crate::logical::mode() {
        r.logical_date_days = Some(crate::logical::days_since_epoch(d));
    }
    r.table_version = f.version;
    if let Some(rep) = &f.report {
        let n = |v: u64| i64::try_from(v).ok();
        r.rows_read = n(rep
            .metrics
            .get("source", stratalake_core::metrics::SENT_ROWS_TOTAL));
        r.rows_written = n(rep.rows_written);
        r.cursor = rep
            .committed
            .as_ref()
            .and_then(|m| m.cursor.as_ref())
            .map(|c| {
                // Informational (the sink holds the real one): a long listing is cut.
                let text = stratalake_core::secrets::redact(c.as_str()).into_owned();
                match text.char_indices().nth(CURSOR_CHARS) {
                    Some((i, _)) => format!("{}... ({} bytes)", &text[..i], text.len()),
                    None => text,
                }
            });
        r.rows_quarantined = n(rep.rows_quarantined);
        r.bytes_written = n(rep.bytes_written);
        r.epoch = n(rep.epoch.0);
    }
    r
}

/// `strata runs`: the last `last` node runs (of `node` only, or failed ones only), newest
/// first.
///
/// # Errors
/// When `_runs` cannot be read (none yet: nothing was built).
pub async fn runs(
    l: &Loaded,
    node: Option<&str>,
    failed: bool,
    last: usize,
) -> Result<Vec<arrow_array::RecordBatch>> {
    let loc = runs_table(&l.lake)?;
    if loc.location().load().await?.is_none() {
        return Err(Error::new(
            ErrorKind::NotFound,
            "no runs recorded in this lake yet: run `strata build` first",
        ));
    }
    let mut cond = Vec::new();
    if let Some(n) = node {
        cond.push(format!("node = {}", stratalake_project::sql_quoted(n)));
    }
    if failed {
        cond.push("status = 'failed'".to_string());
    }
    let filter = if cond.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", cond.join(" AND "))
    };
    let sql = format!(
        "SELECT run_id, node, kind, started_at, \
         CAST(date_part('epoch', ended_at) - date_part('epoch', started_at) AS DECIMAL(12,2)) AS secs, \
         status, logical_date, rows_read, rows_written, rows_quarantined, epoch, table_version, error_kind, detail \
         FROM _runs {filter} ORDER BY started_at DESC, node LIMIT {last}"
    );
    let tables = BTreeMap::from([("_runs".to_string(), loc.location().clone())]);
    stratalake_gold::model::query(&tables, &sql).await
}

/// A new run id: the UTC time and a random suffix (`20261201T181500Z-3fa2`).
pub fn new_run_id() -> String {
    format!(
        "{}-{:04x}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        rand::random::<u16>()
    )
}

/// The expectations' summary of a build or test: a line of totals, then one line per rule
/// (failures and warnings first, then the rest).
pub fn expectation_lines(runs: &[NodeRun]) -> Vec<String> {
    let all: Vec<(&str, &RuleResult)> = runs
        .iter()
        .flat_map(|r| r.results.iter().map(move |x| (r.name.as_str(), x)))
        .collect();
    if all.is_empty() {
        return Vec::new();
    }
    let count =
        |o: stratalake_core::expect::Outcome| all.iter().filter(|(_, r)| r.outcome == o).count();
    use stratalake_core::expect::Outcome as O;
    let mut out = vec![format!(
        "expectations: {} checked: {} passed, {} warned, {} quarantined, {} failed",
        all.len(),
        count(O::Pass),
        count(O::Warn),
        count(O::Quarantined),
        count(O::Fail)
    )];
    let mut sorted = all.clone();
    sorted.sort_by_key(|(_, r)| match r.outcome {
        O::Fail => 0,
        O::Quarantined => 1,
        O::Warn => 2,
        _ => 3,
    });
    for (table, r) in sorted {
        let sample = if r.sample.is_empty() {
            String::new()
        } else {
            format!(
                "  e.g. {}",
                r.sample
                    .iter()
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        };
        out.push(format!(
            "  {:<24} {:<26} {:<16} {:<11} {:>9} of {:>11}{sample}",
            table,
            r.rule,
            r.kind,
            r.outcome.as_str(),
            rows_text(r.rows_failed),
            rows_text(r.rows_checked)
        ));
    }
    out
}

/// `strata ls`: the models and pipelines, one per line.
pub fn list(l: &Loaded) -> Vec<String> {
    l.graph
        .nodes()
        .iter()
        .map(|n| {
            let about = n
                .model()
                .and_then(|m| m.settings.description.clone())
                .unwrap_or_default();
            format!(
                "{:<28} {:<12} {:<34} {}",
                n.name,
                kind_name(n),
                n.file().display(),
                about
            )
        })
        .collect()
}

/// `strata dag`: each node with what it reads (or Graphviz `dot`).
pub fn dag(l: &Loaded, dot: bool) -> Vec<String> {
    if dot {
        let mut out = vec!["digraph strata {".to_string(), "  rankdir=LR;".to_string()];
        for s in l.graph.sources() {
            out.push(format!("  \"{s}\" [shape=cylinder];"));
        }
        for n in l.graph.nodes() {
            let shape = if n.model().is_some() { "box" } else { "cds" };
            out.push(format!("  \"{}\" [shape={shape}];", n.name));
            for i in &n.inputs {
                out.push(format!("  \"{i}\" -> \"{}\";", n.name));
            }
        }
        out.push("}".into());
        return out;
    }
    l.graph
        .nodes()
        .iter()
        .map(|n| {
            if n.inputs.is_empty() {
                format!("{} ({})", n.name, kind_name(n))
            } else {
                format!("{} ({}) <- {}", n.name, kind_name(n), n.inputs.join(", "))
            }
        })
        .collect()
}

/// The project directory a path names (the directory holding `strata.yaml`).
pub fn project_dir(p: &Path) -> PathBuf {
    if p.file_name()
        .is_some_and(|f| f == stratalake_project::PROJECT_FILE)
    {
        p.parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    } else {
        p.to_path_buf()
    }
}

/// `strata query`: `sql` over every table of the project's lake (nodes and sources).
///
/// # Errors
/// When the SQL fails.
pub async fn query(l: &Loaded, sql: &str) -> Result<Vec<arrow_array::RecordBatch>> {
    let mut tables = BTreeMap::new();
    let names = l
        .graph
        .nodes()
        .iter()
        .map(|n| n.name.clone())
        .chain(l.graph.sources().iter().cloned());
    for name in names {
        if let Some((layer, t)) = name.split_once('.') {
            tables.insert(name.clone(), l.lake.table(layer, t)?);
        }
    }
    // The expectations' results, as `_expectations`.
    tables.insert("_expectations".into(), l.lake.meta_table("_expectations")?);
    tables.insert("_runs".into(), l.lake.meta_table("_runs")?);
    stratalake_gold::model::query(&tables, sql).await
}

/// The project's gold models as warehouse tables: name to location and key.
///
/// # Errors
/// When a location cannot be made.
pub fn gold_tables(
    l: &Loaded,
) -> Result<BTreeMap<String, (stratalake_delta::TableLocation, Vec<String>)>> {
    l.project
        .models()
        .iter()
        .filter(|m| m.layer == "gold")
        .map(|m| {
            Ok((
                m.table.clone(),
                (l.lake.table(&m.layer, &m.table)?, m.settings.key.clone()),
            ))
        })
        .collect()
}

/// Check the privacy policy's k-anonymity requirements on the project's tables that exist
/// (`dim_customer` names a model of any layer); the lines to print.
///
/// # Errors
/// When a requirement does not hold (naming the groups below k) or the policy does not load.
pub async fn check_k_anonymity(l: &Loaded) -> Result<Vec<String>> {
    let Some(path) = &l.project.config().privacy else {
        return Ok(Vec::new());
    };
    let p = stratalake_privacy::Policy::load(&l.project.path(path))?;
    let mut out = Vec::new();
    for k in &p.k_anonymity {
        let Some(m) = l.project.models().iter().find(|m| m.table == k.table) else {
            continue;
        };
        if l.lake.table(&m.layer, &m.table)?.load().await?.is_none() {
            continue;
        }
        let cols = k.quasi_identifiers.join(", ");
        let b = query(l, &format!("SELECT {cols} FROM {}", m.name)).await?;
        let rep = stratalake_privacy::k_anonymity(&b, &k.quasi_identifiers, k.k)?;
        if !rep.holds(k.k) {
            return Err(Error::data(format!(
                "k-anonymity violated: {} ({cols}) k={}: {} of {} groups below k, {} rows",
                m.name, k.k, rep.violating_groups, rep.groups, rep.violating_rows
            )));
        }
        out.push(format!(
            "k-anonymity {} ({cols}) k={}: holds (smallest group {}, {} groups)",
            m.name, k.k, rep.min_group, rep.groups
        ));
    }
    Ok(out)
}

/// The project's reporting views (`warehouse/*.sql`) for the warehouse sync.
pub fn reporting_views(l: &Loaded) -> Vec<stratalake_warehouse::ReportingView> {
    l.project
        .views()
        .iter()
        .map(|v| stratalake_warehouse::ReportingView::new(&v.name, &v.sql, &v.tables))
        .collect()
}

/// A node's expectations, the columns naming its rows and the other tables its checks read.
type Checks = (
    Expectations,
    Vec<String>,
    BTreeMap<String, stratalake_delta::TableLocation>,
);

/// A node's expectations and the columns naming its rows, when it has any and writes a
/// lake table (pipelines: their row rules).
fn expectations_of(l: &Loaded, n: &Node) -> Result<Option<Checks>> {
    Ok(match &n.kind {
        NodeKind::Model(m) if !m.expectations.is_empty() => Some((
            m.expectations.clone(),
            m.settings.key.clone(),
            check_inputs(&l.lake, m)?,
        )),
        NodeKind::Pipeline(p) if n.name.contains('.') => {
            let (cfg, _, _) = pipeline(&p.file, &l.lake)?;
            if cfg.expectations.is_empty() {
                return Ok(None);
            }
            let exp = stratalake_project::expect::compile(
                &cfg.expectations,
                &n.name,
                &p.file,
                stratalake_project::expect::Checked::Streaming,
            )?;
            Some((exp, Vec::new(), BTreeMap::new()))
        }
        _ => None,
    })
}

/// `strata test`: check the selected nodes' expectations on their tables as they are,
/// without building (row rules over every row); results recorded in `_expectations` as
/// phase `test`.
///
/// # Errors
/// When the project does not load; the nodes' own failures are in the lines.
pub async fn test(l: &Loaded, selectors: &[String], run_id: &str) -> Result<Vec<NodeRun>> {
    let mut out = Vec::new();
    let results_table = results_table(&l.lake)?;
    for n in l.graph.select(selectors)? {
        let Some((exp, key, others)) = expectations_of(l, n)? else {
            continue;
        };
        let t = Instant::now();
        let (layer, table) = n.name.split_once('.').unwrap_or(("", &n.name));
        let loc = l.lake.table(layer, table)?;
        let version = version_of(&loc).await?;
        let log = ResultLog::new();
        let r = stratalake_gold::expect::check_table(
            &n.name,
            &loc,
            &others,
            &exp,
            &key,
            version.map(|v| v - 1),
            &log,
        )
        .await;
        let results = log.results();
        results_table
            .append(&ResultsOf::new(run_id, "test", &n.name, version), &results)
            .await?;
        let status = match r {
            Ok(_) => Status::Built(format!("{} rules checked", results.len())),
            Err(e) => {
                let kind = Some(e.kind());
                Status::Failed(e.to_string(), kind)
            }
        };
        out.push(NodeRun {
            name: n.name.clone(),
            kind: kind_name(n),
            status,
            secs: t.elapsed().as_secs_f64(),
            results,
            report: None,
        });
    }
    Ok(out)
}

/// `strata quality`: per rule (of `model`, or every model), its outcomes over the last
/// `last` builds and tests, oldest first (`.` pass, `w` warn, `q` quarantined, `F` fail),
/// its pass rate and its last failure count.
///
/// # Errors
/// When `_expectations` cannot be read (none yet: nothing was checked).
pub async fn quality(l: &Loaded, model: Option<&str>, last: usize) -> Result<Vec<String>> {
    let loc = results_table(&l.lake)?;
    if loc.location().load().await?.is_none() {
        return Err(Error::new(
            ErrorKind::NotFound,
            "no expectation results in this lake yet: run `strata build` or `strata test` first",
        ));
    }
    let filter = model.map_or(String::new(), |m| {
        format!("WHERE model = {}", stratalake_project::sql_quoted(m))
    });
    let sql = format!(
        "SELECT model, rule, kind, outcome, rows_failed, rows_checked FROM (           SELECT *, row_number() OVER (PARTITION BY model, rule ORDER BY checked_at DESC) AS n            FROM _expectations {filter}) AS h WHERE n <= {last} ORDER BY model, rule, checked_at"
    );
    let tables = BTreeMap::from([("_expectations".to_string(), loc.location().clone())]);
    let batches = stratalake_gold::model::query(&tables, &sql).await?;
    let mut rules: BTreeMap<(String, String), (String, String, u64, u64)> = BTreeMap::new();
    for b in &batches {
        let s = |i: usize| -> Result<arrow_array::StringArray> {
            Ok(
                arrow_cast::cast(b.column(i), &arrow_schema::DataType::Utf8)?
                    .as_any()
                    .downcast_ref::<arrow_array::StringArray>()
                    .ok_or_else(|| Error::internal("_expectations: a text column"))?
                    .clone(),
            )
        };
        let i = |i: usize| -> Result<arrow_array::Int64Array> {
            Ok(
                arrow_cast::cast(b.column(i), &arrow_schema::DataType::Int64)?
                    .as_any()
                    .downcast_ref::<arrow_array::Int64Array>()
                    .ok_or_else(|| Error::internal("_expectations: a number column"))?
                    .clone(),
            )
        };
        let (m, r, k, o, f, c) = (s(0)?, s(1)?, s(2)?, s(3)?, i(4)?, i(5)?);
        for j in 0..b.num_rows() {
            let e = rules
                .entry((m.value(j).to_string(), r.value(j).to_string()))
                .or_insert_with(|| (k.value(j).to_string(), String::new(), 0, 0));
            e.1.push(match o.value(j) {
                "pass" => '.',
                "warn" => 'w',
                "quarantined" => 'q',
                _ => 'F',
            });
            e.2 = f.value(j).max(0) as u64;
            e.3 = c.value(j).max(0) as u64;
        }
    }
    if rules.is_empty() {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!("no results for {}", model.unwrap_or("any model")),
        ));
    }
    let mut out = vec![format!(
        "{:<24} {:<26} {:<16} {:<w$} {:>6}  last failed",
        "table",
        "rule",
        "kind",
        "history",
        "passed",
        w = last.max(7)
    )];
    for ((m, r), (k, h, f, c)) in rules {
        let passed = h.chars().filter(|c| *c == '.').count() as f64 / h.len().max(1) as f64;
        out.push(format!(
            "{m:<24} {r:<26} {k:<16} {h:<w$} {:>5.0}%  {} of {}",
            passed * 100.0,
            rows_text(f),
            rows_text(c),
            w = last.max(7)
        ));
    }
    Ok(out)
}

/// `strata quarantine show`: the quarantined records of `table` (`silver.orders`), newest
/// rule first, with their reason and origin.
///
/// # Errors
/// When the table has no quarantine.
pub async fn quarantine_show(
    l: &Loaded,
    table: &str,
    rule: Option<&str>,
    limit: usize,
) -> Result<Vec<arrow_array::RecordBatch>> {
    let (layer, name) = table.split_once('.').ok_or_else(|| {
        Error::config(format!(
            "`{table}`: name the table as layer.name (silver.orders)"
        ))
    })?;
    let loc = l.lake.table(layer, name)?.child("_quarantine")?;
    if loc.load().await?.is_none() {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!("{table} has no quarantine: nothing was ever quarantined there"),
        ));
    }
    let filter = rule.map_or(String::new(), |r| {
        format!(
            "WHERE reason LIKE {}",
            stratalake_project::sql_quoted(&format!("%`{r}`%"))
        )
    });
    let sql = format!(
        "SELECT reason, \"column\", component, location, position,          CASE WHEN character_length(raw) > 160 THEN concat(substr(raw, 1, 160), '...') ELSE raw END AS raw          FROM quarantine {filter} LIMIT {limit}"
    );
    let tables = BTreeMap::from([("quarantine".to_string(), loc)]);
    stratalake_gold::model::query(&tables, &sql).await
}
