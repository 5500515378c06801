//! The `table` and `incremental` materialisations of a SQL model over Delta tables, and the
//! per-batch SQL step the `merge` and `append` ones stream their rows through.
//!
//! A build commits the model's table once, with the input tables' versions as Delta
//! application transactions (`strata-model/<input>`) and a fingerprint of the model's SQL
//! (`strata-model-sql/<crc>`): a rerun after a kill redoes exactly what was not committed, a
//! build over unchanged inputs and SQL does nothing, and a changed SQL rebuilds the table.
//!
//! `incremental` replaces only the partitions (values of `partition_by`) whose input rows
//! changed: for each input that changed since the versions the table reflects, its change
//! feed (inserted, updated and deleted rows, before and after images) names the partitions
//! through the input's partition expression (`partition_from`: `CAST(created_at AS DATE)`;
//! an input that has the partition column itself needs none); only those partitions are
//! rebuilt, with `replaceWhere`. A changed input with no partition expression (a dimension
//! table) rebuilds the table whole. The expression must give, for every input row, the
//! partition of every output row it contributes to: true for a fact's date, false for a
//! model whose rows aggregate across partitions (a running total): make that one a `table`.

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use stratalake_core::expect::{Expectations, ResultLog};
use stratalake_core::{BatchTransform, Context, Error, ErrorKind, Result};
use stratalake_delta::deltalake::DeltaTable;
use stratalake_delta::deltalake::datafusion::catalog::MemorySchemaProvider;
use stratalake_delta::deltalake::datafusion::common::ScalarValue;
use stratalake_delta::deltalake::datafusion::datasource::MemTable;
use stratalake_delta::deltalake::datafusion::logical_expr::LogicalPlan;
use stratalake_delta::deltalake::datafusion::prelude::{
    DataFrame, Expr, SessionConfig, SessionContext, col, lit,
};
use stratalake_delta::deltalake::kernel::Transaction;
use stratalake_delta::deltalake::kernel::transaction::CommitProperties;
use stratalake_delta::deltalake::operations::write::SchemaMode;
use stratalake_delta::deltalake::protocol::SaveMode;
use stratalake_delta::source::{CHANGE_TYPE, COMMIT_TIMESTAMP, COMMIT_VERSION};
use stratalake_delta::{TableLocation, delta_err};

/// A `table` or `incremental` model, ready to build.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TableModel {
    /// `layer.name`.
    pub name: String,
    /// Its SQL (DataFusion's dialect), reading its inputs by `layer.name`.
    pub sql: String,
    /// `Some(column)`: incremental by that column's values; `None`: rebuilt whole.
    pub incremental_by: Option<String>,
    /// Delta partition columns of the table (the incremental column is one).
    pub partition_by: Vec<String>,
    /// Per input, the SQL expression over its rows that gives their partition value
    /// (`CAST(created_at AS DATE)`); an input that has the partition column needs none.
    pub partition_from: BTreeMap<String, String>,
    /// Its inputs by name.
    pub inputs: BTreeMap<String, TableLocation>,
    /// Where its table is.
    pub target: TableLocation,
    /// A fingerprint of everything that defines the table's rows (the SQL and settings).
    pub fingerprint: String,
    /// What its rows and table must satisfy before the build commits.
    pub expectations: Expectations,
    /// The columns naming a failing row in results.
    pub key: Vec<String>,
    /// Where the expectations' results go (also when the build fails on one).
    pub log: ResultLog,
}

/// What one model's build did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModelAction {
    /// Nothing: the table reflects the inputs' current versions and the current SQL.
    UpToDate,
    /// Rebuilt whole, and why.
    Rebuilt(String),
    /// Only these partitions (their values as text) replaced.
    Replaced(Vec<String>),
}

/// The outcome of building one model.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ModelOutcome {
    /// What happened.
    pub action: ModelAction,
    /// The input versions the table now reflects.
    pub input_versions: BTreeMap<String, i64>,
    /// The table's Delta version after the build.
    pub version: i64,
}

