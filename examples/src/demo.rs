//! `strata demo` and the generator front end.

use crate::progress;
use anyhow::{Context as _, Result, bail};
use std::fmt::Write as _;
use std::path::Path;
use stratalake_core::RunOutcome;
use stratalake_datagen::{GeneratorConfig, Manifest};

/// Generate on a blocking thread, with a progress bar.
pub async fn generate(cfg: &GeneratorConfig, out: &Path, show: bool) -> Result<Manifest> {
    let orders = (cfg.scale_factor * stratalake_datagen::ORDERS_PER_SF)
        .round()
        .max(1.0) as u64;
    let bar = progress::counter(orders, "generating orders", show);
    let (cfg, out, b) = (cfg.clone(), out.to_path_buf(), bar.clone());
    let m = tokio::task::spawn_blocking(move || {
        stratalake_datagen::generate(&cfg, &out, &|n| b.set_position(n))
    })
    .await
    .context("the generator panicked")??;
    bar.finish_and_clear();
    Ok(m)
}

pub(crate) fn yaml_str(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "''"))
}

/// The pipeline file for one generated entity.
pub fn pipeline_yaml(name: &str, data: &Path, lake: &Path, checkpoints: &Path) -> String {
    let mut y = String::new();
    let _ = writeln!(
        y,
        "# {name}: NDJSON to Parquet, exactly once; malformed lines go to {name}/_quarantine."
    );
    let _ = writeln!(y, "pipeline: {name}_bronze");
    let _ = writeln!(
        y,
        "source:\n  files:\n    root: {}\n    include: [\"{name}.ndjson\"]\n    format: ndjson",
        yaml_str(data)
    );
    if name == "orders" {
        let _ = writeln!(y, "    schema:\n      explicit:");
        for (col, ty) in stratalake_datagen::orders_schema() {
            let _ = writeln!(y, "        - {{ name: {col}, type: \"{ty}\" }}");
        }
    }
    let _ = writeln!(y, "    type_drift: quarantine\n    unknown_fields: ignore");
    let _ = writeln!(
        y,
        "sink:\n  parquet:\n    root: {}",
        yaml_str(&lake.join(name))
    );
    let _ = writeln!(
        y,
        "checkpoint:\n  local:\n    dir: {}",
        yaml_str(checkpoints)
    );
    y
}

/// The pipeline file reading the orders from a cursor-paginated API.
pub fn rest_pipeline_yaml(base_url: &str, lake: &Path, checkpoints: &Path) -> String {
    let mut y = String::new();
    let _ = writeln!(
        y,
        "# orders through stratalake-rest: 1,000 per page, cursor pagination, into Parquet."
    );
    let _ = writeln!(y, "pipeline: orders_rest");
    let _ = writeln!(
        y,
        "source:\n  rest:\n    base_url: {base_url}\n    path: /orders\n    params: {{ limit: \"1000\" }}\n    records: $.data\n    paginator: {{ type: cursor, cursor_path: $.next_cursor, cursor_param: cursor }}\n    schema:\n      explicit:"
    );
    for (col, ty) in stratalake_datagen::orders_schema() {
        let _ = writeln!(y, "        - {{ name: {col}, type: \"{ty}\" }}");
    }
    let _ = writeln!(y, "    type_drift: quarantine\n    unknown_fields: ignore");
    let _ = writeln!(
        y,
        "sink:\n  parquet:\n    root: {}",
        yaml_str(&lake.join("orders_rest"))
    );
    let _ = writeln!(
        y,
        "checkpoint:\n  local:\n    dir: {}",
        yaml_str(checkpoints)
    );
    y
}

