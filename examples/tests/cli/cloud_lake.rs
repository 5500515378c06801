//! The whole medallion through the CLI on a cloud lake: `strata scaffold --lake s3://...`
//! (moto) and `--lake az://...` (Azurite), every bronze and silver pipeline run, one of them
//! killed with SIGKILL between its quarantine and data commits (S3) or after its data commit
//! (Azure) and rerun, then `strata gold` checked against the generator's manifest. Nothing is
//! written to local disk but the pipeline files. Needs `scripts/services.sh start`.

use std::path::Path;
use std::process::Command;
use stratalake_tests::cloud::{Cloud, Conn};

use super::common::{self, kill_when_paused};

const BIN: &str = env!("CARGO_BIN_EXE_strata");
const SECRET: &str = "strata-test-secret";

fn connection_yaml(cloud: Cloud) -> String {
    match cloud {
        Cloud::S3 => format!(
            "# moto: path-style, plain http, static keys (the secret from the environment)\ns3:\n  endpoint: {}\n  path_style: true\n  allow_http: true\n  credentials: {{ type: static, access_key_id: strata-test, secret_access_key: \"${{LAKE_SECRET}}\" }}\n",
            Cloud::s3_endpoint()
        ),
        Cloud::Azure => format!(
            "azure_blob:\n  endpoint: {}\n  credentials: {{ type: emulator }}\n",
            Cloud::azurite_endpoint()
        ),
    }
}

fn strata(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir).env("LAKE_SECRET", SECRET);
    c
}

fn ok(mut c: Command) -> String {
    let out = c.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{c:?}: {text}");
    assert!(!text.contains(SECRET), "the secret leaked: {text}");
    text
}

/// Rows of a Delta table of the lake, read back through stratalake-delta.
async fn rows(conn: &Conn, table: &str) -> usize {
    common::delta_batches(conn.delta_table(table))
        .await
        .iter()
        .map(stratalake_core::RecordBatch::num_rows)
        .sum()
}

async fn medallion_on(cloud: Cloud, kill: (&str, &str)) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The bucket or container is made by the CLI (`scaffold` sets the lake up).
    let conn = cloud.unmade("lake").with_prefix("retail");
    let name = conn.name();
    let scheme = match cloud {
        Cloud::S3 => "s3",
        Cloud::Azure => "az",
    };
    let lake = format!("{scheme}://{name}/retail");
    std::fs::write(d.join("lake.yaml"), connection_yaml(cloud)).unwrap();
    let mut c = strata(d);
    c.args(["generate", "--out", "data", "--scale", "0.004"]);
    ok(c);
    let mut c = strata(d);
    c.args(["scaffold", "--data", "data", "--lake", &lake])
        .args(["--lake-connection", "lake.yaml", "--out", "retail"]);
    ok(c);
    let project = std::fs::read_to_string(d.join("retail/strata.yaml")).unwrap();
    assert!(project.contains(&format!("lake: '{lake}'")), "{project}");
    for f in ["retail/strata.yaml", "retail/pipelines/bronze_orders.yaml"] {
        assert!(!std::fs::read_to_string(d.join(f)).unwrap().contains(SECRET));
    }
    // The killed node's build, then the whole project.
    let (killed, point) = kill;
    if killed.starts_with("silver.") {
        let mut c = strata(d);
        c.args(["build", "retail", "--select", "bronze.*"]);
        ok(c);
    }
    let mut c = strata(d);
    c.args(["build", "retail", "--select", killed]);
    kill_when_paused(c, point);
    let mut c = strata(d);
    c.args(["build", "retail"]);
    let built = ok(c);
    assert!(built.contains("gold.daily_revenue"), "{built}");
    // Nothing went to local disk: no `s3:` or `az:` directory, no lake directory.
    let local: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    let mut sorted = local.clone();
    sorted.sort();
    assert_eq!(sorted, ["data", "lake.yaml", "retail"], "{local:?}");

    let m: stratalake_datagen::Manifest =
        serde_json::from_slice(&std::fs::read(d.join("data/manifest.json")).unwrap()).unwrap();
    // Every row once, the killed pipeline's included: bronze holds each well-formed line, the
    // silver quarantine each bad order once.
    assert_eq!(
        rows(&conn, "bronze/orders").await as u64,
        m.well_formed_order_lines
    );
    assert_eq!(
        rows(&conn, "bronze/orders/_quarantine").await as u64,
        m.dirt.malformed_json_lines + m.dirt.type_drift_total_amount
    );
    assert_eq!(
        rows(&conn, "silver/orders/_quarantine").await as u64,
        m.dirt.null_customer_id + m.dirt.negative_quantity + m.dirt.unknown_currency
    );
    common::assert_gold_matches_manifest_by(&|| strata(d), Path::new("retail"), &m);
    // A second build builds nothing.
    let mut c = strata(d);
    c.args(["build", "retail"]);
    let again = ok(c);
    assert!(again.contains("nothing to do"), "{again}");
    // Maintenance works on the cloud table too.
    let mut c = strata(d);
    c.args(["compact", &format!("{lake}/bronze/orders")])
        .args(["--connection", "lake.yaml"]);
    ok(c);
    let mut c = strata(d);
    c.args(["vacuum", &format!("{lake}/bronze/orders"), "--dry-run"])
        .args(["--connection", "lake.yaml"]);
    ok(c);
    conn.delete_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_medallion_runs_on_s3_through_the_cli_with_a_kill_between_quarantine_and_data() {
    medallion_on(
        Cloud::S3,
        ("silver.orders", "delta.sink.after_quarantine_commit"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_medallion_runs_on_azure_through_the_cli_with_a_kill_after_a_commit() {
    medallion_on(Cloud::Azure, ("bronze.orders", "delta.sink.after_commit")).await;
}

/// A cloud table without a connection, or of an unknown scheme, is refused when the file is
/// read: the error names the file, the line and the key.
#[test]
fn a_cloud_table_without_a_connection_is_refused_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (table, want) in [
        ("s3://retail-lake/bronze/orders", "needs a `connection`"),
        (
            "gs://retail-lake/bronze/orders",
            "unknown table scheme `gs://`",
        ),
    ] {
        let y = format!(
            "pipeline: p\nsource:\n  files:\n    root: data\n    format: ndjson\nsink:\n  delta:\n    table: {table}\ncheckpoint: memory\n"
        );
        std::fs::write(d.join("p.yaml"), y).unwrap();
        let out = strata(d).args(["run", "p.yaml"]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{err}");
        assert!(err.contains("p.yaml:8: `sink.delta.table`"), "{err}");
        assert!(err.contains(want), "{err}");
    }
}
