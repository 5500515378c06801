//! One model: a SQL file under `models/<layer>/<name>.sql`, its settings in the header comment,
//! and the tables its SQL reads.

use crate::yaml;
use serde::Deserialize;
use sqlparser::ast::{
    Expr, GroupByExpr, ObjectName, ObjectNamePart, Query, SetExpr, Spanned, Statement, Visit,
    Visitor,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use stratalake_core::expect::Expectations;
use stratalake_core::{DeleteWhen, Error, ErrorKind, Result, SchemaEvolution};
use stratalake_silver::ConformSettings;

/// How a model's table is written.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Materialized {
    /// Rebuilt whole from the SQL whenever an input changed.
    #[default]
    Table,
    /// Only the partitions (values of `partition_by`) whose input rows changed are replaced.
    Incremental,
    /// The input's new rows, MERGEd by `key` (the newest `version_column` winning).
    Merge,
    /// The input's new rows, appended.
    Append,
}

impl Materialized {
    /// The word in the settings.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Table => "table",
            Self::Incremental => "incremental",
            Self::Merge => "merge",
            Self::Append => "append",
        }
    }

    /// Whether the model reads its input's new rows as a stream (merge, append) rather than
    /// whole tables (table, incremental).
    pub fn is_streaming(self) -> bool {
        matches!(self, Self::Merge | Self::Append)
    }
}

/// One row per element of a list of structs (order lines out of orders).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ExplodeSettings {
    /// The list column.
    pub column: String,
    /// The parent columns repeated on every element's row.
    pub keep: Vec<String>,
}

/// A model's settings: the YAML in the `/* ... */` comment that opens its SQL file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ModelSettings {
    /// `table` (default), `incremental`, `merge` or `append`.
    #[serde(default)]
    pub materialized: Materialized,
    /// The partition column: required for `incremental` (its values are what is replaced),
    /// a Delta partition column for the others.
    #[serde(default)]
    pub partition_by: Option<String>,
    /// `incremental`: per input (`silver.orders`), the SQL expression over its rows that
    /// gives the partition they belong to (`CAST(created_at AS DATE)`); an input that has the
    /// `partition_by` column needs none, and a change in an input with neither rebuilds the
    /// table whole.
    #[serde(default)]
    pub partition_from: BTreeMap<String, String>,
    /// The columns that identify a row: required for `merge`; for the others the key the
    /// warehouse sync merges by.
    #[serde(default)]
    pub key: Vec<String>,
    /// `merge`: the column ordering versions (`updated_at`): the newest wins.
    #[serde(default)]
    pub version_column: Option<String>,
    /// `merge`: rows whose `column` equals `equals` delete their key.
    #[serde(default)]
    pub delete_when: Option<DeleteWhen>,
    /// `merge`/`append`: columns the table does not have (default `freeze` for merge,
    /// `add_columns` for append).
    #[serde(default)]
    pub schema_evolution: Option<SchemaEvolution>,
    /// `merge`/`append`: mask the input by the project's privacy policy, as the rules of this
    /// policy table (`customers`) say, before anything else sees it.
    #[serde(default)]
    pub mask: Option<String>,
    /// `merge`/`append`: typed columns and rules, failures to quarantine.
    #[serde(default)]
    pub conform: Option<ConformSettings>,
    /// `merge`/`append`: one row per list element.
    #[serde(default)]
    pub explode: Option<ExplodeSettings>,
    /// What the table holds.
    #[serde(default)]
    pub description: Option<String>,
    /// Column docs: name to description.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// What good data is for the table, and what happens when it is not (see
    /// [`crate::expect`]).
    #[serde(default)]
    pub expectations: Vec<crate::expect::Expectation>,
}

/// A table the SQL reads, and the line of the file it is named on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reference {
    /// `layer.name`.
    pub name: String,
    /// The 1-based line in the model's file.
    pub line: usize,
}

