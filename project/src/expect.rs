//! Declared expectations (a model's `expectations:` setting, a pipeline's `expectations:`
//! key), checked and compiled to the SQL that [`stratalake_core::expect`] describes.
//!
//! ```yaml
//! expectations:
//!   - { name: has_id, expect: not_null, column: order_id, action: quarantine }
//!   - { name: known_status, expect: accepted_values, column: status, values: [paid, shipped] }
//!   - { name: sane_total, expect: range, column: total_amount, min: 0, max: 100000 }
//!   - { name: email_shape, expect: regex, column: email, pattern: '^[^@]+@[^@]+$' }
//!   - { name: code_size, expect: length, column: coupon_code, min: 4, max: 16 }
//!   - { name: numeric_qty, expect: type, column: qty_text, type: BIGINT }
//!   - { name: positive, expect: expression, expression: "quantity * unit_price >= 0" }
//!   - { name: one_per_order, expect: unique, columns: [order_id], action: fail }
//!   - { name: known_customer, expect: relationships, column: customer_id,
//!       to: silver.customers, field: customer_id }
//!   - { name: not_empty, expect: row_count, min: 1, action: fail }
//!   - { name: steady, expect: row_count_change, max_decrease_percent: 10 }
//!   - { name: fresh, expect: freshness, column: updated_at, max_age_hours: 48 }
//!   - { name: no_refunds_above_sales, expect: sql,
//!       sql: "SELECT * FROM gold.daily_revenue WHERE refunds > revenue" }
//! ```

use serde::Deserialize;
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;
use std::collections::BTreeSet;
use std::path::Path;
use stratalake_core::expect::{
    Action, Expectations, RowRule, RuleInfo, Severity, TableCheck, TableTest,
};
use stratalake_core::{Error, ErrorKind, Result};

/// The kinds of expectation.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ExpectKind {
    /// Row: `column` is not null.
    NotNull,
    /// Row: `column` is one of `values` (nulls pass).
    AcceptedValues,
    /// Row: `min <= column <= max` (either bound may be left out; nulls pass).
    Range,
    /// Row: `column` matches `pattern` (a regular expression; nulls pass).
    Regex,
    /// Row: the text `column` has between `min` and `max` characters (nulls pass).
    Length,
    /// Row: `column` casts to SQL type `type` (`BIGINT`, `DATE`, `DECIMAL(12,2)`; nulls pass).
    Type,
    /// Row: the SQL `expression` is not false.
    Expression,
    /// Table: no two rows share the values of `columns` (rows with a null among them are
    /// left to `not_null`).
    Unique,
    /// Table: every non-null `column` is some row's `field` in table `to`.
    Relationships,
    /// Table: the row count is within `min` and `max`.
    RowCount,
    /// Table: the row count moved by at most `max_decrease_percent` /
    /// `max_increase_percent` since the previous build.
    RowCountChange,
    /// Table: the newest `column` is at most `max_age_hours` old.
    Freshness,
    /// Table: the query `sql` returns no row (it returns the failing ones).
    Sql,
}

impl ExpectKind {
    /// The word in the settings.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotNull => "not_null",
            Self::AcceptedValues => "accepted_values",
            Self::Range => "range",
            Self::Regex => "regex",
            Self::Length => "length",
            Self::Type => "type",
            Self::Expression => "expression",
            Self::Unique => "unique",
            Self::Relationships => "relationships",
            Self::RowCount => "row_count",
            Self::RowCountChange => "row_count_change",
            Self::Freshness => "freshness",
            Self::Sql => "sql",
        }
    }

    /// Whether it is checked row by row (else on the whole table).
    pub fn is_row_rule(self) -> bool {
        matches!(
            self,
            Self::NotNull
                | Self::AcceptedValues
                | Self::Range
                | Self::Regex
                | Self::Length
                | Self::Type
                | Self::Expression
        )
    }
}

/// A value in `accepted_values`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
#[non_exhaustive]
pub enum Literal {
    /// A whole number.
    Int(i64),
    /// A number.
    Float(f64),
    /// `true` or `false`.
    Bool(bool),
    /// Text.
    Text(String),
}

impl Literal {
    fn sql(&self) -> String {
        match self {
            Self::Int(i) => i.to_string(),
            Self::Float(f) => f.to_string(),
            Self::Bool(b) => b.to_string(),
            Self::Text(s) => quote_text(s),
        }
    }
}

