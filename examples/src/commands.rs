//! One function per subcommand whose body is more than a line or two; `dispatch` in main.rs
//! only matches the command line onto them.

use crate::{print_report, progress, prom, run_file};
use anyhow::{Context as _, Result, bail};
use std::path::PathBuf;
use stratalake_build::{config, project, report, with_steps};
use stratalake_core::PipelineBuilder;

/// `strata run`.
pub async fn run(
    pipeline: PathBuf,
    json: bool,
    quiet: bool,
    metrics_file: Option<PathBuf>,
) -> Result<()> {
    let started = std::time::Instant::now();
    let started_micros = chrono::Utc::now().timestamp_micros();
    // A project's pipeline (one writing a lake table) is recorded in the lake's _runs.
    let in_lake = match config::load_in(&pipeline, None) {
        Ok((_, _, Some(node))) => Some((project::enclosing_lake(&pipeline)?, node)),
        _ => None,
    };
    let result = run_file(&pipeline, !quiet && !json).await;
    if let Some((lake, node)) = &in_lake {
        let recorded = project::record_pipeline_run(
            lake,
            crate::logs::run_id(),
            node,
            started_micros,
            &result,
        )
        .await;
        if result.is_ok() {
            recorded?;
        }
    }
    if let Some(f) = &metrics_file {
        let stem = pipeline
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned());
        let name = match &result {
            Ok(r) => r.pipeline_id.clone(),
            Err(_) => stem.unwrap_or_else(|| "pipeline".into()),
        };
        let written = prom::write(
            f,
            &[prom::Sample {
                pipeline: &name,
                kind: "pipeline",
                success: result.is_ok(),
                seconds: started.elapsed().as_secs_f64(),
                report: result.as_ref().ok(),
            }],
        );
        // The run's own error comes first.
        if result.is_ok() {
            written?;
        }
    }
    let report = result?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report)?;
    }
    Ok(())
}

/// `strata infer`.
pub async fn infer(pipeline: PathBuf) -> Result<()> {
    let cfg = config::load(&pipeline)?;
    let built = config::build(&cfg).await?;
    outln!(
        "# the schema of {} (paste under the source)",
        pipeline.display()
    );
    outln!("schema:\n  explicit:");
    for f in built.source.schema().fields() {
        let Some(ty) = stratalake_files::data_type_name(f.data_type()) else {
            bail!(
                "column `{}` has a type a declaration cannot name: {}",
                f.name(),
                f.data_type()
            );
        };
        let not_null = if f.is_nullable() { "" } else { " not null" };
        outln!(
            "    - {{ name: {}, type: \"{ty}{not_null}\" }}",
            serde_json::to_string(f.name())?
        );
    }
    Ok(())
}

/// `strata check`.
pub async fn check(pipeline: PathBuf) -> Result<()> {
    let cfg = config::load(&pipeline)?;
    let built = config::build(&cfg).await?;
    let id = cfg.run_id();
    let ctx = stratalake_core::Context::builder(id.as_str()).build();
    built.source.check(&ctx).await.context("source")?;
    let p = PipelineBuilder::new(&id, built.source, built.sink, built.checkpoints);
    let p = with_steps(p, built.transforms).build()?;
    outln!("{}: ok; output schema:", pipeline.display());
    for f in p.output_schema().fields() {
        outln!(
            "  {}: {}{}",
            f.name(),
            f.data_type(),
            if f.is_nullable() { "" } else { " not null" }
        );
    }
    Ok(())
}

/// `strata sync-snowflake`'s arguments.
#[derive(clap::Args, Debug)]
pub struct SyncSnowflakeArgs {
    /// The project (its gold models, with their keys, are the tables synced).
    pub project: PathBuf,
    /// A YAML file with the Snowflake connection (`${VAR}` read from the environment).
    #[arg(long)]
    pub connection: Option<PathBuf>,
    /// Print the refresh DDL and exit.
    #[arg(long)]
    pub emit_ddl: bool,
    /// The refresh schedule: five cron fields and a time zone.
    #[arg(long, default_value = "0 * * * * UTC")]
    pub schedule: String,
    /// The warehouse the refresh tasks run on.
    #[arg(long, default_value = "COMPUTE_WH")]
    pub warehouse: String,
    /// Parquet file size per stage upload.
    #[arg(long, default_value_t = 64)]
    pub target_file_size_megabytes: u64,
    /// Load with bound INSERTs of this many rows per statement instead of PUT + COPY
    /// (slow; for comparisons).
    #[arg(long)]
    pub insert_rows_per_statement: Option<usize>,
    /// Sync only these gold tables (comma-separated; default all).
    #[arg(long, value_delimiter = ',')]
    pub tables: Vec<String>,
}