/// A model's build, planned and not yet run ([`TableModel::plan`]): what it will do, the
/// input versions the table will reflect, and the query computing the rows it will write.
/// Nothing is written until [`TableModel::commit`]; a plan is for one commit (the inputs'
/// snapshots it read are pinned in it).
#[must_use]
pub struct ModelPlan {
    action: ModelAction,
    input_versions: BTreeMap<String, i64>,
    /// The table's version when planned (`None`: no table yet).
    version: Option<i64>,
    /// `None` when up to date.
    work: Option<Work>,
}

/// What a plan runs: the session with the inputs' snapshots registered, the query, the
/// table as it was, and the partitions to replace (`None`: rebuild whole).
struct Work {
    ctx: SessionContext,
    df: DataFrame,
    existing: Option<DeltaTable>,
    partitions: Option<(String, Vec<ScalarValue>)>,
}

impl ModelPlan {
    /// What the commit will do: nothing (up to date), rebuild whole (and why), or replace
    /// these partitions.
    pub fn action(&self) -> &ModelAction {
        &self.action
    }

    /// The inputs' versions the plan read, which the commit records.
    pub fn input_versions(&self) -> &BTreeMap<String, i64> {
        &self.input_versions
    }

    /// The query computing the rows to write (DataFusion's logical plan over the inputs'
    /// snapshots, already filtered to the partitions replaced); `None` when up to date. This
    /// is the part another engine could execute.
    pub fn logical_plan(&self) -> Option<&LogicalPlan> {
        self.work.as_ref().map(|w| w.df.logical_plan())
    }
}

impl std::fmt::Debug for ModelPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelPlan")
            .field("action", &self.action)
            .field("input_versions", &self.input_versions)
            .field("version", &self.version)
            .field(
                "logical_plan",
                &self.logical_plan().map(|p| p.display_indent().to_string()),
            )
            .finish()
    }
}

fn app_id(input: &str) -> String {
    format!("strata-model/{input}")
}

fn sql_app_id(fingerprint: &str) -> String {
    format!("strata-model-sql/{fingerprint}")
}

pub(crate) fn df_err(
    what: &'static str,
    model: &str,
) -> impl Fn(stratalake_delta::deltalake::datafusion::error::DataFusionError) -> Error {
    let model = model.to_string();
    move |e| {
        Error::new(ErrorKind::Config, what)
            .with_context("model", &model)
            .with_source(e)
    }
}

/// A session whose catalog has a schema per layer (`silver`, `gold`), so `silver.orders`
/// resolves.
pub(crate) fn session(layers: impl IntoIterator<Item = String>) -> SessionContext {
    let ctx = stratalake_delta::deltalake::delta_datafusion::create_session().into_inner();
    let catalog = ctx.catalog("datafusion");
    for l in layers.into_iter().collect::<BTreeSet<_>>() {
        if let Some(c) = &catalog
            && c.schema(&l).is_none()
        {
            let _ = c.register_schema(&l, Arc::new(MemorySchemaProvider::new()));
        }
    }
    ctx
}

pub(crate) fn layer(name: &str) -> String {
    name.split_once('.').map_or(name, |(l, _)| l).to_string()
}

/// Make Delta table `t` readable as `name` (`silver.orders`) in `ctx`.
pub(crate) async fn register(
    ctx: &SessionContext,
    name: &str,
    loc: &TableLocation,
    t: &DeltaTable,
) -> Result<()> {
    t.update_datafusion_session(&ctx.state())
        .map_err(|e| delta_err(e, "cannot prepare the SQL session", &loc.url))?;
    let provider = t.table_provider().await.map_err(|e| {
        Error::internal("cannot read a table")
            .with_context("table", loc.url.as_str())
            .with_source(e)
    })?;
    ctx.register_table(name, provider).map_err(|e| {
        Error::internal("cannot register a table")
            .with_context("table", name)
            .with_source(e)
    })?;
    Ok(())
}

