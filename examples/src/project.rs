//! `strata build`, `strata ls`, `strata dag`: a project's pipelines and models, in dependency
//! order. Planning is strata-project's; the table and incremental materialisations are
//! strata-gold's; merge and append models run as ordinary pipelines (Delta source of the
//! input's new rows -> mask -> SQL -> conform -> explode -> Delta MERGE or append), so each
//! commits exactly once through the runner and the Delta sink's application transactions.

use crate::config::{
    CheckpointConfig, OptionsConfig, PipelineConfig, SinkConfig, SourceConfig, TransformConfig,
};
use crate::lake::{Lake, LakeConnection};
use anyhow::{Context as _, Result, bail};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use strata_core::RunOutcome;
use strata_delta::{DeltaSinkConfig, DeltaWriteMode, SchemaEvolution};
use strata_gold::model::{ModelAction, TableModel};
use strata_project::{Graph, Materialized, Model, Node, NodeKind, PipelineNode, Project};

/// A project opened for building: its files read, its lake resolved, its graph made.
#[derive(Debug)]
pub struct Loaded {
    pub project: Project,
    pub lake: Lake,
    pub graph: Graph,
}

/// Open the project in `dir` and make it the working directory (paths in its files are
/// relative to it).
///
/// # Errors
/// When a file does not parse, a name is unknown, or the graph has a cycle.
pub fn open(dir: &Path) -> Result<Loaded> {
    std::env::set_current_dir(dir)
        .with_context(|| format!("cannot enter the project directory {}", dir.display()))?;
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
    Lake::open(&root, conn.as_deref()).with_context(|| {
        format!(
            "{}: `lake`",
            project
                .path(Path::new(strata_project::PROJECT_FILE))
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
        .find(|d| d.join(strata_project::PROJECT_FILE).is_file())
        .with_context(|| {
            format!(
                "{}: `lake_table` names a table of a project's lake, but no directory above the file holds a {}",
                path.display(),
                strata_project::PROJECT_FILE
            )
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
    Failed(String, Option<strata_core::ErrorKind>),
}

/// One node's line of the build summary.
#[derive(Debug, Clone)]
pub struct NodeRun {
    pub name: String,
    pub kind: &'static str,
    pub status: Status,
    pub secs: f64,
}

fn kind_of(n: &Node) -> &'static str {
    match &n.kind {
        NodeKind::Pipeline(_) => "pipeline",
        NodeKind::Model(m) => m.settings.materialized.as_str(),
        _ => "node",
    }
}

/// A model's inputs as lake tables.
fn inputs_of(lake: &Lake, m: &Model) -> Result<BTreeMap<String, strata_delta::TableLocation>> {
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
            bail!(
                "{}: `mask: {table}` needs the project's privacy policy: set `privacy:` in strata.yaml",
                m.file.display()
            );
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
        options.write = DeltaWriteMode::Merge {
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
    })
}

/// A table or incremental model, ready for strata-gold.
pub fn table_model(lake: &Lake, m: &Model) -> Result<TableModel> {
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
    Ok(t)
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

/// Build one node.
async fn run_node(l: Arc<Loaded>, name: String, full_refresh: bool) -> Result<Status> {
    let node = l
        .graph
        .node(&name)
        .with_context(|| format!("no node {name}"))?;
    let privacy = l.project.config().privacy.clone();
    let report = match &node.kind {
        NodeKind::Pipeline(p) => {
            let (cfg, _, _) = pipeline(&p.file, &l.lake)?;
            crate::run_config(&cfg, &p.file.display().to_string(), false).await?
        }
        NodeKind::Model(m) if m.settings.materialized.is_streaming() => {
            let cfg = model_pipeline(&l.lake, m, privacy.as_deref())?;
            if full_refresh {
                // Everything the run needs is checked before anything is emptied.
                drop(crate::config::build(&cfg).await?);
                strata_delta::DeltaSink::try_new(
                    l.lake.table(&m.layer, &m.table)?,
                    DeltaSinkConfig::default(),
                )?
                .reset(&m.name)
                .await?;
            }
            crate::run_config(&cfg, &m.file.display().to_string(), false).await?
        }
        NodeKind::Model(m) => {
            // SIGTERM/SIGINT drop the build at its next await: its commit is atomic, so
            // nothing partial becomes visible.
            let token = crate::exit::shutdown();
            let model = table_model(&l.lake, m)?;
            let out = tokio::select! {
                r = model.build(full_refresh) => r?,
                () = token.cancelled() => return Err(strata_core::Error::cancelled().into()),
            };
            return Ok(match out.action {
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
            });
        }
        _ => bail!("unknown node kind"),
    };
    Ok(match report.outcome {
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
    })
}

fn versions_text(v: &BTreeMap<String, i64>) -> String {
    v.iter()
        .map(|(k, v)| format!("{k} v{v}"))
        .collect::<Vec<_>>()
        .join(", ")
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
) -> Result<Vec<NodeRun>> {
    let selected: Vec<String> = l
        .graph
        .select(selectors)?
        .iter()
        .map(|n| n.name.clone())
        .collect();
    let chosen: BTreeSet<&str> = selected.iter().map(String::as_str).collect();
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
            let node = l.graph.node(&name).context("a node vanished")?;
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
                results.insert(
                    name.clone(),
                    NodeRun {
                        name: name.clone(),
                        kind: kind_of(node),
                        status: Status::Skipped(format!("{bad} did not build")),
                        secs: 0.0,
                    },
                );
                waiting.remove(i);
                continue;
            }
            if crate::exit::shutdown().is_cancelled() {
                // Stopping: start nothing new; what runs stops by itself.
                waiting.clear();
                break;
            }
            if in_flight < limit && inputs.iter().all(|n| results.contains_key(n.as_str())) {
                let (l2, n2) = (l.clone(), name.clone());
                running.spawn(async move {
                    let t = Instant::now();
                    let r = run_node(l2, n2.clone(), full_refresh).await;
                    (n2, r, t.elapsed().as_secs_f64())
                });
                in_flight += 1;
                waiting.remove(i);
                continue;
            }
            i += 1;
        }
        let Some(done) = running.join_next().await else {
            break;
        };
        in_flight -= 1;
        let (name, r, secs) = done.context("a build task panicked")?;
        let node = l.graph.node(&name).context("a node vanished")?;
        let status = match r {
            Ok(s) => s,
            Err(e) => {
                if crate::exit::status_of(&e) == crate::exit::status::CANCELLED {
                    return Err(e);
                }
                let kind = e
                    .chain()
                    .find_map(|c| c.downcast_ref::<strata_core::Error>())
                    .map(strata_core::Error::kind);
                Status::Failed(crate::exit::render(&e), kind)
            }
        };
        results.insert(
            name.clone(),
            NodeRun {
                name,
                kind: kind_of(node),
                status,
                secs,
            },
        );
    }
    if crate::exit::shutdown().is_cancelled() {
        return Err(strata_core::Error::cancelled().into());
    }
    Ok(selected.iter().filter_map(|n| results.remove(n)).collect())
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
                kind_of(n),
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
                format!("{} ({})", n.name, kind_of(n))
            } else {
                format!("{} ({}) <- {}", n.name, kind_of(n), n.inputs.join(", "))
            }
        })
        .collect()
}

