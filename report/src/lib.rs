#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use serde::Serialize;
use std::collections::BTreeMap;
use stratalake_core::{Error, Result};
use stratalake_project::report::{Chart, Format, Report, Section};

/// Chart.js 4.6.1 (MIT, `vendor/chart.js.LICENSE.md`), inlined into every page.
const CHART_JS: &str = include_str!("../vendor/chart.umd.min.js");
const PAGE_JS: &str = include_str!("page.js");
const PAGE_CSS: &str = include_str!("page.css");

/// The most rows a section embeds (its table and chart); more are cut, and the page says so.
pub const MAX_ROWS: usize = 5_000;

/// What the page says about where it came from.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PageInfo {
    /// The project's name.
    pub project: String,
    /// When the data was read (RFC 3339, UTC).
    pub generated_at: String,
    /// The input tables and their Delta versions.
    pub inputs: BTreeMap<String, i64>,
}

impl PageInfo {
    /// Info for `project`, read at `generated_at`, from `inputs`.
    pub fn new(project: &str, generated_at: &str, inputs: BTreeMap<String, i64>) -> Self {
        Self {
            project: project.to_string(),
            generated_at: generated_at.to_string(),
            inputs,
        }
    }
}

#[derive(Serialize)]
struct ColumnOut<'a> {
    name: String,
    label: String,
    format: &'static str,
    currency: Option<&'a str>,
    currency_column: Option<&'a str>,
}

#[derive(Serialize)]
struct SectionOut<'a> {
    id: String,
    title: &'a str,
    description: Option<&'a str>,
    chart: &'static str,
    x: Option<&'a str>,
    y: &'a [String],
    series: Option<&'a str>,
    split_by: Option<&'a str>,
    columns: Vec<ColumnOut<'a>>,
    rows: Vec<Vec<serde_json::Value>>,
    total_rows: usize,
}

#[derive(Serialize)]
struct PageOut<'a> {
    title: &'a str,
    description: Option<&'a str>,
    project: &'a str,
    generated_at: &'a str,
    inputs: &'a BTreeMap<String, i64>,
    sections: Vec<SectionOut<'a>>,
}

fn format_name(f: Format) -> &'static str {
    match f {
        Format::Integer => "integer",
        Format::Decimal => "decimal",
        Format::Currency => "currency",
        Format::Percent => "percent",
        Format::Date => "date",
        Format::Datetime => "datetime",
        _ => "text",
    }
}

/// The default format of a column of type `t` that the section does not describe.
fn default_format(t: &DataType) -> Format {
    match t {
        t if t.is_integer() => Format::Integer,
        t if t.is_numeric() => Format::Decimal,
        DataType::Date32 | DataType::Date64 => Format::Date,
        DataType::Timestamp(..) => Format::Datetime,
        _ => Format::Text,
    }
}

/// One cell as JSON: numbers as numbers (decimals as their value), the rest as text.
fn cell(col: &dyn Array, row: usize) -> Result<serde_json::Value> {
    if col.is_null(row) {
        return Ok(serde_json::Value::Null);
    }
    let one = col.slice(row, 1);
    let cast = |t: &DataType| {
        arrow_cast::cast(&one, t)
            .map_err(|e| Error::internal("a report value cannot be converted").with_source(e))
    };
    use arrow_array::cast::AsArray as _;
    Ok(match col.data_type() {
        DataType::Boolean => one.as_boolean().value(0).into(),
        t if t.is_integer() => {
            let v = cast(&DataType::Int64)?;
            v.as_primitive::<arrow_array::types::Int64Type>()
                .value(0)
                .into()
        }
        t if t.is_numeric() => {
            let v = cast(&DataType::Float64)?;
            serde_json::Number::from_f64(
                v.as_primitive::<arrow_array::types::Float64Type>().value(0),
            )
            .map_or(serde_json::Value::Null, serde_json::Value::Number)
        }
        _ => {
            let v = cast(&DataType::Utf8)?;
            v.as_string::<i32>().value(0).to_string().into()
        }
    })
}