/// A model of a project.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Model {
    /// `layer.name` (`silver.orders`), from `models/<layer>/<name>.sql`.
    pub name: String,
    /// The layer (`silver`).
    pub layer: String,
    /// The table (`orders`).
    pub table: String,
    /// The file, relative to the project root (as errors name it).
    pub file: PathBuf,
    /// The SQL (the whole file: the settings comment is a comment to the SQL).
    pub sql: String,
    /// The settings.
    pub settings: ModelSettings,
    /// The tables it reads, each once, in the order first named.
    pub references: Vec<Reference>,
    /// Its expectations, compiled.
    pub expectations: Expectations,
}

/// Whether `s` is a layer or table name: lowercase letters, digits and `_`, not starting with
/// a digit.
pub fn is_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && c.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn err(file: &Path, line: Option<usize>, msg: impl std::fmt::Display) -> Error {
    let place = match line {
        Some(l) => format!("{}:{l}", file.display()),
        None => file.display().to_string(),
    };
    Error::new(ErrorKind::Config, format!("{place}: {msg}"))
}

/// Functions that may stand where a table does (`FROM unnest(...)`).
const TABLE_FUNCTIONS: &[&str] = &["unnest", "generate_series", "range"];
/// Aggregate functions a streaming (merge/append) model may not use.
const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "avg",
    "mean",
    "min",
    "max",
    "median",
    "array_agg",
    "string_agg",
    "first_value",
    "last_value",
    "stddev",
    "variance",
    "approx_distinct",
    "approx_median",
    "bit_and",
    "bit_or",
    "bool_and",
    "bool_or",
];

impl Model {
    /// Parse the model at `file` (relative to the project root: `models/<layer>/<name>.sql`)
    /// from its text.
    ///
    /// # Errors
    /// Config naming the file and line: a path not of that shape, settings that do not parse
    /// or do not fit the materialisation, SQL that does not parse, is not one query, or names
    /// a table other than as `layer.name`.
    pub fn parse(file: &Path, text: &str) -> Result<Self> {
        let parts: Vec<&str> = file
            .iter()
            .map(|p| p.to_str().unwrap_or_default())
            .collect();
        let (layer, table) = match parts.as_slice() {
            [.., layer, name] if name.ends_with(".sql") => (
                (*layer).to_string(),
                name.trim_end_matches(".sql").to_string(),
            ),
            _ => return Err(err(file, None, "a model is models/<layer>/<name>.sql")),
        };
        if !is_name(&layer) || !is_name(&table) {
            return Err(err(
                file,
                None,
                "layer and model names are lowercase letters, digits and `_` (they name Delta tables and SQL identifiers)",
            ));
        }
        let settings = settings(file, text)?;
        let statements = Parser::parse_sql(&GenericDialect {}, text)
            .map_err(|e| err(file, None, format!("the SQL does not parse: {e}")))?;
        let query = match statements.as_slice() {
            [Statement::Query(q)] => q,
            [] => return Err(err(file, None, "the file holds no SQL query")),
            [_] => {
                return Err(err(
                    file,
                    None,
                    "a model is one query (SELECT, WITH, VALUES): its table is written by its materialisation",
                ));
            }
            _ => {
                return Err(err(
                    file,
                    None,
                    "a model is one query; this file holds several statements",
                ));
            }
        };
        let references = references(file, query, &[])?;
        let name = format!("{layer}.{table}");
        let checked = match settings.materialized {
            m if m.is_streaming() => crate::expect::Checked::Streaming,
            _ => crate::expect::Checked::Table,
        };
        let expectations = crate::expect::compile(&settings.expectations, &name, file, checked)?;
        let model = Self {
            name,
            layer,
            table,
            file: file.to_path_buf(),
            sql: text.to_string(),
            settings,
            references,
            expectations,
        };
        model.validate(query)?;
        Ok(model)
    }

    /// The line where the SQL's first table reference is (or 1).
    fn first_line(&self) -> usize {
        self.references.first().map_or(1, |r| r.line)
    }

