//! The medallion in `strata demo`: bronze, silver and gold Delta tables on local disk, from
//! pipeline files, checked against the generator's manifest.

use crate::demo::yaml_str;
use anyhow::{Result, bail};
use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use strata_datagen::Manifest;

pub use crate::lake::Lake;

/// A Delta table of the lake as pipeline YAML (`table:` and, on a cloud lake, `connection:`),
/// indented for a `delta:` block.
fn delta_table_yaml(lake: &Lake, layer: &str, name: &str) -> String {
    let table = lake.table_url(layer, name);
    match lake.connection_file() {
        Some(f) => format!(
            "    table: {}\n    connection: {{ file: {} }}",
            yaml_str(Path::new(&table)),
            yaml_str(f)
        ),
        None => format!("    table: {}", yaml_str(Path::new(&table))),
    }
}

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
        for (col, ty) in strata_datagen::orders_schema() {
            let _ = writeln!(y, "        - {{ name: {col}, type: \"{ty}\" }}");
        }
    }
    let _ = writeln!(y, "    type_drift: quarantine\n    unknown_fields: ignore");
    let _ = writeln!(y, "transforms:\n  - lineage: {{ source: {name}.ndjson }}");
    let _ = writeln!(
        y,
        "sink:\n  delta:\n{}\n    options:\n      partition_by: [_ingest_date]\n      schema_evolution: add_columns",
        delta_table_yaml(lake, "bronze", name)
    );
    let _ = writeln!(y, "{}", checkpoint_yaml(lake));
    y
}

/// Silver: a table of the retail model from its bronze table's new versions, MERGEd by key.
pub fn silver_yaml(name: &str, lake: &Lake, policy: &Path) -> String {
    let (from, model, key, version, explode) = match name {
        "orders" => ("orders", "orders", "[order_id]", Some("updated_at"), false),
        "order_lines" => (
            "orders",
            "orders",
            "[order_id, line_no]",
            Some("updated_at"),
            true,
        ),
        "customers" => (
            "customers",
            "customers",
            "[customer_id]",
            Some("updated_at"),
            false,
        ),
        "partners" => ("partners", "partners", "[partner_id]", None, false),
        _ => ("products", "products", "[product_id]", None, false),
    };
    let mut y = String::new();
    let _ = writeln!(
        y,
        "# silver.{name}: bronze.{from}'s new versions, typed, validated (failures to quarantine),\n# deduplicated by key through MERGE (the newest version wins)."
    );
    let _ = writeln!(y, "pipeline: silver_{name}");
    let _ = writeln!(
        y,
        "source:\n  delta:\n{}",
        delta_table_yaml(lake, "bronze", from)
    );
    let _ = writeln!(y, "transforms:");
    if from != "products" {
        // PII masked first: nothing unmasked is conformed, quarantined or written to silver.
        let _ = writeln!(
            y,
            "  - mask: {{ policy: {}, table: {from} }}",
            yaml_str(policy)
        );
    }
    let _ = writeln!(y, "  - conform: {{ model: {model} }}");
    if explode {
        let _ = writeln!(
            y,
            "  - explode: {{ column: lines, keep: [{}] }}",
            strata_silver::retail::ORDER_LINE_PARENT.join(", ")
        );
    }
    let version = version.map_or(String::new(), |v| format!(", version_column: {v}"));
    let _ = writeln!(
        y,
        "sink:\n  delta:\n{}\n    options:\n      schema_evolution: freeze\n      write: {{ type: merge, key: {key}{version} }}",
        delta_table_yaml(lake, "silver", name)
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
pub async fn check_gold(g: &strata_gold::Gold, m: &Manifest) -> Result<Vec<String>> {
    let q = |sql: &'static str| async move { g.query(sql).await.map_err(anyhow::Error::from) };
    let e = &m.expected;
    let orders = int(&q("SELECT COUNT(*) FROM silver_orders").await?, 0);
    let lines = int(&q("SELECT COUNT(*) FROM fact_order_line").await?, 0);
    let units = int(
        &q("SELECT CAST(SUM(quantity) AS BIGINT) FROM fact_order_line").await?,
        0,
    );
    let revenue = pairs(
        &q("SELECT currency, CAST(SUM(revenue) * 100 AS BIGINT) FROM daily_revenue GROUP BY currency")
            .await?,
    );
    let status = pairs(
        &q("SELECT status, CAST(SUM(orders) AS BIGINT) FROM orders_by_status GROUP BY status")
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

/// Rows in each gold table.
pub async fn gold_counts(g: &strata_gold::Gold) -> Result<Vec<(String, i64)>> {
    let mut out = Vec::new();
    for t in strata_gold::gold_tables() {
        let sql = format!("SELECT COUNT(*) FROM {t}");
        let b = g.query(&sql).await?;
        out.push((t.to_string(), int(&b, 0)));
    }
    Ok(out)
}

/// Bronze tables (one per entity file) and the silver tables built from them.
pub const BRONZE: &[&str] = &["partners", "customers", "products", "orders"];
/// The silver tables.
pub const SILVER: &[&str] = &["partners", "customers", "products", "orders", "order_lines"];

/// Write the medallion's pipeline files (`bronze_<name>.yaml`, `silver_<name>.yaml`), in the
/// order to run them.
pub fn scaffold(data: &Path, lake: &Lake, out: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out)?;
    let data = std::fs::canonicalize(data)?;
    let mut files = Vec::new();
    for name in BRONZE {
        let f = out.join(format!("bronze_{name}.yaml"));
        std::fs::write(&f, bronze_yaml(name, &data, lake))?;
        files.push(f);
    }
    // The privacy policy silver enforces, with its key in a file next to it (created once,
    // readable by the owner only): production mounts the key as a secret instead.
    let out = std::fs::canonicalize(out)?;
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
    let policy = out.join("privacy.yaml");
    std::fs::write(
        &policy,
        strata_privacy::RETAIL_POLICY_YAML.replace(
            "keys: { env: STRATA_MASKING_KEY }",
            "keys: { file: masking.key }",
        ),
    )?;
    files.push(policy.clone());
    for name in SILVER {
        let f = out.join(format!("silver_{name}.yaml"));
        std::fs::write(&f, silver_yaml(name, lake, &policy))?;
        files.push(f);
    }
    Ok(files)
}

fn rand_key() -> [u8; 32] {
    // A demo key, unique per scaffold (rand's OS-seeded CSPRNG); deployments mount their own.
    rand::random()
}
