#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod model;
pub mod warehouse;

use futures::TryStreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use strata_core::{Error, ErrorKind, Result};
use strata_delta::deltalake::datafusion::prelude::{DataFrame, SessionContext};
use strata_delta::deltalake::kernel::Transaction;
use strata_delta::deltalake::kernel::transaction::CommitProperties;
use strata_delta::deltalake::protocol::SaveMode;
use strata_delta::{TableLocation, delta_err};

/// The silver tables gold reads.
pub const SILVER_TABLES: &[&str] = &["orders", "order_lines", "customers", "partners", "products"];

/// How a gold table is rebuilt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rebuild {
    /// Partitioned by `order_date`: only the dates whose orders changed are replaced.
    ByOrderDate,
    /// Small: replaced whole when anything changed.
    Whole,
}

/// A gold table: its name, its SQL over the silver tables, how it is rebuilt.
struct GoldTable {
    name: &'static str,
    sql: &'static str,
    rebuild: Rebuild,
    /// The columns that identify a row (the warehouse sync merges by them).
    key: &'static [&'static str],
}

/// The star schema and the report tables.
const TABLES: &[GoldTable] = &[
    GoldTable {
        name: "fact_order_line",
        sql: "SELECT order_id, line_no, CAST(created_at AS DATE) AS order_date, partner_id, \
              customer_id, product_id, currency, status, quantity, unit_price, discount, \
              CAST(CAST(quantity AS DECIMAL(12,2)) * unit_price - discount AS DECIMAL(14,2)) AS line_amount \
              FROM order_lines",
        rebuild: Rebuild::ByOrderDate,
        key: &["order_id", "line_no"],
    },
    GoldTable {
        name: "daily_revenue",
        sql: "SELECT CAST(created_at AS DATE) AS order_date, partner_id, currency, \
              COUNT(*) AS orders, CAST(SUM(total_amount) AS DECIMAL(18,2)) AS revenue, \
              CAST(SUM(CASE WHEN status IN ('cancelled', 'returned') THEN 0 ELSE total_amount END) AS DECIMAL(18,2)) AS net_revenue \
              FROM orders GROUP BY 1, 2, 3",
        rebuild: Rebuild::ByOrderDate,
        key: &["order_date", "partner_id", "currency"],
    },
    GoldTable {
        name: "orders_by_status",
        sql: "SELECT CAST(created_at AS DATE) AS order_date, status, COUNT(*) AS orders \
              FROM orders GROUP BY 1, 2",
        rebuild: Rebuild::ByOrderDate,
        key: &["order_date", "status"],
    },
    GoldTable {
        name: "product_performance",
        sql: "SELECT product_id, currency, COUNT(DISTINCT order_id) AS orders, \
              CAST(SUM(quantity) AS BIGINT) AS units, \
              CAST(SUM(CAST(quantity AS DECIMAL(12,2)) * unit_price - discount) AS DECIMAL(18,2)) AS revenue, \
              CAST(SUM(CASE WHEN status = 'cancelled' THEN quantity ELSE 0 END) AS BIGINT) AS cancelled_units, \
              CAST(SUM(CASE WHEN status = 'returned' THEN quantity ELSE 0 END) AS BIGINT) AS returned_units \
              FROM order_lines GROUP BY 1, 2",
        rebuild: Rebuild::Whole,
        key: &["product_id", "currency"],
    },
    GoldTable {
        name: "customer_activity",
        sql: "WITH last AS (SELECT MAX(CAST(created_at AS DATE)) AS d FROM orders), \
              agg AS (SELECT customer_id, currency, COUNT(*) AS orders, SUM(total_amount) AS spend, \
              MIN(created_at) AS first_order_at, MAX(created_at) AS last_order_at \
              FROM orders GROUP BY customer_id, currency) \
              SELECT a.customer_id, a.currency, a.orders, CAST(a.spend AS DECIMAL(18,2)) AS spend, \
              a.first_order_at, a.last_order_at, \
              CAST(arrow_cast(last.d, 'Int32') - arrow_cast(CAST(a.last_order_at AS DATE), 'Int32') AS BIGINT) AS recency_days, \
              a.orders AS frequency, CAST(a.spend AS DECIMAL(18,2)) AS monetary \
              FROM agg a CROSS JOIN last",
        rebuild: Rebuild::Whole,
        key: &["customer_id", "currency"],
    },
    GoldTable {
        name: "partner_activity",
        sql: "SELECT o.partner_id, p.name AS partner_name, o.currency, COUNT(*) AS orders, \
              COUNT(DISTINCT o.customer_id) AS customers, \
              CAST(SUM(o.total_amount) AS DECIMAL(18,2)) AS revenue, \
              MIN(o.created_at) AS first_order_at, MAX(o.created_at) AS last_order_at \
              FROM orders o LEFT JOIN partners p ON o.partner_id = p.partner_id GROUP BY 1, 2, 3",
        rebuild: Rebuild::Whole,
        key: &["partner_id", "currency"],
    },
    GoldTable {
        name: "dim_customer",
        sql: "SELECT customer_id, address.city AS city, address.country AS country, \
              marketing_opt_in, created_at FROM customers",
        rebuild: Rebuild::Whole,
        key: &["customer_id"],
    },
    GoldTable {
        name: "dim_partner",
        sql: "SELECT partner_id, name, country, city, currency, onboarded_at FROM partners",
        rebuild: Rebuild::Whole,
        key: &["partner_id"],
    },
    GoldTable {
        name: "dim_product",
        sql: "SELECT product_id, partner_id, name, category, price, currency FROM products",
        rebuild: Rebuild::Whole,
        key: &["product_id"],
    },
    GoldTable {
        name: "dim_date",
        sql: "SELECT DISTINCT CAST(created_at AS DATE) AS date, \
              CAST(date_part('year', created_at) AS INT) AS year, \
              CAST(date_part('month', created_at) AS INT) AS month, \
              CAST(date_part('day', created_at) AS INT) AS day, \
              CAST(date_part('dow', created_at) AS INT) AS day_of_week FROM orders",
        rebuild: Rebuild::Whole,
        key: &["date"],
    },
];