/// One declared expectation. Which keys a kind takes is in [`ExpectKind`]; a key that does
/// not belong to the kind is an error.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Expectation {
    /// The rule's name, unique within its table (results and quarantine name it).
    pub name: String,
    /// Its kind.
    pub expect: ExpectKind,
    /// What a failure does: `warn` (default), `quarantine` (row rules of streaming models and
    /// pipelines) or `fail`.
    #[serde(default)]
    pub action: Action,
    /// `info`, `warn` or `error` (default: `error` for `fail`, else `warn`).
    #[serde(default)]
    pub severity: Option<Severity>,
    /// What the rule is about, for people.
    #[serde(default)]
    pub description: Option<String>,
    /// The column.
    #[serde(default)]
    pub column: Option<String>,
    /// The columns (`unique`).
    #[serde(default)]
    pub columns: Vec<String>,
    /// The allowed values (`accepted_values`).
    #[serde(default)]
    pub values: Vec<Literal>,
    /// The lower bound (`range`, `length`, `row_count`).
    #[serde(default)]
    pub min: Option<f64>,
    /// The upper bound (`range`, `length`, `row_count`).
    #[serde(default)]
    pub max: Option<f64>,
    /// The regular expression (`regex`).
    #[serde(default)]
    pub pattern: Option<String>,
    /// The SQL type (`type`).
    #[serde(default, rename = "type")]
    pub data_type: Option<String>,
    /// The SQL boolean expression (`expression`).
    #[serde(default)]
    pub expression: Option<String>,
    /// The query returning failing rows (`sql`).
    #[serde(default)]
    pub sql: Option<String>,
    /// The table referred to (`relationships`): `layer.name`.
    #[serde(default)]
    pub to: Option<String>,
    /// The referred column (`relationships`; default: `column`).
    #[serde(default)]
    pub field: Option<String>,
    /// `row_count_change`: the largest fall allowed, in percent.
    #[serde(default)]
    pub max_decrease_percent: Option<f64>,
    /// `row_count_change`: the largest growth allowed, in percent.
    #[serde(default)]
    pub max_increase_percent: Option<f64>,
    /// `freshness`: the largest age of the newest value, in hours.
    #[serde(default)]
    pub max_age_hours: Option<f64>,
}

/// Where the rules run, which decides the actions they may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Checked {
    /// A pipeline's stream: row rules only, as rows stream to the sink (a project pipeline's
    /// table checks are compiled as [`Checked::Streaming`]: they run after its commit).
    Pipeline,
    /// A `merge` or `append` model: row rules as rows stream in; table checks after each
    /// commit (so they can only warn).
    Streaming,
    /// A `table` or `incremental` model: row rules on the new rows and table checks on the
    /// table as the build would leave it, both before its commit (no quarantine: its rows
    /// are computed from its inputs).
    Table,
}

fn quote_ident(c: &str) -> String {
    format!("\"{}\"", c.replace('"', "\"\""))
}

fn quote_text(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn number(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{f:.0}")
    } else {
        f.to_string()
    }
}

/// Check `list` (of table `table`, declared in `file`) and compile it.
///
/// # Errors
/// Config naming the file and the rule: a duplicate name, a key missing or not belonging to
/// the kind, an action the place does not allow, SQL that does not parse.
pub fn compile(
    list: &[Expectation],
    table: &str,
    file: &Path,
    checked: Checked,
) -> Result<Expectations> {
    let mut names = BTreeSet::new();
    let mut rows = Vec::new();
    let mut tables = Vec::new();
    for (i, e) in list.iter().enumerate() {
        let bad = |msg: String| {
            Error::new(
                ErrorKind::Config,
                format!(
                    "{}: `expectations[{i}]` (`{}`, {}): {msg}",
                    file.display(),
                    e.name,
                    e.expect.as_str()
                ),
            )
        };
        if e.name.is_empty() || !names.insert(e.name.as_str()) {
            return Err(bad("each expectation needs a name of its own".into()));
        }
        check_keys(e).map_err(bad)?;
        let severity = e.severity.unwrap_or(if e.action == Action::Fail {
            Severity::Error
        } else {
            Severity::Warn
        });
        let info = RuleInfo::new(
            &e.name,
            e.expect.as_str(),
            e.column.as_deref(),
            e.action,
            severity,
        );
        if e.expect.is_row_rule() {
            if e.action == Action::Quarantine && checked == Checked::Table {
                return Err(bad("`action: quarantine` needs rows that stream in (a `merge` or `append` model, a pipeline); a table model's rows are computed from its inputs: use `warn` or `fail` here, or quarantine upstream".into()));
            }
            let passes = row_predicate(e).map_err(bad)?;
            rows.push(RowRule::new(info, passes));
            continue;
        }
        match checked {
            Checked::Pipeline => {
                return Err(bad("a pipeline checks rows as they stream; table checks belong to a model of the table (put them in models/)".into()));
            }
            Checked::Streaming if e.action != Action::Warn => {
                return Err(bad(format!(
                    "a `merge` or `append` model commits each epoch as it streams, so its table checks run after the commit and can only `warn`; for `action: {}`, check it in a `table` model over it",
                    e.action.as_str()
                )));
            }
            _ if e.action == Action::Quarantine => {
                return Err(bad(
                    "a table check has no row to quarantine: use `warn` or `fail`".into(),
                ));
            }
            _ => {}
        }
        let (test, reads) = table_test(e, table).map_err(bad)?;
        tables.push(TableCheck::new(info, test, reads));
    }
    Ok(Expectations::new(rows, tables))
}

