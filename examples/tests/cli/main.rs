//! The `strata` binary end to end, one test binary with a module per subject: `strata run`
//! acceptance, bad config, SIGKILL at every commit step (files, REST, MongoDB) here; the
//! medallion project, projects of other shapes, Snowflake and privacy in their modules.

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use stratalake_testkit::assert::sorted_rows;

#[path = "../common/mod.rs"]
mod common;
use common::{kill_when_paused, query};

mod adversarial;
mod airflow;
mod cloud;
mod cloud_lake;
mod docker;
mod expectations;
mod medallion;
mod operate;
mod privacy;
mod project;
mod report;
mod snowflake;

const BIN: &str = env!("CARGO_BIN_EXE_strata");

/// The repository's root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn generate(dir: &Path, scale: f64, dirt: f64) -> stratalake_datagen::Manifest {
    let cfg = stratalake_datagen::GeneratorConfig::at_scale(scale).with_dirt_rate(dirt);
    stratalake_datagen::generate(&cfg, dir, &|_| {}).unwrap()
}

fn pipeline(dir: &Path, data: &Path, out: &Path) -> PathBuf {
    let mut y = format!(
        "pipeline: orders_bronze\nsource:\n  files:\n    root: '{}'\n    include: [\"orders.ndjson\"]\n    format: ndjson\n    split_size_megabytes: 1\n    schema:\n      explicit:\n",
        data.display()
    );
    for (c, t) in stratalake_datagen::orders_schema() {
        y.push_str(&format!("        - {{ name: {c}, type: \"{t}\" }}\n"));
    }
    y.push_str(&format!(
        "sink:\n  parquet:\n    root: '{}'\n    target_file_size_megabytes: 1\ncheckpoint:\n  local:\n    dir: '{}'\noptions:\n  batch_size: 2000\n",
        out.join("orders").display(),
        out.join("checkpoints").display()
    ));
    let p = dir.join(format!(
        "pipeline-{}.yaml",
        out.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&p, y).unwrap();
    p
}

fn read_parquet_dir(dir: &Path) -> Vec<RecordBatch> {
    stratalake_files::read_parquet_dir(dir).unwrap()
}

fn rows(b: &[RecordBatch]) -> u64 {
    b.iter().map(|b| b.num_rows() as u64).sum()
}

fn run_json(p: &Path) -> serde_json::Value {
    let out = Command::new(BIN)
        .args(["run", "--json"])
        .arg(p)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "strata run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn strata_run_writes_well_formed_rows_and_quarantines_every_malformed_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let m = generate(&data, 0.02, 0.02);
    let out = tmp.path().join("out");
    let p = pipeline(tmp.path(), &data, &out);
    let report = run_json(&p);
    assert_eq!(report["outcome"], "Committed");
    assert_eq!(report["rows_written"], m.well_formed_order_lines);
    let written = read_parquet_dir(&out.join("orders"));
    assert_eq!(rows(&written), m.well_formed_order_lines);

    let q = read_parquet_dir(&out.join("orders/_quarantine"));
    let text = std::fs::read_to_string(data.join("orders.ndjson")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut quarantined = Vec::new();
    for b in &q {
        let (loc, pos, reason, raw) = (
            b.column(1).as_string::<i32>(),
            b.column(2).as_primitive::<arrow_array::types::UInt64Type>(),
            b.column(4).as_string::<i32>(),
            b.column(5).as_string::<i32>(),
        );
        for i in 0..b.num_rows() {
            assert!(loc.value(i).ends_with("orders.ndjson"));
            let line = pos.value(i);
            assert_eq!(
                raw.value(i),
                lines[line as usize - 1],
                "the raw text is the line itself"
            );
            assert!(!reason.value(i).is_empty());
            quarantined.push(line);
        }
    }
    quarantined.sort_unstable();
    for l in &m.malformed_line_numbers {
        assert!(
            quarantined.binary_search(l).is_ok(),
            "malformed line {l} is in the quarantine"
        );
    }
    assert_eq!(
        quarantined.len() as u64,
        m.dirt.malformed_json_lines + m.dirt.type_drift_total_amount
    );

    let again = run_json(&p);
    assert_eq!(again["outcome"], "NothingNew");
    assert_eq!(
        rows(&read_parquet_dir(&out.join("orders"))),
        m.well_formed_order_lines,
        "a second run commits nothing"
    );
}

#[test]
fn bad_config_names_the_file_line_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("bad.yaml");
    std::fs::write(&p, "pipeline: x\nsource:\n  files:\n    root: /tmp\n    format: ndjson\n    split_size_megabites: 3\nsink:\n  parquet:\n    root: /tmp/x\ncheckpoint: memory\n").unwrap();
    let out = Command::new(BIN).arg("run").arg(&p).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml:6") && err.contains("split_size_megabites"),
        "{err}"
    );
}

