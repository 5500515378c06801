//! The retail medallion project (`strata scaffold`, `strata build`): bronze, silver and gold
//! Delta tables killed at each step of each layer, late records rebuilding exactly their
//! days, gold equal to the generator's manifest, and an incremental build equal to a full one.

use super::*;
use common::assert_gold_matches_manifest;

#[test]
fn each_medallion_layer_killed_at_each_step_reruns_to_the_manifest_totals() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let m = generate(&data, 0.005, 0.03);
    // Bronze: a fresh lake per kill point, the project's pipeline run on its own.
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
        let project = tmp.path().join(format!("retail-bronze-{i}"));
        scaffold(&data, &lake, &project);
        let p = project.join("pipelines/bronze_orders.yaml");
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
    // Silver and gold: one lake, each silver model killed once before it completes.
    let lake = tmp.path().join("lake");
    let project = tmp.path().join("retail");
    scaffold(&data, &lake, &project);
    build(&project, &["--select", "bronze.*"]);
    let kills = [
        ("partners", "runner.before_prepare"),
        ("customers", "delta.sink.after_commit"),
        ("products", "runner.before_checkpoint"),
        ("orders", "delta.sink.after_commit"),
        ("order_lines", "runner.before_prepare"),
    ];
    for (name, point) in kills {
        let sel = format!("silver.{name}");
        kill_build_at(&project, &["--select", &sel], point);
        build(&project, &["--select", &sel]);
    }
    assert_eq!(
        delta_rows(tmp.path(), &lake.join("silver/orders")),
        m.expected.orders,
        "silver orders: one row per valid order"
    );
    assert_eq!(
        delta_rows(tmp.path(), &lake.join("silver/orders/_quarantine")),
        m.dirt.null_customer_id + m.dirt.negative_quantity + m.dirt.unknown_currency,
        "silver orders' quarantine: every invalid order once"
    );
    // Gold killed after its first model, then finished by a rerun.
    kill_build_at(&project, &["--select", "gold.*"], "build.after_model");
    let out = build(&project, &["--select", "gold.*"]);
    assert!(out.contains("gold.fact_order_line"), "{out}");
    assert_gold_matches_manifest(&project, &m);
    // The report, downstream of gold, is drawn by the next whole build; then nothing is left:
    // nothing built, and the build says so.
    let whole = build(&project, &[]);
    assert!(
        whole.contains("report.retail") && whole.contains("1 built"),
        "{whole}"
    );
    let again = build(&project, &[]);
    assert!(again.contains("nothing to do"), "{again}");
}

#[test]
fn late_records_rebuild_only_their_days_and_incremental_equals_full() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let m = generate(&data, 0.005, 0.0);
    let lake = tmp.path().join("lake");
    let project = tmp.path().join("retail");
    scaffold(&data, &lake, &project);
    // SIGTERM while a gold model is being built: a clean stop (exit 130), nothing partial.
    let mut child = Command::new(BIN)
        .arg("build")
        .arg(&project)
        .env("STRATA_PAUSE_AT", "build.after_model")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Stderr is drained to the end by a thread (a full pipe would block the child's exit).
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("paused at build.after_model") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    assert!(
        rx.recv_timeout(Duration::from_secs(120)).is_ok(),
        "the build reached a gold model"
    );
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = child.wait().unwrap();
    let err = reader.join().unwrap();
    assert_eq!(
        status.code(),
        Some(130),
        "SIGTERM stops the build cleanly: {err}"
    );
    let first = build(&project, &[]);
    assert!(first.contains("rebuilt whole (new table)"), "{first}");
    assert_gold_matches_manifest(&project, &m);
    write_late_orders(&data);
    read_late_orders_too(&project);
    // Bronze and silver take the late records; gold is killed after its first model, then
    // the whole build finishes it.
    build(&project, &["--select", "bronze.*,silver.*"]);
    kill_build_at(&project, &["--select", "gold.*"], "build.after_model");
    let second = build(&project, &[]);
    let line = |name: &str| {
        second
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("{name} in {second}"))
            .to_string()
    };
    // Two order dates changed: order 5's day (its update) and the new order's day; one of
    // the gold models may have been committed before the kill (then it is up to date).
    for t in [
        "gold.daily_revenue",
        "gold.orders_by_status",
        "gold.fact_order_line",
    ] {
        let l = line(t);
        assert!(
            l.contains("2 partitions replaced") || l.contains("up to date"),
            "{l}"
        );
    }
    assert_eq!(
        delta_rows(tmp.path(), &lake.join("silver/orders")),
        m.expected.orders + 1,
        "the late update replaced order 5; the new order was added"
    );
    // Incremental equals full: every gold table, every row.
    let tables: Vec<String> = std::fs::read_dir(project.join("models/gold"))
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            p.file_stem().unwrap().to_string_lossy().to_string()
        })
        .collect();
    let snapshot = || -> Vec<(String, Vec<String>)> {
        tables
            .iter()
            .map(|t| {
                let mut rows: Vec<String> = query(&project, &format!("SELECT * FROM gold.{t}"))
                    .iter()
                    .map(|r| r.to_string())
                    .collect();
                rows.sort();
                (t.clone(), rows)
            })
            .collect()
    };
    let incremental = snapshot();
    let full = build(&project, &["--full-refresh", "--select", "gold.*"]);
    assert!(full.contains("rebuilt whole (--full-refresh)"), "{full}");
    let rebuilt = snapshot();
    for ((t, a), (_, b)) in incremental.iter().zip(&rebuilt) {
        assert!(!a.is_empty(), "{t} has rows");
        assert_eq!(a, b, "gold.{t}: incremental equals full refresh");
    }
}