/// Register `name` as the rows of `t` changed in versions `from+1..=to` (all change types,
/// the change columns dropped).
async fn register_changes(
    ctx: &SessionContext,
    name: &str,
    loc: &TableLocation,
    t: &DeltaTable,
    from: i64,
    to: i64,
) -> Result<()> {
    let builder = t
        .clone()
        .scan_cdf()
        .with_starting_version(u64::try_from(from + 1).unwrap_or(0))
        .with_ending_version(u64::try_from(to).unwrap_or(0));
    let provider =
        stratalake_delta::deltalake::delta_datafusion::DeltaCdfTableProvider::try_new(builder)
            .map_err(|e| delta_err(e, "cannot read the table's change feed", &loc.url))?;
    let hidden = format!("__changes_{}", name.replace('.', "_"));
    ctx.register_table(hidden.as_str(), Arc::new(provider))
        .map_err(|e| Error::internal("cannot register a change feed").with_source(e))?;
    let df = ctx
        .table(hidden.as_str())
        .await
        .map_err(|e| Error::internal("cannot read a change feed").with_source(e))?;
    let cols: Vec<Expr> = df
        .schema()
        .fields()
        .iter()
        .filter(|f| ![CHANGE_TYPE, COMMIT_VERSION, COMMIT_TIMESTAMP].contains(&f.name().as_str()))
        .map(|f| col(format!("\"{}\"", f.name())))
        .collect();
    let view = df
        .select(cols)
        .map_err(|e| Error::internal("cannot read a change feed").with_source(e))?
        .into_view();
    ctx.register_table(name, view)
        .map_err(|e| Error::internal("cannot register a change feed").with_source(e))?;
    Ok(())
}

impl TableModel {
    /// Model `name` with `sql` over `inputs` (by `layer.name`), writing `target`, rebuilt
    /// whole; `fingerprint` changes whenever the SQL or settings do.
    pub fn new(
        name: &str,
        sql: &str,
        inputs: BTreeMap<String, TableLocation>,
        target: TableLocation,
        fingerprint: &str,
    ) -> Self {
        Self {
            name: name.to_string(),
            sql: sql.to_string(),
            incremental_by: None,
            partition_by: Vec::new(),
            partition_from: BTreeMap::new(),
            inputs,
            target,
            fingerprint: fingerprint.to_string(),
            expectations: Expectations::default(),
            key: Vec::new(),
            log: ResultLog::new(),
        }
    }

    /// Check `expectations` before each commit (failing rows named by `key`), results to
    /// `log`: row rules over the rows the build writes, table checks over the table as the
    /// build would leave it. A `fail` rule that fails fails the build, and nothing is
    /// committed.
    #[must_use]
    pub fn with_expectations(
        mut self,
        expectations: Expectations,
        key: Vec<String>,
        log: ResultLog,
    ) -> Self {
        self.expectations = expectations;
        self.key = key;
        self.log = log;
        self
    }

    /// Incremental by `column`'s values (a partition column of the table); `from` gives,
    /// per input, the expression over its rows that names their partition.
    #[must_use]
    pub fn incremental_by(mut self, column: &str, from: BTreeMap<String, String>) -> Self {
        self.incremental_by = Some(column.to_string());
        self.partition_by = vec![column.to_string()];
        self.partition_from = from;
        self
    }

    /// Partitioned by `column` (rebuilt whole).
    #[must_use]
    pub fn partitioned_by(mut self, column: &str) -> Self {
        self.partition_by = vec![column.to_string()];
        self
    }

    /// Bring the model's table up to its inputs' current versions (see the module docs);
    /// `full_refresh` rebuilds it whole whatever it reflects. [`TableModel::plan`] then
    /// [`TableModel::commit`].
    ///
    /// # Errors
    /// NotFound when an input table is missing; Config when the SQL does not plan (naming
    /// the model); Conflict (retryable) when a concurrent writer wins the commit.
    pub async fn build(&self, full_refresh: bool) -> Result<ModelOutcome> {
        let plan = self.plan(full_refresh).await?;
        self.commit(plan).await
    }