/// `text` safe inside HTML.
fn html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The page for `report`, each section's query result in `data` (in section order).
///
/// # Errors
/// Config when a section names a column its query does not return; Internal when a value
/// cannot be converted.
pub fn render(report: &Report, data: &[Vec<RecordBatch>], info: &PageInfo) -> Result<String> {
    if data.len() != report.sections.len() {
        return Err(Error::internal(format!(
            "{} sections but {} results",
            report.sections.len(),
            data.len()
        )));
    }
    let mut sections = Vec::new();
    for (i, (s, batches)) in report.sections.iter().zip(data).enumerate() {
        sections.push(section(report, i, s, batches)?);
    }
    let page = PageOut {
        title: &report.title,
        description: report.description.as_deref(),
        project: &info.project,
        generated_at: &info.generated_at,
        inputs: &info.inputs,
        sections,
    };
    // Inside <script>, `<` is escaped so no value can close the element.
    let json = serde_json::to_string(&page)
        .map_err(|e| Error::internal("cannot encode the report's data").with_source(e))?
        .replace('<', "\\u003c");
    let title = html(&report.title);
    Ok(format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"strata {version}\">\n\
         <meta name=\"strata-inputs\" content=\"{inputs}\">\n\
         <title>{title}</title>\n<style>\n{PAGE_CSS}\n</style>\n</head>\n<body>\n\
         <noscript>This report draws its charts and tables with JavaScript.</noscript>\n\
         <div id=\"app\"></div>\n\
         <script type=\"application/json\" id=\"strata-data\">{json}</script>\n\
         <script>\n{CHART_JS}\n</script>\n<script>\n{PAGE_JS}\n</script>\n</body>\n</html>\n",
        version = env!("CARGO_PKG_VERSION"),
        inputs = html(&inputs_text(&info.inputs)),
    ))
}

