//! The medallion in `strata demo`: bronze, silver and gold Delta tables on local disk, from
//! pipeline files, checked against the generator's manifest.

use crate::demo::yaml_str;
use anyhow::{Result, bail};
use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use stratalake_datagen::Manifest;

pub use stratalake_build::Lake;

/// The checkpoint block: next to a local lake's tables; on a cloud lake the Delta tables'
/// own application transactions are the checkpoint (each run resumes from the cursor its sink
/// last committed), so nothing is kept elsewhere.
fn checkpoint_yaml(lake: &Lake) -> String {
    if lake.is_local() {
        format!(
            "checkpoint:\n  local:\n    dir: {}",
            yaml_str(&Path::new(lake.root()).join("_checkpoints"))
        )
    } else {
        "# The Delta sink's transaction records each commit's cursor: runs resume from it.\ncheckpoint: memory".to_string()
    }
}

/// Bronze: one entity file, as it arrived plus lineage, appended exactly once.
pub fn bronze_yaml(name: &str, data: &Path, lake: &Lake) -> String {
    let mut y = String::new();
    let _ = writeln!(
        y,
        "# bronze.{name}: {name}.ndjson as it arrived, plus lineage, appended to a Delta table\n# partitioned by ingest date; malformed lines go to its _quarantine table."
    );
    let _ = writeln!(y, "pipeline: bronze_{name}");
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
    let _ = writeln!(y, "transforms:\n  - lineage: {{ source: {name}.ndjson }}");
    let _ = writeln!(
        y,
        "sink:\n  delta:\n    lake_table: bronze.{name}\n    options:\n      partition_by: [_ingest_date]\n      schema_evolution: add_columns"
    );
    let _ = writeln!(y, "{}", checkpoint_yaml(lake));
    y
}

fn int(b: &[RecordBatch], col: usize) -> i64 {
    b.iter()
        .flat_map(|b| {
            let c = arrow_cast::cast(b.column(col), &arrow_schema::DataType::Int64)
                .expect("an integer column");
            c.as_primitive::<arrow_array::types::Int64Type>()
                .iter()
                .map(|v| v.unwrap_or(0))
                .collect::<Vec<_>>()
        })
        .sum()
}

fn pairs(b: &[RecordBatch]) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for b in b {
        let k = arrow_cast::cast(b.column(0), &arrow_schema::DataType::Utf8).expect("text");
        let v = arrow_cast::cast(b.column(1), &arrow_schema::DataType::Int64).expect("int");
        let (k, v) = (
            k.as_string::<i32>(),
            v.as_primitive::<arrow_array::types::Int64Type>(),
        );
        for i in 0..b.num_rows() {
            out.insert(k.value(i).to_string(), v.value(i));
        }
    }
    out
}

