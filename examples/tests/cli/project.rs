//! A project of another shape, written as a new user would from the README: baskets with
//! camelCase fields, a nested shopper and nested items, its own dedup (the newest `rev` of a
//! basket wins) and business rule (void baskets do not count), its own gold aggregates. Its
//! totals are checked to the cent against values computed here from the same records, after
//! late updates (incremental) and after a full refresh. Also: the errors a project's author
//! meets (unknown table, cycle) name the file and line.

use super::*;
use std::collections::BTreeMap;

/// One basket version as the test writes it.
#[derive(Clone)]
struct Basket {
    basket: String,
    shopper: String,
    tier: &'static str,
    day: u32,
    rev: i64,
    state: &'static str,
    currency: &'static str,
    /// (sku, qty, price in cents)
    items: Vec<(String, i64, i64)>,
}

impl Basket {
    fn json(&self) -> String {
        let items: Vec<serde_json::Value> = self
            .items
            .iter()
            .map(|(s, q, p)| serde_json::json!({"sku": s, "qty": q, "priceCents": p}))
            .collect();
        serde_json::json!({
            "basketRef": self.basket,
            "shopper": {"id": self.shopper, "tier": self.tier},
            "placed": format!("2024-03-{:02}T10:{:02}:00Z", self.day, self.rev % 60),
            "rev": self.rev,
            "state": self.state,
            "currency": self.currency,
            "items": items,
        })
        .to_string()
    }
}

fn baskets(from: usize, n: usize, rev: i64) -> Vec<Basket> {
    (from..from + n)
        .map(|i| Basket {
            basket: format!("B-{i:05}"),
            shopper: format!("S-{}", i % 37),
            tier: ["gold", "silver", "bronze"][i % 3],
            day: 1 + (i % 9) as u32,
            rev,
            state: if i % 11 == 0 { "VOID" } else { "OK" },
            currency: if i % 4 == 0 { "GBP" } else { "EUR" },
            items: (0..1 + i % 3)
                .map(|k| {
                    (
                        format!("SKU-{}", (i + k) % 13),
                        1 + ((i + k) % 4) as i64,
                        99 + ((i * 7 + k) % 500) as i64,
                    )
                })
                .collect(),
        })
        .collect()
}

/// Gold's sales: (day, currency) to (baskets, cents).
type Sales = BTreeMap<(String, String), (i64, i64)>;

/// The expected gold, from the newest valid version of each basket: cents per (day,
/// currency) over OK baskets, and OK baskets per tier.
fn expected(all: &[Basket]) -> (Sales, BTreeMap<String, i64>) {
    let mut newest: BTreeMap<&str, &Basket> = BTreeMap::new();
    for b in all.iter().filter(|b| b.state == "OK" || b.state == "VOID") {
        if newest.get(b.basket.as_str()).is_none_or(|o| o.rev < b.rev) {
            newest.insert(&b.basket, b);
        }
    }
    let mut by_day = BTreeMap::new();
    let mut by_tier = BTreeMap::new();
    for b in newest.values().filter(|b| b.state == "OK") {
        let e = by_day
            .entry((format!("2024-03-{:02}", b.day), b.currency.to_string()))
            .or_insert((0, 0));
        e.0 += 1;
        e.1 += b.items.iter().map(|(_, q, p)| q * p).sum::<i64>();
        *by_tier.entry(b.tier.to_string()).or_insert(0) += 1;
    }
    (by_day, by_tier)
}

