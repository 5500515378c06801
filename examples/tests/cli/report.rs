//! The retail report in a real browser: `strata build` draws it after gold; headless Chromium
//! (Debian's, driven by puppeteer-core) opens it with no network, and the test fails on any
//! console error or request, checks that every chart drew its series, reads the numbers back
//! from the page and compares them with gold's.

use super::*;
use std::collections::BTreeMap;

/// `check.js` over `page`: what the browser drew and read.
fn open_in_chromium(page: &Path, shot: &Path) -> serde_json::Value {
    let modules = repo().join(".services/npm/node_modules");
    assert!(
        modules.join("puppeteer-core").is_dir() && Path::new("/usr/bin/chromium").exists(),
        "Chromium or puppeteer-core is not installed: run scripts/services.sh install"
    );
    let out = Command::new("node")
        .arg(repo().join("examples/tests/report/check.js"))
        .arg(page)
        .arg(shot)
        .env("NODE_PATH", &modules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "check.js: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn section<'a>(page: &'a serde_json::Value, title: &str) -> &'a serde_json::Value {
    page["data"]["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["title"] == title)
        .unwrap_or_else(|| panic!("no section {title}"))
}

/// A column of a section's rows, by name.
fn column(s: &serde_json::Value, name: &str) -> Vec<serde_json::Value> {
    let i = s["columns"]
        .as_array()
        .unwrap()
        .iter()
        .position(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no column {name}"));
    s["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[i].clone())
        .collect()
}

fn cents(v: &serde_json::Value) -> i64 {
    (v.as_f64().unwrap_or(0.0) * 100.0).round() as i64
}

#[test]
fn the_retail_report_draws_in_chromium_and_its_numbers_are_golds() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let m = generate(&data, 0.003, 0.02);
    let project = tmp.path().join("retail");
    scaffold(&data, &tmp.path().join("lake"), &project);
    let out = build(&project, &[]);
    assert!(out.contains("report.retail"), "the report is a node: {out}");
    let html = project.join("reports/retail.html");
    assert!(html.is_file(), "{out}");
    // A rebuild with nothing new leaves the report as it is.
    let again = build(&project, &[]);
    assert!(again.contains("nothing to do"), "{again}");
    let shot = tmp.path().join("report.png");
    let page = open_in_chromium(&html, &shot);
    assert_eq!(
        page["problems"],
        serde_json::json!([]),
        "console errors or requests"
    );
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 50_000,
        "a screenshot with content"
    );
    if let Ok(keep) = std::env::var("STRATA_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
    // Every chart drew: pixels inked, the series the data implies.
    let canvases = page["canvases"].as_array().unwrap();
    let charts = page["charts"].as_array().unwrap();
    assert_eq!(canvases.len(), charts.len());
    for c in canvases {
        assert!(c["inked"].as_u64().unwrap() > 1000, "an empty chart: {c}");
    }
    let currencies: BTreeMap<String, i64> = query(
        &project,
        "SELECT currency, CAST(SUM(revenue) * 100 AS BIGINT) AS cents FROM gold.daily_revenue GROUP BY currency",
    )
    .iter()
    .map(|r| (r["currency"].as_str().unwrap().to_string(), r["cents"].as_i64().unwrap()))
    .collect();
    let revenue_charts: Vec<&serde_json::Value> = charts
        .iter()
        .filter(|c| c["title"] == "Revenue over time")
        .collect();
    assert_eq!(
        revenue_charts.len(),
        currencies.len(),
        "one chart per currency"
    );
    for c in &revenue_charts {
        assert_eq!(
            c["datasets"], 3,
            "revenue, net revenue, its 7-day average: {c}"
        );
    }
    let statuses = query(
        &project,
        "SELECT COUNT(DISTINCT status) AS n FROM gold.orders_by_status",
    )[0]["n"]
        .as_u64()
        .unwrap();
    let mix = charts
        .iter()
        .find(|c| c["title"] == "Order status mix")
        .unwrap();
    assert_eq!(
        mix["datasets"].as_u64().unwrap(),
        statuses,
        "a series per status"
    );
    assert!(
        page["textWidths"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w.as_f64().unwrap() > 0.0),
        "text drawn with a font"
    );
    // The page's numbers are gold's: revenue per currency to the cent, orders per status, the
    // leaderboard's partners, and the manifest's order count.
    let s = section(&page, "Revenue over time");
    let mut by_currency: BTreeMap<String, i64> = BTreeMap::new();
    for (c, v) in column(s, "currency").iter().zip(column(s, "revenue")) {
        *by_currency
            .entry(c.as_str().unwrap().to_string())
            .or_default() += cents(&v);
    }
    assert_eq!(by_currency, currencies, "revenue per currency, to the cent");
    assert_eq!(
        by_currency, m.expected.revenue_cents_by_currency,
        "and as the generator's manifest has it"
    );
    let s = section(&page, "Order status mix");
    let orders: i64 = column(s, "orders")
        .iter()
        .map(|v| v.as_i64().unwrap())
        .sum();
    let gold_orders = query(
        &project,
        "SELECT CAST(SUM(orders) AS BIGINT) AS n FROM gold.orders_by_status",
    )[0]["n"]
        .as_i64()
        .unwrap();
    assert_eq!(orders, gold_orders);
    assert_eq!(
        orders as u64, m.expected.orders,
        "every valid order of the manifest, once"
    );
    let s = section(&page, "Partner leaderboard");
    let partners =
        query(&project, "SELECT COUNT(*) AS n FROM gold.partner_activity")[0]["n"].clone();
    assert_eq!(
        s["rows"].as_array().unwrap().len() as u64,
        partners.as_u64().unwrap()
    );
    let table = page["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["section"] == s["id"])
        .unwrap();
    assert_eq!(table["rows"], partners, "every partner in the table");
    // People's formatting: a currency symbol and thousands separators in the first row.
    let first = table["firstRow"].as_array().unwrap();
    assert!(
        first.iter().any(|c| {
            let t = c.as_str().unwrap();
            ["€", "£", "$", "kr", "CHF", "zł"]
                .iter()
                .any(|s| t.contains(s))
        }),
        "{first:?}"
    );
    // Sorting by a numeric column flips its order.
    let sorted = &page["sorted"];
    assert_ne!(sorted["first"], sorted["again"], "{sorted}");
    // Headline tiles: one per currency's net revenue, orders, customers.
    let tiles = page["tiles"].as_array().unwrap();
    assert_eq!(tiles.len(), currencies.len() + 2, "{tiles:?}");
    assert!(
        tiles
            .iter()
            .any(|t| t.as_str().unwrap().starts_with("Orders")),
        "{tiles:?}"
    );
    let q = section(&page, "Data quality and freshness");
    let nodes: Vec<String> = column(q, "node")
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(
        nodes.contains(&"silver.orders".to_string())
            && nodes.contains(&"gold.daily_revenue".to_string()),
        "{nodes:?}"
    );
}

#[test]
fn strata_report_writes_a_page_on_demand_and_names_a_wrong_column() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    super::airflow::write_day(&data, "2024-01-01", 0, 0..5);
    let project = tmp.path().join("daily");
    super::airflow::write_daily_project(&project, &data, "reports: [reports/days.yaml]\n", &[]);
    std::fs::create_dir_all(project.join("reports")).unwrap();
    let spec = "title: Days\nout: reports/days.html\nsections:\n  - title: Per day\n    sql: SELECT day, n, total FROM gold.per_day\n    chart: bar\n    x: day\n    y: [total]\n";
    std::fs::write(project.join("reports/days.yaml"), spec).unwrap();
    let p = project.display().to_string();
    let out = build(&project, &["--logical-date", "2024-01-01"]);
    assert!(out.contains("report.days"), "{out}");
    let page = std::fs::read_to_string(project.join("reports/days.html")).unwrap();
    assert!(
        page.contains("\"rows\":[[\"2024-01-01\",5,10]]"),
        "{}",
        &page[page.len() - 3000..]
    );
    let elsewhere = tmp.path().join("elsewhere.html");
    let said = strata(&["report", &p, "--out", &elsewhere.display().to_string()]);
    assert!(said.contains(&elsewhere.display().to_string()), "{said}");
    assert!(
        std::fs::read_to_string(&elsewhere)
            .unwrap()
            .contains("<title>Days</title>")
    );
    // A column the query does not return: the build fails naming the report, section and column.
    std::fs::write(
        project.join("reports/days.yaml"),
        spec.replace("y: [total]", "y: [amount]"),
    )
    .unwrap();
    let out = Command::new(BIN).args(["report", &p]).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("reports/days.yaml: section `Per day` names column `amount`, which its query does not return (it returns day, n, total)"),
        "{e}"
    );
}
