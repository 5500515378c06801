//! [`Conform`]: rows cast to a declared schema and checked against rules; a row that fails a
//! safe cast or a rule goes to quarantine with the rule, the column and the value.

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch, StringArray};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use futures::StreamExt;
use serde::Deserialize;
use std::sync::Arc;
use stratalake_core::{
    BatchStreamAdapter, Context, Error, ErrorKind, QuarantineRecord, Result, SendableBatchStream,
    StreamTransform,
};

/// A rule a row must pass.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Check {
    /// Not null.
    Required,
    /// At least this (numbers).
    Min {
        /// The bound.
        value: f64,
    },
    /// At most this (numbers).
    Max {
        /// The bound.
        value: f64,
    },
    /// One of these (text).
    OneOf {
        /// The allowed values.
        values: Vec<String>,
    },
}

/// A rule on a column (`total_amount`) or on each element of a list of structs
/// (`lines[].quantity`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Rule {
    /// The column path.
    pub column: String,
    /// The check.
    pub check: Check,
}

impl Rule {
    /// A rule on `column`.
    pub fn new(column: impl Into<String>, check: Check) -> Self {
        Self {
            column: column.into(),
            check,
        }
    }

    fn describe(&self) -> String {
        match &self.check {
            Check::Required => format!("{} is required", self.column),
            Check::Min { value } => format!("{} >= {value}", self.column),
            Check::Max { value } => format!("{} <= {value}", self.column),
            Check::OneOf { values } => format!("{} in [{}]", self.column, values.join(", ")),
        }
    }
}

/// What silver makes of a table: its columns with their types (Strata type names, as in
/// explicit schemas), the rules, and the key that names a rejected row. (In YAML it is read
/// as [`ConformSettings`].)
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ConformSpec {
    /// The table's name (in quarantine locations).
    pub table: String,
    /// The output columns, in order: `(name, type)`.
    pub columns: Vec<(String, String)>,
    /// The rules.
    pub rules: Vec<Rule>,
    /// The columns that name a row in quarantine (`order_id`).
    pub key: Vec<String>,
}

impl ConformSpec {
    /// Table `table` with `columns` (`(name, type)`), `rules`, and `key` naming rejected rows.
    pub fn new(table: &str, columns: &[(&str, &str)], rules: Vec<Rule>, key: &[&str]) -> Self {
        Self {
            table: table.to_string(),
            columns: columns
                .iter()
                .map(|(a, b)| ((*a).to_string(), (*b).to_string()))
                .collect(),
            rules,
            key: key.iter().map(|k| (*k).to_string()).collect(),
        }
    }
}

/// A declared column type.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ColumnType {
    /// The column.
    pub name: String,
    /// Its Strata type name (`utf8`, `timestamp`, `decimal(14,2)`, `list<struct<...>>`).
    #[serde(rename = "type")]
    pub data_type: String,
}

/// How a conform step reads in YAML (a pipeline's `conform:` transform, a model's `conform:`
/// setting): the output columns with their types, and the rules.
///
/// ```yaml
/// conform:
///   types:
///     - { name: order_id, type: utf8 }
///     - { name: total_amount, type: "decimal(14,2)" }
///   rules:
///     - { column: total_amount, check: { type: min, value: 0 } }
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ConformSettings {
    /// The output columns in order, with their types.
    pub types: Vec<ColumnType>,
    /// The rules (`{ column: total_amount, check: { type: min, value: 0 } }`).
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// The columns that name a rejected row in quarantine (`[order_id]`; a model's `key` by
    /// default).
    #[serde(default)]
    pub key: Vec<String>,
}

impl ConformSettings {
    /// The spec for table `table`; its rejected rows are named by `key`, or by `default_key`
    /// when no key is set.
    pub fn spec(&self, table: &str, default_key: &[String]) -> ConformSpec {
        let key = if self.key.is_empty() {
            default_key
        } else {
            &self.key
        };
        let cols: Vec<(&str, &str)> = self
            .types
            .iter()
            .map(|t| (t.name.as_str(), t.data_type.as_str()))
            .collect();
        let key: Vec<&str> = key.iter().map(String::as_str).collect();
        ConformSpec::new(table, &cols, self.rules.clone(), &key)
    }
}

/// Casts and validates (a stream transform: rejected rows go to quarantine as they are found).
#[derive(Debug, Clone)]
pub struct Conform {
    spec: ConformSpec,
    schema: SchemaRef,
}