fn write_project(dir: &Path, data: &Path) {
    std::fs::create_dir_all(dir.join("pipelines")).unwrap();
    std::fs::create_dir_all(dir.join("models/silver")).unwrap();
    std::fs::create_dir_all(dir.join("models/gold")).unwrap();
    std::fs::write(
        dir.join("strata.yaml"),
        "name: baskets\nlake: lake\npipelines: [pipelines/baskets.yaml]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("pipelines/baskets.yaml"),
        format!(
            "pipeline: bronze_baskets\nsource:\n  files:\n    root: '{}'\n    include: [\"*.ndjson\"]\n    format: ndjson\nsink:\n  delta:\n    lake_table: bronze.baskets\ncheckpoint: memory\n",
            data.display()
        ),
    )
    .unwrap();
    let types = "  types:\n    - { name: basket_ref, type: utf8 }\n    - { name: shopper_id, type: utf8 }\n    - { name: tier, type: utf8 }\n    - { name: placed, type: timestamp }\n    - { name: rev, type: int64 }\n    - { name: state, type: utf8 }\n    - { name: currency, type: utf8 }\n    - { name: items, type: \"list<struct<sku: utf8, qty: int64, priceCents: int64>>\" }\n  rules:\n    - { column: state, check: { type: one_of, values: [OK, VOID] } }\n    - { column: \"items[].qty\", check: { type: min, value: 1 } }\n";
    let select = "SELECT \"basketRef\" AS basket_ref, shopper['id'] AS shopper_id, shopper['tier'] AS tier,\n       placed, rev, upper(state) AS state, currency, items\nFROM bronze.baskets\n";
    std::fs::write(
        dir.join("models/silver/baskets.sql"),
        format!("/*\nmaterialized: merge\nkey: [basket_ref]\nversion_column: rev\nconform:\n{types}*/\n{select}"),
    )
    .unwrap();
    std::fs::write(
        dir.join("models/silver/basket_items.sql"),
        format!("/*\nmaterialized: merge\nkey: [basket_ref, sku]\nversion_column: rev\nconform:\n{types}explode:\n  column: items\n  keep: [basket_ref, placed, rev, state, currency]\n*/\n{select}"),
    )
    .unwrap();
    std::fs::write(
        dir.join("models/gold/sales_by_day.sql"),
        // Items of a basket's current revision only: a revision that drops an item leaves
        // the old item's row (its key is never written again).
        "/*\nmaterialized: incremental\npartition_by: day\npartition_from:\n  silver.baskets: CAST(placed AS DATE)\n  silver.basket_items: CAST(placed AS DATE)\nkey: [day, currency]\n*/\nSELECT CAST(b.placed AS DATE) AS day, b.currency,\n       COUNT(DISTINCT b.basket_ref) AS baskets,\n       SUM(i.qty * i.\"priceCents\") AS cents\nFROM silver.baskets b\nJOIN silver.basket_items i ON i.basket_ref = b.basket_ref AND i.rev = b.rev\nWHERE b.state = 'OK'\nGROUP BY 1, 2\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("models/silver/basket_log.sql"),
        "/*\nmaterialized: append\ndescription: Every basket revision as it arrived.\n*/\nSELECT \"basketRef\" AS basket_ref, rev, upper(state) AS state FROM bronze.baskets\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("models/gold/tiers.sql"),
        "SELECT tier, COUNT(*) AS baskets FROM silver.baskets WHERE state = 'OK' GROUP BY tier\n",
    )
    .unwrap();
}

