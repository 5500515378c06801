//! Expectations evaluated (see [`stratalake_core::expect`] for what they are):
//!
//! - [`ExpectTransform`]: the row rules of a pipeline or a `merge`/`append` model, on each
//!   batch as it streams to the sink: `warn` counts, `quarantine` sends the row to the
//!   table's quarantine with the rule, the column and the value, `fail` fails the epoch (so
//!   nothing of it is committed). Each predicate is planned once per run as a DataFusion
//!   physical expression and evaluated on every batch.
//! - [`evaluate`]: row rules over a table's new rows and table checks over the table as the
//!   build would leave it, as SQL in a DataFusion session (the `table` and `incremental`
//!   materialisations call it before their commit; `strata test` and the streaming models'
//!   after-commit checks call it on a committed table).
//! - [`ResultsTable`]: the `_expectations` Delta table of the lake, one row per rule per
//!   build, appended exactly once per table version.

use crate::model::df_err;
use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::{
    Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use stratalake_core::expect::{
    Action, Expectations, Outcome, ResultLog, RowRule, RuleResult, SAMPLE_LIMIT, TableTest,
};
use stratalake_core::{
    BatchStreamAdapter, Context, Error, ErrorKind, QuarantineRecord, Result, SendableBatchStream,
    StreamTransform,
};
use stratalake_delta::deltalake::datafusion::common::DFSchema;
use stratalake_delta::deltalake::datafusion::physical_plan::PhysicalExpr;
use stratalake_delta::deltalake::datafusion::prelude::{DataFrame, SessionContext};
use stratalake_delta::deltalake::kernel::Transaction;
use stratalake_delta::deltalake::kernel::transaction::CommitProperties;
use stratalake_delta::deltalake::protocol::SaveMode;
use stratalake_delta::{TableLocation, delta_err};

/// The error a `fail` rule gives: Data, naming the rule, the counts and the first failing
/// rows.
fn failed(table: &str, results: &[RuleResult]) -> Option<Error> {
    let r = results.iter().find(|r| r.outcome == Outcome::Fail)?;
    let mut e = Error::new(
        ErrorKind::Data,
        format!(
            "expectation `{}` ({}) failed: {} of {} rows{}; nothing of the table is committed",
            r.rule,
            r.kind,
            r.rows_failed,
            r.rows_checked,
            if r.sample.is_empty() {
                String::new()
            } else {
                format!(", first: {}", r.sample.join("; "))
            }
        ),
    )
    .with_context("table", table)
    .with_context("rule", &r.rule);
    if let Some(c) = &r.column {
        e = e.with_context("column", c);
    }
    Some(e)
}

/// A row's key (`order_id=o-7`), or its values when there is no key.
fn row_label(batch: &RecordBatch, key: &[String], i: usize, column: Option<&str>) -> String {
    row_label_of(batch, key, i, column, true)
}

/// [`row_label`]; without `values`, the key only (nothing when there is none).
fn row_label_of(
    batch: &RecordBatch,
    key: &[String],
    i: usize,
    column: Option<&str>,
    values: bool,
) -> String {
    let fmt = FormatOptions::default().with_null("null");
    let show = |name: &str| {
        let c = batch.column_by_name(name)?;
        let f = ArrayFormatter::try_new(c.as_ref(), &fmt).ok()?;
        Some(format!("{name}={}", f.value(i)))
    };
    let mut parts: Vec<String> = key.iter().filter_map(|k| show(k)).collect();
    if let Some(c) = column
        && !key.iter().any(|k| k == c)
        && let Some(v) = show(c)
    {
        parts.push(v);
    }
    if parts.is_empty() && values {
        parts = batch
            .schema()
            .fields()
            .iter()
            .take(4)
            .filter_map(|f| show(f.name()))
            .collect();
    }
    parts.join(" ")
}

/// A pipeline's or streaming model's row rules, applied to each batch on its way to the
/// sink. Results go to the [`ResultLog`] it was made with (reset at each attempt).
#[derive(Debug, Clone)]
pub struct ExpectTransform {
    table: String,
    rules: Vec<RowRule>,
    key: Vec<String>,
    log: ResultLog,
    values: bool,
}

#[derive(Debug)]
struct Planned {
    rules: Vec<(RowRule, Arc<dyn PhysicalExpr>)>,
    results: Vec<RuleResult>,
}

impl ExpectTransform {
    /// The rules `rules` of table `table` (quarantined and failing rows are named by `key`),
    /// results to `log`.
    pub fn new(table: &str, rules: Vec<RowRule>, key: Vec<String>, log: ResultLog) -> Self {
        Self {
            table: table.to_string(),
            rules,
            key,
            log,
            values: true,
        }
    }

    /// Whether results, errors and quarantine reasons may show the failing value (default
    /// yes). Off for rows not yet masked (bronze): failing rows are then named by their key
    /// only, and the value stays in the row's quarantine record (which is bronze's).
    #[must_use]
    pub fn with_values(mut self, values: bool) -> Self {
        self.values = values;
        self
    }

    fn plan(&self, schema: &SchemaRef) -> Result<Planned> {
        let ctx = SessionContext::new();
        let dfs = DFSchema::try_from(schema.as_ref().clone())
            .map_err(|e| Error::internal("cannot plan the expectations").with_source(e))?;
        let mut rules = Vec::new();
        for r in &self.rules {
            let bad = |e| {
                Error::new(
                    ErrorKind::Config,
                    "an expectation does not plan over the table's columns",
                )
                .with_context("table", &self.table)
                .with_context("rule", &r.info.name)
                .with_context("predicate", &r.passes)
                .with_source(e)
            };
            let expr = ctx.parse_sql_expr(&r.passes, &dfs).map_err(bad)?;
            let phys = ctx.create_physical_expr(expr, &dfs).map_err(bad)?;
            rules.push((r.clone(), phys));
        }
        let results = self
            .rules
            .iter()
            .map(|r| RuleResult::new(&r.info, 0, 0, Vec::new()))
            .collect();
        Ok(Planned { rules, results })
    }

    /// Check one batch: the rows kept, those to quarantine; counts into `p`.
    fn check(
        &self,
        p: &mut Planned,
        batch: &RecordBatch,
    ) -> Result<(RecordBatch, Vec<QuarantineRecord>)> {
        let n = batch.num_rows();
        // A change feed's pre-images and deletes are not rows of the table: not checked.
        let exempt: Option<Vec<bool>> = batch.column_by_name("_change_type").map(|ct| {
            ct.as_string::<i32>()
                .iter()
                .map(|v| !matches!(v, Some("insert" | "update_postimage") | None))
                .collect()
        });
        let checked = exempt
            .as_ref()
            .map_or(n, |e| e.iter().filter(|x| !**x).count()) as u64;
        let mut keep = vec![true; n];
        let mut why: Vec<Option<(usize, String)>> = vec![None; n];
        let fmt = FormatOptions::default().with_null("null");
        for (idx, (rule, phys)) in p.rules.iter().enumerate() {
            let v = phys
                .evaluate(batch)
                .and_then(|v| v.into_array(n))
                .map_err(|e| {
                    Error::new(
                        ErrorKind::Data,
                        "an expectation cannot be evaluated on a batch",
                    )
                    .with_context("table", &self.table)
                    .with_context("rule", &rule.info.name)
                    .with_source(e)
                })?;
            let Some(pass) = v.as_boolean_opt() else {
                return Err(
                    Error::config("an expectation's predicate is not true or false")
                        .with_context("table", &self.table)
                        .with_context("rule", &rule.info.name)
                        .with_context("type", v.data_type()),
                );
            };
            let res = &mut p.results[idx];
            res.rows_checked += checked;
            let col = rule
                .info
                .column
                .as_deref()
                .and_then(|c| batch.column_by_name(c));
            let shown = col.and_then(|c| ArrayFormatter::try_new(c.as_ref(), &fmt).ok());
            for i in 0..n {
                // False fails; NULL passes (as dbt: `not_null` is the rule for nulls).
                if pass.is_null(i) || pass.value(i) || exempt.as_ref().is_some_and(|e| e[i]) {
                    continue;
                }
                res.rows_failed += 1;
                if res.sample.len() < SAMPLE_LIMIT {
                    let column = rule.info.column.as_deref().filter(|_| self.values);
                    let label = row_label_of(batch, &self.key, i, column, self.values);
                    if !label.is_empty() {
                        res.sample.push(label);
                    }
                }
                if rule.info.action == Action::Quarantine && keep[i] {
                    keep[i] = false;
                    let value = shown
                        .as_ref()
                        .filter(|_| self.values)
                        .map(|s| s.value(i).to_string());
                    why[i] = Some((
                        idx,
                        match (&rule.info.column, value) {
                            (Some(c), Some(v)) => format!(
                                "expectation `{}` failed: column {c} value {v}",
                                rule.info.name
                            ),
                            _ => {
                                format!("expectation `{}` failed: {}", rule.info.name, rule.passes)
                            }
                        },
                    ));
                }
            }
            res.outcome =
                RuleResult::new(&rule.info, res.rows_checked, res.rows_failed, Vec::new()).outcome;
        }
        self.log.set(p.results.clone());
        if let Some(e) = failed(&self.table, &p.results) {
            return Err(e);
        }
        if keep.iter().all(|k| *k) {
            return Ok((batch.clone(), Vec::new()));
        }
        let mut rejected = Vec::new();
        for (i, w) in why.into_iter().enumerate() {
            if let Some((idx, reason)) = w {
                rejected.push(QuarantineRecord {
                    component: "transform:expect".into(),
                    location: format!("{} {}", self.table, row_label(batch, &self.key, i, None)),
                    position: None,
                    raw: stratalake_records::row_json(batch, i),
                    reason,
                    column: p.rules[idx].0.info.column.clone(),
                });
            }
        }
        let kept = arrow_select::filter::filter_record_batch(batch, &BooleanArray::from(keep))
            .map_err(|e| Error::internal("cannot filter the checked rows").with_source(e))?;
        Ok((kept, rejected))
    }
}

impl StreamTransform for ExpectTransform {
    fn name(&self) -> &str {
        "expect"
    }

    fn quarantines(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.info.action == Action::Quarantine)
    }

    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        // Planning here refuses a rule over a missing column before anything runs.
        self.plan(input)?;
        Ok(input.clone())
    }

    fn transform(&self, input: SendableBatchStream, ctx: &Context) -> Result<SendableBatchStream> {
        let schema = input.schema();
        let planned = Arc::new(std::sync::Mutex::new(self.plan(&schema)?));
        self.log.set(
            planned
                .lock()
                .map(|p| p.results.clone())
                .unwrap_or_default(),
        );
        let this = self.clone();
        let ctx = ctx.clone();
        let out = input.then(move |b| {
            let (this, ctx, planned) = (this.clone(), ctx.clone(), planned.clone());
            async move {
                let b = b?;
                let (kept, rejected) = {
                    let mut p = planned
                        .lock()
                        .map_err(|_| Error::internal("the expectations' counts were poisoned"))?;
                    this.check(&mut p, &b)?
                };
                if !rejected.is_empty() {
                    ctx.quarantine("transform:expect", rejected).await?;
                }
                Ok(kept)
            }
        });
        Ok(BatchStreamAdapter::boxed(schema, Box::pin(out)))
    }
}