impl Conform {
    /// Conform to `spec`.
    ///
    /// # Errors
    /// Config for an unknown type name.
    pub fn try_new(spec: ConformSpec) -> Result<Self> {
        let mut fields = Vec::new();
        for (name, ty) in &spec.columns {
            let dt = stratalake_records::schema::parse_data_type(ty)
                .map_err(|e| e.with_context("column", name))?;
            fields.push(Field::new(name, dt, true));
        }
        Ok(Self {
            schema: Arc::new(Schema::new(fields)),
            spec,
        })
    }

    /// The declared output schema.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Conform one batch: the rows that pass, and the rejected ones.
    ///
    /// # Errors
    /// Schema for a rule on a column that is not declared.
    pub fn conform(&self, batch: &RecordBatch) -> Result<(RecordBatch, Vec<QuarantineRecord>)> {
        // Only rows as they are now (a change feed's pre-images and deletes are not rows).
        let batch = match batch.column_by_name("_change_type") {
            Some(ct) => {
                let ct = ct.as_string::<i32>();
                let keep: BooleanArray = ct
                    .iter()
                    .map(|v| Some(matches!(v, Some("insert" | "update_postimage") | None)))
                    .collect();
                arrow_select::filter::filter_record_batch(batch, &keep)
                    .map_err(|e| Error::internal("cannot filter the change feed").with_source(e))?
            }
            None => batch.clone(),
        };
        let n = batch.num_rows();
        let mut ok = vec![true; n];
        let mut why: Vec<Option<(String, String, String)>> = vec![None; n];
        let fmt = FormatOptions::default();
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for f in self.schema.fields() {
            let Some(input) = batch.column_by_name(f.name()) else {
                cols.push(arrow_array::new_null_array(f.data_type(), n));
                continue;
            };
            let cast = arrow_cast::cast(input, f.data_type()).map_err(|e| {
                Error::new(
                    ErrorKind::Schema,
                    "the column cannot be cast to its declared type",
                )
                .with_context("table", &self.spec.table)
                .with_context("column", f.name())
                .with_context("type", f.data_type())
                .with_source(e)
            })?;
            // A safe cast turns what does not fit into null: those rows are rejected.
            if cast.null_count() > input.null_count() {
                let shown = ArrayFormatter::try_new(input.as_ref(), &fmt).ok();
                for i in 0..n {
                    if ok[i] && cast.is_null(i) && !input.is_null(i) {
                        ok[i] = false;
                        let v = shown
                            .as_ref()
                            .map(|s| s.value(i).to_string())
                            .unwrap_or_default();
                        why[i] = Some((
                            format!("{} as {}", f.name(), f.data_type()),
                            f.name().clone(),
                            v,
                        ));
                    }
                }
            }
            cols.push(cast);
        }
        let conformed = RecordBatch::try_new(self.schema.clone(), cols)
            .map_err(|e| Error::internal("cannot assemble the conformed batch").with_source(e))?;
        for rule in &self.spec.rules {
            self.check(&conformed, rule, &mut ok, &mut why)?;
        }
        let mask = BooleanArray::from(ok.clone());
        let kept = arrow_select::filter::filter_record_batch(&conformed, &mask)
            .map_err(|e| Error::internal("cannot filter the conformed rows").with_source(e))?;
        let mut rejected = Vec::new();
        for (i, w) in why.into_iter().enumerate() {
            let Some((rule, column, value)) = w else {
                continue;
            };
            rejected.push(QuarantineRecord {
                component: "transform:conform".into(),
                location: format!("{} {}", self.spec.table, self.row_key(&batch, i)),
                position: None,
                raw: stratalake_records::row_json(&batch, i),
                reason: format!("rule `{rule}` failed: column {column} value {value}"),
                column: Some(column),
            });
        }
        Ok((kept, rejected))
    }