    /// Decide what a build would do, and plan the query computing the rows it would write,
    /// without writing anything: the inputs' snapshots are read (and, for an incremental
    /// model, their change feeds, to name the changed partitions), the table's application
    /// transactions say which input versions and which SQL it reflects. The plan's
    /// [`ModelPlan::logical_plan`] is what an executor runs; [`TableModel::commit`] runs it
    /// and commits the result.
    ///
    /// # Errors
    /// NotFound when an input table is missing; Config when the SQL or a `partition_from`
    /// expression does not plan (naming the model).
    pub async fn plan(&self, full_refresh: bool) -> Result<ModelPlan> {
        let layers: Vec<String> = self
            .inputs
            .keys()
            .map(|n| layer(n))
            .chain(std::iter::once(layer(&self.name)))
            .collect();
        let mut tables = BTreeMap::new();
        let mut now = BTreeMap::new();
        for (name, loc) in &self.inputs {
            let t = loc.load().await?.ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    "a table the model reads is missing: build its pipeline or model first",
                )
                .with_context("model", &self.name)
                .with_context("table", name)
                .with_context("location", loc.url.as_str())
            })?;
            now.insert(name.clone(), version_of(&t));
            tables.insert(name.clone(), t);
        }
        let existing = self.target.load().await?;
        let mut seen = BTreeMap::new();
        let mut same_sql = false;
        if let Some(t) = &existing {
            for name in self.inputs.keys() {
                if let Some(v) = self.target.app_version(t, &app_id(name)).await? {
                    seen.insert(name.clone(), v);
                }
            }
            same_sql = self
                .target
                .app_version(t, &sql_app_id(&self.fingerprint))
                .await?
                .is_some();
        }
        let reason = if full_refresh {
            Some("--full-refresh".to_string())
        } else if existing.is_none() {
            Some("new table".to_string())
        } else if !same_sql {
            Some("its SQL or settings changed".to_string())
        } else {
            self.inputs
                .keys()
                .find(|n| !seen.contains_key(*n))
                .map(|new| format!("{new} is a new input"))
        };
        let changed: Vec<&String> = now
            .iter()
            .filter(|(n, v)| seen.get(*n).is_none_or(|s| s < v))
            .map(|(n, _)| n)
            .collect();
        let reason = match (reason, &self.incremental_by) {
            (None, None) if !changed.is_empty() => Some(format!(
                "{} changed",
                changed
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            (r, _) => r,
        };
        if reason.is_none() && changed.is_empty() {
            return Ok(ModelPlan {
                action: ModelAction::UpToDate,
                input_versions: now,
                version: existing.as_ref().map(version_of),
                work: None,
            });
        }
        // The partitions to replace: each changed input's changed rows (before and after
        // images, deletes) name theirs through the input's partition expression; a changed
        // input without one (a dimension) rebuilds the table whole.
        let mut reason = reason;
        let mut partitions = None;
        if reason.is_none()
            && let Some(p) = &self.incremental_by
        {
            let mut values: Vec<ScalarValue> = Vec::new();
            for input in &changed {
                let expr = match self.partition_from.get(*input) {
                    Some(e) => e.clone(),
                    None if has_column(&tables[*input], p) => format!("\"{p}\""),
                    None => {
                        reason = Some(format!(
                            "{input} changed and names no partition (`partition_from`)"
                        ));
                        break;
                    }
                };
                let ctx = session(layers.clone());
                let name = input.as_str();
                register_changes(
                    &ctx,
                    name,
                    &self.inputs[name],
                    &tables[name],
                    seen[name],
                    now[name],
                )
                .await?;
                let q = format!("SELECT DISTINCT {expr} FROM {name}");
                let batches = ctx
                    .sql(&q)
                    .await
                    .map_err(df_err(
                        "a `partition_from` expression does not plan",
                        &self.name,
                    ))?
                    .collect()
                    .await
                    .map_err(df_err("reading an input's change feed failed", &self.name))?;
                for b in &batches {
                    for i in 0..b.num_rows() {
                        let v = ScalarValue::try_from_array(b.column(0), i).map_err(|e| {
                            Error::internal("cannot read a partition value").with_source(e)
                        })?;
                        if !values.contains(&v) {
                            values.push(v);
                        }
                    }
                }
            }
            if reason.is_none() {
                partitions = Some((p.clone(), values));
            }
        }
        let ctx = session(layers);
        for (name, t) in &tables {
            register(&ctx, name, &self.inputs[name], t).await?;
        }
        let mut df = ctx
            .sql(strip_semicolon(&self.sql))
            .await
            .map_err(df_err("the model's SQL does not plan", &self.name))?;
        // A table whose columns no longer match the SQL's is rebuilt with the new schema.
        if reason.is_none()
            && let Some(t) = &existing
            && !same_columns(t, df.schema().as_arrow())
        {
            reason = Some("its columns changed".into());
        }
        let partitions = if reason.is_some() { None } else { partitions };
        let action = match &partitions {
            Some((p, values)) => {
                df = df
                    .filter(in_values(p, values).1)
                    .map_err(df_err("cannot filter the changed partitions", &self.name))?;
                ModelAction::Replaced(values.iter().map(ToString::to_string).collect())
            }
            None => ModelAction::Rebuilt(reason.unwrap_or_default()),
        };
        Ok(ModelPlan {
            action,
            input_versions: now,
            version: existing.as_ref().map(version_of),
            work: Some(Work {
                ctx,
                df,
                existing,
                partitions,
            }),
        })
    }

    /// Run `plan` (made by [`TableModel::plan`] of this model) and commit its rows in one
    /// Delta transaction that also records the input versions and the SQL's fingerprint as
    /// application transactions, after the expectations pass: a kill before the commit
    /// leaves the table as it was, and the next build plans the same work again. An
    /// up-to-date plan commits nothing.
    ///
    /// # Errors
    /// Config when the query fails; Data when a `fail` expectation fails (nothing is
    /// committed); Conflict (retryable) when a concurrent writer wins the commit.
    pub async fn commit(&self, plan: ModelPlan) -> Result<ModelOutcome> {
        let ModelPlan {
            action,
            input_versions: now,
            version,
            work,
        } = plan;
        let Some(Work {
            ctx,
            mut df,
            existing,
            partitions,
        }) = work
        else {
            return Ok(ModelOutcome {
                action,
                input_versions: now,
                version: version.unwrap_or(0),
            });
        };
        let mut txns: Vec<Transaction> = now
            .iter()
            .map(|(n, v)| Transaction::new(app_id(n), *v))
            .collect();
        txns.push(Transaction::new(sql_app_id(&self.fingerprint), 1));
        let props = CommitProperties::default().with_application_transactions(txns);
        let mut results = Vec::new();
        if !self.expectations.is_empty() {
            // The new rows are computed once and held while they are checked and written
            // (each check would otherwise run the model's query again).
            df = df
                .cache()
                .await
                .map_err(df_err("the model's query failed", &self.name))?;
            results = self
                .check(&ctx, &df, existing.as_ref(), partitions.as_ref())
                .await?;
        }
        let props = props.with_metadata([(
            "strata".to_string(),
            serde_json::json!({"model": self.name, "inputs": now, "expectations": results}),
        )]);
        let table = match existing {
            Some(t) => t,
            None => self.target.handle()?,
        };
        let mut w = table
            .write(Vec::new())
            .with_input_plan(df.logical_plan().clone());
        w = match &partitions {
            Some((p, values)) => w.with_replace_where(in_values(p, values).0),
            None => w.with_schema_mode(SchemaMode::Overwrite),
        };
        w = w
            .with_session_state(Arc::new(ctx.state()))
            .with_writer_properties(stratalake_delta::parquet_properties())
            .with_save_mode(SaveMode::Overwrite)
            .with_configuration([("delta.enableChangeDataFeed", Some("true"))])
            .with_commit_properties(props);
        if !self.partition_by.is_empty() {
            w = w.with_partition_columns(self.partition_by.clone());
        }
        let written = w.await.map_err(|e| {
            delta_err(e, "writing the model's table failed", &self.target.url)
                .with_context("model", &self.name)
        })?;
        tracing::info!(model = %self.name, action = ?action, "model built");
        stratalake_core::crash_point("build.after_model").await;
        Ok(ModelOutcome {
            action,
            input_versions: now,
            version: version_of(&written),
        })
    }
}