/// Generate data, write pipeline files, run them, check the orders against the manifest, show
/// that a second run commits nothing.
pub async fn run(
    out: &Path,
    scale: f64,
    mongodb_uri: Option<&str>,
    medallion_lake: Option<&stratalake_build::Lake>,
) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let out = std::fs::canonicalize(out)?;
    let (data, lake, pipes, cps) = (
        out.join("data"),
        out.join("lake"),
        out.join("pipelines"),
        out.join("checkpoints"),
    );
    outln!(
        "strata demo: scale factor {scale}, everything under {}",
        out.display()
    );
    let m = generate(&GeneratorConfig::at_scale(scale), &data, true).await?;
    outln!(
        "1. generated {} orders ({:.1} MB, {} lines: {} malformed, {} with a drifting type, {} duplicates), {} customers, {} partners, {} products -> {}",
        m.orders,
        m.order_file_bytes as f64 / 1e6,
        m.order_file_lines,
        m.dirt.malformed_json_lines,
        m.dirt.type_drift_total_amount,
        m.dirt.duplicate_records,
        m.entity_records["customers"],
        m.entity_records["partners"],
        m.entity_records["products"],
        data.display()
    );
    std::fs::create_dir_all(&pipes)?;
    outln!("2. bronze: NDJSON -> Parquet (zstd), exactly once, bad records quarantined");
    let mut orders_report = None;
    for name in ["partners", "customers", "products", "orders"] {
        let file = pipes.join(format!("{name}.yaml"));
        std::fs::write(&file, pipeline_yaml(name, &data, &lake, &cps))?;
        let r = crate::run_file(&file, true).await?;
        outln!(
            "   {:<10} {:>9} rows  {:>6} quarantined  {:>7.1} MB  {:>5.2} s  -> {}",
            name,
            r.rows_written,
            r.rows_quarantined,
            r.bytes_written as f64 / 1e6,
            r.elapsed.as_secs_f64(),
            lake.join(name).display()
        );
        if name == "orders" {
            orders_report = Some(r);
        }
    }
    let r = orders_report.expect("orders ran");
    let quarantine_expected = m.dirt.malformed_json_lines + m.dirt.type_drift_total_amount;
    if r.rows_written != m.well_formed_order_lines || r.rows_quarantined != quarantine_expected {
        bail!(
            "orders do not match the generator manifest: wrote {} rows (expected {}), quarantined {} (expected {})",
            r.rows_written,
            m.well_formed_order_lines,
            r.rows_quarantined,
            quarantine_expected
        );
    }
    outln!(
        "3. check: orders rows = well-formed lines ({}), quarantine = malformed + drifting ({})",
        r.rows_written,
        quarantine_expected
    );
    show_quarantine(&lake.join("orders").join("_quarantine"))?;
    let again = crate::run_file(&pipes.join("orders.yaml"), false).await?;
    if again.outcome != RunOutcome::NothingNew {
        bail!(
            "a second run of the orders pipeline committed again: {:?}",
            again.outcome
        );
    }
    outln!(
        "5. a second run of {} commits nothing new (epoch {} stays the last)",
        pipes.join("orders.yaml").display(),
        again.epoch
    );
    outln!(
        "   run one yourself: strata run {}",
        pipes.join("orders.yaml").display()
    );

    // The same orders through a REST API: served here, in-process, and read by stratalake-rest.
    let lines = crate::api::load(&data.join("orders.ndjson"))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let mut server = tokio::task::JoinSet::new();
    server.spawn(async move { crate::api::serve(listener, "orders", lines).await });
    let file = pipes.join("orders_rest.yaml");
    std::fs::write(&file, rest_pipeline_yaml(&base, &lake, &cps))?;
    let r = crate::run_file(&file, true).await?;
    server.abort_all();
    if r.rows_written != m.well_formed_order_lines
        || r.rows_quarantined != m.dirt.type_drift_total_amount
    {
        bail!(
            "orders through REST do not match the generator manifest: wrote {} rows (expected {}), quarantined {} (expected {})",
            r.rows_written,
            m.well_formed_order_lines,
            r.rows_quarantined,
            m.dirt.type_drift_total_amount
        );
    }
    outln!(
        "6. REST: {} orders served by an in-process API at {base}/orders (1,000 per page, cursor pagination) -> {} rows, {} drifting records quarantined with URL and page, {:.2} s -> {}",
        r.rows_written + r.rows_quarantined,
        r.rows_written,
        r.rows_quarantined,
        r.elapsed.as_secs_f64(),
        lake.join("orders_rest").display()
    );
    if let Some(uri) = mongodb_uri {
        mongo_step(uri, &data, &lake, &pipes, &cps, &m).await?;
    }
    medallion_step(&out, &data, &out.join("retail"), &m, medallion_lake).await?;
    Ok(())
}