async fn collect(df: DataFrame, table: &str, what: &'static str) -> Result<Vec<RecordBatch>> {
    df.collect().await.map_err(|e| {
        Error::new(ErrorKind::Data, what)
            .with_context("table", table)
            .with_source(e)
    })
}

async fn count(ctx: &SessionContext, sql: &str, table: &str) -> Result<u64> {
    let b = collect(
        ctx.sql(sql)
            .await
            .map_err(df_err("an expectation does not plan", table))?,
        table,
        "an expectation failed to run",
    )
    .await?;
    Ok(b.first()
        .filter(|b| b.num_rows() > 0)
        .and_then(|b| {
            b.column(0)
                .as_primitive_opt::<arrow_array::types::Int64Type>()
                .map(|c| c.value(0))
        })
        .unwrap_or(0)
        .max(0) as u64)
}

async fn sample(
    ctx: &SessionContext,
    sql: &str,
    table: &str,
    key: &[String],
    column: Option<&str>,
) -> Result<Vec<String>> {
    let b = collect(
        ctx.sql(&format!(
            "SELECT * FROM ({sql}) AS failing LIMIT {SAMPLE_LIMIT}"
        ))
        .await
        .map_err(df_err("an expectation does not plan", table))?,
        table,
        "an expectation failed to run",
    )
    .await?;
    Ok(b.iter()
        .flat_map(|b| (0..b.num_rows()).map(move |i| row_label(b, key, i, column)))
        .take(SAMPLE_LIMIT)
        .collect())
}