impl TableModel {
    /// The expectations' results the table's latest commit carries, with its version (none:
    /// no table, or a commit without results): what a kill between the commit and the
    /// results' own append left to record.
    ///
    /// # Errors
    /// When the table's log cannot be read or its results do not parse.
    pub async fn committed_results(
        &self,
    ) -> Result<Option<(i64, Vec<stratalake_core::expect::RuleResult>)>> {
        self.target.last_results().await
    }

    /// Evaluate the expectations on what the build is about to commit: `new` is the rows it
    /// writes; the table it would leave is `new` alone (a whole rebuild) or the existing
    /// rows outside the replaced partitions plus `new`.
    async fn check(
        &self,
        ctx: &SessionContext,
        new: &stratalake_delta::deltalake::datafusion::prelude::DataFrame,
        existing: Option<&DeltaTable>,
        partitions: Option<&(String, Vec<ScalarValue>)>,
    ) -> Result<Vec<stratalake_core::expect::RuleResult>> {
        const NEW: &str = "__strata_new_rows";
        const OLD: &str = "__strata_existing";
        let reg = |name: &str, df: stratalake_delta::deltalake::datafusion::prelude::DataFrame| {
            ctx.register_table(name, df.into_view())
                .map(|_| ())
                .map_err(|e| {
                    Error::internal("cannot register the rows to check")
                        .with_context("model", &self.name)
                        .with_source(e)
                })
        };
        reg(NEW, new.clone())?;
        let mut previous = None;
        let candidate = match existing {
            Some(t) => {
                register(ctx, OLD, &self.target, t).await?;
                let old = ctx
                    .table(OLD)
                    .await
                    .map_err(df_err("cannot read the model's table", &self.name))?;
                let n = old
                    .clone()
                    .count()
                    .await
                    .map_err(df_err("cannot count the model's table", &self.name))?;
                previous = Some(n as u64);
                match partitions {
                    Some((p, values)) => old
                        .filter(in_values(p, values).1.is_not_true())
                        .and_then(|kept| kept.union(new.clone()))
                        .map_err(df_err(
                            "cannot combine the kept and the new partitions to check them",
                            &self.name,
                        ))?,
                    None => new.clone(),
                }
            }
            None => new.clone(),
        };
        reg(&self.name, candidate)?;
        crate::expect::evaluate(
            ctx,
            &self.name,
            NEW,
            &self.expectations,
            &self.key,
            previous,
            &self.log,
        )
        .await
    }
}