/// The project directory a path names (the directory holding `strata.yaml`).
pub fn project_dir(p: &Path) -> PathBuf {
    if p.file_name()
        .is_some_and(|f| f == strata_project::PROJECT_FILE)
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
    Ok(strata_gold::model::query(&tables, sql).await?)
}

/// The project's gold models as warehouse tables: name to location and key.
///
/// # Errors
/// When a location cannot be made.
pub fn gold_tables(
    l: &Loaded,
) -> Result<BTreeMap<String, (strata_delta::TableLocation, Vec<String>)>> {
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
    let p = strata_privacy::Policy::load(&l.project.path(path))?;
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
        let rep = strata_privacy::k_anonymity(&b, &k.quasi_identifiers, k.k)?;
        if !rep.holds(k.k) {
            bail!(
                "k-anonymity violated: {} ({cols}) k={}: {} of {} groups below k, {} rows",
                m.name,
                k.k,
                rep.violating_groups,
                rep.groups,
                rep.violating_rows
            );
        }
        out.push(format!(
            "k-anonymity {} ({cols}) k={}: holds (smallest group {}, {} groups)",
            m.name, k.k, rep.min_group, rep.groups
        ));
    }
    Ok(out)
}

/// The project's reporting views (`warehouse/*.sql`) for the warehouse sync.
pub fn reporting_views(l: &Loaded) -> Vec<strata_warehouse::ReportingView> {
    l.project
        .views()
        .iter()
        .map(|v| strata_warehouse::ReportingView::new(&v.name, &v.sql, &v.tables))
        .collect()
}