/// The names of the gold tables.
pub fn gold_tables() -> Vec<&'static str> {
    TABLES.iter().map(|t| t.name).collect()
}

/// The key columns of a gold table (what identifies one of its rows), `None` for an unknown
/// name.
pub fn gold_table_key(name: &str) -> Option<&'static [&'static str]> {
    TABLES.iter().find(|t| t.name == name).map(|t| t.key)
}

/// What one gold build did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GoldReport {
    /// Per table: `Some(dates)` when only those order dates were replaced, `None` when the
    /// table was rebuilt whole; tables already up to date are absent.
    pub rebuilt: BTreeMap<String, Option<usize>>,
    /// The silver versions the build reflects (`orders`, `order_lines`, ...).
    pub silver_versions: BTreeMap<String, i64>,
}

/// Builds the gold tables from the silver ones.
#[derive(Debug, Clone)]
pub struct Gold {
    silver: BTreeMap<String, TableLocation>,
    gold: BTreeMap<String, TableLocation>,
}

fn app_id(silver: &str) -> String {
    format!("strata-gold/{silver}")
}

impl Gold {
    /// Gold over `silver(name)` tables, writing `gold(name)` tables.
    ///
    /// # Errors
    /// Config when a location cannot be made.
    pub fn try_new(
        silver: impl Fn(&str) -> Result<TableLocation>,
        gold: impl Fn(&str) -> Result<TableLocation>,
    ) -> Result<Self> {
        Ok(Self {
            silver: SILVER_TABLES
                .iter()
                .map(|n| Ok(((*n).to_string(), silver(n)?)))
                .collect::<Result<_>>()?,
            gold: TABLES
                .iter()
                .map(|t| Ok((t.name.to_string(), gold(t.name)?)))
                .collect::<Result<_>>()?,
        })
    }