/// Start `strata run` paused at `point`, wait until it gets there, SIGKILL it.
fn kill_at(p: &Path, point: &str) {
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--quiet"]).arg(p);
    kill_when_paused(cmd, point);
}

/// A late file, `orders-late.ndjson`: order 5 again with a later update (now returned), and
/// a new order dated 2024-02-15, a day in the past.
fn write_late_orders(data: &Path) {
    let orders = std::fs::read_to_string(data.join("orders.ndjson")).unwrap();
    let o5 = orders
        .lines()
        .find(|l| l.contains("\"O-000000005\""))
        .unwrap();
    let mut v: serde_json::Value = serde_json::from_str(o5).unwrap();
    v["status"] = "returned".into();
    v["updated_at"] = "2030-01-01T00:00:00Z".into();
    let mut new = v.clone();
    new["order_id"] = "O-900000001".into();
    new["created_at"] = "2024-02-15T08:00:00Z".into();
    std::fs::write(data.join("orders-late.ndjson"), format!("{v}\n{new}\n")).unwrap();
}

/// The scaffolded bronze orders pipeline reads `orders*.ndjson` from now on.
fn read_late_orders_too(project: &Path) {
    let p = project.join("pipelines/bronze_orders.yaml");
    let y = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, y.replace("[\"orders.ndjson\"]", "[\"orders*.ndjson\"]")).unwrap();
}

fn snapshot(out: &Path) -> (Vec<String>, Vec<String>) {
    (
        sorted_rows(&read_parquet_dir(&out.join("orders"))),
        sorted_rows(&read_parquet_dir(&out.join("orders/_quarantine"))),
    )
}

