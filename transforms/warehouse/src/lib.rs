#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

use arrow_array::cast::AsArray;
use arrow_array::{ArrayRef, BooleanArray, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use std::collections::BTreeMap;
use std::sync::Arc;
use stratalake_core::{
    BatchTransform, Context, Error, ErrorKind, InMemoryCheckpointStore, PipelineBuilder, Result,
};
use stratalake_delta::source::{CHANGE_TYPE, COMMIT_TIMESTAMP, COMMIT_VERSION};
use stratalake_delta::{DeltaSource, TableLocation};
use stratalake_snowflake::client::SnowflakeClient;
use stratalake_snowflake::config::SnowflakeConfig;
use stratalake_snowflake::ident;
use stratalake_snowflake::sink::{
    DeleteWhen, LoadMethod, SnowflakeSink, SnowflakeSinkConfig, WriteMode,
};

/// The column ordering versions of a synced row.
pub const SYNC_VERSION: &str = "_sync_version";

/// Change-feed rows into the sync's form: pre-images dropped, `_sync_version` added, the
/// commit columns dropped, `_change_type` kept (it selects the deletes and is not stored).
#[derive(Debug, Default)]
pub struct SyncPrep;

impl BatchTransform for SyncPrep {
    fn name(&self) -> &str {
        "sync_prep"
    }

    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        let mut fields: Vec<Field> = input
            .fields()
            .iter()
            .filter(|f| f.name() != COMMIT_VERSION && f.name() != COMMIT_TIMESTAMP)
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new(SYNC_VERSION, DataType::Int64, false));
        Ok(Arc::new(Schema::new(fields)))
    }

    fn apply(&self, batch: RecordBatch, _ctx: &Context) -> Result<RecordBatch> {
        let missing = |c: &str| {
            Error::new(
                ErrorKind::Schema,
                format!("sync: the input has no {c} column"),
            )
        };
        let ct = batch
            .column_by_name(CHANGE_TYPE)
            .ok_or_else(|| missing(CHANGE_TYPE))?
            .clone();
        let ct = ct.as_string::<i32>();
        let ver = batch
            .column_by_name(COMMIT_VERSION)
            .ok_or_else(|| missing(COMMIT_VERSION))?;
        let ver = arrow_cast::cast(ver, &DataType::Int64)
            .map_err(|e| Error::internal("sync").with_source(e))?;
        let ver = ver.as_primitive::<arrow_array::types::Int64Type>();
        let keep: BooleanArray = ct
            .iter()
            .map(|t| Some(t != Some("update_preimage")))
            .collect();
        let order: Int64Array = (0..batch.num_rows())
            .map(|i| Some(ver.value(i) * 2 + i64::from(ct.value(i) != "delete")))
            .collect();
        let schema = self.output_schema(&batch.schema())?;
        let mut cols: Vec<ArrayRef> = batch
            .schema()
            .fields()
            .iter()
            .zip(batch.columns())
            .filter(|(f, _)| f.name() != COMMIT_VERSION && f.name() != COMMIT_TIMESTAMP)
            .map(|(_, c)| c.clone())
            .collect();
        cols.push(Arc::new(order));
        let out = RecordBatch::try_new(schema, cols)
            .map_err(|e| Error::internal("sync").with_source(e))?;
        arrow_select::filter::filter_record_batch(&out, &keep)
            .map_err(|e| Error::internal("sync").with_source(e))
    }
}

/// What one sync did per table: the Delta version now in Snowflake and the rows written
/// (`None`: nothing new).
pub type SyncReport = BTreeMap<String, Option<(String, u64)>>;

/// Syncs gold tables into Snowflake (module docs).
#[derive(Debug, Clone)]
pub struct WarehouseSync {
    /// Each table's location and key.
    tables: BTreeMap<String, (TableLocation, Vec<String>)>,
    /// Every table of the model (the views are made only when all are synced).
    all: usize,
    views: Vec<ReportingView>,
    connection: SnowflakeConfig,
    target_file_size_megabytes: u64,
    load: LoadMethod,
}

impl WarehouseSync {
    /// Sync `tables` (a table's name to its location and key columns) into the connection's
    /// database and schema.
    ///
    /// # Errors
    /// Config for a table without a key (a sync merges by it).
    pub fn try_new(
        tables: BTreeMap<String, (TableLocation, Vec<String>)>,
        connection: SnowflakeConfig,
    ) -> Result<Self> {
        if let Some((t, _)) = tables.iter().find(|(_, (_, k))| k.is_empty()) {
            return Err(Error::config(format!(
                "sync: {t} has no key: give its model a `key:` (the columns that identify a row)"
            )));
        }
        Ok(Self {
            all: tables.len(),
            views: Vec::new(),
            tables,
            connection,
            target_file_size_megabytes: 64,
            load: LoadMethod::Copy,
        })
    }