/// The keys each kind takes beside name, expect, action and severity.
fn allowed(kind: ExpectKind) -> &'static [&'static str] {
    use ExpectKind as K;
    match kind {
        K::NotNull => &["column"],
        K::AcceptedValues => &["column", "values"],
        K::Range => &["column", "min", "max"],
        K::Regex => &["column", "pattern"],
        K::Length => &["column", "min", "max"],
        K::Type => &["column", "type"],
        K::Expression => &["expression", "column"],
        K::Unique => &["columns", "column"],
        K::Relationships => &["column", "to", "field"],
        K::RowCount => &["min", "max"],
        K::RowCountChange => &["max_decrease_percent", "max_increase_percent"],
        K::Freshness => &["column", "max_age_hours"],
        K::Sql => &["sql"],
    }
}

fn check_keys(e: &Expectation) -> std::result::Result<(), String> {
    let set = [
        ("column", e.column.is_some()),
        ("columns", !e.columns.is_empty()),
        ("values", !e.values.is_empty()),
        ("min", e.min.is_some()),
        ("max", e.max.is_some()),
        ("pattern", e.pattern.is_some()),
        ("type", e.data_type.is_some()),
        ("expression", e.expression.is_some()),
        ("sql", e.sql.is_some()),
        ("to", e.to.is_some()),
        ("field", e.field.is_some()),
        ("max_decrease_percent", e.max_decrease_percent.is_some()),
        ("max_increase_percent", e.max_increase_percent.is_some()),
        ("max_age_hours", e.max_age_hours.is_some()),
    ];
    let ok = allowed(e.expect);
    if let Some((k, _)) = set.iter().find(|(k, s)| *s && !ok.contains(k)) {
        return Err(format!(
            "`{k}` does not belong to this kind (it takes {})",
            ok.join(", ")
        ));
    }
    let need = |k: &str, have: bool| {
        if have {
            Ok(())
        } else {
            Err(format!("`{k}` is required"))
        }
    };
    use ExpectKind as K;
    match e.expect {
        K::NotNull
        | K::Regex
        | K::Type
        | K::Relationships
        | K::Freshness
        | K::AcceptedValues
        | K::Range
        | K::Length => need("column", e.column.is_some())?,
        _ => {}
    }
    match e.expect {
        K::AcceptedValues => need("values", !e.values.is_empty()),
        K::Range | K::Length | K::RowCount => {
            need("min` or `max", e.min.is_some() || e.max.is_some())
        }
        K::Regex => need("pattern", e.pattern.is_some()),
        K::Type => need("type", e.data_type.is_some()),
        K::Expression => need("expression", e.expression.is_some()),
        K::Unique => need("columns", !e.columns.is_empty() || e.column.is_some()),
        K::Relationships => need("to", e.to.is_some()),
        K::RowCountChange => need(
            "max_decrease_percent` or `max_increase_percent",
            e.max_decrease_percent.is_some() || e.max_increase_percent.is_some(),
        ),
        K::Freshness => need("max_age_hours", e.max_age_hours.is_some()),
        K::Sql => need("sql", e.sql.is_some()),
        _ => Ok(()),
    }
}

