#![doc = include_str!("../README.md")]

/// jemalloc, configured in `.cargo/config.toml` (one arena, short decay): with glibc's malloc
/// the peak RSS crept up with the input through fragmentation; with this it stays flat.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// `println!` that returns an error instead of panicking when stdout is closed
/// (`strata ... | head`); the enclosing function returns `anyhow::Result`.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?;
    }};
}

mod api;
mod commands;
mod demo;
mod exit;
mod logs;
mod medallion;
mod progress;
mod prom;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;
use stratalake_build::{config, lake, logical, project, replay, status};
use stratalake_core::{Metrics, RunOutcome, RunReport};

#[derive(Parser, Debug)]
#[command(
    name = "strata",
    version,
    about = "Retail data pipelines over Apache Arrow"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter (e.g. `info`, `stratalake_core=debug`); also `RUST_LOG`. deltalake's MERGE
    /// warns about a metric it derives on every run: quiet by default.
    #[arg(
        long,
        global = true,
        default_value = "warn,deltalake_core::operations::merge=error"
    )]
    log: String,
    /// Log lines as text or as one JSON object per line (time, level, run id, pipeline,
    /// message, fields). Colour only on a terminal without `NO_COLOR`.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: logs::LogFormat,
    /// The run id in every log line and in the lake's `_runs` (Airflow passes its own);
    /// default: a new one (`20261201T181500Z-3fa2`).
    #[arg(long, global = true)]
    run_id: Option<String>,
}