    /// Run SQL over the gold tables (by their names) and the silver ones (`silver_<name>`).
    ///
    /// # Errors
    /// When a table cannot be read or the SQL fails.
    pub async fn query(&self, sql: &str) -> Result<Vec<arrow_array::RecordBatch>> {
        let ctx = strata_delta::deltalake::delta_datafusion::create_session().into_inner();
        let tables = self
            .gold
            .iter()
            .map(|(n, l)| (n.clone(), l))
            .chain(self.silver.iter().map(|(n, l)| (format!("silver_{n}"), l)));
        for (name, loc) in tables {
            let Some(t) = loc.load().await? else {
                continue;
            };
            register(&ctx, &name, loc, &t).await?;
        }
        let sql_err = |e| {
            Error::new(ErrorKind::Config, "the query failed")
                .with_context("sql", sql)
                .with_source(e)
        };
        ctx.sql(sql)
            .await
            .map_err(sql_err)?
            .collect()
            .await
            .map_err(sql_err)
    }

    /// The location of gold table `name`.
    pub fn table(&self, name: &str) -> Option<&TableLocation> {
        self.gold.get(name)
    }

    /// Bring every gold table up to the silver tables' latest versions: date-partitioned
    /// tables replace only the order dates whose orders or lines changed since the versions
    /// they reflect (read from the silver change feed), the others are rebuilt whole. Each
    /// table's commit records the silver versions as application transactions, so a crash
    /// and rerun redoes exactly the tables not yet committed.
    ///
    /// # Errors
    /// NotFound when a silver table is missing; Conflict (retryable) when a concurrent writer
    /// wins a commit.
    pub async fn build(&self) -> Result<GoldReport> {
        let ctx = strata_delta::deltalake::delta_datafusion::create_session().into_inner();
        let mut versions = BTreeMap::new();
        let mut silver_tables = BTreeMap::new();
        for (name, loc) in &self.silver {
            let t = loc.load().await?.ok_or_else(|| {
                Error::new(ErrorKind::NotFound, "a silver table gold needs is missing")
                    .with_context("table", loc.url.as_str())
            })?;
            versions.insert(name.clone(), t.version().unwrap_or(0) as i64);
            register(&ctx, name, loc, &t).await?;
            silver_tables.insert(name.clone(), t);
        }
        let mut report = GoldReport {
            silver_versions: versions.clone(),
            ..Default::default()
        };
        for spec in TABLES {
            let loc = &self.gold[spec.name];
            let existing = loc.load().await?;
            // The silver versions this table reflects.
            let mut seen = BTreeMap::new();
            if let Some(t) = &existing {
                for s in SILVER_TABLES {
                    if let Some(v) = loc.app_version(t, &app_id(s)).await? {
                        seen.insert((*s).to_string(), v);
                    }
                }
            }
            if existing.is_some()
                && SILVER_TABLES
                    .iter()
                    .all(|s| seen.get(*s) >= versions.get(*s))
            {
                continue;
            }
            let df = ctx.sql(spec.sql).await.map_err(|e| {
                Error::internal("a gold query failed to plan")
                    .with_context("table", spec.name)
                    .with_source(e)
            })?;
            let dates = match (spec.rebuild, &existing) {
                (Rebuild::ByOrderDate, Some(_)) if seen.len() == SILVER_TABLES.len() => {
                    Some(self.changed_dates(&silver_tables, &seen, &versions).await?)
                }
                _ => None,
            };
            self.write(spec, loc, existing, df, dates.as_ref(), &versions, &ctx)
                .await?;
            report
                .rebuilt
                .insert(spec.name.to_string(), dates.map(|d| d.len()));
            strata_core::crash_point("gold.after_table").await;
        }
        Ok(report)
    }

