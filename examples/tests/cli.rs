//! The `strata` binary end to end: acceptance of `strata run`, bad config, and SIGKILL at every
//! commit step followed by a rerun that gives exactly the uninterrupted output.

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use strata_testkit::assert::sorted_rows;

mod common;
use common::kill_when_paused;

const BIN: &str = env!("CARGO_BIN_EXE_strata");

fn generate(dir: &Path, scale: f64, dirt: f64) -> strata_datagen::Manifest {
    let cfg = strata_datagen::GeneratorConfig::at_scale(scale).with_dirt_rate(dirt);
    strata_datagen::generate(&cfg, dir, &|_| {}).unwrap()
}

fn pipeline(dir: &Path, data: &Path, out: &Path) -> PathBuf {
    let mut y = format!(
        "pipeline: orders_bronze\nsource:\n  files:\n    root: '{}'\n    include: [\"orders.ndjson\"]\n    format: ndjson\n    split_size_megabytes: 1\n    schema:\n      explicit:\n",
        data.display()
    );
    for (c, t) in strata_datagen::orders_schema() {
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
    strata_files::read_parquet_dir(dir).unwrap()
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
fn read_late_orders_too(pipes: &Path) {
    let p = pipes.join("bronze_orders.yaml");
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
    let m: strata_datagen::Manifest =
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
    for (c, t) in strata_datagen::orders_schema() {
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

// ---- The medallion: bronze, silver and gold Delta tables, killed at each layer ----

fn strata(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "strata {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn scaffold(data: &Path, lake: &Path, pipes: &Path) {
    strata(&[
        "scaffold",
        "--data",
        &data.display().to_string(),
        "--lake",
        &lake.display().to_string(),
        "--out",
        &pipes.display().to_string(),
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

#[test]
fn each_medallion_layer_killed_at_each_step_reruns_to_the_manifest_totals() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let m = generate(&data, 0.005, 0.03);
    // Bronze: a fresh lake per kill point.
    // The data table's commit is the commit point: killed before it, the rerun commits the
    // epoch (the quarantine's replay is idempotent); after it, the rerun has nothing new.
    for (i, (point, want)) in [
        ("runner.before_prepare", "Committed"),
        ("delta.sink.after_quarantine_commit", "Committed"),
        ("delta.sink.after_commit", "NothingNew"),
        ("runner.before_checkpoint", "NothingNew"),
    ]
    .into_iter()
    .enumerate()
    {
        let lake = tmp.path().join(format!("lake-bronze-{i}"));
        let pipes = tmp.path().join(format!("pipes-bronze-{i}"));
        scaffold(&data, &lake, &pipes);
        let p = pipes.join("bronze_orders.yaml");
        kill_at(&p, point);
        let r = run_json(&p);
        assert_eq!(r["outcome"], want, "{point}: {r}");
        assert_eq!(
            delta_rows(tmp.path(), &lake.join("bronze/orders")),
            m.well_formed_order_lines,
            "bronze after SIGKILL at {point}: every well-formed line once"
        );
        assert_eq!(
            delta_rows(tmp.path(), &lake.join("bronze/orders/_quarantine")),
            m.dirt.malformed_json_lines + m.dirt.type_drift_total_amount,
            "bronze quarantine after SIGKILL at {point}: every bad line once"
        );
        assert_eq!(run_json(&p)["outcome"], "NothingNew", "{point}");
    }
    // Silver and gold: one lake, each pipeline killed once before it completes.
    let lake = tmp.path().join("lake");
    let pipes = tmp.path().join("pipes");
    scaffold(&data, &lake, &pipes);
    for name in ["partners", "customers", "products", "orders"] {
        run_json(&pipes.join(format!("bronze_{name}.yaml")));
    }
    let kills = [
        ("partners", "runner.before_prepare"),
        ("customers", "delta.sink.after_commit"),
        ("products", "runner.before_checkpoint"),
        ("orders", "delta.sink.after_commit"),
        ("order_lines", "runner.before_prepare"),
    ];
    for (name, point) in kills {
        let p = pipes.join(format!("silver_{name}.yaml"));
        kill_at(&p, point);
        run_json(&p);
    }
    assert_eq!(
        delta_rows(tmp.path(), &lake.join("silver/orders")),
        m.expected.orders,
        "silver orders: one row per valid order"
    );
    // Gold killed after its first table, then finished by a rerun.
    let mut gold = Command::new(BIN);
    gold.args(["gold", &lake.display().to_string()]);
    kill_when_paused(gold, "gold.after_table");
    let out = strata(&[
        "gold",
        &lake.display().to_string(),
        "--manifest",
        &data.join("manifest.json").display().to_string(),
    ]);
    assert!(out.contains("check: orders"), "{out}");
    // Up to date: nothing rebuilt.
    let again = strata(&["gold", &lake.display().to_string()]);
    assert!(again.contains("gold is up to date"), "{again}");
}

#[test]
fn late_records_rebuild_only_their_days_in_gold() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let m = generate(&data, 0.005, 0.0);
    let lake = tmp.path().join("lake");
    let pipes = tmp.path().join("pipes");
    scaffold(&data, &lake, &pipes);
    let medallion = |pipes: &Path| {
        for name in ["partners", "customers", "products", "orders"] {
            run_json(&pipes.join(format!("bronze_{name}.yaml")));
        }
        for name in ["partners", "customers", "products", "orders", "order_lines"] {
            run_json(&pipes.join(format!("silver_{name}.yaml")));
        }
        strata(&["gold", &lake.display().to_string()])
    };
    let first = medallion(&pipes);
    assert!(first.contains("fact_order_line: rebuilt"), "{first}");
    write_late_orders(&data);
    read_late_orders_too(&pipes);
    let second = medallion(&pipes);
    // Two order dates changed: order 5's day and the new order's day.
    assert!(
        second.contains("fact_order_line: 2 order dates rebuilt"),
        "{second}"
    );
    assert!(
        second.contains("daily_revenue: 2 order dates rebuilt"),
        "{second}"
    );
    assert!(second.contains("product_performance: rebuilt"), "{second}");
    assert_eq!(
        delta_rows(tmp.path(), &lake.join("silver/orders")),
        m.expected.orders + 1,
        "the late update replaced order 5; the new order was added"
    );
}

// ---- Gold into Snowflake (fakesnow, scripts/services.sh) ----

/// Every gold table's rows against its Snowflake copy (the gold columns, sorted).
async fn assert_snowflake_matches_gold(lake: &Path, db: &str) -> Vec<(String, usize)> {
    let g = strata_cli_medallion_gold(lake);
    let c = strata_snowflake::client::SnowflakeClient::connect(fakesnow(db))
        .await
        .unwrap();
    let mut counts = Vec::new();
    for t in strata_gold::gold_tables() {
        let gold = g.query(&format!("SELECT * FROM {t}")).await.unwrap();
        let cols: Vec<String> = gold[0]
            .schema()
            .fields()
            .iter()
            .map(|f| format!("\"{}\"", f.name().to_uppercase()))
            .collect();
        let sf = c
            .query(&format!(
                "SELECT {} FROM \"{}\"",
                cols.join(", "),
                t.to_uppercase()
            ))
            .await
            .unwrap();
        let (a, b) = (sorted_rows(&gold), sorted_rows(&sf.batches));
        assert_eq!(a.len(), b.len(), "{t}: row count");
        assert_eq!(a, b, "{t}: Snowflake holds gold's rows");
        counts.push((t.to_string(), a.len()));
    }
    counts
}

fn strata_cli_medallion_gold(lake: &Path) -> strata_gold::Gold {
    let root = lake.to_path_buf();
    let root2 = lake.to_path_buf();
    strata_gold::Gold::try_new(
        move |t| strata_delta::TableLocation::local(root.join("silver").join(t)),
        move |t| strata_delta::TableLocation::local(root2.join("gold").join(t)),
    )
    .unwrap()
}

/// A Snowflake connection file's text for database `db` on the local fakesnow.
fn fakesnow_yaml(db: &str) -> String {
    format!(
        "account: fakesnow\nbase_url: http://127.0.0.1:8085\nuser: strata\nauth: {{ type: password, password: unused }}\ndatabase: {db}\nschema: GOLD\nmax_retries: 2\n"
    )
}

fn fakesnow(db: &str) -> strata_snowflake::config::SnowflakeConfig {
    serde_yaml_ng::from_str(&fakesnow_yaml(db)).unwrap()
}

#[test]
fn gold_syncs_to_snowflake_incrementally_and_a_killed_sync_reruns_to_the_same_tables() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    generate(&data, 0.005, 0.0);
    let lake = tmp.path().join("lake");
    let pipes = tmp.path().join("pipes");
    scaffold(&data, &lake, &pipes);
    let medallion = |pipes: &Path| {
        for name in ["partners", "customers", "products", "orders"] {
            run_json(&pipes.join(format!("bronze_{name}.yaml")));
        }
        for name in ["partners", "customers", "products", "orders", "order_lines"] {
            run_json(&pipes.join(format!("silver_{name}.yaml")));
        }
        strata(&["gold", &lake.display().to_string()])
    };
    medallion(&pipes);
    let db = format!("SYNC_{}", std::process::id());
    let conn = tmp.path().join("snowflake.yaml");
    std::fs::write(
        &conn,
        "account: fakesnow\nbase_url: ${STRATA_TEST_SNOWFLAKE_URL}\nuser: strata\nauth: { type: password, password: unused }\ndatabase: DBNAME\nschema: GOLD\n"
            .replace("DBNAME", &db),
    )
    .unwrap();
    let lake_s = lake.display().to_string();
    let conn_s = conn.display().to_string();
    let sync = [
        "sync-snowflake",
        &lake_s,
        "--connection",
        &conn_s,
        "--target-file-size-megabytes",
        "1",
    ];
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .env("STRATA_TEST_SNOWFLAKE_URL", "http://127.0.0.1:8085")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "strata {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // Killed right after a commit. (A kill inside the commit transaction leaves it open in
    // its session, holding the pipeline's lock until the session expires, as on Snowflake:
    // strata-snowflake's `tests/sink.rs::a_commit_transaction_left_open_...` shows the rerun's
    // Conflict and its recovery once the transaction ends.)
    let mut cmd = Command::new(BIN);
    cmd.args(sync)
        .env("STRATA_TEST_SNOWFLAKE_URL", "http://127.0.0.1:8085");
    kill_when_paused(cmd, "snowflake.commit.after_commit");
    let first = run(&sync);
    assert!(first.contains("views: v_revenue_by_month"), "{first}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let counts = rt.block_on(assert_snowflake_matches_gold(&lake, &db));
    assert!(counts.iter().all(|(_, n)| *n > 0), "{counts:?}");
    // Nothing new: nothing synced.
    assert!(run(&sync).contains("snowflake is up to date"));
    // Late records rebuild two days in gold; the sync carries exactly the new versions.
    write_late_orders(&data);
    read_late_orders_too(&pipes);
    medallion(&pipes);
    let second = run(&sync);
    assert!(second.contains("fact_order_line: synced"), "{second}");
    assert!(second.contains("daily_revenue: synced"), "{second}");
    let after = rt.block_on(assert_snowflake_matches_gold(&lake, &db));
    let lines = |c: &[(String, usize)]| c.iter().find(|(t, _)| t == "fact_order_line").unwrap().1;
    assert!(
        lines(&after) > lines(&counts),
        "the new order's lines arrived"
    );
    // Only the change feed of the rebuilt days travelled, not the table.
    let changed: usize = second
        .lines()
        .find(|l| l.starts_with("fact_order_line: synced"))
        .and_then(|l| l.split('(').nth(1))
        .and_then(|l| l.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        changed * 5 < lines(&after),
        "{changed} change rows for {} lines: {second}",
        lines(&after)
    );
    // The views answer over the synced tables: revenue by month adds up to daily revenue.
    rt.block_on(async {
        let c = strata_snowflake::client::SnowflakeClient::connect(fakesnow(&db))
            .await
            .unwrap();
        let total = |sql: &str| {
            let c = c.clone();
            let sql = sql.to_string();
            async move {
                let r = c.query(&sql).await.unwrap();
                arrow_cast::display::ArrayFormatter::try_new(
                    r.batches[0].column(0).as_ref(),
                    &Default::default(),
                )
                .unwrap()
                .value(0)
                .to_string()
            }
        };
        assert_eq!(
            total("SELECT CAST(SUM(REVENUE) AS NUMBER(38,2)) FROM V_REVENUE_BY_MONTH").await,
            total("SELECT CAST(SUM(REVENUE) AS NUMBER(38,2)) FROM DAILY_REVENUE").await
        );
        assert!(
            c.query("SELECT * FROM V_CUSTOMER_SEGMENTS")
                .await
                .unwrap()
                .num_rows()
                > 0
        );
    });
    let ddl = strata(&[
        "sync-snowflake",
        &lake_s,
        "--emit-ddl",
        "--warehouse",
        "report_wh",
        "--schedule",
        "30 5 * * * UTC",
    ]);
    assert!(
        ddl.contains("CREATE OR REPLACE TASK REFRESH_RPT_REVENUE_BY_MONTH"),
        "{ddl}"
    );
    assert!(
        ddl.contains("SCHEDULE = 'USING CRON 30 5 * * * UTC'"),
        "{ddl}"
    );
}

// ---- Privacy: no raw PII downstream of bronze ----

/// Every value of a Delta table (nested values as printed), read through DeltaSource.
async fn delta_cells(dir: &Path) -> Vec<String> {
    use futures::StreamExt;
    use strata_core::Source;
    let src = strata_delta::DeltaSource::try_new(strata_delta::TableLocation::local(dir).unwrap())
        .await
        .unwrap();
    let ctx = strata_core::Context::new("scan");
    let plan = src
        .plan(&strata_core::ReadRequest::after(None), &ctx)
        .await
        .unwrap();
    let mut out = Vec::new();
    for s in &plan.splits {
        let mut st = src.read(s, &ctx).unwrap();
        while let Some(b) = st.next().await {
            out.extend(cells(&[b.unwrap()]));
        }
    }
    out
}

fn cells(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        for c in b.columns() {
            let f = arrow_cast::display::ArrayFormatter::try_new(c.as_ref(), &Default::default())
                .unwrap();
            out.extend((0..c.len()).map(|i| f.value(i).to_string()));
        }
    }
    out
}

fn delta_tables(root: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(root) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "_delta_log") {
                out.push(root.to_path_buf());
            } else {
                delta_tables(&p, out);
            }
        }
    }
}

/// The generator's raw personal values: (value, whole-cell only).
fn raw_pii(data: &Path) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut push = |v: &serde_json::Value, whole: bool| {
        if let Some(s) = v.as_str().filter(|s| s.len() >= 3) {
            out.push((s.to_string(), whole));
        }
    };
    for line in std::fs::read_to_string(data.join("customers.ndjson"))
        .unwrap()
        .lines()
    {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        for k in ["email", "phone", "card_number", "birth_date"] {
            push(&v[k], false);
        }
        push(&v["address"]["street"], false);
        for k in ["first_name", "last_name"] {
            push(&v[k], true);
        }
        push(&v["address"]["postal_code"], true);
    }
    for line in std::fs::read_to_string(data.join("partners.ndjson"))
        .unwrap()
        .lines()
    {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        for k in ["contact_email", "contact_phone", "iban"] {
            push(&v[k], false);
        }
    }
    for line in std::fs::read_to_string(data.join("orders.ndjson"))
        .unwrap()
        .lines()
        .take(3000)
    {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        push(&v["shipping_address"]["street"], false);
    }
    out.sort();
    out.dedup();
    out
}