/// Run `sql` over `tables` (by `layer.name`; those not yet written are left out).
///
/// # Errors
/// Config when the SQL does not plan or fails.
pub async fn query(
    tables: &BTreeMap<String, TableLocation>,
    sql: &str,
) -> Result<Vec<RecordBatch>> {
    let ctx = session(tables.keys().map(|n| layer(n)));
    for (name, loc) in tables {
        if let Some(t) = loc.load().await? {
            register(&ctx, name, loc, &t).await?;
        }
    }
    let e = |e| {
        Error::new(ErrorKind::Config, "the query failed")
            .with_context("sql", sql)
            .with_source(e)
    };
    ctx.sql(strip_semicolon(sql))
        .await
        .map_err(e)?
        .collect()
        .await
        .map_err(e)
}

/// `column IN (values)` as a Delta predicate and a DataFusion filter (`IS NULL` for a null).
fn in_values(column: &str, values: &[ScalarValue]) -> (Expr, Expr) {
    let c = col(format!("\"{column}\""));
    let (nulls, set): (Vec<&ScalarValue>, Vec<&ScalarValue>) =
        values.iter().partition(|v| v.is_null());
    let mut e = if set.is_empty() {
        lit(false)
    } else {
        c.clone()
            .in_list(set.into_iter().map(|v| lit(v.clone())).collect(), false)
    };
    if !nulls.is_empty() {
        e = e.or(c.is_null());
    }
    (e.clone(), e)
}