    /// (Re)create these views after a sync of every table.
    #[must_use]
    pub fn with_views(mut self, views: Vec<ReportingView>) -> Self {
        self.views = views;
        self
    }

    /// The views a full sync (re)creates.
    pub fn views(&self) -> &[ReportingView] {
        &self.views
    }

    /// Parquet files of this size per upload, MB.
    #[must_use]
    pub fn with_target_file_size_megabytes(mut self, mb: u64) -> Self {
        self.target_file_size_megabytes = mb;
        self
    }

    /// Sync only these gold tables (the reporting views, which read several, are then left
    /// as they are).
    #[must_use]
    pub fn with_tables(mut self, tables: &[String]) -> Self {
        self.tables
            .retain(|name, _| tables.iter().any(|t| t == name));
        self
    }

    /// Load by COPY (default) or by bound inserts (slow; for comparison).
    #[must_use]
    pub fn with_load(mut self, load: LoadMethod) -> Self {
        self.load = load;
        self
    }

    /// The sink of one table, loading through the sync's session.
    fn sink(&self, table: &str, key: &[String], client: &SnowflakeClient) -> Result<SnowflakeSink> {
        let cfg = SnowflakeSinkConfig::new(self.connection.clone(), table)
            .with_write(WriteMode::Merge {
                key: key.to_vec(),
                version_column: Some(SYNC_VERSION.into()),
                delete_when: Some(DeleteWhen::new(CHANGE_TYPE, "delete")),
            })
            .with_target_file_size_megabytes(self.target_file_size_megabytes)
            .with_load(self.load.clone());
        Ok(SnowflakeSink::try_new(cfg)?.with_client(client.clone()))
    }

    /// Bring every gold table's Snowflake copy up to its latest Delta version, then (re)create
    /// the reporting views. One session serves every table.
    ///
    /// # Errors
    /// The first table's error (Delta, Snowflake), naming the table; tables synced before it
    /// stay synced.
    pub async fn run(&self) -> Result<SyncReport> {
        let client = SnowflakeClient::connect(self.connection.clone()).await?;
        let result = self.run_with(&client).await;
        // Logging out is courtesy (the server expires idle sessions): its failure must not
        // hide the sync's own result.
        if let Err(e) = client.close().await {
            tracing::warn!(error = %e.report(), "sync: closing the Snowflake session failed");
        }
        result
    }

    async fn run_with(&self, client: &SnowflakeClient) -> Result<SyncReport> {
        let mut report = SyncReport::new();
        for (name, (loc, key)) in &self.tables {
            let source = Arc::new(
                DeltaSource::try_new(loc.clone())
                    .await
                    .map_err(|e| e.with_context("gold_table", name))?,
            );
            let sink = Arc::new(self.sink(name, key, client)?);
            let pid = format!("strata-sync.{name}");
            // The sink's control table is authoritative: a fresh checkpoint store is
            // fast-forwarded to it.
            let p =
                PipelineBuilder::new(&pid, source, sink, Arc::new(InMemoryCheckpointStore::new()))
                    .with_batch_transform(Arc::new(SyncPrep))
                    .build()?;
            let r = p
                .run()
                .await
                .map_err(|e| e.with_context("gold_table", name))?;
            let synced = matches!(r.outcome, stratalake_core::RunOutcome::Committed);
            let version = match r.committed.as_ref().and_then(|m| m.cursor.as_ref()) {
                Some(c) => DeltaSource::cursor_version(c)?.to_string(),
                None => String::new(),
            };
            tracing::info!(table = %name, delta_version = %version, rows = r.rows_written, "sync: table synced");
            report.insert(name.clone(), synced.then_some((version, r.rows_written)));
        }
        if self.tables.len() < self.all {
            return Ok(report);
        }
        for v in &self.views {
            client
                .query(&format!(
                    "CREATE OR REPLACE VIEW {} AS {}",
                    ident(&v.name),
                    v.sql.trim().trim_end_matches(';')
                ))
                .await?;
        }
        Ok(report)
    }
}

/// A reporting view over synced tables, as Power BI reads them: its name, its SELECT
/// (Snowflake SQL) and the tables it reads (a project's `warehouse/<name>.sql`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReportingView {
    /// The view's name (`v_revenue_by_month`).
    pub name: String,
    /// Its SELECT.
    pub sql: String,
    /// The tables it reads (lower case).
    pub tables: Vec<String>,
}