    fn row_key(&self, batch: &RecordBatch, i: usize) -> String {
        let fmt = FormatOptions::default();
        self.spec
            .key
            .iter()
            .filter_map(|k| {
                let c = batch.column_by_name(k)?;
                let f = ArrayFormatter::try_new(c.as_ref(), &fmt).ok()?;
                Some(format!("{k}={}", f.value(i)))
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn check(
        &self,
        batch: &RecordBatch,
        rule: &Rule,
        ok: &mut [bool],
        why: &mut [Option<(String, String, String)>],
    ) -> Result<()> {
        let missing = || {
            Error::config("a rule names a column that is not declared")
                .with_context("table", &self.spec.table)
                .with_context("column", &rule.column)
        };
        let fmt = FormatOptions::default();
        // `list[].field`: every element of the list must pass.
        if let Some((list, field)) = rule.column.split_once("[].") {
            let col = batch.column_by_name(list).ok_or_else(missing)?;
            let (offsets, values): (Vec<usize>, ArrayRef) = match col.data_type() {
                DataType::List(_) => {
                    let l = col.as_list::<i32>();
                    (
                        l.value_offsets().iter().map(|o| *o as usize).collect(),
                        l.values().clone(),
                    )
                }
                DataType::LargeList(_) => {
                    let l = col.as_list::<i64>();
                    (
                        l.value_offsets().iter().map(|o| *o as usize).collect(),
                        l.values().clone(),
                    )
                }
                _ => return Err(missing()),
            };
            let child = values
                .as_struct_opt()
                .and_then(|s| s.column_by_name(field))
                .ok_or_else(missing)?
                .clone();
            let failed = failures(&child, &rule.check)?;
            let shown = ArrayFormatter::try_new(child.as_ref(), &fmt).ok();
            for i in 0..batch.num_rows() {
                if !ok[i] || col.is_null(i) {
                    continue;
                }
                if let Some(j) = (offsets[i]..offsets[i + 1]).find(|j| failed[*j]) {
                    ok[i] = false;
                    let v = shown
                        .as_ref()
                        .map(|s| s.value(j).to_string())
                        .unwrap_or_default();
                    why[i] = Some((rule.describe(), rule.column.clone(), v));
                }
            }
            return Ok(());
        }
        let col = batch.column_by_name(&rule.column).ok_or_else(missing)?;
        let failed = failures(col, &rule.check)?;
        let shown = ArrayFormatter::try_new(col.as_ref(), &fmt).ok();
        for i in 0..batch.num_rows() {
            if ok[i] && failed[i] {
                ok[i] = false;
                let v = if col.is_null(i) {
                    "null".to_string()
                } else {
                    shown
                        .as_ref()
                        .map(|s| s.value(i).to_string())
                        .unwrap_or_default()
                };
                why[i] = Some((rule.describe(), rule.column.clone(), v));
            }
        }
        Ok(())
    }
}

/// Which values fail `check` (nulls fail only `required`).
fn failures(col: &ArrayRef, check: &Check) -> Result<Vec<bool>> {
    let n = col.len();
    Ok(match check {
        Check::Required => (0..n).map(|i| col.is_null(i)).collect(),
        Check::Min { value } | Check::Max { value } => {
            let f = arrow_cast::cast(col, &DataType::Float64)
                .map_err(|e| Error::config("a range rule needs a numeric column").with_source(e))?;
            let f = f.as_primitive::<arrow_array::types::Float64Type>();
            let min = matches!(check, Check::Min { .. });
            (0..n)
                .map(|i| {
                    !f.is_null(i)
                        && if min {
                            f.value(i) < *value
                        } else {
                            f.value(i) > *value
                        }
                })
                .collect()
        }
        Check::OneOf { values } => {
            let s = arrow_cast::cast(col, &DataType::Utf8).map_err(|e| {
                Error::config("an enumeration rule needs a text column").with_source(e)
            })?;
            let s: &StringArray = s.as_string::<i32>();
            (0..n)
                .map(|i| !s.is_null(i) && !values.iter().any(|v| v == s.value(i)))
                .collect()
        }
    })
}

impl StreamTransform for Conform {
    fn name(&self) -> &str {
        "conform"
    }

    fn quarantines(&self) -> bool {
        true
    }

    fn output_schema(&self, _input: &SchemaRef) -> Result<SchemaRef> {
        Ok(self.schema.clone())
    }

    fn transform(&self, input: SendableBatchStream, ctx: &Context) -> Result<SendableBatchStream> {
        let this = self.clone();
        let ctx = ctx.clone();
        let out = input.then(move |b| {
            let (this, ctx) = (this.clone(), ctx.clone());
            async move {
                let b = b?;
                let (kept, rejected) = this.conform(&b)?;
                if !rejected.is_empty() {
                    ctx.quarantine("transform:conform", rejected).await?;
                }
                Ok(kept)
            }
        });
        Ok(BatchStreamAdapter::boxed(
            self.schema.clone(),
            Box::pin(out),
        ))
    }
}