fn version_of(t: &DeltaTable) -> i64 {
    t.version().and_then(|v| i64::try_from(v).ok()).unwrap_or(0)
}

fn strip_semicolon(sql: &str) -> &str {
    sql.trim_end().trim_end_matches(';')
}

fn has_column(t: &DeltaTable, column: &str) -> bool {
    t.snapshot()
        .is_ok_and(|s| s.snapshot().arrow_schema().field_with_name(column).is_ok())
}

fn same_columns(t: &DeltaTable, schema: &arrow_schema::Schema) -> bool {
    let Ok(s) = t.snapshot() else {
        return false;
    };
    let have = s.snapshot().arrow_schema();
    have.fields().len() == schema.fields().len()
        && have
            .fields()
            .iter()
            .zip(schema.fields())
            .all(|(a, b)| a.name() == b.name())
}

/// A model's SQL run on each batch of its input's new rows (the `merge` and `append`
/// materialisations): the batch is the table `input` (`bronze.orders`) for the query.
#[derive(Debug, Clone)]
pub struct SqlTransform {
    sql: String,
    input: String,
    model: String,
    output: SchemaRef,
}

impl SqlTransform {
    /// The SQL of `model`, reading `input`, whose batches have `schema`.
    ///
    /// # Errors
    /// Config when the SQL does not plan over that schema (naming the model).
    pub fn try_new(model: &str, sql: &str, input: &str, schema: &SchemaRef) -> Result<Self> {
        let mut t = Self {
            sql: strip_semicolon(sql).to_string(),
            input: input.to_string(),
            model: model.to_string(),
            output: schema.clone(),
        };
        let empty = RecordBatch::new_empty(schema.clone());
        t.output = t.run(empty)?.schema();
        Ok(t)
    }

    fn run(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
        if let Some(c) = ctx.catalog("datafusion") {
            let _ = c.register_schema(&layer(&self.input), Arc::new(MemorySchemaProvider::new()));
        }
        let schema = batch.schema();
        let table = MemTable::try_new(schema, vec![vec![batch]])
            .map_err(|e| Error::internal("cannot hold a batch for SQL").with_source(e))?;
        ctx.register_table(self.input.as_str(), Arc::new(table))
            .map_err(|e| Error::internal("cannot register a batch for SQL").with_source(e))?;
        let out = futures::executor::block_on(async {
            let df = ctx
                .sql(&self.sql)
                .await
                .map_err(df_err("the model's SQL does not plan", &self.model))?;
            df.collect().await.map_err(|e| {
                Error::new(ErrorKind::Data, "the model's SQL failed on a batch")
                    .with_context("model", &self.model)
                    .with_source(e)
            })
        })?;
        let schema = out
            .first()
            .map_or_else(|| self.output.clone(), RecordBatch::schema);
        arrow_select::concat::concat_batches(&schema, &out)
            .map_err(|e| Error::internal("cannot join the SQL's output").with_source(e))
    }
}

impl BatchTransform for SqlTransform {
    fn name(&self) -> &str {
        "sql"
    }

    fn output_schema(&self, _input: &SchemaRef) -> Result<SchemaRef> {
        Ok(self.output.clone())
    }