#[test]
fn sigkill_at_each_step_then_rerun_gives_exactly_the_uninterrupted_output() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let m = generate(&data, 0.01, 0.02);
    let reference_out = tmp.path().join("reference");
    run_json(&pipeline(tmp.path(), &data, &reference_out));
    let reference = snapshot(&reference_out);
    assert_eq!(reference.0.len() as u64, m.well_formed_order_lines);
    // Quarantine rows carry the component/location/position/raw/reason: identical across runs.
    let points = [
        "runner.before_prepare",
        "runner.after_prepare",
        "files.sink.after_manifest",
        "files.sink.after_publish_file",
        "runner.after_commit",
        "runner.before_checkpoint",
    ];
    for point in points {
        let out = tmp.path().join(point.replace('.', "_"));
        let p = pipeline(tmp.path(), &data, &out);
        kill_at(&p, point);
        let r = run_json(&p);
        // Killed before the commit point: the rerun commits the epoch; after it (the manifest
        // is the commit point): the rerun finds it committed and has nothing new.
        let committed_before_kill = !point.starts_with("runner.before_prepare")
            && !point.starts_with("runner.after_prepare");
        let want = if committed_before_kill {
            "NothingNew"
        } else {
            "Committed"
        };
        assert_eq!(r["outcome"], want, "{point}: {r}");
        assert_eq!(
            snapshot(&out),
            reference,
            "after SIGKILL at {point} and a rerun the output equals the uninterrupted run"
        );
        assert_eq!(
            run_json(&p)["outcome"],
            "NothingNew",
            "{point}: a further run commits nothing"
        );
    }
    // Kills at arbitrary moments, too: fractions of the uninterrupted run's own time, each
    // checked to have hit a live process (a kill after the end would prove nothing).
    let started = Instant::now();
    run_json(&pipeline(tmp.path(), &data, &tmp.path().join("timing")));
    let whole = started.elapsed();
    let mut live = 0;
    for (i, fraction) in [0.1f64, 0.3, 0.5, 0.7].into_iter().enumerate() {
        let delay_ms = (whole.as_secs_f64() * fraction * 1000.0) as u64;
        let out = tmp.path().join(format!("timed-{i}"));
        let p = pipeline(tmp.path(), &data, &out);
        let mut child = Command::new(BIN)
            .args(["run", "--quiet"])
            .arg(&p)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        let mut finished = false;
        while start.elapsed() < Duration::from_millis(delay_ms) {
            if child.try_wait().unwrap().is_some() {
                finished = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if !finished && child.try_wait().unwrap().is_none() {
            live += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        run_json(&p);
        assert_eq!(
            snapshot(&out),
            reference,
            "after a SIGKILL at {delay_ms} ms and a rerun the output equals the uninterrupted run"
        );
    }
    assert!(
        live >= 2,
        "at least the early kills hit a running process ({live} of 4 did)"
    );
}

#[test]
fn strata_demo_checks_files_rest_and_mongodb_against_the_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["demo", "--scale", "0.005", "--out"])
        .arg(tmp.path())
        .arg("--mongodb-uri")
        .arg(
            std::env::var("STRATA_MONGODB_URI")
                .unwrap_or_else(|_| "mongodb://127.0.0.1:27017/?directConnection=true".into()),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "strata demo failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The demo itself fails unless both the file and the REST pipelines match the manifest.
    assert!(
        stdout.contains("3. check: orders rows = well-formed lines"),
        "{stdout}"
    );
    assert!(stdout.contains("6. REST:"), "{stdout}");
    assert!(
        stdout.contains("gold totals equal the generator manifest's expected totals exactly"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("7. MongoDB:").count(),
        2,
        "customers and partners through MongoDB (needs scripts/services.sh start): {stdout}"
    );
    let customers = read_parquet_dir(&tmp.path().join("lake/customers_mongodb"));
    assert_eq!(
        rows(&customers),
        read_parquet_dir(&tmp.path().join("lake/customers"))
            .iter()
            .map(|b| b.num_rows() as u64)
            .sum::<u64>(),
        "the same customers from the file and from MongoDB"
    );
    let m: stratalake_datagen::Manifest =
        serde_json::from_slice(&std::fs::read(tmp.path().join("data/manifest.json")).unwrap())
            .unwrap();
    let rest = read_parquet_dir(&tmp.path().join("lake/orders_rest"));
    assert_eq!(rows(&rest), m.well_formed_order_lines);
    assert_eq!(
        sorted_rows(&rest),
        sorted_rows(&read_parquet_dir(&tmp.path().join("lake/orders"))),
        "the API and the file give the same orders"
    );
}

/// `strata serve-api` on a free port, killed when dropped.
struct Api(std::process::Child, String);

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve_api(file: &Path) -> Api {
    let mut child = Command::new(BIN)
        .args(["serve-api", "--port", "0", "--file"])
        .arg(file)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_string();
    let base = url.split("/orders").next().unwrap().to_string();
    Api(child, base)
}

fn rest_pipeline(dir: &Path, base: &str, out: &Path) -> PathBuf {
    let mut y = format!(
        "pipeline: orders_rest\nsource:\n  rest:\n    base_url: {base}\n    path: /orders\n    params: {{ limit: \"500\" }}\n    records: $.data\n    paginator: {{ type: cursor, cursor_path: $.next_cursor, cursor_param: cursor }}\n    schema:\n      explicit:\n"
    );
    for (c, t) in stratalake_datagen::orders_schema() {
        y.push_str(&format!("        - {{ name: {c}, type: \"{t}\" }}\n"));
    }
    // Incremental by `updated_at`, so a rerun after a committed epoch finds nothing new.
    y.push_str("    incremental: { cursor_field: updated_at, param: updated_since, initial_value: \"2000-01-01T00:00:00Z\" }\n");
    y.push_str(&format!(
        "sink:\n  parquet:\n    root: '{}'\n    target_file_size_megabytes: 1\ncheckpoint:\n  local:\n    dir: '{}'\n",
        out.join("orders").display(),
        out.join("checkpoints").display()
    ));
    let p = dir.join(format!(
        "rest-{}.yaml",
        out.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&p, y).unwrap();
    p
}

#[test]
fn a_rest_load_killed_at_each_step_resumes_to_the_uninterrupted_output() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let m = generate(&data, 0.01, 0.02);
    let api = serve_api(&data.join("orders.ndjson"));
    let reference_out = tmp.path().join("reference");
    run_json(&rest_pipeline(tmp.path(), &api.1, &reference_out));
    let reference = snapshot(&reference_out);
    assert_eq!(reference.0.len() as u64, m.well_formed_order_lines);
    for point in [
        "runner.before_prepare",
        "files.sink.after_manifest",
        "runner.before_checkpoint",
    ] {
        let out = tmp.path().join(point.replace('.', "_"));
        let p = rest_pipeline(tmp.path(), &api.1, &out);
        kill_at(&p, point);
        run_json(&p);
        assert_eq!(
            snapshot(&out),
            reference,
            "REST after SIGKILL at {point} and a rerun"
        );
        assert_eq!(run_json(&p)["outcome"], "NothingNew", "{point}");
    }
}

// ---- MongoDB: change-stream CDC into an upsert sink, and incremental extracts, killed ----

const MONGO: &str = "mongodb://127.0.0.1:27017/?directConnection=true";

fn mongo_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// `(_id, a)` of every document of `db.coll`, by `_id`.
fn mongo_rows(rt: &tokio::runtime::Runtime, db: &str, coll: &str) -> Vec<(i64, i64)> {
    use bson::{Document, doc};
    rt.block_on(async {
        let c = mongodb::Client::with_uri_str(MONGO)
            .await
            .unwrap()
            .database(db)
            .collection::<Document>(coll);
        let mut cur = c.find(doc! {}).sort(doc! {"_id": 1}).await.unwrap();
        let mut out = Vec::new();
        while cur.advance().await.unwrap() {
            let d = cur.deserialize_current().unwrap();
            out.push((d.get_i64("_id").unwrap(), d.get_i64("a").unwrap()));
        }
        out
    })
}

/// Insert, update and delete some documents of `db.c` (round `k`).
fn mutate(rt: &tokio::runtime::Runtime, db: &str, k: i64) {
    use bson::{Document, doc};
    rt.block_on(async {
        let c = mongodb::Client::with_uri_str(MONGO)
            .await
            .unwrap_or_else(|e| panic!("MongoDB at {MONGO}: {e}; run scripts/services.sh start"))
            .database(db)
            .collection::<Document>("c");
        // Round k: 300 new documents, the first 40 + 10k updated (after them), 5 deleted;
        // `updated_at` always grows, as a high-water mark needs.
        let t =
            |offset: i64| bson::DateTime::from_millis(1_900_000_000_000 + k * 10_000_000 + offset);
        c.insert_many(
            (0..300).map(|i| doc! {"_id": k * 300 + i, "a": i, "updated_at": t(i * 1000)}),
        )
        .await
        .unwrap();
        c.update_many(
            doc! {"_id": {"$lt": 40 + k * 10}},
            doc! {"$inc": {"a": 1000}, "$set": {"updated_at": t(5_000_000)}},
        )
        .await
        .unwrap();
        c.delete_many(doc! {"_id": {"$gte": 100 + k * 5, "$lt": 105 + k * 5}})
            .await
            .unwrap();
    });
}

fn mongo_cdc_pipeline(dir: &Path, db: &str) -> PathBuf {
    let y = format!(
        "pipeline: replica\nsource:\n  mongodb:\n    uri: \"{MONGO}\"\n    database: {db}\n    collection: c\n    schema:\n      explicit:\n        - {{ name: _id, type: \"int64 not null\" }}\n        - {{ name: a, type: int64 }}\n    change_stream: {{ max_await_millis: 100 }}\ntransforms:\n  - select: {{ columns: [_id, a, _op] }}\nsink:\n  mongodb:\n    uri: \"{MONGO}\"\n    database: {db}\n    collection: replica\n    write: {{ type: upsert, key: [_id], delete_when: {{ column: _op, equals: delete }} }}\ncheckpoint:\n  local:\n    dir: '{}'\n",
        dir.join("cdc-checkpoints").display()
    );
    let p = dir.join("cdc.yaml");
    std::fs::write(&p, y).unwrap();
    p
}

#[test]
fn a_mongodb_cdc_replica_killed_at_each_step_converges_to_the_source_collection() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = mongo_rt();
    let db = format!("kill_cdc_{}", std::process::id());
    mutate(&rt, &db, 0);
    let p = mongo_cdc_pipeline(tmp.path(), &db);
    let r = run_json(&p);
    assert_eq!(r["rows_written"], 295, "the snapshot: {r}");
    assert_eq!(mongo_rows(&rt, &db, "replica"), mongo_rows(&rt, &db, "c"));
    for (k, point) in [
        "runner.before_prepare",
        "mongodb.commit.after_intent",
        "mongodb.commit.after_merge",
        "runner.before_checkpoint",
    ]
    .into_iter()
    .enumerate()
    {
        mutate(&rt, &db, k as i64 + 1);
        kill_at(&p, point);
        run_json(&p);
        assert_eq!(
            mongo_rows(&rt, &db, "replica"),
            mongo_rows(&rt, &db, "c"),
            "after SIGKILL at {point} and a rerun the replica equals the source"
        );
        assert_eq!(
            run_json(&p)["rows_written"],
            0,
            "{point}: no change is applied twice"
        );
    }
}

#[test]
fn a_mongodb_incremental_load_killed_at_each_step_reads_each_version_once() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = mongo_rt();
    let db = format!("kill_inc_{}", std::process::id());
    let out = tmp.path().join("out");
    let y = format!(
        "pipeline: inc\nsource:\n  mongodb:\n    uri: \"{MONGO}\"\n    database: {db}\n    collection: c\n    schema:\n      explicit:\n        - {{ name: _id, type: \"int64 not null\" }}\n        - {{ name: a, type: int64 }}\n        - {{ name: updated_at, type: timestamp }}\n    incremental: {{ field: updated_at }}\nsink:\n  parquet:\n    root: '{}'\ncheckpoint:\n  local:\n    dir: '{}'\n",
        out.join("c").display(),
        out.join("checkpoints").display()
    );
    let p = tmp.path().join("inc.yaml");
    std::fs::write(&p, y).unwrap();
    let mut expected = 0;
    for (k, point) in [
        "runner.before_prepare",
        "files.sink.after_manifest",
        "runner.before_checkpoint",
    ]
    .into_iter()
    .enumerate()
    {
        mutate(&rt, &db, k as i64);
        // New documents (round 0: less the 5 deleted before the first read), plus the updated
        // ones read again (a new `updated_at`); later deletes are invisible to a high-water
        // mark (that is what CDC is for).
        expected += if k == 0 { 295 } else { 300 + 40 + k * 10 };
        kill_at(&p, point);
        run_json(&p);
        let rows = sorted_rows(&read_parquet_dir(&out.join("c")));
        let mut unique = rows.clone();
        unique.dedup();
        assert_eq!(unique.len(), rows.len(), "{point}: no version read twice");
        assert_eq!(rows.len(), expected, "{point}: every version read once");
        assert_eq!(run_json(&p)["outcome"], "NothingNew", "{point}");
    }
}

