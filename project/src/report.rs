//! Reports a project declares (`reports/<name>.yaml`, listed under `reports:` in
//! `strata.yaml`): sections of SQL over the lake's tables, each drawn as a chart beside a table
//! of its numbers. Planning only: the file is read and checked here (keys, chart settings, the
//! SQL's syntax and the tables it reads, which become the report node's edges in the graph);
//! the queries run and the page is drawn elsewhere (`stratalake-report`).
//!
//! ```yaml
//! title: Retail performance
//! description: Revenue, partners, products and customers.
//! out: reports/retail.html           # relative to the project
//! sections:
//!   - title: Net revenue per day
//!     sql: SELECT order_date, currency, SUM(net_revenue) AS net_revenue FROM gold.daily_revenue GROUP BY 1, 2 ORDER BY 1
//!     chart: line                    # line | bar | stacked_bar | horizontal_bar | table | kpi
//!     x: order_date
//!     y: [net_revenue]
//!     split_by: currency             # one chart per currency (amounts never mix currencies)
//!     columns:
//!       net_revenue: { label: Net revenue, format: currency, currency_column: currency }
//! ```

use crate::model::{Reference, references};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use stratalake_core::{Error, ErrorKind, Result};

/// The lake's own tables a report may read besides the project's nodes.
pub const META_TABLES: [&str; 2] = ["_runs", "_expectations"];

/// How a section is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Chart {
    /// Lines over `x` (dates), one per `y` column and `series` value.
    Line,
    /// Vertical bars.
    Bar,
    /// Vertical bars stacked by `series`.
    StackedBar,
    /// Horizontal bars (a ranking: `x` holds the names).
    HorizontalBar,
    /// The table alone.
    Table,
    /// Headline figures: one tile per row, labelled by `x`, showing `y[0]` and its change
    /// against `y[1]` (the previous period) when given.
    Kpi,
}

impl Chart {
    /// Its name in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Line => "line",
            Self::Bar => "bar",
            Self::StackedBar => "stacked_bar",
            Self::HorizontalBar => "horizontal_bar",
            Self::Table => "table",
            Self::Kpi => "kpi",
        }
    }
}

/// How a column's values are shown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Format {
    /// As they are.
    #[default]
    Text,
    /// Whole numbers with thousands separators.
    Integer,
    /// Two decimals with thousands separators.
    Decimal,
    /// An amount with its currency's symbol (`currency` or `currency_column`).
    Currency,
    /// A share (0.25 is 25.0 %).
    Percent,
    /// A date.
    Date,
    /// A date and time (UTC).
    Datetime,
}

/// A column's label and format.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ColumnSpec {
    /// The header (default: the column's name).
    #[serde(default)]
    pub label: Option<String>,
    /// How values are shown.
    #[serde(default)]
    pub format: Format,
    /// The ISO currency of every value (`EUR`), for `format: currency`.
    #[serde(default)]
    pub currency: Option<String>,
    /// The column holding each row's ISO currency, for `format: currency`.
    #[serde(default)]
    pub currency_column: Option<String>,
}

/// One section: a query, a chart and the table of its numbers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Section {
    /// The heading.
    pub title: String,
    /// What it shows, for people.
    #[serde(default)]
    pub description: Option<String>,
    /// The query (DataFusion SQL over `layer.name` tables, `_runs` and `_expectations`).
    pub sql: String,
    /// How it is drawn.
    pub chart: Chart,
    /// The column along the horizontal axis (the names, for `horizontal_bar`).
    #[serde(default)]
    pub x: Option<String>,
    /// The columns drawn.
    #[serde(default)]
    pub y: Vec<String>,
    /// A column whose values each get their own line or bar colour.
    #[serde(default)]
    pub series: Option<String>,
    /// A column whose values each get their own chart (`currency`: amounts never share an axis
    /// across currencies).
    #[serde(default)]
    pub split_by: Option<String>,
    /// Labels and formats by column.
    #[serde(default)]
    pub columns: BTreeMap<String, ColumnSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportFile {
    title: String,
    #[serde(default)]
    description: Option<String>,
    out: PathBuf,
    sections: Vec<Section>,
}

/// A report read from its file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// `report.<file stem>`: its node in the graph.
    pub name: String,
    /// Its file, relative to the project.
    pub file: PathBuf,
    /// The page's title.
    pub title: String,
    /// What it is for.
    pub description: Option<String>,
    /// Where the page is written, relative to the project.
    pub out: PathBuf,
    /// Its sections, in order.
    pub sections: Vec<Section>,
    /// The project tables its sections read (meta tables left out), each with its line.
    pub references: Vec<Reference>,
}

fn err(file: &Path, msg: impl Into<String>) -> Error {
    Error::new(
        ErrorKind::Config,
        format!("{}: {}", file.display(), msg.into()),
    )
}

