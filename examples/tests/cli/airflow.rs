//! Real Apache Airflow 3 (installed by `scripts/services.sh` into `.services/airflow`) running
//! the DAGs `strata airflow dag` writes: the retail project through `airflow dags test` to the
//! manifest's totals; a backfill of three logical dates, run twice (a file added to one day
//! between the passes), loading each day's rows once; and retries only for temporary failures.

use super::*;
use common::assert_gold_matches_manifest;
use std::collections::BTreeMap;

/// An Airflow home of its own (a copy of the migrated SQLite DB), so tests run side by side.
struct Airflow {
    home: PathBuf,
    venv: PathBuf,
}

impl Airflow {
    fn new(dir: &Path) -> Self {
        let venv = repo().join(".services/airflow");
        assert!(
            venv.join("bin/airflow").is_file() && venv.join("home/airflow.db").is_file(),
            "Apache Airflow is not installed in {}: run scripts/services.sh install",
            venv.display()
        );
        let home = dir.join("airflow-home");
        std::fs::create_dir_all(home.join("dags")).unwrap();
        std::fs::copy(venv.join("home/airflow.db"), home.join("airflow.db")).unwrap();
        Self { home, venv }
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(self.venv.join("bin").join(program));
        c.env("AIRFLOW_HOME", &self.home)
            .env("AIRFLOW__CORE__DAGS_FOLDER", self.home.join("dags"))
            .env("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
            .env(
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
                format!("sqlite:///{}", self.home.join("airflow.db").display()),
            )
            .env("PYTHONWARNINGS", "ignore")
            // The operator package as it is in the repository.
            .env("PYTHONPATH", repo().join("python/strata-airflow/src"));
        c
    }

    /// `strata airflow dag PROJECT` into the DAGs folder.
    fn write_dag(&self, project: &Path, name: &str) -> (PathBuf, String) {
        let text = strata(&[
            "airflow",
            "dag",
            &project.display().to_string(),
            "--strata",
            BIN,
        ]);
        let f = self.home.join("dags").join(format!("{name}.py"));
        std::fs::write(&f, &text).unwrap();
        (f, text)
    }

    /// The DAG in `file` run once per date in one Airflow process (`DAG.test`): per run, its
    /// state and each task's (state, try number).
    fn runs(&self, file: &Path, dates: &[&str]) -> Vec<serde_json::Value> {
        let out = self
            .cmd("python")
            .arg(repo().join("examples/tests/airflow/dag_test.py"))
            .arg(file)
            .args(dates)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "dag_test.py failed: {}\n{}",
            tail(&stdout),
            tail(&String::from_utf8_lossy(&out.stderr))
        );
        let runs: Vec<serde_json::Value> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("STRATA_RESULT "))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(runs.len(), dates.len(), "{}", tail(&stdout));
        runs
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[test]
fn airflow_dags_test_builds_the_retail_project_to_the_manifest_totals() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let m = generate(&data, 0.003, 0.02);
    let project = tmp.path().join("retail");
    scaffold(&data, &tmp.path().join("lake"), &project);
    let af = Airflow::new(tmp.path());
    let (file, text) = af.write_dag(&project, "retail");
    let tasks = text.matches("StrataOperator(task_id=").count();
    assert!(tasks >= 10, "a task per pipeline and model:\n{text}");
    assert!(text.contains("max_active_runs=1"), "{text}");
    assert!(text.contains("schedule=\"0 2 * * *\""), "{text}");
    let out = af
        .cmd("airflow")
        .args(["dags", "test", "retail", "2024-01-01", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "airflow dags test failed: {}\n{}",
        tail(&stdout),
        tail(&String::from_utf8_lossy(&out.stderr))
    );
    assert!(stdout.contains("state=success"), "{}", tail(&stdout));
    assert_gold_matches_manifest(&project, &m);
    // The history: one row per task, with Airflow's run id and logical date.
    let runs = query(
        &project,
        "SELECT node, run_id, CAST(logical_date AS VARCHAR) AS day, status FROM _runs",
    );
    assert_eq!(runs.len(), tasks, "{runs:?}");
    for r in &runs {
        assert!(r["run_id"].as_str().unwrap().starts_with("manual__"), "{r}");
        assert_eq!(r["day"], "2024-01-01", "{r}");
        assert_eq!(r["status"], "built", "{r}");
    }
}

/// A project whose pipeline reads `dt={{ ds }}/*.ndjson` into bronze, and a gold count per day.
pub(super) fn write_daily_project(
    dir: &Path,
    data: &Path,
    extra_yaml: &str,
    extra_pipelines: &[(&str, String)],
) {
    std::fs::create_dir_all(dir.join("pipelines")).unwrap();
    std::fs::create_dir_all(dir.join("models/gold")).unwrap();
    let mut pipelines = vec!["pipelines/events.yaml".to_string()];
    for (name, text) in extra_pipelines {
        std::fs::write(dir.join(format!("pipelines/{name}.yaml")), text).unwrap();
        pipelines.push(format!("pipelines/{name}.yaml"));
    }
    std::fs::write(
        dir.join("strata.yaml"),
        format!(
            "name: daily\nlake: lake\npipelines: [{}]\nschedule:\n  cron: \"@daily\"\n  start_date: 2024-01-01\n{extra_yaml}",
            pipelines.join(", ")
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("pipelines/events.yaml"),
        format!(
            "pipeline: events\nsource:\n  files:\n    root: '{}'\n    include: [\"dt={{{{ ds }}}}/*.ndjson\"]\n    format: ndjson\n    schema:\n      explicit:\n        - {{ name: id, type: utf8 }}\n        - {{ name: day, type: utf8 }}\n        - {{ name: amount, type: int64 }}\nsink:\n  delta:\n    lake_table: bronze.events\ncheckpoint: memory\n",
            data.display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("models/gold/per_day.sql"),
        "SELECT day, COUNT(*) AS n, COUNT(DISTINCT id) AS ids, SUM(amount) AS total FROM bronze.events GROUP BY day\n",
    )
    .unwrap();
}

pub(super) fn write_day(data: &Path, day: &str, part: usize, ids: std::ops::Range<usize>) {
    let dir = data.join(format!("dt={day}"));
    std::fs::create_dir_all(&dir).unwrap();
    let text: String = ids
        .map(|i| format!("{{\"id\": \"{day}-{i}\", \"day\": \"{day}\", \"amount\": {i}}}\n"))
        .collect();
    std::fs::write(dir.join(format!("part-{part}.ndjson")), text).unwrap();
}

#[test]
fn an_airflow_backfill_run_twice_loads_each_logical_date_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let days = ["2024-01-01", "2024-01-02", "2024-01-03"];
    for (i, d) in days.iter().enumerate() {
        write_day(&data, d, 0, 0..10 + i);
    }
    // A day outside the backfill: never loaded.
    write_day(&data, "2024-01-04", 0, 0..7);
    let project = tmp.path().join("daily");
    write_daily_project(&project, &data, "", &[]);
    let af = Airflow::new(tmp.path());
    let (file, _) = af.write_dag(&project, "daily");
    // The dates out of order, as a backfill after a gap may run them.
    let first = af.runs(&file, &["2024-01-02", "2024-01-01", "2024-01-03"]);
    for r in &first {
        assert_eq!(r["state"], "success", "{r}");
    }
    // Late data for one day between the passes: the second pass loads exactly that file.
    write_day(&data, "2024-01-02", 1, 100..104);
    let second = af.runs(&file, &days);
    for r in &second {
        assert_eq!(r["state"], "success", "{r}");
    }
    let got: BTreeMap<String, (i64, i64, i64)> =
        query(&project, "SELECT day, n, ids, total FROM gold.per_day")
            .iter()
            .map(|r| {
                (
                    r["day"].as_str().unwrap().to_string(),
                    (
                        r["n"].as_i64().unwrap(),
                        r["ids"].as_i64().unwrap(),
                        r["total"].as_i64().unwrap(),
                    ),
                )
            })
            .collect();
    let sum = |r: std::ops::Range<i64>| r.sum::<i64>();
    let want = BTreeMap::from([
        ("2024-01-01".to_string(), (10, 10, sum(0..10))),
        (
            "2024-01-02".to_string(),
            (15, 15, sum(0..11) + sum(100..104)),
        ),
        ("2024-01-03".to_string(), (12, 12, sum(0..12))),
    ]);
    assert_eq!(
        got, want,
        "each day's rows once, the late file once, 01-04 never"
    );
    // Each date's pipeline run is in the history with its logical date: built on the first
    // pass, up to date on the second (except the day that got a file).
    let hist: Vec<(String, String)> = query(
        &project,
        "SELECT CAST(logical_date AS VARCHAR) AS day, status FROM _runs WHERE node = 'bronze.events' ORDER BY started_at",
    )
    .iter()
    .map(|r| {
        (
            r["day"].as_str().unwrap().to_string(),
            r["status"].as_str().unwrap().to_string(),
        )
    })
    .collect();
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| ((*a).to_string(), (*b).to_string()))
            .collect()
    };
    assert_eq!(
        hist,
        pairs(&[
            ("2024-01-02", "built"),
            ("2024-01-01", "built"),
            ("2024-01-03", "built"),
            ("2024-01-01", "up_to_date"),
            ("2024-01-02", "built"),
            ("2024-01-03", "up_to_date"),
        ])
    );
}