/// Check the gold tables against the generator's expected totals; the lines printed.
pub async fn check_gold(
    p: &stratalake_build::project::Loaded,
    m: &Manifest,
) -> Result<Vec<String>> {
    let q = |sql: &'static str| stratalake_build::project::query(p, sql);
    let e = &m.expected;
    let orders = int(&q("SELECT COUNT(*) FROM silver.orders").await?, 0);
    let lines = int(&q("SELECT COUNT(*) FROM gold.fact_order_line").await?, 0);
    let units = int(
        &q("SELECT CAST(SUM(quantity) AS BIGINT) FROM gold.fact_order_line").await?,
        0,
    );
    let revenue = pairs(
        &q("SELECT currency, CAST(SUM(revenue) * 100 AS BIGINT) FROM gold.daily_revenue GROUP BY currency")
            .await?,
    );
    let status = pairs(
        &q("SELECT status, CAST(SUM(orders) AS BIGINT) FROM gold.orders_by_status GROUP BY status")
            .await?,
    );
    let mut problems = Vec::new();
    if orders != e.orders as i64 {
        problems.push(format!("orders {orders} != expected {}", e.orders));
    }
    if lines != e.order_lines as i64 {
        problems.push(format!("order lines {lines} != expected {}", e.order_lines));
    }
    if units != e.units as i64 {
        problems.push(format!("units {units} != expected {}", e.units));
    }
    let want_rev: BTreeMap<String, i64> = e.revenue_cents_by_currency.clone();
    if revenue != want_rev {
        problems.push(format!(
            "revenue (cents) {revenue:?} != expected {want_rev:?}"
        ));
    }
    let want_status: BTreeMap<String, i64> = e
        .orders_by_status
        .iter()
        .map(|(k, v)| (k.clone(), *v as i64))
        .collect();
    if status != want_status {
        problems.push(format!(
            "orders by status {status:?} != expected {want_status:?}"
        ));
    }
    if !problems.is_empty() {
        bail!(
            "gold does not match the generator manifest: {}",
            problems.join("; ")
        );
    }
    Ok(vec![
        format!("orders {orders}, order lines {lines}, units {units}"),
        format!(
            "revenue by currency: {}",
            revenue
                .iter()
                .map(|(c, v)| format!("{c} {}.{:02}", v / 100, v % 100))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        format!(
            "orders by status: {}",
            status
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ])
}

/// Rows in the quarantine of silver table `name`.
pub async fn silver_quarantined(lake: &Lake, name: &str) -> Result<u64> {
    let q = lake.table("silver", name)?.child("_quarantine")?;
    let tables = BTreeMap::from([("quarantine.t".to_string(), q)]);
    let b = stratalake_gold::model::query(&tables, "SELECT COUNT(*) FROM quarantine.t").await?;
    Ok(u64::try_from(int(&b, 0)).unwrap_or(0))
}

/// Rows in each gold table.
pub async fn gold_counts(p: &stratalake_build::project::Loaded) -> Result<Vec<(String, i64)>> {
    let mut out = Vec::new();
    for m in p.project.models().iter().filter(|m| m.layer == "gold") {
        let b = stratalake_build::project::query(p, &format!("SELECT COUNT(*) FROM {}", m.name))
            .await?;
        out.push((m.table.clone(), int(&b, 0)));
    }
    Ok(out)
}

/// Bronze tables (one per entity file), loaded by the project's pipelines.
pub const BRONZE: &[&str] = &["partners", "customers", "products", "orders"];

/// The retail project's models and privacy policy, as in `examples/projects/retail`.
const RETAIL: &[(&str, &str)] = &[
    (
        "privacy.yaml",
        include_str!("../projects/retail/privacy.yaml"),
    ),
    (
        "reports/retail.yaml",
        include_str!("../projects/retail/reports/retail.yaml"),
    ),
    (
        "models/silver/orders.sql",
        include_str!("../projects/retail/models/silver/orders.sql"),
    ),
    (
        "models/silver/order_lines.sql",
        include_str!("../projects/retail/models/silver/order_lines.sql"),
    ),
    (
        "models/silver/customers.sql",
        include_str!("../projects/retail/models/silver/customers.sql"),
    ),
    (
        "models/silver/partners.sql",
        include_str!("../projects/retail/models/silver/partners.sql"),
    ),
    (
        "models/silver/products.sql",
        include_str!("../projects/retail/models/silver/products.sql"),
    ),
    (
        "models/gold/fact_order_line.sql",
        include_str!("../projects/retail/models/gold/fact_order_line.sql"),
    ),
    (
        "models/gold/daily_revenue.sql",
        include_str!("../projects/retail/models/gold/daily_revenue.sql"),
    ),
    (
        "models/gold/orders_by_status.sql",
        include_str!("../projects/retail/models/gold/orders_by_status.sql"),
    ),
    (
        "models/gold/product_performance.sql",
        include_str!("../projects/retail/models/gold/product_performance.sql"),
    ),
    (
        "models/gold/customer_activity.sql",
        include_str!("../projects/retail/models/gold/customer_activity.sql"),
    ),
    (
        "models/gold/partner_activity.sql",
        include_str!("../projects/retail/models/gold/partner_activity.sql"),
    ),
    (
        "models/gold/dim_customer.sql",
        include_str!("../projects/retail/models/gold/dim_customer.sql"),
    ),
    (
        "models/gold/dim_partner.sql",
        include_str!("../projects/retail/models/gold/dim_partner.sql"),
    ),
    (
        "models/gold/dim_product.sql",
        include_str!("../projects/retail/models/gold/dim_product.sql"),
    ),
    (
        "models/gold/dim_date.sql",
        include_str!("../projects/retail/models/gold/dim_date.sql"),
    ),
    (
        "warehouse/v_revenue_by_month.sql",
        include_str!("../projects/retail/warehouse/v_revenue_by_month.sql"),
    ),
    (
        "warehouse/v_partner_scorecard.sql",
        include_str!("../projects/retail/warehouse/v_partner_scorecard.sql"),
    ),
    (
        "warehouse/v_product_ranking.sql",
        include_str!("../projects/retail/warehouse/v_product_ranking.sql"),
    ),
    (
        "warehouse/v_customer_segments.sql",
        include_str!("../projects/retail/warehouse/v_customer_segments.sql"),
    ),
];

/// `strata.yaml` of the retail project over `lake`.
fn project_yaml(lake: &Lake) -> String {
    let mut y = String::from(
        "# The retail medallion: bronze pipelines load the generator's files as they arrived,\n# silver models mask, type, validate and MERGE them by key, gold models build the star\n# schema and report tables (incremental by order date where they can be).\nname: retail\n",
    );
    let _ = writeln!(y, "lake: {}", yaml_str(Path::new(lake.root())));
    if let Some(f) = lake.connection_file() {
        let _ = writeln!(y, "lake_connection: {}", yaml_str(f));
    }
    let _ = writeln!(y, "privacy: privacy.yaml\npipelines:");
    for name in BRONZE {
        let _ = writeln!(y, "  - pipelines/bronze_{name}.yaml");
    }
    y.push_str("# The report drawn after gold (strata report . --out report.html draws it on demand).\nreports: [reports/retail.yaml]\n");
    y.push_str(
        "# When Airflow runs it (`strata airflow dag . > dags/retail.py`): nightly at 02:00 UTC;\n\
         # a node is retried only after a temporary failure.\n\
         schedule:\n  cron: \"0 2 * * *\"\n  start_date: 2024-01-01\n  retries: 3\n  retry_delay_seconds: 300\n  task_timeout_minutes: 60\n",
    );
    y
}

/// Write the retail project into `out`: `strata.yaml`, the bronze pipelines over `data`, the
/// silver and gold models, the privacy policy and its masking key. The files written.
pub fn scaffold(data: &Path, lake: &Lake, out: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out.join("pipelines"))?;
    let data = std::fs::canonicalize(data)?;
    let out = std::fs::canonicalize(out)?;
    let mut files = Vec::new();
    let project = out.join(stratalake_project::PROJECT_FILE);
    std::fs::write(&project, project_yaml(lake))?;
    files.push(project);
    for name in BRONZE {
        let f = out.join(format!("pipelines/bronze_{name}.yaml"));
        std::fs::write(&f, bronze_yaml(name, &data, lake))?;
        files.push(f);
    }
    for (rel, text) in RETAIL {
        let f = out.join(rel);
        if let Some(d) = f.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(&f, text)?;
        files.push(f);
    }
    // The policy's key in a file next to it (created once, readable by the owner only):
    // production mounts the key as a secret instead.
    let key = out.join("masking.key");
    if !key.exists() {
        let k: [u8; 32] = rand_key();
        std::fs::write(
            &key,
            k.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        )?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(files)
}

fn rand_key() -> [u8; 32] {
    // A demo key, unique per scaffold (rand's OS-seeded CSPRNG); deployments mount their own.
    rand::random()
}
