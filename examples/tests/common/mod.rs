//! Helpers the binary's end-to-end tests share.
#![allow(dead_code, reason = "each test binary uses some of the helpers")]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Every row of the Delta table at `loc` (its latest version), read through DeltaSource.
pub async fn delta_batches(loc: stratalake_delta::TableLocation) -> Vec<arrow_array::RecordBatch> {
    let src = stratalake_delta::DeltaSource::try_new(loc).await.unwrap();
    let ctx = stratalake_core::Context::new("scan");
    let request = stratalake_core::ReadRequest::after(None);
    let (batches, _) = stratalake_core::read_all(&src, &request, &ctx)
        .await
        .unwrap();
    batches
}

/// Start `cmd` with `STRATA_PAUSE_AT=point`, wait (up to two minutes) until it reports that
/// it paused there, then SIGKILL it. Fails the test when it never got there.
pub fn kill_when_paused(mut cmd: Command, point: &str) {
    let mut child = cmd
        .env("STRATA_PAUSE_AT", point)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let needle = format!("paused at {point}");
    let (tx, rx) = std::sync::mpsc::channel();
    // The reader ends when the killed child's stderr closes.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains(&needle) {
                let _ = tx.send(());
            }
        }
    });
    let reached = rx.recv_timeout(Duration::from_secs(120)).is_ok();
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(reached, "the process reached {point} (status {status})");
}

/// `strata query PROJECT SQL --json` run by `base` (the binary with its directory and
/// environment): one JSON object per row.
pub fn query_by(base: &dyn Fn() -> Command, project: &Path, sql: &str) -> Vec<serde_json::Value> {
    let out = base()
        .arg("query")
        .arg(project)
        .args([sql, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "strata query {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn strata() -> Command {
    Command::new(env!("CARGO_BIN_EXE_strata"))
}

/// [`query_by`] the plain binary.
pub fn query(project: &Path, sql: &str) -> Vec<serde_json::Value> {
    query_by(&strata, project, sql)
}

/// Gold's totals, read through `strata query`, against the generator's expectations
/// (computed by the generator as it wrote the data, independently of Strata).
pub fn assert_gold_matches_manifest(project: &Path, m: &stratalake_datagen::Manifest) {
    assert_gold_matches_manifest_by(&strata, project, m);
}

/// [`assert_gold_matches_manifest`], `strata` run by `base`.
pub fn assert_gold_matches_manifest_by(
    base: &dyn Fn() -> Command,
    project: &Path,
    m: &stratalake_datagen::Manifest,
) {
    let query = |p: &Path, sql: &str| query_by(base, p, sql);
    let one = |sql: &str| query(project, sql)[0]["n"].as_i64().unwrap();
    let e = &m.expected;
    assert_eq!(
        one("SELECT COUNT(*) AS n FROM silver.orders"),
        e.orders as i64
    );
    assert_eq!(
        one("SELECT COUNT(*) AS n FROM gold.fact_order_line"),
        e.order_lines as i64
    );
    assert_eq!(
        one("SELECT CAST(SUM(quantity) AS BIGINT) AS n FROM gold.fact_order_line"),
        e.units as i64
    );
    let revenue: BTreeMap<String, i64> = query(
        project,
        "SELECT currency AS k, CAST(SUM(revenue) * 100 AS BIGINT) AS n FROM gold.daily_revenue GROUP BY currency",
    )
    .iter()
    .map(|r| (r["k"].as_str().unwrap().to_string(), r["n"].as_i64().unwrap()))
    .collect();
    assert_eq!(
        revenue, e.revenue_cents_by_currency,
        "revenue by currency (cents)"
    );
    let status: BTreeMap<String, u64> = query(
        project,
        "SELECT status AS k, CAST(SUM(orders) AS BIGINT) AS n FROM gold.orders_by_status GROUP BY status",
    )
    .iter()
    .map(|r| (r["k"].as_str().unwrap().to_string(), r["n"].as_u64().unwrap()))
    .collect();
    assert_eq!(status, e.orders_by_status, "orders by status");
}
