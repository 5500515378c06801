//! Gold into Snowflake (fakesnow, scripts/services.sh): the project's gold models synced
//! incrementally, a killed sync rerun, the reporting views, the refresh DDL; classification
//! and governance from the project's privacy policy.

use super::*;

/// The gold models of the project in `project` (its `models/gold/*.sql`).
fn gold_tables(project: &Path) -> Vec<String> {
    let mut t: Vec<String> = std::fs::read_dir(project.join("models/gold"))
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .to_string()
        })
        .collect();
    t.sort();
    t
}

/// Every gold table's rows against its Snowflake copy (the gold columns, sorted).
async fn assert_snowflake_matches_gold(
    project: &Path,
    lake: &Path,
    db: &str,
) -> Vec<(String, usize)> {
    let c = stratalake_snowflake::client::SnowflakeClient::connect(fakesnow(db))
        .await
        .unwrap();
    let mut counts = Vec::new();
    for t in gold_tables(project) {
        let tables = std::collections::BTreeMap::from([(
            format!("gold.{t}"),
            stratalake_delta::TableLocation::local(lake.join("gold").join(&t)).unwrap(),
        )]);
        let gold = stratalake_gold::query(&tables, &format!("SELECT * FROM gold.{t}"))
            .await
            .unwrap();
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
        counts.push((t.clone(), a.len()));
    }
    counts
}

/// A Snowflake connection file's text for database `db` on the local fakesnow.
pub(crate) fn fakesnow_yaml(db: &str) -> String {
    format!(
        "account: fakesnow\nbase_url: http://127.0.0.1:8085\nuser: strata\nauth: {{ type: password, password: unused }}\ndatabase: {db}\nschema: GOLD\nmax_retries: 2\n"
    )
}

pub(crate) fn fakesnow(db: &str) -> stratalake_snowflake::config::SnowflakeConfig {
    serde_yaml_ng::from_str(&fakesnow_yaml(db)).unwrap()
}

#[test]
fn gold_syncs_to_snowflake_incrementally_and_a_killed_sync_reruns_to_the_same_tables() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    generate(&data, 0.005, 0.0);
    let lake = tmp.path().join("lake");
    let project = tmp.path().join("retail");
    scaffold(&data, &lake, &project);
    build(&project, &[]);
    let db = format!("SYNC_{}", std::process::id());
    let conn = tmp.path().join("snowflake.yaml");
    std::fs::write(
        &conn,
        "account: fakesnow\nbase_url: ${STRATA_TEST_SNOWFLAKE_URL}\nuser: strata\nauth: { type: password, password: unused }\ndatabase: DBNAME\nschema: GOLD\n"
            .replace("DBNAME", &db),
    )
    .unwrap();
    let lake_s = project.display().to_string();
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
    // stratalake-snowflake's `tests/sink.rs::a_commit_transaction_left_open_...` shows the rerun's
    // Conflict and its recovery once the transaction ends.)
    let mut cmd = Command::new(BIN);
    cmd.args(sync)
        .env("STRATA_TEST_SNOWFLAKE_URL", "http://127.0.0.1:8085");
    kill_when_paused(cmd, "snowflake.commit.after_commit");
    let first = run(&sync);
    let views = first
        .lines()
        .find(|l| l.starts_with("views: "))
        .unwrap_or_default();
    for v in [
        "v_revenue_by_month",
        "v_partner_scorecard",
        "v_product_ranking",
        "v_customer_segments",
    ] {
        assert!(views.contains(v), "{first}");
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let counts = rt.block_on(assert_snowflake_matches_gold(&project, &lake, &db));
    assert!(counts.iter().all(|(_, n)| *n > 0), "{counts:?}");
    // Nothing new: nothing synced.
    assert!(run(&sync).contains("snowflake is up to date"));
    // Late records rebuild two days in gold; the sync carries exactly the new versions.
    write_late_orders(&data);
    read_late_orders_too(&project);
    build(&project, &[]);
    let second = run(&sync);
    assert!(second.contains("fact_order_line: synced"), "{second}");
    assert!(second.contains("daily_revenue: synced"), "{second}");
    let after = rt.block_on(assert_snowflake_matches_gold(&project, &lake, &db));
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
        let c = stratalake_snowflake::client::SnowflakeClient::connect(fakesnow(&db))
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

#[test]
fn classify_reports_tags_and_governance_runs_against_snowflake() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    generate(&data, 0.001, 0.0);
    let project = tmp.path().join("retail");
    scaffold(&data, &tmp.path().join("lake"), &project);
    let out = strata(&[
        "classify",
        &project
            .join("pipelines/bronze_customers.yaml")
            .display()
            .to_string(),
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
        let c = stratalake_snowflake::client::SnowflakeClient::connect(fakesnow(&db))
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
    let policy = project.join("privacy.yaml").display().to_string();
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