/// Evaluate `exp` in `ctx`, where `table` (`gold.daily_revenue`) is registered as the table
/// the build would leave and `new_rows` (a registered name) as the rows it adds (row rules
/// look at those only: the others passed when they were added). `previous_rows` is the row
/// count of the previous build, for `row_count_change`. Returns one result per rule; an
/// error when a rule with action `fail` failed (the results are in `log` either way).
///
/// # Errors
/// Data naming the rule when a `fail` rule failed; Config when a rule does not plan.
pub async fn evaluate(
    ctx: &SessionContext,
    table: &str,
    new_rows: &str,
    exp: &Expectations,
    key: &[String],
    previous_rows: Option<u64>,
    log: &ResultLog,
) -> Result<Vec<RuleResult>> {
    let mut results = Vec::new();
    if !exp.rows.is_empty() {
        let sums: Vec<String> = exp
            .rows
            .iter()
            .map(|r| {
                format!(
                    "CAST(sum(CASE WHEN NOT {} THEN 1 ELSE 0 END) AS BIGINT)",
                    r.passes
                )
            })
            .collect();
        let q = format!("SELECT count(*), {} FROM {new_rows}", sums.join(", "));
        let b = collect(
            ctx.sql(&q).await.map_err(df_err(
                "an expectation does not plan over the table's columns",
                table,
            ))?,
            table,
            "an expectation failed to run",
        )
        .await?;
        let b = b
            .first()
            .ok_or_else(|| Error::internal("an aggregate gave no row"))?;
        let int = |i: usize| {
            b.column(i)
                .as_primitive_opt::<arrow_array::types::Int64Type>()
                .filter(|c| !c.is_null(0))
                .map_or(0, |c| c.value(0).max(0) as u64)
        };
        let checked = int(0);
        for (i, r) in exp.rows.iter().enumerate() {
            let n = int(i + 1);
            let s = if n > 0 {
                sample(
                    ctx,
                    &format!("SELECT * FROM {new_rows} WHERE NOT {}", r.passes),
                    table,
                    key,
                    r.info.column.as_deref(),
                )
                .await?
            } else {
                Vec::new()
            };
            results.push(RuleResult::new(&r.info, checked, n, s));
        }
    }
    if !exp.tables.is_empty() {
        let rows = count(ctx, &format!("SELECT count(*) FROM {table}"), table).await?;
        for c in &exp.tables {
            let r = match &c.test {
                TableTest::FailingRows { sql } => {
                    let n = count(
                        ctx,
                        &format!("SELECT count(*) FROM ({sql}) AS failing"),
                        table,
                    )
                    .await?;
                    let s = if n > 0 {
                        sample(ctx, sql, table, &[], None).await?
                    } else {
                        Vec::new()
                    };
                    RuleResult::new(&c.info, rows, n, s)
                }
                TableTest::RowCountChange {
                    max_decrease_percent,
                    max_increase_percent,
                } => {
                    let bad = previous_rows.filter(|p| *p > 0).and_then(|p| {
                        let change = (rows as f64 - p as f64) / p as f64 * 100.0;
                        let fell = max_decrease_percent.is_some_and(|m| -change > m);
                        let grew = max_increase_percent.is_some_and(|m| change > m);
                        (fell || grew).then(|| format!("rows {p} -> {rows} ({change:+.1}%)"))
                    });
                    RuleResult::new(
                        &c.info,
                        rows,
                        u64::from(bad.is_some()),
                        bad.into_iter().collect(),
                    )
                }
                _ => {
                    return Err(Error::new(
                        ErrorKind::Unsupported,
                        "an unknown kind of table check",
                    ));
                }
            };
            results.push(r);
        }
    }
    log.extend(results.clone());
    match failed(table, &results) {
        Some(e) => Err(e),
        None => Ok(results),
    }
}