fn assert_gold(project: &Path, all: &[Basket]) {
    let (by_day, by_tier) = expected(all);
    let got: Sales = query(
        project,
        "SELECT CAST(day AS VARCHAR) AS day, currency, baskets, cents FROM gold.sales_by_day",
    )
    .iter()
    .map(|r| {
        (
            (
                r["day"].as_str().unwrap().to_string(),
                r["currency"].as_str().unwrap().to_string(),
            ),
            (r["baskets"].as_i64().unwrap(), r["cents"].as_i64().unwrap()),
        )
    })
    .collect();
    assert_eq!(got, by_day, "sales by day and currency, to the cent");
    let tiers: BTreeMap<String, i64> = query(project, "SELECT tier, baskets FROM gold.tiers")
        .iter()
        .map(|r| {
            (
                r["tier"].as_str().unwrap().to_string(),
                r["baskets"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(tiers, by_tier, "baskets per tier");
}

fn write_ndjson(path: &Path, rows: &[Basket], extra: &[&str]) {
    let mut text: String = rows.iter().map(|b| b.json() + "\n").collect();
    for e in extra {
        text.push_str(e);
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_project_of_another_shape_builds_its_own_silver_and_gold_to_the_cent() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let project = tmp.path().join("baskets");
    write_project(&project, &data);
    // 400 baskets, 30 of them again unchanged (duplicates), and one with an unknown state.
    let mut all = baskets(0, 400, 1);
    let dupes: Vec<Basket> = all[..30].to_vec();
    let mut bad = baskets(900, 1, 1);
    bad[0].state = "LOST";
    let mut first: Vec<Basket> = all.clone();
    first.extend(dupes);
    first.extend(bad.clone());
    write_ndjson(&data.join("a.ndjson"), &first, &[]);
    let out = build(&project, &[]);
    assert!(out.contains("silver.baskets"), "{out}");
    assert!(
        out.contains("1 quarantined"),
        "the unknown state is quarantined: {out}"
    );
    assert_gold(&project, &all);
    let log_rows = |p: &Path| {
        query(p, "SELECT COUNT(*) AS n FROM silver.basket_log")[0]["n"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(
        log_rows(&project),
        first.len() as i64,
        "append: every bronze row once"
    );
    let listing = strata(&["ls", &project.display().to_string()]);
    assert!(
        listing.contains("gold.sales_by_day") && listing.contains("incremental"),
        "{listing}"
    );
    let dag = strata(&["dag", &project.display().to_string()]);
    assert!(
        dag.contains("gold.sales_by_day (incremental) <- silver.baskets, silver.basket_items"),
        "{dag}"
    );
    // Late records: newer revisions of baskets on days 2 and 5 (one voided, one with other
    // items), and new baskets on day 5.
    let mut late = Vec::new();
    for b in all.iter().filter(|b| b.day == 2 || b.day == 5).take(6) {
        let mut n = b.clone();
        n.rev = 2;
        if late.len() % 2 == 0 {
            n.state = "VOID";
        } else {
            n.items = vec![("SKU-NEW".into(), 3, 1234)];
        }
        late.push(n);
    }
    let mut new = baskets(1000, 5, 1);
    for b in &mut new {
        b.day = 5;
    }
    late.extend(new);
    write_ndjson(&data.join("b.ndjson"), &late, &[]);
    all.extend(late.clone());
    let second = build(&project, &[]);
    let line = second
        .lines()
        .find(|l| l.contains("gold.sales_by_day"))
        .unwrap()
        .to_string();
    assert!(
        line.contains("partitions replaced"),
        "only changed days: {second}"
    );
    assert!(!line.contains("2024-03-01"), "day 1 did not change: {line}");
    assert_gold(&project, &all);
    let appended = (first.len() + late.len()) as i64;
    assert_eq!(
        log_rows(&project),
        appended,
        "append: the new rows added once"
    );
    let unchanged = build(&project, &[]);
    assert!(unchanged.contains("nothing to do"), "{unchanged}");
    // A full refresh of everything gives the same gold.
    let full = build(&project, &["--full-refresh"]);
    assert!(full.contains("rebuilt whole (--full-refresh)"), "{full}");
    assert_gold(&project, &all);
    assert_eq!(
        log_rows(&project),
        appended,
        "a full refresh of an append model replays it once"
    );
}

#[test]
fn a_project_with_an_unknown_table_or_a_cycle_names_the_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let project = tmp.path().join("p");
    write_project(&project, &data);
    let fail = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(78), "a config error: {out:?}");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let p = project.display().to_string();
    std::fs::write(
        project.join("models/gold/extra.sql"),
        "SELECT *\nFROM silver.basket_itemz\n",
    )
    .unwrap();
    let e = fail(&["build", &p]);
    assert!(
        e.contains("models/gold/extra.sql:2") && e.contains("silver.basket_itemz"),
        "{e}"
    );
    std::fs::write(
        project.join("models/gold/extra.sql"),
        "SELECT * FROM gold.loop\n",
    )
    .unwrap();
    std::fs::write(
        project.join("models/gold/loop.sql"),
        "SELECT *\nFROM gold.extra\n",
    )
    .unwrap();
    let e = fail(&["ls", &p]);
    assert!(
        e.contains("cycle") && e.contains("models/gold/loop.sql:2"),
        "{e}"
    );
    std::fs::write(
        project.join("models/gold/loop.sql"),
        "/*\nmaterialized: merge\n*/\nSELECT * FROM silver.baskets\n",
    )
    .unwrap();
    let e = fail(&["dag", &p]);
    assert!(
        e.contains("models/gold/loop.sql") && e.contains("key"),
        "{e}"
    );
}