    fn validate(&self, query: &Query) -> Result<()> {
        let s = &self.settings;
        let bad = |msg: String| Err(err(&self.file, None, msg));
        let m = s.materialized;
        if m == Materialized::Incremental && s.partition_by.is_none() {
            return bad("`materialized: incremental` needs `partition_by`: the column whose changed values are rebuilt".into());
        }
        if m == Materialized::Merge && s.key.is_empty() {
            return bad(
                "`materialized: merge` needs `key`: the columns that identify a row".into(),
            );
        }
        if let Some(k) = s
            .partition_from
            .keys()
            .find(|k| !self.references.iter().any(|r| &r.name == *k))
        {
            return bad(format!(
                "`partition_from` names `{k}`, which the SQL does not read"
            ));
        }
        if m != Materialized::Incremental && !s.partition_from.is_empty() {
            return bad("`partition_from` belongs to `materialized: incremental`".into());
        }
        if m != Materialized::Merge && (s.version_column.is_some() || s.delete_when.is_some()) {
            return bad(
                "`version_column` and `delete_when` belong to `materialized: merge`".into(),
            );
        }
        if !m.is_streaming() {
            for (k, set) in [
                ("mask", s.mask.is_some()),
                ("conform", s.conform.is_some()),
                ("explode", s.explode.is_some()),
                ("schema_evolution", s.schema_evolution.is_some()),
            ] {
                if set {
                    return bad(format!(
                        "`{k}` runs on the rows of a `merge` or `append` model as they stream in; a `{}` model does this in its SQL",
                        m.as_str()
                    ));
                }
            }
            return Ok(());
        }
        // Streaming models run their SQL on each batch of their input's new rows.
        let line = Some(self.first_line());
        if self.references.len() != 1 {
            return Err(err(
                &self.file,
                line,
                format!(
                    "a `{}` model reads the new rows of exactly one table ({} named here); join or aggregate in a `table` or `incremental` model",
                    m.as_str(),
                    self.references.len()
                ),
            ));
        }
        if let Some(why) = not_row_wise(query) {
            return Err(err(
                &self.file,
                line,
                format!(
                    "a `{}` model's SQL runs on each batch of new rows, so it cannot {why}; do that in a `table` or `incremental` model",
                    m.as_str()
                ),
            ));
        }
        Ok(())
    }

    /// A fingerprint of what defines the model's rows (its SQL and settings): a build whose
    /// fingerprint differs from the one its table was built with rebuilds it.
    /// Expectations and docs are not part of it: changing a check re-checks, it does not
    /// rebuild.
    pub fn fingerprint(&self) -> String {
        let mut h = crc32fast::Hasher::new();
        h.update(query_text(&self.sql).as_bytes());
        let mut s = self.settings.clone();
        s.expectations.clear();
        s.description = None;
        s.columns.clear();
        h.update(format!("{s:?}").as_bytes());
        format!("{:08x}", h.finalize())
    }

    /// Whether the SQL only passes its input's rows through (`SELECT * FROM layer.name`), so
    /// a streaming model need not run it.
    pub fn is_pass_through(&self) -> bool {
        let Ok(st) = Parser::parse_sql(&GenericDialect {}, &self.sql) else {
            return false;
        };
        let [Statement::Query(q)] = st.as_slice() else {
            return false;
        };
        let SetExpr::Select(s) = q.body.as_ref() else {
            return false;
        };
        q.with.is_none()
            && q.order_by.is_none()
            && q.limit_clause.is_none()
            && s.selection.is_none()
            && s.distinct.is_none()
            && s.projection.len() == 1
            && matches!(s.projection[0], sqlparser::ast::SelectItem::Wildcard(_))
            && s.from.len() == 1
            && s.from[0].joins.is_empty()
            && matches!(s.from[0].relation, sqlparser::ast::TableFactor::Table { ref args, .. } if args.is_none())
    }
}

