//! What operators look at: JSON log lines with the run id, no colour off a terminal, the
//! Prometheus metrics file (also after a failure), `strata status`, and `strata reset`.

use super::airflow::{write_daily_project, write_day};
use super::*;

fn run_strata(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_remove("NO_COLOR")
        .output()
        .unwrap()
}

/// `strata ARGS...`, which must succeed: its stdout.
fn ok(args: &[&str]) -> String {
    let out = run_strata(args);
    assert!(
        out.status.success(),
        "strata {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn metrics(path: &Path) -> Vec<prometheus_parse::Sample> {
    let text = std::fs::read_to_string(path).unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    assert!(!scrape.samples.is_empty(), "{text}");
    scrape.samples
}

fn value(samples: &[prometheus_parse::Sample], name: &str, pipeline: &str) -> f64 {
    let s = samples
        .iter()
        .find(|s| s.metric == name && s.labels.get("pipeline") == Some(pipeline))
        .unwrap_or_else(|| panic!("no {name}{{pipeline={pipeline}}}"));
    match s.value {
        prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Untyped(v) => v,
        _ => panic!("{name}: not a number"),
    }
}

#[test]
fn json_logs_metrics_and_status_tell_an_operator_what_ran() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_day(&data, "2024-01-01", 0, 0..5);
    write_day(&data, "2024-01-02", 0, 0..8);
    let project = tmp.path().join("daily");
    write_daily_project(&project, &data, "", &[]);
    let p = project.display().to_string();
    let prom = tmp.path().join("build.prom");
    let out = run_strata(&[
        "build",
        &p,
        "--logical-date",
        "2024-01-01",
        "--run-id",
        "op-1",
        "--log",
        "info",
        "--log-format",
        "json",
        "--metrics-file",
        &prom.display().to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 3, "{stderr}");
    for l in &lines {
        assert_eq!(l["run_id"], "op-1", "{l}");
        for key in ["time", "level", "target", "message", "fields"] {
            assert!(l.get(key).is_some(), "{key} missing: {l}");
        }
    }
    assert!(
        lines
            .iter()
            .any(|l| l["pipeline"] == "events.2024-01-01" && l["message"] == "committed"),
        "the runner's commit, with its pipeline: {stderr}"
    );
    // The metrics: one sample set per node, the rows the day had.
    let m = metrics(&prom);
    assert_eq!(value(&m, "strata_run_success", "bronze.events"), 1.0);
    assert_eq!(value(&m, "strata_run_success", "gold.per_day"), 1.0);
    assert_eq!(value(&m, "strata_run_rows_written", "bronze.events"), 5.0);
    assert_eq!(
        value(&m, "strata_component_received_rows_total", "bronze.events"),
        5.0
    );
    assert!(
        value(
            &m,
            "strata_component_busy_nanoseconds_total",
            "bronze.events"
        ) > 0.0
    );
    // Text logs off a terminal: no colour codes, the run id on every line.
    let out = run_strata(&[
        "build",
        &p,
        "--logical-date",
        "2024-01-02",
        "--run-id",
        "op-2",
        "--log",
        "info",
    ]);
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!stderr.contains('\u{1b}'), "{stderr}");
    assert!(
        !stderr.is_empty() && stderr.lines().all(|l| l.contains(" run=op-2 ")),
        "{stderr}"
    );
    // Status: both up to date; after a new day's load that gold has not seen, gold is stale.
    let status = |want_stale: &[&str]| {
        let rows: Vec<serde_json::Value> = ok(&["status", &p, "--json"])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let gold = rows.iter().find(|r| r["node"] == "gold.per_day").unwrap();
        assert_eq!(
            gold["stale_because"],
            serde_json::json!(want_stale),
            "{rows:?}"
        );
        let bronze = rows.iter().find(|r| r["node"] == "bronze.events").unwrap();
        assert_eq!(bronze["last_status"], "built", "{rows:?}");
        rows
    };
    status(&[]);
    write_day(&data, "2024-01-03", 0, 0..2);
    ok(&[
        "build",
        &p,
        "--logical-date",
        "2024-01-03",
        "--select",
        "bronze.events",
    ]);
    status(&["bronze.events"]);
    // `strata run` of a project's pipeline is in the history too, with its logical date.
    let events = project.join("pipelines/events.yaml").display().to_string();
    ok(&[
        "run",
        &events,
        "--logical-date",
        "2024-01-03",
        "--run-id",
        "op-3",
    ]);
    let rows = query(
        &project,
        "SELECT node, status, CAST(logical_date AS VARCHAR) AS day FROM _runs WHERE run_id = 'op-3'",
    );
    assert_eq!(
        rows,
        vec![
            serde_json::json!({"node": "bronze.events", "status": "up_to_date", "day": "2024-01-03"})
        ]
    );
    // A failed run writes its metrics file too, with success 0, and exits 66 (not found).
    let bad = tmp.path().join("missing.yaml");
    std::fs::write(
        &bad,
        format!(
            "pipeline: missing\nsource:\n  files:\n    root: '{}'\n    include: [\"*.ndjson\"]\n    format: ndjson\nsink:\n  parquet:\n    root: '{}'\ncheckpoint: memory\n",
            tmp.path().join("nowhere").display(),
            tmp.path().join("out").display()
        ),
    )
    .unwrap();
    let prom = tmp.path().join("run.prom");
    let out = run_strata(&[
        "run",
        &bad.display().to_string(),
        "--metrics-file",
        &prom.display().to_string(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(66),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(value(&metrics(&prom), "strata_run_success", "missing"), 0.0);
}

#[test]
fn reset_forgets_a_merge_sinks_position_drops_on_request_and_refuses_what_would_duplicate() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_day(&data, "2024-01-01", 0, 0..6);
    let project = tmp.path().join("daily");
    // Besides the day's append pipeline, a merge pipeline of the same files, keyed by id.
    let text = format!(
        "pipeline: merged\nsource:\n  files:\n    root: '{}'\n    include: [\"**/*.ndjson\"]\n    format: ndjson\nsink:\n  delta:\n    lake_table: bronze.merged\n    options:\n      write: {{ type: merge, key: [id] }}\ncheckpoint: memory\n",
        data.display()
    );
    write_daily_project(&project, &data, "", &[("merged", text)]);
    let p = project.display().to_string();
    let merged = project.join("pipelines/merged.yaml");
    let m = merged.display().to_string();
    let count = |table: &str| {
        query(
            &project,
            &format!("SELECT COUNT(*) AS n, COUNT(DISTINCT id) AS ids FROM {table}"),
        )[0]
        .clone()
    };
    ok(&["run", &m]);
    assert_eq!(
        count("bronze.merged"),
        serde_json::json!({"n": 6, "ids": 6})
    );
    // Without --yes and without a terminal: refused, nothing changes.
    let out = run_strata(&["reset", &m]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    let out = run_strata(&["run", &m, "--json"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("NothingNew"));
    // Forget: the next run reads every file again and merges: still one row per id.
    let said = ok(&["reset", &m, "--yes"]);
    assert!(said.contains("forgotten at epoch 2"), "{said}");
    let out = ok(&["run", &m, "--json"]);
    assert!(out.contains("\"rows_written\": 6"), "{out}");
    assert_eq!(
        count("bronze.merged"),
        serde_json::json!({"n": 6, "ids": 6})
    );
    // The append pipeline (one day): forgetting alone would load the day again, so it is
    // refused; --drop of one day of a partitioned pipeline too (it would empty every day).
    let events = project.join("pipelines/events.yaml").display().to_string();
    ok(&["build", &p, "--logical-date", "2024-01-01"]);
    let out = run_strata(&["reset", &events, "--yes", "--logical-date", "2024-01-01"]);
    assert_eq!(
        out.status.code(),
        Some(78),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--drop"));
    let out = run_strata(&[
        "reset",
        &events,
        "--yes",
        "--drop",
        "--logical-date",
        "2024-01-01",
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("every day's rows"));
    assert_eq!(
        count("bronze.events"),
        serde_json::json!({"n": 6, "ids": 6})
    );
    // --drop of the merge pipeline: empty, then a full reload, once.
    let said = ok(&["reset", &m, "--yes", "--drop"]);
    assert!(said.contains("emptied"), "{said}");
    assert_eq!(
        count("bronze.merged"),
        serde_json::json!({"n": 0, "ids": 0})
    );
    ok(&["run", &m]);
    ok(&["run", &m]);
    assert_eq!(
        count("bronze.merged"),
        serde_json::json!({"n": 6, "ids": 6})
    );
}

#[test]
fn a_build_killed_mid_node_leaves_history_that_the_rerun_completes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_day(&data, "2024-01-01", 0, 0..9);
    let project = tmp.path().join("daily");
    write_daily_project(&project, &data, "", &[]);
    let p = project.display().to_string();
    // Killed after the data commit, before the checkpoint: the table has the day, the history
    // has nothing of that run (SIGKILL leaves no time to write it).
    let mut cmd = Command::new(BIN);
    cmd.args([
        "build",
        &p,
        "--logical-date",
        "2024-01-01",
        "--run-id",
        "killed",
    ]);
    kill_when_paused(cmd, "runner.before_checkpoint");
    ok(&[
        "build",
        &p,
        "--logical-date",
        "2024-01-01",
        "--run-id",
        "rerun",
    ]);
    let rows = query(
        &project,
        "SELECT run_id, node, status, rows_read, rows_written, epoch FROM _runs ORDER BY started_at",
    );
    assert!(rows.iter().all(|r| r["run_id"] == "rerun"), "{rows:?}");
    let bronze = rows.iter().find(|r| r["node"] == "bronze.events").unwrap();
    // The rerun found the epoch committed (the sink holds the marker): nothing loaded twice.
    assert_eq!(bronze["status"], "up_to_date", "{bronze}");
    assert_eq!(bronze["epoch"], 1, "{bronze}");
    let gold = rows.iter().find(|r| r["node"] == "gold.per_day").unwrap();
    assert_eq!(gold["status"], "built", "{gold}");
    let n = query(&project, "SELECT n FROM gold.per_day")[0]["n"].clone();
    assert_eq!(n, 9);
}