/// Check a committed table: `exp`'s row rules over all its rows and its table checks (the
/// `strata test` command, and a streaming model's checks after its commit). `others` are the
/// tables the checks read. `previous_version`: the version whose row count
/// `row_count_change` compares with.
///
/// # Errors
/// NotFound when the table is missing; as [`evaluate`].
#[allow(clippy::too_many_arguments)]
pub async fn check_table(
    name: &str,
    loc: &TableLocation,
    others: &BTreeMap<String, TableLocation>,
    exp: &Expectations,
    key: &[String],
    previous_version: Option<i64>,
    log: &ResultLog,
) -> Result<Vec<RuleResult>> {
    let t = loc.load().await?.ok_or_else(|| {
        Error::new(
            ErrorKind::NotFound,
            "the table is not built yet: build it first",
        )
        .with_context("table", name)
    })?;
    let layers = std::iter::once(name.to_string()).chain(others.keys().cloned());
    let ctx = crate::model::session(layers.map(|n| crate::model::layer(&n)));
    crate::model::register(&ctx, name, loc, &t).await?;
    for (n, l) in others {
        if n == name {
            continue;
        }
        let o = l.load().await?.ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                "a table an expectation reads is missing",
            )
            .with_context("table", name)
            .with_context("reads", n)
        })?;
        crate::model::register(&ctx, n, l, &o).await?;
    }
    let previous = match previous_version {
        Some(v) if v >= 0 => {
            let mut old = t.clone();
            old.load_version(u64::try_from(v).unwrap_or(0))
                .await
                .map_err(|e| delta_err(e, "cannot read the table's previous version", &loc.url))?;
            let c = crate::model::session([crate::model::layer(name)]);
            crate::model::register(&c, name, loc, &old).await?;
            Some(count(&c, &format!("SELECT count(*) FROM {name}"), name).await?)
        }
        _ => None,
    };
    evaluate(&ctx, name, name, exp, key, previous, log).await
}

