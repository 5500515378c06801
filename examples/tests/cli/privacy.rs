//! Privacy: no raw PII value anywhere downstream of bronze (silver, gold, quarantines,
//! Snowflake, logs and errors), with a positive control in bronze.

use super::snowflake::{fakesnow, fakesnow_yaml};
use super::*;

/// Every value of a Delta table (nested values as printed), read through DeltaSource.
async fn delta_cells(dir: &Path) -> Vec<String> {
    let loc = stratalake_delta::TableLocation::local(dir).unwrap();
    cells(&common::delta_batches(loc).await)
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
    let project = tmp.path().join("retail");
    scaffold(&data, &lake, &project);
    let mut logs = String::new();
    let mut run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(["--log", "info,stratalake_core=debug,stratalake_delta=debug,stratalake_silver=debug,stratalake_snowflake=debug,stratalake_gold=debug"])
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
    run(&["build", &project.display().to_string()]);
    let db = format!("PII_{}", std::process::id());
    let conn = tmp.path().join("snowflake.yaml");
    std::fs::write(&conn, fakesnow_yaml(&db)).unwrap();
    run(&[
        "sync-snowflake",
        &project.display().to_string(),
        "--connection",
        &conn.display().to_string(),
    ]);
    assert!(
        logs.contains("k-anonymity gold.dim_customer (city, country) k=5: holds"),
        "{logs}"
    );
    // A failing build's error message: the project pointed at a missing policy file.
    let project_file = project.join("strata.yaml");
    let good = std::fs::read_to_string(&project_file).unwrap();
    std::fs::write(
        &project_file,
        good.replace("privacy: privacy.yaml", "privacy: nope.yaml"),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["build", "--select", "silver.customers"])
        .arg(&project)
        .output()
        .unwrap();
    std::fs::write(&project_file, good).unwrap();
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
    // The expectations' results (failing keys and values) are downstream of bronze too.
    assert!(lake.join("_expectations").join("_delta_log").is_dir());
    tables.push(lake.join("_expectations"));
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
        let c = stratalake_snowflake::client::SnowflakeClient::connect(fakesnow(&db))
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