/// `strata sync-snowflake`.
pub async fn sync_snowflake(args: SyncSnowflakeArgs) -> Result<()> {
    let SyncSnowflakeArgs {
        project,
        connection,
        emit_ddl,
        schedule,
        warehouse,
        target_file_size_megabytes,
        insert_rows_per_statement,
        tables,
    } = args;
    let l = project::open(&project::project_dir(&project))?;
    let gold = project::gold_tables(&l)?;
    let views = project::reporting_views(&l);
    if emit_ddl {
        let names: Vec<String> = gold.keys().cloned().collect();
        print!(
            "{}",
            stratalake_warehouse::refresh_ddl(&warehouse, &schedule, &names, &views)
                .context("--schedule")?
        );
    } else {
        let Some(path) = connection else {
            bail!("sync-snowflake needs --connection <snowflake.yaml>");
        };
        let conn = config::load_snowflake_connection(&path)?;
        let sync = stratalake_warehouse::WarehouseSync::try_new(gold, conn)?
            .with_views(views)
            .with_target_file_size_megabytes(target_file_size_megabytes);
        let sync = if tables.is_empty() {
            sync
        } else {
            sync.with_tables(&tables)
        };
        let sync = match insert_rows_per_statement {
            Some(n) => sync.with_load(stratalake_snowflake::sink::LoadMethod::Insert {
                rows_per_statement: n,
            }),
            None => sync,
        };
        let bar = progress::spinner("syncing the gold tables into Snowflake");
        let report = sync.run().await;
        bar.finish_and_clear();
        let report = report?;
        let mut any = false;
        for (t, r) in &report {
            if let Some((version, rows)) = r {
                any = true;
                outln!("{t}: synced to Delta version {version} ({rows} change rows)");
            }
        }
        if !any {
            outln!("snowflake is up to date");
        }
        if tables.is_empty() {
            outln!(
                "views: {}",
                sync.views()
                    .iter()
                    .map(|v| v.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    Ok(())
}

/// `strata classify`.
pub async fn classify(pipeline: PathBuf, sample_rows: usize) -> Result<()> {
    let cfg = config::load(&pipeline)?;
    let built = config::build(&cfg).await?;
    let stratalake_core::Sample {
        batches,
        rows,
        rejected,
        ..
    } = stratalake_core::sample(built.source.as_ref(), sample_rows, "classify").await?;
    if rejected > 0 {
        outln!("{rejected} malformed records skipped");
    }
    let found = stratalake_privacy::classify(&batches, sample_rows);
    outln!("{rows} rows sampled");
    for c in &found {
        outln!(
            "{:<32} {:<15} {:.2}  {}",
            c.column,
            c.tag.as_str(),
            c.confidence,
            c.evidence
        );
    }
    if found.is_empty() {
        outln!("no personal data found");
    }
    Ok(())
}

/// `strata governance`.
pub async fn governance(
    policy: PathBuf,
    connection: PathBuf,
    apply: bool,
    keep_going: bool,
) -> Result<()> {
    let p = stratalake_privacy::Policy::load(&policy)?;
    let conn = config::load_snowflake_connection(&connection)?;
    let client = stratalake_snowflake::client::SnowflakeClient::connect(conn).await?;
    let tables = client.table_columns().await?;
    let refs: Vec<(&str, Vec<&str>)> = tables
        .iter()
        .map(|(t, c)| (t.as_str(), c.iter().map(String::as_str).collect()))
        .collect();
    let mut rejected = 0;
    for sql in stratalake_privacy::warehouse::governance_ddl(&p, &refs) {
        if !apply {
            outln!("{sql};");
            continue;
        }
        match client.query(&sql).await {
            Ok(_) => outln!("applied: {sql}"),
            Err(e) => {
                rejected += 1;
                outln!(
                    "rejected: {sql}\n  {}",
                    e.message().lines().next().unwrap_or_default()
                );
                if !keep_going {
                    bail!("the server rejected a governance statement: {}", e.report());
                }
            }
        }
    }
    if apply {
        outln!("{rejected} statement(s) rejected");
    }
    if let Err(e) = client.close().await {
        eprintln!(
            "strata: warning: closing the Snowflake session failed: {}",
            e.report()
        );
    }
    Ok(())
}

/// `strata report`.
pub async fn report(project: PathBuf, name: Option<String>, out: Option<PathBuf>) -> Result<()> {
    // `open` enters the project directory; `--out` is relative to where we are.
    let cwd = std::env::current_dir()?;
    let l = project::open(&project::project_dir(&project))?;
    let reports = l.project.reports();
    let r = match &name {
        Some(n) => reports
            .iter()
            .find(|r| r.name == format!("report.{n}"))
            .with_context(|| format!("the project has no report `{n}`"))?,
        None => match reports {
            [one] => one,
            [] => bail!("the project declares no report (`reports:` in strata.yaml)"),
            _ => bail!("the project has several reports: choose one with --name"),
        },
    };
    // The output path is relative to where the command was run, not to the project.
    let out = out.map(|o| if o.is_absolute() { o } else { cwd.join(o) });
    if let report::Drawn::Written(path, n) = report::draw(&l, r, out.as_deref(), true).await? {
        outln!("{}: {n} sections written to {}", r.name, path.display());
    }
    Ok(())
}

/// `strata airflow dag`.
pub async fn airflow_dag(
    project: PathBuf,
    dag_id: Option<String>,
    project_dir: Option<String>,
    strata: String,
) -> Result<()> {
    let dir = project::project_dir(&project);
    let abs = std::fs::canonicalize(&dir)
        .with_context(|| format!("cannot find the project {}", dir.display()))?;
    let l = project::open(&abs)?;
    let mut opts = stratalake_project::airflow::DagOptions::new(
        project_dir.unwrap_or_else(|| abs.display().to_string()),
    )
    .with_strata(strata);
    if let Some(id) = dag_id {
        opts = opts.with_dag_id(id);
    }
    use std::io::Write as _;
    std::io::stdout()
        .lock()
        .write_all(stratalake_project::airflow::dag(&l.project, &l.graph, &opts).as_bytes())?;
    Ok(())
}