/// What one row of `_expectations` says besides the rule's result.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ResultsOf {
    /// The build's (or test's) run id.
    pub run_id: String,
    /// `build` or `test`.
    pub phase: String,
    /// The table checked (`silver.orders`).
    pub table: String,
    /// The table's version the results are about (after a build's commit; none when the
    /// build failed).
    pub version: Option<i64>,
}

impl ResultsOf {
    /// Results of `table` in run `run_id` of `phase`, about `version`.
    pub fn new(run_id: &str, phase: &str, table: &str, version: Option<i64>) -> Self {
        Self {
            run_id: run_id.to_string(),
            phase: phase.to_string(),
            table: table.to_string(),
            version,
        }
    }
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new(
            "checked_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("phase", DataType::Utf8, false),
        Field::new("model", DataType::Utf8, false),
        Field::new("table_version", DataType::Int64, true),
        Field::new("rule", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("column", DataType::Utf8, true),
        Field::new("action", DataType::Utf8, false),
        Field::new("severity", DataType::Utf8, false),
        Field::new("rows_checked", DataType::Int64, false),
        Field::new("rows_failed", DataType::Int64, false),
        Field::new(
            "failing_sample",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            false,
        ),
        Field::new("outcome", DataType::Utf8, false),
    ]))
});

/// The `_expectations` table: one row per rule per build or test.
#[derive(Debug, Clone)]
pub struct ResultsTable {
    loc: TableLocation,
}

fn app_id(table: &str) -> String {
    format!("strata-expectations/{table}")
}

impl ResultsTable {
    /// The table at `loc`.
    pub fn new(loc: TableLocation) -> Self {
        Self { loc }
    }

    /// Its schema.
    pub fn schema() -> SchemaRef {
        SCHEMA.clone()
    }

    /// Where it is.
    pub fn location(&self) -> &TableLocation {
        &self.loc
    }