fn leaks<'a>(pii: &'a [(String, bool)], cells: &[String]) -> Vec<&'a str> {
    let whole: std::collections::HashSet<&str> = cells.iter().map(String::as_str).collect();
    let text = cells.join("\n");
    pii.iter()
        .filter(|(v, w)| {
            if *w {
                whole.contains(v.as_str())
            } else {
                text.contains(v.as_str())
            }
        })
        .map(|(v, _)| v.as_str())
        .collect()
}

#[test]
fn no_raw_pii_value_appears_downstream_of_bronze() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    generate(&data, 0.003, 0.03);
    let lake = tmp.path().join("lake");
    let pipes = tmp.path().join("pipes");
    scaffold(&data, &lake, &pipes);
    let mut logs = String::new();
    let mut run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(["--log", "info,strata_core=debug,strata_delta=debug,strata_silver=debug,strata_snowflake=debug,strata_gold=debug"])
            .args(args)
            .output()
            .unwrap();
        logs.push_str(&String::from_utf8_lossy(&out.stdout));
        logs.push_str(&String::from_utf8_lossy(&out.stderr));
        assert!(
            out.status.success(),
            "strata {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for name in ["partners", "customers", "products", "orders"] {
        run(&[
            "run",
            "--json",
            &pipes
                .join(format!("bronze_{name}.yaml"))
                .display()
                .to_string(),
        ]);
    }
    for name in ["partners", "customers", "products", "orders", "order_lines"] {
        run(&[
            "run",
            "--json",
            &pipes
                .join(format!("silver_{name}.yaml"))
                .display()
                .to_string(),
        ]);
    }
    run(&[
        "gold",
        &lake.display().to_string(),
        "--privacy",
        &pipes.join("privacy.yaml").display().to_string(),
    ]);
    let db = format!("PII_{}", std::process::id());
    let conn = tmp.path().join("snowflake.yaml");
    std::fs::write(&conn, fakesnow_yaml(&db)).unwrap();
    run(&[
        "sync-snowflake",
        &lake.display().to_string(),
        "--connection",
        &conn.display().to_string(),
    ]);
    assert!(
        logs.contains("k-anonymity dim_customer (city, country) k=5: holds"),
        "{logs}"
    );
    // A failing run's error message: silver customers pointed at a missing key file.
    let policy = pipes.join("privacy.yaml");
    let broken = pipes.join("silver_customers_broken.yaml");
    std::fs::write(
        &broken,
        std::fs::read_to_string(pipes.join("silver_customers.yaml"))
            .unwrap()
            .replace(
                &policy.display().to_string(),
                &pipes.join("nope.yaml").display().to_string(),
            ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["run"])
        .arg(&broken)
        .output()
        .unwrap();
    assert!(!out.status.success());
    logs.push_str(&String::from_utf8_lossy(&out.stderr));

    let pii = raw_pii(&data);
    assert!(pii.len() > 1000, "{} raw values", pii.len());
    let mut tables = Vec::new();
    delta_tables(&lake.join("silver"), &mut tables);
    delta_tables(&lake.join("gold"), &mut tables);
    assert!(
        tables.iter().any(|t| t.ends_with("_quarantine")),
        "the scan covers quarantine tables: {tables:?}"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut scanned = 0;
    for t in &tables {
        let c = rt.block_on(delta_cells(t));
        scanned += c.len();
        let found = leaks(&pii, &c);
        assert!(
            found.is_empty(),
            "{}: raw PII {:?}",
            t.display(),
            &found[..found.len().min(5)]
        );
    }
    let sf_cells = rt.block_on(async {
        let c = strata_snowflake::client::SnowflakeClient::connect(fakesnow(&db))
            .await
            .unwrap();
        let t = c
            .query(&format!(
                "SELECT TABLE_NAME FROM {db}.INFORMATION_SCHEMA.TABLES WHERE TABLE_SCHEMA = 'GOLD'"
            ))
            .await
            .unwrap();
        let mut all = Vec::new();
        for name in cells(&t.batches) {
            all.extend(cells(
                &c.query(&format!("SELECT * FROM \"{name}\""))
                    .await
                    .unwrap()
                    .batches,
            ));
        }
        all
    });
    assert!(
        sf_cells.len() > 10_000,
        "{} Snowflake cells",
        sf_cells.len()
    );
    let found = leaks(&pii, &sf_cells);
    assert!(
        found.is_empty(),
        "Snowflake: raw PII {:?}",
        &found[..found.len().min(5)]
    );
    let long: Vec<(String, bool)> = pii.iter().filter(|(_, w)| !w).cloned().collect();
    let found = leaks(&long, &[logs.clone()]);
    assert!(
        found.is_empty(),
        "logs and errors: raw PII {:?}",
        &found[..found.len().min(5)]
    );
    assert!(
        logs.contains("nope.yaml"),
        "the failing run's error was captured"
    );
    assert!(scanned > 100_000, "{scanned} lake cells scanned");
    // Positive control: bronze does hold the raw values the scan looks for.
    let bronze = rt.block_on(delta_cells(&lake.join("bronze/customers")));
    assert!(
        !leaks(&pii, &bronze).is_empty(),
        "the scan finds raw values where they are"
    );
}

#[test]
fn classify_reports_tags_and_governance_runs_against_snowflake() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    generate(&data, 0.001, 0.0);
    let pipes = tmp.path().join("pipes");
    scaffold(&data, &tmp.path().join("lake"), &pipes);
    let out = strata(&[
        "classify",
        &pipes.join("bronze_customers.yaml").display().to_string(),
    ]);
    for (col, tag) in [
        ("email", "email"),
        ("card_number", "card_number"),
        ("birth_date", "date_of_birth"),
        ("address.street", "street_address"),
        ("phone", "phone"),
        ("first_name", "person_name"),
    ] {
        assert!(
            out.lines()
                .any(|l| l.split_whitespace().take(2).eq([col, tag])),
            "{col} -> {tag}: {out}"
        );
    }
    // The evidence is masked: no raw value of the sample is printed.
    let first = std::fs::read_to_string(data.join("customers.ndjson")).unwrap();
    let v: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    for k in ["email", "card_number", "phone"] {
        assert!(!out.contains(v[k].as_str().unwrap()), "{out}");
    }
    // Governance from the same policy, against fakesnow: it accepts the tag and rejects the
    // policies (its SQL parser has no MASKING/ROW ACCESS POLICY), and each is reported.
    let db = format!("GOV_{}", std::process::id());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = strata_snowflake::client::SnowflakeClient::connect(fakesnow(&db))
            .await
            .unwrap();
        c.query(&format!("CREATE DATABASE IF NOT EXISTS {db}"))
            .await
            .unwrap();
        c.query(&format!("CREATE SCHEMA IF NOT EXISTS {db}.GOLD"))
            .await
            .unwrap();
        c.query(&format!(
            "CREATE TABLE {db}.GOLD.CUSTOMERS (CUSTOMER_ID VARCHAR, EMAIL VARCHAR, BIRTH_DATE DATE)"
        ))
        .await
        .unwrap();
    });
    let conn = tmp.path().join("sf.yaml");
    std::fs::write(&conn, fakesnow_yaml(&db)).unwrap();
    let policy = pipes.join("privacy.yaml").display().to_string();
    let conn = conn.display().to_string();
    let printed = strata(&["governance", "--policy", &policy, "--connection", &conn]);
    assert!(
        printed.contains(
            "ALTER TABLE CUSTOMERS MODIFY COLUMN EMAIL SET MASKING POLICY STRATA_MASK_0;"
        ),
        "{printed}"
    );
    let applied = strata(&[
        "governance",
        "--policy",
        &policy,
        "--connection",
        &conn,
        "--apply",
        "--keep-going",
    ]);
    assert!(
        applied.contains("applied: CREATE TAG IF NOT EXISTS PII"),
        "{applied}"
    );
    assert!(
        applied.contains("rejected: CREATE OR REPLACE MASKING POLICY STRATA_MASK_0"),
        "{applied}"
    );
    let out = Command::new(BIN)
        .args([
            "governance",
            "--policy",
            &policy,
            "--connection",
            &conn,
            "--apply",
        ])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a rejected statement fails the command without --keep-going"
    );
}