/// Bronze, silver and gold Delta tables from pipeline files, gold checked against the manifest.
async fn medallion_step(
    out: &Path,
    data: &Path,
    pipes: &Path,
    m: &Manifest,
    lake: Option<&stratalake_build::Lake>,
) -> Result<()> {
    use crate::medallion::{Lake, scaffold};
    let lake = match lake {
        Some(l) => l.clone(),
        None => Lake::open(&out.join("medallion").display().to_string(), None)?,
    };
    lake.setup().await?;
    outln!(
        "8. medallion: the retail project in {}, its Delta tables under {} (strata build)",
        pipes.display(),
        lake.root()
    );
    scaffold(data, &lake, pipes)?;
    let here = std::env::current_dir()?;
    let loaded = std::sync::Arc::new(stratalake_build::project::open(pipes)?);
    let runs =
        stratalake_build::project::build(loaded.clone(), &[], false, &crate::session(), &()).await;
    std::env::set_current_dir(here)?;
    let runs = runs?;
    for r in &runs {
        match &r.status {
            stratalake_build::project::Status::Built(d)
            | stratalake_build::project::Status::UpToDate(d) => {
                outln!("   {:<24} {:<11} {:>6.2} s  {d}", r.name, r.kind, r.secs);
            }
            stratalake_build::project::Status::Skipped(d)
            | stratalake_build::project::Status::Failed(d, _) => {
                bail!("the medallion build failed at {}: {d}", r.name)
            }
        }
    }
    for line in stratalake_build::project::expectation_lines(&runs) {
        outln!("   {line}");
    }
    let want = m.dirt.null_customer_id + m.dirt.negative_quantity + m.dirt.unknown_currency;
    let got = crate::medallion::silver_quarantined(&lake, "orders").await?;
    if got != want {
        bail!(
            "silver.orders quarantined {got} rows; the manifest has {want} (null customer, negative quantity, unknown currency)"
        );
    }
    for (t, n) in crate::medallion::gold_counts(&loaded).await? {
        outln!("   gold.{t:<20} {n:>9} rows");
    }
    for line in crate::medallion::check_gold(&loaded, m).await? {
        outln!("   check: {line}");
    }
    outln!("   gold totals equal the generator manifest's expected totals exactly");
    for r in loaded.project.reports() {
        let page = std::fs::canonicalize(pipes.join(&r.out)).unwrap_or_else(|_| pipes.join(&r.out));
        outln!("   report: {} (open it in a browser)", page.display());
    }
    Ok(())
}

/// Load the customers and partners into MongoDB, then read them back through stratalake-mongodb.
async fn mongo_step(
    uri: &str,
    data: &Path,
    lake: &Path,
    pipes: &Path,
    cps: &Path,
    m: &Manifest,
) -> Result<()> {
    let client = mongodb::Client::with_uri_str(uri)
        .await
        .with_context(|| "cannot connect to the demo's MongoDB server".to_string())?;
    let db = client.database("strata_demo");
    db.drop()
        .await
        .context("cannot reset the strata_demo database")?;
    for name in ["customers", "partners"] {
        let text = std::fs::read_to_string(data.join(format!("{name}.ndjson")))?;
        let docs: Vec<bson::Document> = text
            .lines()
            .filter_map(|l| {
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(l).ok()
            })
            .filter_map(|m| bson::Document::try_from(m).ok())
            .collect();
        let coll = db.collection::<bson::Document>(name);
        for chunk in docs.chunks(2000) {
            coll.insert_many(chunk.to_vec())
                .await
                .with_context(|| format!("cannot load {name}"))?;
        }
        let file = pipes.join(format!("{name}_mongodb.yaml"));
        let y = format!(
            "# {name} read back from MongoDB through stratalake-mongodb.\npipeline: {name}_mongodb\nsource:\n  mongodb:\n    uri: \"{uri}\"\n    database: strata_demo\n    collection: {name}\n    mixed_types: json_text\nsink:\n  parquet:\n    root: {}\ncheckpoint:\n  local:\n    dir: {}\n",
            yaml_str(&lake.join(format!("{name}_mongodb"))),
            yaml_str(cps)
        );
        std::fs::write(&file, y)?;
        let r = crate::run_file(&file, true).await?;
        let expected = docs.len() as u64;
        if r.rows_written + r.rows_quarantined != expected || m.entity_records[name] < expected {
            bail!(
                "{name} through MongoDB: wrote {} rows and quarantined {}, but {expected} documents were loaded",
                r.rows_written,
                r.rows_quarantined
            );
        }
        outln!(
            "7. MongoDB: {expected} {name} loaded into strata_demo.{name} and read back -> {} rows ({} quarantined), {:.2} s",
            r.rows_written,
            r.rows_quarantined,
            r.elapsed.as_secs_f64()
        );
    }
    Ok(())
}

fn show_quarantine(dir: &Path) -> Result<()> {
    outln!("4. quarantine sample ({}):", dir.display());
    let batches = stratalake_files::read_parquet_dir(dir)?;
    let mut rows = Vec::new();
    for b in &batches {
        rows.extend(stratalake_core::quarantine_records(b)?);
        if rows.len() >= 3 {
            break;
        }
    }
    for r in rows.into_iter().take(3) {
        let (loc, pos, reason, raw) = (r.location, r.position.unwrap_or(0), r.reason, r.raw);
        let raw = if raw.len() > 60 {
            format!("{}…", &raw[..raw.floor_char_boundary(60)])
        } else {
            raw
        };
        let file = Path::new(&loc)
            .file_name()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        outln!("   {file}:{pos}: {reason}\n      raw: {raw}");
    }
    Ok(())
}