    /// The results as rows.
    ///
    /// # Errors
    /// Internal when the batch cannot be made.
    pub fn batch(of: &ResultsOf, results: &[RuleResult]) -> Result<RecordBatch> {
        let n = results.len();
        let now = chrono::Utc::now().timestamp_micros();
        let text = |f: &dyn Fn(&RuleResult) -> String| -> ArrayRef {
            Arc::new(results.iter().map(|r| Some(f(r))).collect::<StringArray>())
        };
        let mut sample = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new(
            "item",
            DataType::Utf8,
            true,
        )));
        for r in results {
            for s in &r.sample {
                sample.values().append_value(s);
            }
            sample.append(true);
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![of.run_id.as_str(); n])),
            Arc::new(TimestampMicrosecondArray::from(vec![now; n]).with_timezone("UTC")),
            Arc::new(StringArray::from(vec![of.phase.as_str(); n])),
            Arc::new(StringArray::from(vec![of.table.as_str(); n])),
            Arc::new(Int64Array::from(vec![of.version; n])),
            text(&|r| r.rule.clone()),
            text(&|r| r.kind.clone()),
            Arc::new(
                results
                    .iter()
                    .map(|r| r.column.clone())
                    .collect::<StringArray>(),
            ),
            text(&|r| r.action.as_str().to_string()),
            text(&|r| r.severity.as_str().to_string()),
            Arc::new(Int64Array::from_iter_values(
                results.iter().map(|r| r.rows_checked as i64),
            )),
            Arc::new(Int64Array::from_iter_values(
                results.iter().map(|r| r.rows_failed as i64),
            )),
            Arc::new(sample.finish()),
            text(&|r| r.outcome.as_str().to_string()),
        ];
        RecordBatch::try_new(SCHEMA.clone(), cols).map_err(|e| {
            Error::internal("cannot assemble the expectations' results").with_source(e)
        })
    }

    /// Append `results` of `of`. A build's with `of.version`, once per table and version: a rerun
    /// after a kill between the table's commit and this one appends them then, and a second
    /// append of the same version does nothing. Returns whether it appended.
    ///
    /// # Errors
    /// When the table cannot be written.
    pub async fn append(&self, of: &ResultsOf, results: &[RuleResult]) -> Result<bool> {
        if results.is_empty() {
            return Ok(false);
        }
        let existing = self.loc.load().await?;
        // Builds are recorded once per table version; tests every time they run.
        let once = of.version.filter(|_| of.phase == "build");
        if let (Some(t), Some(v)) = (&existing, once)
            && self
                .loc
                .app_version(t, &app_id(&of.table))
                .await?
                .is_some_and(|have| have >= v)
        {
            return Ok(false);
        }
        let batch = Self::batch(of, results)?;
        let table = match existing {
            Some(t) => t,
            None => self.loc.handle()?,
        };
        let mut props = CommitProperties::default();
        if let Some(v) = once {
            props = props.with_application_transaction(Transaction::new(app_id(&of.table), v));
        }
        let written = table
            .write(vec![batch])
            .with_save_mode(SaveMode::Append)
            .with_commit_properties(props)
            .await;
        if let Err(e) = written {
            // Two builds recording the same version at once: the other one's commit carries
            // the same application transaction, so Delta refuses this one as a concurrent
            // transaction. Its results are then recorded: nothing to add.
            if let Some(v) = once
                && let Some(t) = self.loc.load().await?
                && self
                    .loc
                    .app_version(&t, &app_id(&of.table))
                    .await?
                    .is_some_and(|have| have >= v)
            {
                return Ok(false);
            }
            return Err(delta_err(
                e,
                "cannot record the expectations' results",
                &self.loc.url,
            ));
        }
        Ok(true)
    }

    /// The version of `table` whose results were recorded last (none: never).
    ///
    /// # Errors
    /// When the log cannot be read.
    pub async fn recorded_version(&self, table: &str) -> Result<Option<i64>> {
        match self.loc.load().await? {
            Some(t) => self.loc.app_version(&t, &app_id(table)).await,
            None => Ok(None),
        }
    }
}

/// The quarantine records of version `version` of the quarantine table at `qloc` that
/// `filter` (a SQL condition over its columns) selects: what a replay re-submits.
///
/// # Errors
/// NotFound when there is no quarantine; Config when the filter does not plan.
pub async fn quarantined(
    qloc: &TableLocation,
    version: i64,
    filter: &str,
) -> Result<Vec<RecordBatch>> {
    let t = load_quarantine(qloc, Some(version)).await?;
    let ctx = SessionContext::new();
    crate::model::register(&ctx, "q", qloc, &t).await?;
    collect(
        ctx.sql(&format!("SELECT * FROM q WHERE {filter}"))
            .await
            .map_err(df_err(
                "the quarantine filter does not plan",
                qloc.url.as_str(),
            ))?,
        qloc.url.as_str(),
        "cannot read the quarantine",
    )
    .await
}

async fn load_quarantine(
    qloc: &TableLocation,
    version: Option<i64>,
) -> Result<stratalake_delta::deltalake::DeltaTable> {
    let mut t = qloc.load().await?.ok_or_else(|| {
        Error::new(
            ErrorKind::NotFound,
            "the table has no quarantine: nothing was ever quarantined",
        )
        .with_context("quarantine", qloc.url.as_str())
    })?;
    if let Some(v) = version {
        t.load_version(u64::try_from(v).unwrap_or(0))
            .await
            .map_err(|e| delta_err(e, "cannot read the quarantine's version", &qloc.url))?;
    }
    Ok(t)
}

/// The version of the quarantine table at `qloc` (none: there is none).
///
/// # Errors
/// When its log cannot be read.
pub async fn quarantine_version(qloc: &TableLocation) -> Result<Option<i64>> {
    Ok(qloc
        .load()
        .await?
        .and_then(|t| t.version())
        .and_then(|v| i64::try_from(v).ok()))
}

/// The replays of a quarantine finished so far (its application transaction `app_id`).
///
/// # Errors
/// When its log cannot be read.
pub async fn replays_done(qloc: &TableLocation, app_id: &str) -> Result<i64> {
    match qloc.load().await? {
        Some(t) => Ok(qloc.app_version(&t, app_id).await?.unwrap_or(0)),
        None => Ok(0),
    }
}