/// Why a streaming model's query is not row by row, if it is not.
fn not_row_wise(q: &Query) -> Option<&'static str> {
    let SetExpr::Select(s) = q.body.as_ref() else {
        return Some("combine queries (UNION, INTERSECT, EXCEPT)");
    };
    if s.distinct.is_some() {
        return Some("use DISTINCT");
    }
    if s.from.len() > 1 || s.from.iter().any(|f| !f.joins.is_empty()) {
        return Some("join");
    }
    let grouped = match &s.group_by {
        GroupByExpr::All(_) => true,
        GroupByExpr::Expressions(e, _) => !e.is_empty(),
    };
    if grouped || s.having.is_some() {
        return Some("GROUP BY");
    }
    if q.order_by.is_some() || q.limit_clause.is_some() {
        return Some("ORDER BY or LIMIT across all rows");
    }
    struct Funcs(Option<&'static str>);
    impl Visitor for Funcs {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if let Expr::Function(f) = e {
                if f.over.is_some() {
                    self.0 = Some("use window functions (OVER)");
                    return ControlFlow::Break(());
                }
                let name = f.name.to_string().to_ascii_lowercase();
                if AGGREGATES.contains(&name.as_str()) {
                    self.0 = Some("aggregate");
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = Funcs(None);
    let _ = q.visit(&mut v);
    v.0
}

/// The SQL after the settings comment.
fn query_text(text: &str) -> &str {
    let rest = text.trim_start();
    match rest
        .strip_prefix("/*")
        .and_then(|b| b.find("*/").map(|e| &b[e + 2..]))
    {
        Some(q) => q,
        None => rest,
    }
}

/// The settings in the `/* ... */` comment the file opens with (none: the defaults).
fn settings(file: &Path, text: &str) -> Result<ModelSettings> {
    let start = text.len() - text.trim_start().len();
    let rest = &text[start..];
    let Some(body) = rest.strip_prefix("/*") else {
        return Ok(ModelSettings::default());
    };
    let end = body.find("*/").ok_or_else(|| {
        err(
            file,
            None,
            "the settings comment `/*` is never closed with `*/`",
        )
    })?;
    // Lines before the YAML: those before the comment, plus the comment's own first line.
    let offset = text[..start].matches('\n').count();
    yaml::parse(&body[..end], file, offset)
}

fn ident(p: &ObjectNamePart) -> String {
    match p {
        ObjectNamePart::Identifier(i) if i.quote_style.is_none() => i.value.to_ascii_lowercase(),
        ObjectNamePart::Identifier(i) => i.value.clone(),
        ObjectNamePart::Function(f) => f.name.value.to_ascii_lowercase(),
    }
}

/// `sql` as one query (SELECT, WITH, VALUES).
///
/// # Errors
/// Config when it does not parse or is not exactly one query.
pub(crate) fn parse_query(file: &Path, sql: &str) -> Result<Query> {
    let mut statements =
        Parser::parse_sql(&GenericDialect {}, sql).map_err(|e| err(file, None, e.to_string()))?;
    match (statements.pop(), statements.is_empty()) {
        (Some(Statement::Query(q)), true) => Ok(*q),
        _ => Err(err(
            file,
            None,
            "one query (SELECT, WITH, VALUES) is expected",
        )),
    }
}

/// The `layer.name` tables the query reads (CTE names, table functions and the single names
/// in `allow` left out), each with its line.
pub(crate) fn references(file: &Path, query: &Query, allow: &[&str]) -> Result<Vec<Reference>> {
    struct Ctes(BTreeSet<String>);
    impl Visitor for Ctes {
        type Break = ();
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            if let Some(w) = &q.with {
                for c in &w.cte_tables {
                    self.0.insert(c.alias.name.value.to_ascii_lowercase());
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut ctes = Ctes(BTreeSet::new());
    let _ = query.visit(&mut ctes);
    let mut out: Vec<Reference> = Vec::new();
    let mut problem = None;
    let _ = sqlparser::ast::visit_relations(query, |name: &ObjectName| {
        let parts: Vec<String> = name.0.iter().map(ident).collect();
        let line = usize::try_from(name.span().start.line).unwrap_or(0);
        match parts.as_slice() {
            [one]
                if ctes.0.contains(one)
                    || TABLE_FUNCTIONS.contains(&one.as_str())
                    || allow.contains(&one.as_str()) => {}
            [layer, table] => {
                let n = format!("{layer}.{table}");
                if !out.iter().any(|r| r.name == n) {
                    out.push(Reference { name: n, line });
                }
            }
            _ => {
                problem = Some(err(
                    file,
                    (line > 0).then_some(line),
                    format!(
                        "`{name}`: name a table as `layer.name` (`silver.orders`), a model or a pipeline's table of this project"
                    ),
                ));
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    match problem {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(path: &str, text: &str) -> Result<Model> {
        Model::parse(Path::new(path), text)
    }

    #[test]
    fn settings_and_references_are_read_with_their_lines() {
        let m = parse(
            "models/gold/daily.sql",
            "/*\nmaterialized: incremental\npartition_by: day\nkey: [day]\n*/\nWITH x AS (SELECT * FROM silver.orders)\nSELECT CAST(o.at AS DATE) AS day, COUNT(*) AS n\nFROM x o\nJOIN silver.partners p ON o.p = p.id\nGROUP BY 1",
        )
        .unwrap();
        assert_eq!(m.name, "gold.daily");
        assert_eq!(m.settings.materialized, Materialized::Incremental);
        assert_eq!(m.settings.partition_by.as_deref(), Some("day"));
        assert_eq!(
            m.references,
            vec![
                Reference {
                    name: "silver.orders".into(),
                    line: 6
                },
                Reference {
                    name: "silver.partners".into(),
                    line: 9
                },
            ]
        );
    }

    #[test]
    fn bad_settings_name_the_file_line_and_key() {
        let e = parse(
            "models/gold/x.sql",
            "/*\nmaterialized: table\nkeys: [a]\n*/\nSELECT 1",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("models/gold/x.sql:3"), "{e}");
        assert!(e.contains("keys"), "{e}");
        let e = parse(
            "models/gold/x.sql",
            "/*\nmaterialized: incremental\n*/\nSELECT 1",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("partition_by"), "{e}");
    }

    #[test]
    fn an_unqualified_table_is_refused_with_its_line() {
        let e = parse("models/gold/x.sql", "SELECT *\nFROM orders")
            .unwrap_err()
            .to_string();
        assert!(e.contains("models/gold/x.sql:2"), "{e}");
        assert!(e.contains("layer.name"), "{e}");
    }

    #[test]
    fn streaming_models_must_be_row_by_row_over_one_input() {
        let head = "/*\nmaterialized: merge\nkey: [id]\n*/\n";
        for (sql, why) in [
            ("SELECT id, COUNT(*) FROM bronze.t GROUP BY id", "GROUP BY"),
            (
                "SELECT a.id FROM bronze.t a JOIN bronze.u b ON a.id = b.id",
                "exactly one",
            ),
            (
                "SELECT id, ROW_NUMBER() OVER (PARTITION BY id) FROM bronze.t",
                "window",
            ),
            ("SELECT COUNT(*) AS id FROM bronze.t", "aggregate"),
            ("SELECT DISTINCT id FROM bronze.t", "DISTINCT"),
        ] {
            let e = parse("models/silver/s.sql", &format!("{head}{sql}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{sql}: {e}");
        }
        let m = parse(
            "models/silver/s.sql",
            &format!("{head}SELECT id, upper(name) AS name FROM bronze.t WHERE id IS NOT NULL"),
        )
        .unwrap();
        assert!(!m.is_pass_through());
        assert!(
            parse(
                "models/silver/s.sql",
                &format!("{head}SELECT * FROM bronze.t")
            )
            .unwrap()
            .is_pass_through()
        );
    }

    #[test]
    fn a_path_that_is_not_layer_and_name_is_refused() {
        assert!(parse("models/Gold/x.sql", "SELECT 1").is_err());
        assert!(parse("models/gold/x-y.sql", "SELECT 1").is_err());
        assert!(parse("models/gold/x.sql", "DELETE FROM gold.x").is_err());
        assert!(parse("models/gold/x.sql", "/* open").is_err());
    }
}