impl ReportingView {
    /// View `name` defined by `sql`, reading `tables`.
    pub fn new(name: &str, sql: &str, tables: &[String]) -> Self {
        Self {
            name: name.to_string(),
            sql: sql.to_string(),
            tables: tables.to_vec(),
        }
    }
}

/// The DDL of a scheduled in-warehouse refresh: a STREAM on each of `tables`, and per
/// reporting view a TASK that, when a stream on its tables has data (a sync landed),
/// rematerialises the view into a `rpt_` table and consumes the streams by logging the change
/// counts into `rpt_refresh_log`. `schedule` is a five-field cron expression and a time zone
/// (`0 * * * * UTC`).
///
/// # Errors
/// Config when the schedule is not a valid cron expression with a time zone.
pub fn refresh_ddl(
    warehouse: &str,
    schedule: &str,
    tables: &[String],
    views: &[ReportingView],
) -> Result<String> {
    let (cron_part, tz) = schedule.trim().rsplit_once(' ').ok_or_else(|| {
        Error::config(format!(
            "sync: schedule {schedule:?} needs five cron fields and a time zone"
        ))
    })?;
    if cron_part.split_whitespace().count() != 5 {
        return Err(Error::config(format!(
            "sync: schedule {schedule:?} needs five cron fields (minute hour day month weekday) and a time zone"
        )));
    }
    // The cron crate reads seconds first: check the expression with a zero-second field.
    <cron::Schedule as std::str::FromStr>::from_str(&format!("0 {cron_part}")).map_err(|e| {
        Error::config(format!(
            "sync: schedule {schedule:?} is not a cron expression"
        ))
        .with_source(e)
    })?;
    let mut out = String::from(
        "-- Generated by strata: a scheduled refresh of the reporting tables, run by Snowflake.\n\
         CREATE TABLE IF NOT EXISTS RPT_REFRESH_LOG (SOURCE_TABLE VARCHAR, REFRESHED_AT TIMESTAMP_TZ, CHANGED_ROWS NUMBER);\n",
    );
    for t in tables {
        let up = t.to_uppercase();
        out.push_str(&format!(
            "CREATE STREAM IF NOT EXISTS {up}_STREAM ON TABLE {up};\n"
        ));
    }
    for v in views {
        let (view, tables) = (v.name.as_str(), &v.tables);
        let view_up = view.to_uppercase();
        let rpt = format!("RPT_{}", view_up.trim_start_matches("V_"));
        let task = format!("REFRESH_{rpt}");
        let when = tables
            .iter()
            .map(|t| format!("SYSTEM$STREAM_HAS_DATA('{}_STREAM')", t.to_uppercase()))
            .collect::<Vec<_>>()
            .join(" OR ");
        let consume = tables
            .iter()
            .map(|t| {
                let up = t.to_uppercase();
                format!("    INSERT INTO RPT_REFRESH_LOG SELECT '{up}', CURRENT_TIMESTAMP(), COUNT(*) FROM {up}_STREAM;\n")
            })
            .collect::<String>();
        out.push_str(&format!(
            "CREATE OR REPLACE TASK {task}\n  WAREHOUSE = {wh}\n  SCHEDULE = 'USING CRON {cron_part} {tz}'\n  WHEN {when}\nAS\nEXECUTE IMMEDIATE $$\nBEGIN\n    CREATE OR REPLACE TABLE {rpt} AS SELECT * FROM {view_up};\n{consume}END;\n$$;\nALTER TASK {task} RESUME;\n",
            wh = ident(warehouse),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two views over the tables below.
    fn views() -> Vec<ReportingView> {
        vec![
            ReportingView::new(
                "v_revenue_by_month",
                "SELECT DATE_TRUNC('MONTH', ORDER_DATE) AS MONTH, SUM(REVENUE) AS REVENUE FROM DAILY_REVENUE GROUP BY 1",
                &["daily_revenue".to_string()],
            ),
            ReportingView::new(
                "v_partner_scorecard",
                "SELECT a.PARTNER_ID, p.CITY FROM PARTNER_ACTIVITY a LEFT JOIN DIM_PARTNER p ON a.PARTNER_ID = p.PARTNER_ID",
                &["partner_activity".to_string(), "dim_partner".to_string()],
            ),
        ]
    }

    /// The retail project's gold tables, in the order its graph builds them.
    fn retail() -> Vec<String> {
        [
            "fact_order_line",
            "daily_revenue",
            "orders_by_status",
            "product_performance",
            "customer_activity",
            "partner_activity",
            "dim_customer",
            "dim_partner",
            "dim_product",
            "dim_date",
        ]
        .map(String::from)
        .to_vec()
    }
    use arrow_array::StringArray;

    #[test]
    fn sync_versions_order_deletes_before_reinserts() {
        let b = RecordBatch::try_from_iter(vec![
            (
                "k",
                Arc::new(Int64Array::from(vec![1, 1, 2, 3])) as ArrayRef,
            ),
            (
                CHANGE_TYPE,
                Arc::new(StringArray::from(vec![
                    "delete",
                    "insert",
                    "update_preimage",
                    "update_postimage",
                ])),
            ),
            (COMMIT_VERSION, Arc::new(Int64Array::from(vec![4, 4, 5, 5]))),
            (
                COMMIT_TIMESTAMP,
                Arc::new(
                    arrow_array::TimestampMillisecondArray::from(vec![0, 0, 0, 0])
                        .with_timezone("+00:00"),
                ),
            ),
        ])
        .unwrap();
        let out = SyncPrep.apply(b, &Context::new("t")).unwrap();
        let lines = arrow_cast::pretty::pretty_format_batches(&[out])
            .unwrap()
            .to_string();
        assert_eq!(
            lines,
            "+---+------------------+---------------+\n\
             | k | _change_type     | _sync_version |\n\
             +---+------------------+---------------+\n\
             | 1 | delete           | 8             |\n\
             | 1 | insert           | 9             |\n\
             | 3 | update_postimage | 11            |\n\
             +---+------------------+---------------+"
        );
    }

    /// The statements of a script (`;` at a line's end, outside `$$` blocks), comments dropped.
    fn statements(script: &str) -> Vec<String> {
        let (mut out, mut cur, mut block) = (Vec::new(), String::new(), false);
        for line in script.lines().filter(|l| !l.starts_with("--")) {
            block ^= line.matches("$$").count() % 2 == 1;
            cur.push_str(line);
            cur.push('\n');
            if !block && line.ends_with(';') {
                out.push(cur.trim().trim_end_matches(';').to_string());
                cur.clear();
            }
        }
        assert!(cur.trim().is_empty(), "an unterminated statement: {cur}");
        out
    }

    /// fakesnow runs no streams or tasks: each statement is read against Snowflake's
    /// documented form, its names, expressions and task body parsed by sqlparser's Snowflake
    /// dialect.
    #[test]
    fn every_refresh_statement_parses_as_snowflake_sql() {
        use stratalake_testkit::snowflake_sql::check;
        let ddl = refresh_ddl(
            "report wh",
            "30 6 * * 1-5 Europe/Berlin",
            &retail(),
            &views(),
        )
        .unwrap();
        let stmts = statements(&ddl);
        let mut tasks = 0;
        for sql in &stmts {
            let form = if sql.starts_with("CREATE TABLE ") {
                "{statement}"
            } else if sql.starts_with("CREATE STREAM ") {
                "CREATE STREAM IF NOT EXISTS {name} ON TABLE {name}"
            } else if sql.starts_with("CREATE OR REPLACE TASK ") {
                tasks += 1;
                assert!(
                    sql.contains("SCHEDULE = 'USING CRON 30 6 * * 1-5 Europe/Berlin'"),
                    "{sql}"
                );
                "CREATE OR REPLACE TASK {name} WAREHOUSE = {ident} SCHEDULE = {string} WHEN {expr} AS EXECUTE IMMEDIATE {block}"
            } else if sql.starts_with("ALTER TASK ") {
                "ALTER TASK {name} RESUME"
            } else {
                panic!("a statement of no known form: {sql}")
            };
            check(sql, form).unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(tasks, views().len());
        assert_eq!(
            stmts
                .iter()
                .filter(|s| s.starts_with("CREATE STREAM"))
                .count(),
            retail().len()
        );
    }

    #[test]
    fn refresh_ddl_snapshot() {
        let ddl = refresh_ddl("report_wh", "0 6 * * * Europe/Berlin", &retail(), &views()).unwrap();
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/snapshots/refresh_ddl.sql"
        );
        // `STRATA_BLESS=1 cargo test` rewrites the snapshot after an intended change.
        if std::env::var_os("STRATA_BLESS").is_some() {
            std::fs::write(path, &ddl).unwrap();
        }
        assert_eq!(ddl, std::fs::read_to_string(path).unwrap());
        let e = refresh_ddl("wh", "every hour", &retail(), &views()).unwrap_err();
        assert!(e.message().contains("five cron fields"), "{}", e.message());
        let e = refresh_ddl("wh", "61 * * * * UTC", &retail(), &views()).unwrap_err();
        assert!(
            e.message().contains("not a cron expression"),
            "{}",
            e.message()
        );
    }
}