    /// Order dates (days since the epoch) of every order and line changed after `seen`.
    async fn changed_dates(
        &self,
        silver: &BTreeMap<String, strata_delta::deltalake::DeltaTable>,
        seen: &BTreeMap<String, i64>,
        now: &BTreeMap<String, i64>,
    ) -> Result<BTreeSet<i32>> {
        use strata_delta::deltalake::datafusion::physical_plan::execute_stream;
        let mut dates = BTreeSet::new();
        for name in ["orders", "order_lines"] {
            let (from, to) = (seen[name], now[name]);
            if from >= to {
                continue;
            }
            let loc = &self.silver[name];
            let ctx = strata_delta::deltalake::delta_datafusion::create_session().into_inner();
            let plan = silver[name]
                .clone()
                .scan_cdf()
                .with_starting_version((from + 1) as u64)
                .with_ending_version(to as u64)
                .build(&ctx.state(), None)
                .await
                .map_err(|e| delta_err(e, "cannot read the silver change feed", &loc.url))?;
            let mut st = execute_stream(plan, ctx.task_ctx()).map_err(|e| {
                Error::internal("cannot read the silver change feed").with_source(e)
            })?;
            while let Some(b) = st.try_next().await.map_err(|e| {
                Error::new(ErrorKind::Data, "reading the silver change feed failed").with_source(e)
            })? {
                let Some(c) = b.column_by_name("created_at") else {
                    continue;
                };
                let d = arrow_cast::cast(c, &arrow_schema::DataType::Date32).map_err(|e| {
                    Error::internal("cannot date the changed orders").with_source(e)
                })?;
                let d = d
                    .as_any()
                    .downcast_ref::<arrow_array::Date32Array>()
                    .ok_or_else(|| Error::internal("not a date column"))?;
                dates.extend(d.iter().flatten());
            }
        }
        Ok(dates)
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one call site, all distinct inputs"
    )]
    async fn write(
        &self,
        spec: &GoldTable,
        loc: &TableLocation,
        existing: Option<strata_delta::deltalake::DeltaTable>,
        df: DataFrame,
        dates: Option<&BTreeSet<i32>>,
        versions: &BTreeMap<String, i64>,
        ctx: &SessionContext,
    ) -> Result<()> {
        use strata_delta::deltalake::datafusion::prelude::{col, lit};
        let txns = SILVER_TABLES
            .iter()
            .map(|s| Transaction::new(app_id(s), versions[*s]))
            .collect();
        let props = CommitProperties::default()
            .with_application_transactions(txns)
            .with_metadata([(
                "strata".to_string(),
                serde_json::json!({"gold": spec.name, "silver_versions": versions}),
            )]);
        let table = match existing {
            Some(t) => t,
            None => loc.handle()?,
        };
        let mut df = df;
        let mut predicate = None;
        if let Some(days) = dates {
            if days.is_empty() {
                // Nothing dated changed: record the versions with an empty replace.
                predicate = Some("false".to_string());
                df = df
                    .filter(lit(false))
                    .map_err(|e| Error::internal("cannot filter").with_source(e))?;
            } else {
                let list: Vec<String> = days
                    .iter()
                    .map(|d| format!("DATE '{}'", day_text(*d)))
                    .collect();
                let p = format!("order_date IN ({})", list.join(", "));
                df = df
                    .filter(col("order_date").in_list(
                        days.iter().map(|d| lit(strata_delta::deltalake::datafusion::scalar::ScalarValue::Date32(Some(*d)))).collect(),
                        false,
                    ))
                    .map_err(|e| Error::internal("cannot filter the affected dates").with_source(e))?;
                predicate = Some(p);
            }
        }
        let mut w = table
            .write(Vec::new())
            .with_input_plan(df.logical_plan().clone())
            .with_session_state(Arc::new(ctx.state()))
            .with_save_mode(SaveMode::Overwrite)
            .with_commit_properties(props);
        if spec.rebuild == Rebuild::ByOrderDate {
            w = w.with_partition_columns(["order_date"]);
        }
        if let Some(p) = predicate {
            w = w.with_replace_where(p);
        }
        w.await.map_err(|e| {
            delta_err(e, "writing a gold table failed", &loc.url).with_context("gold", spec.name)
        })?;
        tracing::info!(table = spec.name, dates = ?dates.map(BTreeSet::len), "gold table written");
        Ok(())
    }
}

/// Make table `t` (at `loc`) readable as `name` in `ctx`'s SQL.
async fn register(
    ctx: &SessionContext,
    name: &str,
    loc: &TableLocation,
    t: &strata_delta::deltalake::DeltaTable,
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

/// `YYYY-MM-DD` of a day number (days since 1970-01-01).
fn day_text(days: i32) -> String {
    chrono::DateTime::from_timestamp(i64::from(days) * 86_400, 0)
        .map(|d| d.date_naive().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_numbers_print_as_dates() {
        assert_eq!(day_text(0), "1970-01-01");
        assert_eq!(day_text(19_723), "2024-01-01");
        assert_eq!(day_text(19_782), "2024-02-29");
    }
}