impl Report {
    /// Parse a report file (`file` names it in errors and gives its name).
    ///
    /// # Errors
    /// Config naming the file (and the line, for YAML), the section and what is wrong.
    pub fn parse(file: &Path, text: &str) -> Result<Self> {
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        if !crate::model::is_name(&stem) {
            return Err(err(
                file,
                "a report file is named like a table (`retail.yaml`: letters, digits, `_`)",
            ));
        }
        let r: ReportFile = crate::yaml::parse(text, file, 0)?;
        if r.sections.is_empty() {
            return Err(err(file, "a report needs at least one section"));
        }
        if r.out.is_absolute() || r.out.components().any(|c| c.as_os_str() == "..") {
            return Err(err(
                file,
                "`out` is a path inside the project (`reports/retail.html`)",
            ));
        }
        let mut refs: Vec<Reference> = Vec::new();
        for (i, s) in r.sections.iter().enumerate() {
            let at = |m: String| err(file, format!("sections[{i}] ({}): {m}", s.title));
            if s.chart != Chart::Table {
                if s.x.is_none() {
                    return Err(at(format!("a {} chart needs `x`", s.chart.as_str())));
                }
                if s.y.is_empty() {
                    return Err(at(format!(
                        "a {} chart needs `y` (the columns drawn)",
                        s.chart.as_str()
                    )));
                }
            }
            if s.chart == Chart::Kpi && s.y.len() > 2 {
                return Err(at(
                    "a kpi section shows `y: [value]` or `y: [value, previous]`".into(),
                ));
            }
            if s.chart == Chart::StackedBar && s.series.is_none() && s.y.len() < 2 {
                return Err(at(
                    "a stacked_bar chart stacks `series` values or several `y` columns".into(),
                ));
            }
            for (c, spec) in &s.columns {
                if spec.format == Format::Currency
                    && spec.currency.is_none()
                    && spec.currency_column.is_none()
                {
                    return Err(at(format!(
                        "column `{c}`: format currency needs `currency: EUR` or `currency_column`"
                    )));
                }
            }
            let query = crate::model::parse_query(file, &s.sql)
                .map_err(|e| at(format!("the SQL does not parse: {}", e.message())))?;
            for mut r in references(file, &query, &META_TABLES)? {
                // Bronze holds records as they arrived, personal data unmasked: a page that
                // anyone may open never reads it.
                if r.name.starts_with("bronze.") {
                    return Err(at(format!(
                        "`{}`: a report reads silver and gold tables, never bronze (raw records, personal data not yet masked)",
                        r.name
                    )));
                }
                // A line of the section's SQL is not a line of the file: none is given.
                r.line = 0;
                if !refs.iter().any(|x| x.name == r.name) {
                    refs.push(r);
                }
            }
        }
        Ok(Self {
            name: format!("report.{stem}"),
            file: file.to_path_buf(),
            title: r.title,
            description: r.description,
            out: r.out,
            sections: r.sections,
            references: refs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "title: T\nout: reports/t.html\nsections:\n  - title: Daily\n    sql: SELECT d, c, SUM(v) AS v FROM gold.daily GROUP BY 1, 2\n    chart: line\n    x: d\n    y: [v]\n    split_by: c\n    columns:\n      v: { label: Value, format: currency, currency_column: c }\n  - title: Runs\n    sql: SELECT node, status FROM _runs\n    chart: table\n";

    #[test]
    fn a_report_reads_its_sections_and_the_tables_they_read() {
        let r = Report::parse(Path::new("reports/t.yaml"), OK).unwrap();
        assert_eq!(r.name, "report.t");
        assert_eq!(r.sections.len(), 2);
        let refs: Vec<&str> = r.references.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(refs, ["gold.daily"], "meta tables are not graph edges");
        assert_eq!(r.sections[0].columns["v"].format, Format::Currency);
    }

    #[test]
    fn bad_reports_say_which_section_and_why() {
        let bad = |from: &str, to: &str, want: &str| {
            let e = Report::parse(Path::new("reports/t.yaml"), &OK.replace(from, to)).unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
        };
        bad(
            "    x: d\n",
            "",
            "sections[0] (Daily): a line chart needs `x`",
        );
        bad(", currency_column: c", "", "format currency needs");
        bad(
            "GROUP BY 1, 2",
            "GROUP BY",
            "sections[0] (Daily): the SQL does not parse",
        );
        bad(
            "FROM gold.daily",
            "FROM daily",
            "name a table as `layer.name`",
        );
        bad("chart: line", "chart: pie", "unknown variant `pie`");
        bad("FROM gold.daily", "FROM bronze.orders", "never bronze");
        bad(
            "out: reports/t.html",
            "out: ../t.html",
            "a path inside the project",
        );
    }
}