// ---- Helpers the modules share ----

fn strata(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "strata {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `strata scaffold`: the retail project in `project`, its lake at `lake`.
fn scaffold(data: &Path, lake: &Path, project: &Path) {
    strata(&[
        "scaffold",
        "--data",
        &data.display().to_string(),
        "--lake",
        &lake.display().to_string(),
        "--out",
        &project.display().to_string(),
    ]);
}

/// Rows (and quarantined rows) of a Delta table, read through a `delta` source pipeline.
fn delta_rows(dir: &Path, table: &Path) -> u64 {
    let p = dir.join(format!("count-{}.yaml", rand_name()));
    std::fs::write(
        &p,
        format!(
            "pipeline: count\nsource:\n  delta:\n    table: '{}'\nsink:\n  parquet:\n    root: '{}'\ncheckpoint:\n  memory\n",
            table.display(),
            dir.join(format!("count-out-{}", rand_name())).display()
        ),
    )
    .unwrap();
    run_json(&p)["rows_written"].as_u64().unwrap()
}

fn rand_name() -> String {
    format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// `strata build PROJECT ARGS...`: its stdout (the test fails when it fails).
fn build(project: &Path, args: &[&str]) -> String {
    let p = project.display().to_string();
    let mut all = vec!["build", p.as_str()];
    all.extend_from_slice(args);
    strata(&all)
}

/// `strata build` paused at `point`, then SIGKILLed.
fn kill_build_at(project: &Path, args: &[&str], point: &str) {
    let mut cmd = Command::new(BIN);
    cmd.arg("build").arg(project).args(args);
    kill_when_paused(cmd, point);
}