fn parse_expr(sql: &str) -> std::result::Result<(), String> {
    Parser::new(&GenericDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .map(|_| ())
        .map_err(|e| format!("the expression does not parse: {e}"))
}

fn row_predicate(e: &Expectation) -> std::result::Result<String, String> {
    use ExpectKind as K;
    let c = quote_ident(e.column.as_deref().unwrap_or_default());
    let bounds = |v: &str| {
        let mut parts = Vec::new();
        if let Some(m) = e.min {
            parts.push(format!("{v} >= {}", number(m)));
        }
        if let Some(m) = e.max {
            parts.push(format!("{v} <= {}", number(m)));
        }
        parts.join(" AND ")
    };
    let p = match e.expect {
        K::NotNull => format!("{c} IS NOT NULL"),
        K::AcceptedValues => format!(
            "{c} IN ({})",
            e.values
                .iter()
                .map(Literal::sql)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        K::Range => bounds(&c),
        K::Length => bounds(&format!("character_length(CAST({c} AS VARCHAR))")),
        K::Regex => {
            let pat = e.pattern.as_deref().unwrap_or_default();
            regex_syntax::Parser::new()
                .parse(pat)
                .map_err(|err| format!("`pattern` is not a regular expression: {err}"))?;
            format!("regexp_like(CAST({c} AS VARCHAR), {})", quote_text(pat))
        }
        K::Type => {
            let t = e.data_type.as_deref().unwrap_or_default();
            let p = format!("{c} IS NULL OR try_cast({c} AS {t}) IS NOT NULL");
            parse_expr(&p).map_err(|_| format!("`type: {t}` is not a SQL type"))?;
            p
        }
        K::Expression => e.expression.clone().unwrap_or_default(),
        _ => return Err("not a row rule".into()),
    };
    parse_expr(&p)?;
    Ok(format!("({p})"))
}

fn table_test(
    e: &Expectation,
    table: &str,
) -> std::result::Result<(TableTest, Vec<String>), String> {
    use ExpectKind as K;
    let c = quote_ident(e.column.as_deref().unwrap_or_default());
    let mut reads = Vec::new();
    let sql = match e.expect {
        K::Unique => {
            let cols: Vec<String> = if e.columns.is_empty() {
                e.column.iter().map(|c| quote_ident(c)).collect()
            } else {
                e.columns.iter().map(|c| quote_ident(c)).collect()
            };
            let list = cols.join(", ");
            let present = cols
                .iter()
                .map(|c| format!("{c} IS NOT NULL"))
                .collect::<Vec<_>>()
                .join(" AND ");
            format!(
                "SELECT {list}, count(*) AS \"rows\" FROM {table} WHERE {present} GROUP BY {list} HAVING count(*) > 1"
            )
        }
        K::Relationships => {
            let to = e.to.clone().unwrap_or_default();
            if !to
                .split_once('.')
                .is_some_and(|(l, n)| crate::model::is_name(l) && crate::model::is_name(n))
            {
                return Err(format!("`to: {to}` is not a table name (`layer.name`)"));
            }
            let f = quote_ident(
                e.field
                    .as_deref()
                    .or(e.column.as_deref())
                    .unwrap_or_default(),
            );
            reads.push(to.clone());
            format!(
                "SELECT t.{c} FROM {table} AS t LEFT ANTI JOIN {to} AS u ON t.{c} = u.{f} WHERE t.{c} IS NOT NULL"
            )
        }
        K::RowCount => {
            let mut cond = Vec::new();
            if let Some(m) = e.min {
                cond.push(format!("\"rows\" < {}", number(m)));
            }
            if let Some(m) = e.max {
                cond.push(format!("\"rows\" > {}", number(m)));
            }
            format!(
                "SELECT \"rows\" FROM (SELECT count(*) AS \"rows\" FROM {table}) AS n WHERE {}",
                cond.join(" OR ")
            )
        }
        K::RowCountChange => {
            return Ok((
                TableTest::RowCountChange {
                    max_decrease_percent: e.max_decrease_percent,
                    max_increase_percent: e.max_increase_percent,
                },
                reads,
            ));
        }
        K::Freshness => {
            let secs = e.max_age_hours.unwrap_or_default() * 3600.0;
            format!(
                "SELECT max({c}) AS newest FROM {table} HAVING max({c}) IS NULL OR date_part('epoch', now()) - date_part('epoch', max({c})) > {}",
                number(secs)
            )
        }
        K::Sql => {
            let q = e.sql.clone().unwrap_or_default();
            let st = Parser::parse_sql(&GenericDialect {}, &q)
                .map_err(|err| format!("`sql` does not parse: {err}"))?;
            let [sqlparser::ast::Statement::Query(query)] = st.as_slice() else {
                return Err("`sql` is one query returning the failing rows".into());
            };
            let refs = crate::model::references(Path::new("sql"), query, &[])
                .map_err(|err| format!("`sql`: {err}"))?;
            reads.extend(refs.into_iter().map(|r| r.name).filter(|n| n != table));
            q.trim().trim_end_matches(';').to_string()
        }
        _ => return Err("not a table check".into()),
    };
    Ok((TableTest::FailingRows { sql }, reads))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Vec<Expectation> {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn compiled(yaml: &str, checked: Checked) -> Result<Expectations> {
        compile(
            &parse(yaml),
            "silver.orders",
            Path::new("models/silver/orders.sql"),
            checked,
        )
    }

    #[test]
    fn row_rules_compile_to_predicates() {
        let e = compiled(
            r#"
- { name: a, expect: not_null, column: order_id, action: quarantine }
- { name: b, expect: accepted_values, column: status, values: [paid, "it's", 3] }
- { name: c, expect: range, column: total, min: 0, max: 10.5 }
- { name: d, expect: length, column: code, max: 8 }
- { name: e, expect: regex, column: email, pattern: '^[^@]+@' }
- { name: f, expect: type, column: qty, type: BIGINT }
- { name: g, expect: expression, expression: "qty > 0" }
"#,
            Checked::Streaming,
        )
        .unwrap();
        let p: Vec<&str> = e.rows.iter().map(|r| r.passes.as_str()).collect();
        assert_eq!(
            p,
            [
                "(\"order_id\" IS NOT NULL)",
                "(\"status\" IN ('paid', 'it''s', 3))",
                "(\"total\" >= 0 AND \"total\" <= 10.5)",
                "(character_length(CAST(\"code\" AS VARCHAR)) <= 8)",
                "(regexp_like(CAST(\"email\" AS VARCHAR), '^[^@]+@'))",
                "(\"qty\" IS NULL OR try_cast(\"qty\" AS BIGINT) IS NOT NULL)",
                "(qty > 0)",
            ]
        );
        assert_eq!(e.rows[0].info.action, Action::Quarantine);
        assert_eq!(e.rows[1].info.severity, Severity::Warn);
    }

    #[test]
    fn table_checks_name_what_they_read() {
        let e = compiled(
            r#"
- { name: u, expect: unique, columns: [order_id], action: fail }
- { name: r, expect: relationships, column: customer_id, to: silver.customers, action: fail }
- { name: s, expect: sql, sql: "SELECT * FROM silver.orders o JOIN gold.x g ON o.a = g.a WHERE o.t < 0" }
- { name: n, expect: row_count_change, max_decrease_percent: 5 }
"#,
            Checked::Table,
        )
        .unwrap();
        assert_eq!(e.tables[0].info.severity, Severity::Error);
        assert_eq!(e.tables[1].reads, ["silver.customers"]);
        assert_eq!(e.tables[2].reads, ["gold.x"]);
        assert!(matches!(
            e.tables[3].test,
            TableTest::RowCountChange {
                max_decrease_percent: Some(5.0),
                max_increase_percent: None
            }
        ));
    }

    #[test]
    fn misplaced_keys_and_actions_are_refused_by_name() {
        let cases = [
            (
                "- { name: a, expect: not_null }",
                Checked::Table,
                "`column` is required",
            ),
            (
                "- { name: a, expect: not_null, column: x, pattern: y }",
                Checked::Table,
                "`pattern` does not belong",
            ),
            (
                "- { name: a, expect: not_null, column: x, action: quarantine }",
                Checked::Table,
                "needs rows that stream",
            ),
            (
                "- { name: a, expect: unique, column: x, action: fail }",
                Checked::Streaming,
                "can only `warn`",
            ),
            (
                "- { name: a, expect: unique, column: x }",
                Checked::Pipeline,
                "belong to a model",
            ),
            (
                "- { name: a, expect: regex, column: x, pattern: '(' }",
                Checked::Table,
                "not a regular expression",
            ),
            (
                "- { name: a, expect: expression, expression: 'a >' }",
                Checked::Table,
                "does not parse",
            ),
            (
                "- { name: a, expect: not_null, column: x }\n- { name: a, expect: not_null, column: y }",
                Checked::Table,
                "a name of its own",
            ),
        ];
        for (yaml, checked, want) in cases {
            let e = compiled(yaml, checked).unwrap_err().to_string();
            assert!(e.contains(want), "{yaml}: {e}");
            assert!(
                e.contains("models/silver/orders.sql: `expectations["),
                "{e}"
            );
        }
    }
}