/// Finish replay number `n` of a quarantine: in one commit (application transaction
/// `app_id` = `n`), remove the records replayed (those `filter` selected in version
/// `version`, each once, even where identical records exist) and add `refailed`, the
/// replayed records that failed again. Records quarantined since `version` stay. Does
/// nothing when replay `n` is already finished.
///
/// # Errors
/// When the quarantine cannot be read or written.
pub async fn finish_replay(
    qloc: &TableLocation,
    version: i64,
    filter: &str,
    refailed: &[QuarantineRecord],
    app_id: &str,
    n: i64,
) -> Result<()> {
    if replays_done(qloc, app_id).await? >= n {
        return Ok(());
    }
    let now = load_quarantine(qloc, None).await?;
    let then = load_quarantine(qloc, Some(version)).await?;
    let ctx = SessionContext::new();
    crate::model::register(&ctx, "q_now", qloc, &now).await?;
    crate::model::register(&ctx, "q_then", qloc, &then).await?;
    let schema: SchemaRef = now
        .snapshot()
        .map_err(|e| delta_err(e, "the quarantine has no state", &qloc.url))?
        .snapshot()
        .arrow_schema();
    let mut sql = format!("SELECT * FROM q_now EXCEPT ALL SELECT * FROM q_then WHERE {filter}");
    if !refailed.is_empty() {
        let b = stratalake_core::quarantine_batch(refailed)?;
        let cols = schema
            .fields()
            .iter()
            .map(|f| {
                let c = b.column_by_name(f.name()).ok_or_else(|| {
                    Error::internal("the quarantine has a column records do not")
                        .with_context("column", f.name())
                })?;
                arrow_cast::cast(c, f.data_type())
                    .map_err(|e| Error::internal("cannot type a quarantine record").with_source(e))
            })
            .collect::<Result<Vec<_>>>()?;
        let b = RecordBatch::try_new(schema.clone(), cols)
            .map_err(|e| Error::internal("cannot assemble quarantine records").with_source(e))?;
        let mem = stratalake_delta::deltalake::datafusion::datasource::MemTable::try_new(
            schema.clone(),
            vec![vec![b]],
        )
        .map_err(|e| Error::internal("cannot hold quarantine records").with_source(e))?;
        ctx.register_table("q_new", Arc::new(mem))
            .map_err(|e| Error::internal("cannot register quarantine records").with_source(e))?;
        sql = format!("({sql}) UNION ALL SELECT * FROM q_new");
    }
    let rows = collect(
        ctx.sql(&sql).await.map_err(df_err(
            "the quarantine filter does not plan",
            qloc.url.as_str(),
        ))?,
        qloc.url.as_str(),
        "cannot compute the quarantine after the replay",
    )
    .await?;
    let props =
        CommitProperties::default().with_application_transaction(Transaction::new(app_id, n));
    now.write(rows)
        .with_save_mode(SaveMode::Overwrite)
        .with_commit_properties(props)
        .await
        .map_err(|e| {
            delta_err(
                e,
                "cannot rewrite the quarantine after the replay",
                &qloc.url,
            )
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratalake_core::expect::{RuleInfo, Severity};

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn builds_recording_one_version_at_once_record_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let table =
            ResultsTable::new(TableLocation::local(dir.path().join("_expectations")).unwrap());
        let info = RuleInfo::new("r", "not_null", Some("id"), Action::Warn, Severity::Warn);
        let results = vec![RuleResult::new(&info, 10, 1, vec!["id=7".into()])];
        // The table exists (a first build), then eight builds record version 3 at once.
        assert!(
            table
                .append(
                    &ResultsOf::new("run-0", "build", "silver.x", Some(2)),
                    &results
                )
                .await
                .unwrap()
        );
        let mut all = tokio::task::JoinSet::new();
        for i in 0..8 {
            let (t, r) = (table.clone(), results.clone());
            all.spawn(async move {
                t.append(
                    &ResultsOf::new(&format!("run-{i}"), "build", "silver.x", Some(3)),
                    &r,
                )
                .await
            });
        }
        let mut recorded = 0;
        while let Some(r) = all.join_next().await {
            if r.unwrap().unwrap() {
                recorded += 1;
            }
        }
        assert_eq!(
            recorded, 1,
            "exactly one build records version 3; none fails"
        );
        let rows = crate::model::query(
            &std::collections::BTreeMap::from([("e".to_string(), table.location().clone())]),
            "SELECT COUNT(*) AS n FROM e WHERE table_version = 3",
        )
        .await
        .unwrap();
        let n = rows[0]
            .column(0)
            .as_primitive::<arrow_array::types::Int64Type>()
            .value(0);
        assert_eq!(n, 1);
        assert_eq!(table.recorded_version("silver.x").await.unwrap(), Some(3));
    }

    fn rule(name: &str, passes: &str, col: &str, action: Action) -> RowRule {
        RowRule::new(
            RuleInfo::new(name, "expression", Some(col), action, Severity::Warn),
            passes,
        )
    }

    fn batch() -> RecordBatch {
        RecordBatch::try_from_iter(vec![
            (
                "id",
                Arc::new(StringArray::from(vec!["a", "b", "c", "d"])) as ArrayRef,
            ),
            (
                "qty",
                Arc::new(Int64Array::from(vec![Some(1), Some(0), None, Some(5)])) as ArrayRef,
            ),
        ])
        .unwrap()
    }

    #[test]
    fn row_rules_count_quarantine_and_fail_per_batch() {
        let log = ResultLog::new();
        let t = ExpectTransform::new(
            "t",
            vec![
                rule("pos", "(\"qty\" > 0)", "qty", Action::Quarantine),
                rule("small", "(\"qty\" < 5)", "qty", Action::Warn),
            ],
            vec!["id".into()],
            log.clone(),
        );
        let mut p = t.plan(&batch().schema()).unwrap();
        let (kept, rejected) = t.check(&mut p, &batch()).unwrap();
        // qty 0 fails `pos` (quarantined); NULL passes both; 5 fails `small` (kept).
        assert_eq!(kept.num_rows(), 3);
        assert_eq!(rejected.len(), 1);
        assert_eq!(
            rejected[0].reason,
            "expectation `pos` failed: column qty value 0"
        );
        assert_eq!(rejected[0].location, "t id=b");
        let r = log.results();
        assert_eq!(
            (r[0].rows_checked, r[0].rows_failed, r[0].outcome),
            (4, 1, Outcome::Quarantined)
        );
        assert_eq!((r[1].rows_failed, r[1].outcome), (1, Outcome::Warn));
        assert_eq!(r[1].sample, ["id=d qty=5"]);

        let t = ExpectTransform::new(
            "t",
            vec![rule("pos", "(\"qty\" > 0)", "qty", Action::Fail)],
            vec!["id".into()],
            log.clone(),
        );
        let mut p = t.plan(&batch().schema()).unwrap();
        let e = t.check(&mut p, &batch()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Data);
        assert!(
            e.to_string()
                .contains("expectation `pos` (expression) failed: 1 of 4 rows, first: id=b qty=0"),
            "{e}"
        );
        assert_eq!(log.results()[0].outcome, Outcome::Fail);
    }

    #[test]
    fn a_quarantining_rule_in_front_of_a_sink_without_quarantine_is_refused() {
        use stratalake_testkit::memory::{MemorySink, MemorySource};
        let make = |action, sink: MemorySink| {
            let t = ExpectTransform::new(
                "t",
                vec![rule("pos", "(\"qty\" > 0)", "qty", action)],
                vec![],
                ResultLog::new(),
            );
            stratalake_core::PipelineBuilder::new(
                "p",
                Arc::new(MemorySource::new(batch().schema())),
                Arc::new(sink),
                Arc::new(stratalake_core::InMemoryCheckpointStore::new()),
            )
            .with_stream_transform(Arc::new(t))
            .build()
        };
        let e = make(Action::Quarantine, MemorySink::new().without_quarantine()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(
            e.to_string().contains(
                "transform `expect` sends rejected rows to quarantine, but sink `memory` keeps none"
            ),
            "{e}"
        );
        assert!(make(Action::Fail, MemorySink::new().without_quarantine()).is_ok());
        assert!(make(Action::Quarantine, MemorySink::new()).is_ok());
    }

    #[test]
    fn a_rule_over_a_missing_column_is_refused_before_anything_runs() {
        let t = ExpectTransform::new(
            "t",
            vec![rule("x", "(\"nope\" > 0)", "nope", Action::Warn)],
            vec![],
            ResultLog::new(),
        );
        let e = t.output_schema(&batch().schema()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(format!("{e:?}").contains("rule"), "{e:?}");
    }
}