#[derive(Subcommand, Debug)]
enum QuarantineCommand {
    /// Print quarantined records with their reason and origin.
    Show {
        /// The table (`silver.orders`).
        table: String,
        /// The project directory.
        #[arg(long, short, default_value = ".")]
        project: PathBuf,
        /// Only records this rule rejected.
        #[arg(long)]
        rule: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Re-submit the records a merge or append model's rules quarantined (after a fix to
    /// the rules or the data), exactly once: those that pass now leave the quarantine for
    /// the table, the others stay.
    Replay {
        /// The table (`silver.orders`).
        table: String,
        /// The project directory.
        #[arg(long, short, default_value = ".")]
        project: PathBuf,
        /// Only records this rule rejected.
        #[arg(long)]
        rule: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum AirflowCommand {
    /// Print an Airflow 3 DAG for a project: one task per pipeline and model, the graph's
    /// dependencies, the schedule, retries and timeout of `strata.yaml`'s `schedule:`,
    /// `max_active_runs=1` (`strata airflow dag . > $AIRFLOW_HOME/dags/retail.py`).
    Dag {
        /// The project directory (or its `strata.yaml`).
        #[arg(default_value = ".")]
        project: PathBuf,
        /// The DAG id (default: the project's name).
        #[arg(long)]
        dag_id: Option<String>,
        /// The project directory as the Airflow workers see it (default: this one's
        /// absolute path).
        #[arg(long)]
        project_dir: Option<String>,
        /// The `strata` binary on the workers.
        #[arg(long, default_value = "strata")]
        strata: String,
    },
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one epoch of the pipeline described by a YAML file.
    Run {
        /// The pipeline file.
        pipeline: PathBuf,
        /// Print the run report as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        /// The day this run is about (`2024-01-31`, or an RFC 3339 timestamp): fills the
        /// file's `{{ ds }}` placeholders, and its checkpoint and commits are that day's.
        #[arg(long, value_parser = logical::parse)]
        logical_date: Option<chrono::NaiveDate>,
        /// Write the run's metrics here as Prometheus text (also when it fails).
        #[arg(long)]
        metrics_file: Option<PathBuf>,
    },
    /// Infer a pipeline source's schema and print it as YAML ready to paste into
    /// `schema.explicit` (the source's own schema when it is declared).
    Infer {
        /// The pipeline file.
        pipeline: PathBuf,
    },
    /// Check a pipeline file without running it: parse, build, reach the source.
    Check {
        /// The pipeline file.
        pipeline: PathBuf,
    },
    /// Serve an NDJSON file as a cursor-paginated JSON API (for trying and benchmarking the
    /// REST source): `GET /<name>?cursor=<n>&limit=<k>`.
    ServeApi {
        /// The NDJSON file (e.g. `data/orders.ndjson`).
        #[arg(long)]
        file: PathBuf,
        /// The resource name in the path.
        #[arg(long, default_value = "orders")]
        name: String,
        /// The port on 127.0.0.1 (0: any free one).
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
    /// Create the buckets and containers a pipeline file names (idempotent).
    Setup {
        /// The pipeline file.
        pipeline: PathBuf,
    },
    /// Generate the retail data set (partners, customers, products, orders, manifest.json).
    Generate {
        /// Where to write.
        #[arg(long, default_value = "./data")]
        out: PathBuf,
        /// Scale factor: 1.0 is about 1M orders, 0.6 GB.
        #[arg(long, default_value_t = 0.01)]
        scale: f64,
        /// Seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Share of orders with dirt (0 to 0.5).
        #[arg(long, default_value_t = 0.01)]
        dirt_rate: f64,
    },
    /// Generate data and run every pipeline Strata has so far, on local disk.
    Demo {
        /// Where to put data, pipelines and output.
        #[arg(long, default_value = "./demo-out")]
        out: PathBuf,
        /// Scale factor of the generated data.
        #[arg(long, default_value_t = 0.01)]
        scale: f64,
        /// A MongoDB server: the demo loads the customers and partners into it and reads them
        /// back through stratalake-mongodb (also `STRATA_DEMO_MONGODB_URI`).
        #[arg(long, env = "STRATA_DEMO_MONGODB_URI")]
        mongodb_uri: Option<String>,
        /// Put the medallion's Delta tables in this lake instead of `<out>/medallion`: a
        /// directory, `s3://bucket/path` or `az://container/path` (with `--lake-connection`).
        #[arg(long)]
        lake: Option<String>,
        /// The lake's connection file (`s3: ...` or `azure_blob: ...`, `${VAR}` interpolated).
        #[arg(long)]
        lake_connection: Option<PathBuf>,
    },
    /// Build a project (a directory with `strata.yaml`): its pipelines and models in
    /// dependency order, only what changed upstream.
    Build {
        /// The project directory (or its `strata.yaml`).
        #[arg(default_value = ".")]
        project: PathBuf,
        /// Only these nodes: `MODEL`, `+MODEL` (and everything upstream), `MODEL+` (and
        /// everything downstream), `layer.*`; repeat or separate by commas.
        #[arg(long, short)]
        select: Vec<String>,
        /// Rebuild the selected models whole (merge and append models from their input's
        /// first row).
        #[arg(long)]
        full_refresh: bool,
        /// The day this build is about (Airflow's `{{ ds }}`): fills the pipelines'
        /// placeholders; each day's loads commit once.
        #[arg(long, value_parser = logical::parse)]
        logical_date: Option<chrono::NaiveDate>,
        /// Write each node's metrics here as Prometheus text (also when the build fails).
        #[arg(long)]
        metrics_file: Option<PathBuf>,
    },
    /// Check a project's expectations on its tables as they are, without building.
    Test {
        /// The project directory (or its `strata.yaml`).
        #[arg(default_value = ".")]
        project: PathBuf,
        /// Only these nodes (as `build --select`).
        #[arg(long, short)]
        select: Vec<String>,
    },
    /// The history of each expectation: its outcomes over the last builds and tests.
    Quality {
        /// Only this model (`silver.orders`).
        model: Option<String>,
        /// The project directory.
        #[arg(long, short, default_value = ".")]
        project: PathBuf,
        /// How many builds back.
        #[arg(long, default_value_t = 10)]
        last: usize,
    },
    /// The run history: one line per node per build, newest first (the lake's `_runs`).
    Runs {
        /// The project directory.
        #[arg(long, short, default_value = ".")]
        project: PathBuf,
        /// Only this node (`silver.orders`, a pipeline's table).
        #[arg(long, alias = "pipeline")]
        node: Option<String>,
        /// Only failed runs.
        #[arg(long)]
        failed: bool,
        /// At most this many.
        #[arg(long, default_value_t = 30)]
        last: usize,
        /// One JSON object per run instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Make a pipeline read its source from the start: a new epoch with no cursor committed
    /// to its Delta table (rows kept: MERGE sinks only), or with `--drop` the rows and the
    /// quarantine deleted too. Asks on a terminal; elsewhere needs `--yes`.
    Reset {
        /// The pipeline file.
        pipeline: PathBuf,
        /// Delete the table's rows and quarantine as well.
        #[arg(long)]
        drop: bool,
        /// Do it without asking.
        #[arg(long)]
        yes: bool,
        /// Reset only this day of a pipeline partitioned by `{{ ds }}` (without --drop).
        #[arg(long, value_parser = logical::parse)]
        logical_date: Option<chrono::NaiveDate>,
    },
    /// Draw a project's report (`reports:` in strata.yaml) into one self-contained HTML file,
    /// from the lake's tables as they are.
    Report {
        /// The project directory (or its `strata.yaml`).
        #[arg(default_value = ".")]
        project: PathBuf,
        /// Which report (`retail` for `reports/retail.yaml`; default: the only one).
        #[arg(long)]
        name: Option<String>,
        /// Where to write it (default: the report's `out`).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Each node's last run, the age of its data and whether an input was built since.
    Status {
        /// The project directory (or its `strata.yaml`).
        #[arg(default_value = ".")]
        project: PathBuf,
        /// One JSON object per node instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Schedule a project on Apache Airflow.
    Airflow {
        #[command(subcommand)]
        action: AirflowCommand,
    },
    /// Work with a table's quarantine.
    Quarantine {
        #[command(subcommand)]
        action: QuarantineCommand,
    },
    /// Run a SQL query (DataFusion) over a project's tables (`SELECT * FROM gold.daily`).
    Query {
        /// The project directory (or its `strata.yaml`).
        project: PathBuf,
        /// The query.
        sql: String,
        /// One JSON object per row instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List a project's pipelines and models.
    Ls {
        /// The project directory (or its `strata.yaml`).
        #[arg(default_value = ".")]
        project: PathBuf,
    },
    /// Print a project's graph: each node with the tables it reads.
    Dag {
        /// The project directory (or its `strata.yaml`).
        #[arg(default_value = ".")]
        project: PathBuf,
        /// As Graphviz `dot`.
        #[arg(long)]
        dot: bool,
    },
    /// Write the retail project for generated data: `strata.yaml`, the bronze pipelines
    /// (files to Delta, with lineage), the silver and gold SQL models and the privacy policy;
    /// then `strata build <out>` builds it.
    Scaffold {
        /// The generated data directory.
        #[arg(long)]
        data: PathBuf,
        /// The lake's root (bronze/, silver/, gold/ go there; the checkpoints too on local
        /// disk): a directory, `s3://bucket/path` or `az://container/path`.
        #[arg(long)]
        lake: String,
        /// A cloud lake's connection file (`s3: ...` or `azure_blob: ...`), referred to by
        /// the pipelines written (never copied into them).
        #[arg(long)]
        lake_connection: Option<PathBuf>,
        /// The project directory to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Sync the gold tables into Snowflake: each table's Delta versions newer than the one
    /// last synced (recorded in Snowflake's control table) are merged by key; then the
    /// reporting views are (re)created. With `--emit-ddl`, print the STREAM and TASK DDL of a
    /// scheduled in-warehouse refresh instead.
    SyncSnowflake(commands::SyncSnowflakeArgs),
    /// Report each column's PII tags with a confidence and masked evidence, from a sample of a
    /// pipeline's source.
    Classify {
        /// The pipeline file whose source is sampled.
        pipeline: PathBuf,
        /// Rows sampled.
        #[arg(long, default_value_t = 1000)]
        sample_rows: usize,
    },
    /// Print (or with `--apply`, execute) the Snowflake tags, masking policies and row access
    /// policies a privacy policy file implies for the tables of the connection's schema.
    Governance {
        /// The privacy policy file.
        #[arg(long)]
        policy: PathBuf,
        /// The Snowflake connection YAML.
        #[arg(long)]
        connection: PathBuf,
        /// Execute the statements (each reported; a rejected one fails the command unless
        /// `--keep-going`).
        #[arg(long)]
        apply: bool,
        /// Go on after a rejected statement.
        #[arg(long)]
        keep_going: bool,
    },
    /// Rewrite a Delta table's small files into files of about the target size.
    Compact {
        /// The table: a directory, `s3://bucket/path` or `az://container/path`.
        table: String,
        /// A cloud table's connection file (`s3: ...` or `azure_blob: ...`).
        #[arg(long)]
        connection: Option<PathBuf>,
        /// The target file size.
        #[arg(long, default_value_t = 128)]
        target_file_size_megabytes: u64,
    },
    /// Delete files no version within the retention needs (and files of killed writers).
    Vacuum {
        /// The table: a directory, `s3://bucket/path` or `az://container/path`.
        table: String,
        /// A cloud table's connection file (`s3: ...` or `azure_blob: ...`).
        #[arg(long)]
        connection: Option<PathBuf>,
        /// Keep files younger versions need for this long.
        #[arg(long, default_value_t = 168)]
        retention_hours: u64,
        /// Only list what would be deleted.
        #[arg(long)]
        dry_run: bool,
        /// Allow a retention under 7 days.
        #[arg(long)]
        force: bool,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let mut filter = std::env::var("RUST_LOG").unwrap_or_else(|_| cli.log.clone());
    // The Delta kernel's debug logs print table data (file statistics with min/max values,
    // which in bronze are personal data): capped unless a filter names the kernel itself.
    for kernel in ["buoyant_kernel", "delta_kernel"] {
        if !filter.contains(kernel) {
            filter.push_str(&format!(",{kernel}=warn"));
        }
    }
    logs::init(
        &filter,
        cli.log_format,
        cli.run_id.clone().unwrap_or_else(project::new_run_id),
    );
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::from(exit::status::INTERNAL);
        }
    };
    logical::set(match &cli.command {
        Command::Run { logical_date, .. }
        | Command::Build { logical_date, .. }
        | Command::Reset { logical_date, .. } => {
            logical_date.map_or(logical::Mode::Missing, logical::Mode::Date)
        }
        _ => logical::Mode::Planning,
    });
    exit::finish(rt.block_on(exit::with_signals(dispatch(cli.command))))
}

async fn dispatch(cmd: Command) -> Result<()> {
    match cmd {
        Command::Run {
            pipeline,
            json,
            quiet,
            logical_date: _,
            metrics_file,
        } => commands::run(pipeline, json, quiet, metrics_file).await,
        Command::ServeApi { file, name, port } => {
            let lines = api::load(&file)?;
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
            outln!(
                "serving {} records of {} at http://{}/{name}?cursor=0&limit=1000",
                lines.len(),
                file.display(),
                listener.local_addr()?
            );
            api::serve(listener, &name, lines).await
        }
        Command::Setup { pipeline } => {
            let cfg = config::load(&pipeline)?;
            for line in config::setup(&cfg).await? {
                outln!("{line}");
            }
            Ok(())
        }
        Command::Infer { pipeline } => commands::infer(pipeline).await,
        Command::Check { pipeline } => commands::check(pipeline).await,
        Command::Generate {
            out,
            scale,
            seed,
            dirt_rate,
        } => {
            let cfg = stratalake_datagen::GeneratorConfig::at_scale(scale)
                .with_seed(seed)
                .with_dirt_rate(dirt_rate);
            let m = demo::generate(&cfg, &out, true).await?;
            outln!(
                "generated {} orders ({} lines, {:.1} MB, {} malformed) and {} customers, {} partners, {} products in {}",
                m.orders,
                m.order_file_lines,
                m.order_file_bytes as f64 / 1e6,
                m.dirt.malformed_json_lines,
                m.entity_records["customers"],
                m.entity_records["partners"],
                m.entity_records["products"],
                out.display()
            );
            Ok(())
        }
        Command::Demo {
            out,
            scale,
            mongodb_uri,
            lake,
            lake_connection,
        } => {
            let lake = lake
                .map(|l| lake::Lake::open(&l, lake_connection.as_deref()))
                .transpose()?;
            demo::run(&out, scale, mongodb_uri.as_deref(), lake.as_ref()).await
        }
        Command::Scaffold {
            data,
            lake,
            lake_connection,
            out,
        } => {
            let lake = lake::Lake::open(&lake, lake_connection.as_deref())?;
            lake.setup().await?;
            let files = medallion::scaffold(&data, &lake, &out)?;
            for f in files {
                outln!("{}", f.display());
            }
            Ok(())
        }
        Command::SyncSnowflake(args) => commands::sync_snowflake(args).await,
        Command::Classify {
            pipeline,
            sample_rows,
        } => commands::classify(pipeline, sample_rows).await,
        Command::Governance {
            policy,
            connection,
            apply,
            keep_going,
        } => commands::governance(policy, connection, apply, keep_going).await,
        Command::Build {
            project,
            select,
            full_refresh,
            logical_date: _,
            metrics_file,
        } => build_command(&project, &select, full_refresh, metrics_file.as_deref()).await,
        Command::Report { project, name, out } => commands::report(project, name, out).await,
        Command::Status { project, json } => {
            let l = project::open(&project::project_dir(&project))?;
            let all = status::status(&l).await?;
            if json {
                for s in &all {
                    outln!("{}", serde_json::to_string(s)?);
                }
            } else {
                for line in status::lines(&all) {
                    outln!("{line}");
                }
            }
            Ok(())
        }
        Command::Reset {
            pipeline,
            drop,
            yes,
            logical_date: _,
        } => {
            outln!("{}", reset_command(&pipeline, drop, yes).await?);
            Ok(())
        }
        Command::Airflow {
            action:
                AirflowCommand::Dag {
                    project,
                    dag_id,
                    project_dir,
                    strata,
                },
        } => commands::airflow_dag(project, dag_id, project_dir, strata).await,
        Command::Test { project, select } => test_command(&project, &select).await,
        Command::Runs {
            project,
            node,
            failed,
            last,
            json,
        } => {
            let l = project::open(&project::project_dir(&project))?;
            let batches = project::runs(&l, node.as_deref(), failed, last).await?;
            print_batches(&batches, json)
        }
        Command::Quality {
            model,
            project,
            last,
        } => {
            let l = project::open(&project::project_dir(&project))?;
            for line in project::quality(&l, model.as_deref(), last).await? {
                outln!("{line}");
            }
            Ok(())
        }
        Command::Quarantine {
            action:
                QuarantineCommand::Show {
                    table,
                    project,
                    rule,
                    limit,
                },
        } => {
            let l = project::open(&project::project_dir(&project))?;
            let b = project::quarantine_show(&l, &table, rule.as_deref(), limit).await?;
            outln!("{}", arrow_cast::pretty::pretty_format_batches(&b)?);
            Ok(())
        }
        Command::Quarantine {
            action:
                QuarantineCommand::Replay {
                    table,
                    project,
                    rule,
                },
        } => {
            let l = project::open(&project::project_dir(&project))?;
            let r = replay::replay(&l, &table, rule.as_deref()).await?;
            outln!("{table}: {r}");
            Ok(())
        }
        Command::Query { project, sql, json } => {
            let l = project::open(&project::project_dir(&project))?;
            let batches = project::query(&l, &sql).await?;
            print_batches(&batches, json)
        }
        Command::Ls { project } => {
            let l = project::open(&project::project_dir(&project))?;
            for line in project::list(&l) {
                outln!("{line}");
            }
            Ok(())
        }
        Command::Dag { project, dot } => {
            let l = project::open(&project::project_dir(&project))?;
            for line in project::dag(&l, dot) {
                outln!("{line}");
            }
            Ok(())
        }
        Command::Compact {
            table,
            connection,
            target_file_size_megabytes,
        } => {
            let conn = connection.as_deref().map(lake::load).transpose()?;
            let loc = lake::table_location(&table, conn.as_ref())?;
            let bar = progress::spinner(&format!("compacting {table}"));
            let c = stratalake_delta::maintenance::compact(&loc, target_file_size_megabytes).await;
            bar.finish_and_clear();
            let c = c?;
            outln!(
                "{table}: {} files rewritten into {}",
                c.files_removed,
                c.files_added
            );
            Ok(())
        }
        Command::Vacuum {
            table,
            connection,
            retention_hours,
            dry_run,
            force,
        } => {
            let conn = connection.as_deref().map(lake::load).transpose()?;
            let loc = lake::table_location(&table, conn.as_ref())?;
            let bar = progress::spinner(&format!("vacuuming {table}"));
            let v =
                stratalake_delta::maintenance::vacuum(&loc, retention_hours, dry_run, force).await;
            bar.finish_and_clear();
            let v = v?;
            outln!(
                "{table}: {} files {}",
                v.files.len(),
                if v.dry_run {
                    "would be deleted"
                } else {
                    "deleted"
                }
            );
            Ok(())
        }
    }
}

/// Batches on stdout: a table, or one JSON object per row.
fn print_batches(batches: &[arrow_array::RecordBatch], json: bool) -> Result<()> {
    if json {
        let mut w = arrow_json::LineDelimitedWriter::new(Vec::new());
        for b in batches {
            w.write(b)?;
        }
        w.finish()?;
        use std::io::Write as _;
        std::io::stdout().lock().write_all(&w.into_inner())?;
    } else {
        outln!("{}", arrow_cast::pretty::pretty_format_batches(batches)?);
    }
    Ok(())
}

/// `strata reset`: check, ask on a terminal (or take `--yes`), then reset.
async fn reset_command(pipeline: &std::path::Path, drop: bool, yes: bool) -> Result<String> {
    use std::io::{BufRead as _, IsTerminal as _, Write as _};
    let reset = stratalake_build::reset::Reset::plan(pipeline, drop)?;
    let (id, what) = (reset.id().to_string(), reset.describe());
    if !yes {
        if !std::io::stdin().is_terminal() {
            anyhow::bail!(
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
            anyhow::bail!("strata reset {id}: not confirmed; nothing changed");
        }
    }
    Ok(reset.apply().await?)
}

/// `strata test`: check the expectations without building; fail when a `fail` rule failed.
async fn test_command(project: &std::path::Path, select: &[String]) -> Result<()> {
    let l = project::open(&project::project_dir(project))?;
    let run_id = logs::run_id();
    outln!("run {run_id}: testing {}", l.project.config().name);
    let runs = project::test(&l, select, run_id).await?;
    if runs.is_empty() {
        outln!("no expectations declared on the selected nodes");
        return Ok(());
    }
    for line in project::expectation_lines(&runs) {
        outln!("{line}");
    }
    let failed: Vec<&str> = runs
        .iter()
        .filter(|r| matches!(r.status, project::Status::Failed(..)))
        .map(|r| r.name.as_str())
        .collect();
    if let Some((msg, kind)) = runs.iter().find_map(|r| match &r.status {
        project::Status::Failed(m, k) => Some((m, *k)),
        _ => None,
    }) {
        return Err(stratalake_core::Error::new(
            kind.unwrap_or(stratalake_core::ErrorKind::Internal),
            format!("expectations failed ({}): {msg}", failed.join(", ")),
        )
        .into());
    }
    Ok(())
}

/// `strata build`: build, print a line per node and a summary; fail when a node failed.
async fn build_command(
    project: &std::path::Path,
    select: &[String],
    full_refresh: bool,
    metrics_file: Option<&std::path::Path>,
) -> Result<()> {
    let started = std::time::Instant::now();
    let l = Arc::new(project::open(&project::project_dir(project))?);
    outln!(
        "building {} ({} nodes{})",
        l.project.config().name,
        l.graph.nodes().len(),
        if select.is_empty() {
            String::new()
        } else {
            format!(", selected: {}", select.join(" "))
        }
    );
    let run_id = logs::run_id();
    outln!("run {run_id}");
    let bar = progress::BuildProgress(progress::counter(0, "building", true));
    let runs = project::build(l.clone(), select, full_refresh, &session(), &bar).await;
    bar.0.finish_and_clear();
    let runs = runs?;
    if let Some(f) = metrics_file {
        let samples: Vec<prom::Sample<'_>> = runs
            .iter()
            .map(|r| prom::Sample {
                pipeline: &r.name,
                kind: r.kind,
                success: matches!(
                    r.status,
                    project::Status::Built(_) | project::Status::UpToDate(_)
                ),
                seconds: r.secs,
                report: r.report.as_ref(),
            })
            .collect();
        prom::write(f, &samples)?;
    }
    let (mut built, mut fresh, mut failed) = (0, 0, Vec::new());
    for r in &runs {
        let (word, detail) = match &r.status {
            project::Status::Built(d) => {
                built += 1;
                ("built", d.as_str())
            }
            project::Status::UpToDate(d) => {
                fresh += 1;
                ("up to date", d.as_str())
            }
            project::Status::Skipped(d) => {
                failed.push(r.name.clone());
                ("skipped", d.as_str())
            }
            project::Status::Failed(d, _) => {
                failed.push(r.name.clone());
                ("FAILED", d.as_str())
            }
        };
        outln!(
            "  {:<28} {:<11} {:<10} {:>7.2} s  {detail}",
            r.name,
            r.kind,
            word,
            r.secs
        );
    }
    for line in project::expectation_lines(&runs) {
        outln!("{line}");
    }
    let secs = started.elapsed().as_secs_f64();
    if built == 0 && failed.is_empty() {
        outln!("nothing to do: all {fresh} nodes are up to date ({secs:.2} s)");
    } else {
        outln!(
            "{built} built, {fresh} up to date, {} failed or skipped in {secs:.2} s",
            failed.len()
        );
    }
    if failed.is_empty() {
        for line in project::check_k_anonymity(&l).await? {
            outln!("{line}");
        }
    }
    if let Some((msg, kind)) = runs.iter().find_map(|r| match &r.status {
        project::Status::Failed(m, k) => Some((m, *k)),
        _ => None,
    }) {
        let e = stratalake_core::Error::new(
            kind.unwrap_or(stratalake_core::ErrorKind::Internal),
            format!("the build failed ({}): {msg}", failed.join(", ")),
        );
        return Err(e.into());
    }
    Ok(())
}

/// What every run and build of this process shares: its run id and the SIGTERM/Ctrl-C token.
pub fn session() -> stratalake_build::Session {
    stratalake_build::Session::new(logs::run_id()).with_cancellation(exit::shutdown())
}

/// Load, build and run one pipeline file, with a progress bar when asked.
pub async fn run_file(
    path: &std::path::Path,
    show_progress: bool,
) -> stratalake_core::Result<RunReport> {
    let cfg = config::load(path)?;
    if !config::table_checks(&cfg, &cfg.pipeline)?.is_empty() {
        eprintln!(
            "strata: warning: {}: the pipeline's table checks run after its commit in a project build (`strata build`); `strata run` checks its row rules only",
            path.display()
        );
    }
    let metrics = Metrics::new();
    let bar = progress::RunProgress::new(&cfg.run_id(), metrics.clone(), show_progress);
    let watch = stratalake_build::Watch {
        metrics,
        observer: bar.observer(),
    };
    let label = path.display().to_string();
    let log = stratalake_core::expect::ResultLog::new();
    let result = stratalake_build::run_pipeline(&cfg, &label, &session(), &log, Some(watch)).await;
    bar.finish();
    result
}

fn print_report(r: &RunReport) -> Result<()> {
    let secs = r.elapsed.as_secs_f64();
    match r.outcome {
        RunOutcome::NothingNew => outln!(
            "{}: nothing new since epoch {} ({:.2} s)",
            r.pipeline_id,
            r.epoch,
            secs
        ),
        _ => {
            outln!(
                "{}: epoch {} {} in {:.2} s: {} rows written, {} quarantined, {:.1} MB read ({:.0} MB/s), {:.1} MB written",
                r.pipeline_id,
                r.epoch,
                if r.outcome == RunOutcome::Committed {
                    "committed"
                } else {
                    "was already committed"
                },
                secs,
                r.rows_written,
                r.rows_quarantined,
                r.input_bytes as f64 / 1e6,
                r.input_bytes as f64 / 1e6 / secs.max(1e-9),
                r.bytes_written as f64 / 1e6
            );
            let busy = |c: &str| {
                r.metrics
                    .get(c, stratalake_core::metrics::BUSY_NANOSECONDS_TOTAL) as f64
                    / 1e9
            };
            outln!(
                "  busy: source {:.2} s, sink {:.2} s (summed over threads)",
                busy("source"),
                busy("sink")
            );
            for item in &r.items {
                outln!("  {item}");
            }
        }
    }
    Ok(())
}