/// The input tables and versions as the page records them (`gold.a=3;gold.b=7`).
pub fn inputs_text(inputs: &BTreeMap<String, i64>) -> String {
    inputs
        .iter()
        .map(|(t, v)| format!("{t}={v}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// The inputs a page was drawn from (its `strata-inputs` meta tag), if it has them.
pub fn inputs_of(page: &str) -> Option<String> {
    let tag = "<meta name=\"strata-inputs\" content=\"";
    let start = page.find(tag)? + tag.len();
    let end = start + page[start..].find('"')?;
    Some(page[start..end].to_string())
}

fn section<'a>(
    report: &'a Report,
    i: usize,
    s: &'a Section,
    batches: &[RecordBatch],
) -> Result<SectionOut<'a>> {
    let Some(schema) = batches.first().map(RecordBatch::schema) else {
        return Ok(SectionOut {
            id: format!("s{i}"),
            title: &s.title,
            description: s.description.as_deref(),
            chart: s.chart.as_str(),
            x: s.x.as_deref(),
            y: &s.y,
            series: s.series.as_deref(),
            split_by: s.split_by.as_deref(),
            columns: Vec::new(),
            rows: Vec::new(),
            total_rows: 0,
        });
    };
    let named =
        s.x.iter()
            .chain(&s.y)
            .chain(&s.series)
            .chain(&s.split_by)
            .chain(s.columns.keys())
            .chain(
                s.columns
                    .values()
                    .filter_map(|c| c.currency_column.as_ref()),
            );
    for c in named {
        if schema.index_of(c).is_err() {
            let have: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            return Err(Error::config(format!(
                "{}: section `{}` names column `{c}`, which its query does not return (it returns {})",
                report.file.display(),
                s.title,
                have.join(", ")
            )));
        }
    }
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            let spec = s.columns.get(f.name());
            ColumnOut {
                name: f.name().clone(),
                label: spec
                    .and_then(|c| c.label.clone())
                    .unwrap_or_else(|| f.name().replace('_', " ")),
                format: format_name(spec.map_or_else(
                    || default_format(f.data_type()),
                    |c| {
                        if c.format == Format::Text {
                            default_format(f.data_type())
                        } else {
                            c.format
                        }
                    },
                )),
                currency: spec.and_then(|c| c.currency.as_deref()),
                currency_column: spec.and_then(|c| c.currency_column.as_deref()),
            }
        })
        .collect();
    let total_rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut rows = Vec::with_capacity(total_rows.min(MAX_ROWS));
    'all: for b in batches {
        for r in 0..b.num_rows() {
            if rows.len() == MAX_ROWS {
                break 'all;
            }
            let mut row = Vec::with_capacity(b.num_columns());
            for c in b.columns() {
                row.push(cell(c.as_ref(), r)?);
            }
            rows.push(row);
        }
    }
    Ok(SectionOut {
        id: format!("s{i}"),
        title: &s.title,
        description: s.description.as_deref(),
        chart: if s.chart == Chart::Table {
            "table"
        } else {
            s.chart.as_str()
        },
        x: s.x.as_deref(),
        y: &s.y,
        series: s.series.as_deref(),
        split_by: s.split_by.as_deref(),
        columns,
        rows,
        total_rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Decimal128Array, Int64Array, StringArray};
    use arrow_schema::{Field, Schema};
    use std::path::Path;
    use std::sync::Arc;

    fn report() -> Report {
        Report::parse(
            Path::new("reports/t.yaml"),
            "title: \"Sales </script><b>\"\nout: reports/t.html\nsections:\n  - title: Daily\n    sql: SELECT d, c, v FROM gold.daily\n    chart: line\n    x: d\n    y: [v]\n    split_by: c\n    columns:\n      v: { label: Value, format: currency, currency_column: c }\n",
        )
        .unwrap()
    }

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("d", DataType::Utf8, false),
            Field::new("c", DataType::Utf8, false),
            Field::new("v", DataType::Decimal128(18, 2), true),
            Field::new("n", DataType::Int64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["2024-01-01", "2024-01-01"])),
                Arc::new(StringArray::from(vec!["EUR", "<GBP>"])),
                Arc::new(
                    Decimal128Array::from(vec![Some(123_456), None])
                        .with_precision_and_scale(18, 2)
                        .unwrap(),
                ),
                Arc::new(Int64Array::from(vec![3, 4])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn the_page_holds_the_data_and_no_value_can_break_out_of_it() {
        let page = render(
            &report(),
            &[vec![batch()]],
            &PageInfo::new("shop", "2024-01-02T00:00:00Z", BTreeMap::new()),
        )
        .unwrap();
        assert!(
            page.contains("<title>Sales &lt;/script&gt;&lt;b&gt;</title>"),
            "{}",
            &page[..400]
        );
        let start = page.find("id=\"strata-data\">").unwrap() + 17;
        let end = start + page[start..].find("</script>").unwrap();
        let data: serde_json::Value = serde_json::from_str(&page[start..end]).unwrap();
        assert_eq!(
            data["sections"][0]["rows"][0],
            serde_json::json!(["2024-01-01", "EUR", 1234.56, 3])
        );
        assert_eq!(data["sections"][0]["rows"][1][1], "<GBP>");
        assert_eq!(data["sections"][0]["rows"][1][2], serde_json::Value::Null);
        assert_eq!(data["sections"][0]["columns"][2]["format"], "currency");
        assert_eq!(data["sections"][0]["columns"][3]["format"], "integer");
        assert!(
            !page.contains("http://") && !page.contains("https://cdn"),
            "nothing fetched"
        );
    }

    #[test]
    fn a_section_naming_a_missing_column_says_which() {
        let mut r = report();
        r.sections[0].y = vec!["revenue".into()];
        let e = render(&r, &[vec![batch()]], &PageInfo::default()).unwrap_err();
        assert!(
            e.to_string().contains(
                "names column `revenue`, which its query does not return (it returns d, c, v, n)"
            ),
            "{e}"
        );
    }
}