    fn apply(&self, batch: RecordBatch, _ctx: &Context) -> Result<RecordBatch> {
        let out = self.run(batch)?;
        if out.schema().fields() == self.output.fields() {
            return Ok(out);
        }
        // A batch may type a column differently (a literal's nullability, a NULL-only
        // column): cast to the types planned from the schema.
        let schema_err = |e| {
            Error::new(
                ErrorKind::Schema,
                "the model's SQL gave other column types on a batch",
            )
            .with_context("model", &self.model)
            .with_source(e)
        };
        let cols = out
            .columns()
            .iter()
            .zip(self.output.fields())
            .map(|(c, f)| arrow_cast::cast(c, f.data_type()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(schema_err)?;
        RecordBatch::try_new(self.output.clone(), cols).map_err(schema_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Int64Array;
    use arrow_array::cast::AsArray as _;
    use arrow_schema::{DataType, Field, Schema};

    async fn append(loc: &TableLocation, ids: &[i64], day: i64) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("day", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(Int64Array::from(vec![day; ids.len()])),
            ],
        )
        .unwrap();
        let t = match loc.load().await.unwrap() {
            Some(t) => t,
            None => loc.handle().unwrap(),
        };
        t.write(vec![batch])
            .with_save_mode(SaveMode::Append)
            .with_configuration([("delta.enableChangeDataFeed", Some("true"))])
            .await
            .unwrap();
    }

    async fn rows(target: &TableLocation) -> Vec<(i64, i64)> {
        let b = query(
            &BTreeMap::from([("t".to_string(), target.clone())]),
            "SELECT day, n FROM t ORDER BY day",
        )
        .await
        .unwrap();
        b.iter()
            .flat_map(|b| {
                let (d, n) = (
                    b.column(0).as_primitive::<arrow_array::types::Int64Type>(),
                    b.column(1).as_primitive::<arrow_array::types::Int64Type>(),
                );
                (0..b.num_rows()).map(move |i| (d.value(i), n.value(i)))
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_plan_writes_nothing_and_its_commit_does_what_it_said() {
        let dir = tempfile::tempdir().unwrap();
        let input = TableLocation::local(dir.path().join("silver/orders")).unwrap();
        let target = TableLocation::local(dir.path().join("gold/per_day")).unwrap();
        append(&input, &[1, 2], 1).await;
        append(&input, &[3], 2).await;
        let model = TableModel::new(
            "gold.per_day",
            "SELECT day, COUNT(*) AS n FROM silver.orders GROUP BY day",
            BTreeMap::from([("silver.orders".to_string(), input.clone())]),
            target.clone(),
            "fp-1",
        )
        .incremental_by("day", BTreeMap::new());

        // A new table: planned as a whole rebuild; planning twice writes nothing.
        let plan = model.plan(false).await.unwrap();
        assert_eq!(plan.action(), &ModelAction::Rebuilt("new table".into()));
        assert!(model.plan(false).await.is_ok());
        assert!(
            target.load().await.unwrap().is_none(),
            "no table after planning"
        );
        assert_eq!(plan.input_versions()["silver.orders"], 1);
        let shown = format!("{plan:?}");
        assert!(shown.contains("Aggregate"), "{shown}");
        let out = model.commit(plan).await.unwrap();
        assert_eq!(out.version, 0);
        assert_eq!(rows(&target).await, vec![(1, 2), (2, 1)]);

        // Unchanged inputs: nothing to run, nothing committed.
        let plan = model.plan(false).await.unwrap();
        assert_eq!(plan.action(), &ModelAction::UpToDate);
        assert!(plan.logical_plan().is_none());
        assert_eq!(model.commit(plan).await.unwrap().version, 0);

        // A late row of day 2: only that partition, and a plan dropped uncommitted (a kill
        // between plan and commit) leaves the table as it was.
        append(&input, &[4], 2).await;
        let plan = model.plan(false).await.unwrap();
        assert_eq!(plan.action(), &ModelAction::Replaced(vec!["2".into()]));
        drop(plan);
        assert_eq!(rows(&target).await, vec![(1, 2), (2, 1)]);
        let out = model.build(false).await.unwrap();
        assert_eq!(out.action, ModelAction::Replaced(vec!["2".into()]));
        assert_eq!(out.version, 1);
        assert_eq!(rows(&target).await, vec![(1, 2), (2, 2)]);
    }
}