#[test]
fn airflow_retries_a_node_only_when_strata_says_the_failure_is_temporary() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_day(&data, "2024-01-01", 0, 0..3);
    let project = tmp.path().join("daily");
    // A closed port: unavailable (exit 75, retried). A directory that does not exist: not
    // found (66, failed at once).
    let out = tmp.path().join("out");
    let unreachable = format!(
        "pipeline: unreachable\nsource:\n  rest:\n    base_url: \"http://127.0.0.1:9\"\n    path: /orders\n    http: {{ request_timeout_secs: 1, max_retries: 0 }}\n    schema:\n      explicit:\n        - {{ name: id, type: int64 }}\nsink:\n  parquet:\n    root: '{}'\ncheckpoint: memory\noptions:\n  max_attempts: 1\n",
        out.join("a").display()
    );
    let missing = format!(
        "pipeline: missing\nsource:\n  files:\n    root: '{}'\n    include: [\"*.ndjson\"]\n    format: ndjson\nsink:\n  parquet:\n    root: '{}'\ncheckpoint: memory\n",
        tmp.path().join("no-such-dir").display(),
        out.join("b").display()
    );
    write_daily_project(
        &project,
        &data,
        "  retries: 2\n  retry_delay_seconds: 1\n",
        &[("unreachable", unreachable), ("missing", missing)],
    );
    let af = Airflow::new(tmp.path());
    let (file, text) = af.write_dag(&project, "daily");
    assert!(text.contains("\"retries\": 2,"), "{text}");
    let run = &af.runs(&file, &["2024-01-01"])[0];
    assert_eq!(run["state"], "failed", "{run}");
    let task = |t: &str| {
        (
            run["tasks"][t]["state"].clone(),
            run["tasks"][t]["try_number"].clone(),
        )
    };
    assert_eq!(
        task("unreachable"),
        ("failed".into(), 3.into()),
        "a temporary failure is retried (2 retries): {run}"
    );
    assert_eq!(
        task("missing"),
        ("failed".into(), 1.into()),
        "a missing input is not retried: {run}"
    );
    assert_eq!(task("bronze.events"), ("success".into(), 1.into()), "{run}");
    let failed = query(
        &project,
        "SELECT node, error_kind FROM _runs WHERE status = 'failed' ORDER BY node, started_at",
    );
    let kinds: Vec<(String, String)> = failed
        .iter()
        .map(|r| {
            (
                r["node"].as_str().unwrap().to_string(),
                r["error_kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        kinds.iter().filter(|(n, _)| n == "unreachable").count(),
        3,
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("missing".to_string(), "NotFound".to_string())),
        "{kinds:?}"
    );
}
