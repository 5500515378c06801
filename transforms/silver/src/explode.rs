//! [`Explode`]: one row per element of a list of structs (order lines), with the parent's
//! columns repeated and the element's fields as columns.

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch, UInt32Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use std::sync::Arc;
use stratalake_core::{BatchTransform, Context, Error, ErrorKind, Result};

/// Explodes `list` (a `list<struct<...>>` column), keeping the `keep` columns of the parent.
#[derive(Debug, Clone)]
pub struct Explode {
    list: String,
    keep: Vec<String>,
}

impl Explode {
    /// One row per element of `list`, with `keep` repeated.
    pub fn new(list: impl Into<String>, keep: &[&str]) -> Self {
        Self {
            list: list.into(),
            keep: keep.iter().map(|k| (*k).to_string()).collect(),
        }
    }

    fn element_fields(&self, input: &Schema) -> Result<Vec<Arc<Field>>> {
        let f = input.field_with_name(&self.list).map_err(|_| {
            Error::config("explode names a column the input does not have")
                .with_context("column", &self.list)
        })?;
        match f.data_type() {
            DataType::List(item) | DataType::LargeList(item) => match item.data_type() {
                DataType::Struct(fields) => Ok(fields.iter().cloned().collect()),
                _ => Err(
                    Error::new(ErrorKind::Schema, "explode needs a list of structs")
                        .with_context("column", &self.list),
                ),
            },
            _ => Err(Error::new(ErrorKind::Schema, "explode needs a list column")
                .with_context("column", &self.list)),
        }
    }
}

impl BatchTransform for Explode {
    fn name(&self) -> &str {
        "explode"
    }

    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        let mut fields = Vec::new();
        for k in &self.keep {
            fields.push(Arc::new(
                input
                    .field_with_name(k)
                    .map_err(|_| {
                        Error::config("explode keeps a column the input does not have")
                            .with_context("column", k)
                    })?
                    .clone(),
            ));
        }
        fields.extend(self.element_fields(input)?);
        Ok(Arc::new(Schema::new(fields)))
    }

    fn apply(&self, batch: RecordBatch, _ctx: &Context) -> Result<RecordBatch> {
        let schema = self.output_schema(&batch.schema())?;
        let col = batch.column_by_name(&self.list).ok_or_else(|| {
            Error::config("explode: no such column").with_context("column", &self.list)
        })?;
        let (offsets, values): (Vec<usize>, ArrayRef) = match col.data_type() {
            DataType::List(_) => {
                let l = col.as_list::<i32>();
                (
                    l.value_offsets().iter().map(|o| *o as usize).collect(),
                    l.values().clone(),
                )
            }
            _ => {
                let l = col.as_list::<i64>();
                (
                    l.value_offsets().iter().map(|o| *o as usize).collect(),
                    l.values().clone(),
                )
            }
        };
        // Parent row of each element, and which elements (null lists have none).
        let mut parents = Vec::new();
        let mut elements = Vec::new();
        for i in 0..batch.num_rows() {
            if col.is_null(i) {
                continue;
            }
            for j in offsets[i]..offsets[i + 1] {
                parents.push(i as u32);
                elements.push(j as u32);
            }
        }
        let parents = UInt32Array::from(parents);
        let elements = UInt32Array::from(elements);
        let take_err = |e| Error::internal("cannot explode the batch").with_source(e);
        let mut cols: Vec<ArrayRef> = Vec::new();
        for k in &self.keep {
            let c = batch.column_by_name(k).ok_or_else(|| {
                Error::config("explode: no such column").with_context("column", k)
            })?;
            cols.push(arrow_select::take::take(c.as_ref(), &parents, None).map_err(take_err)?);
        }
        let st = values.as_struct();
        for c in st.columns() {
            cols.push(arrow_select::take::take(c.as_ref(), &elements, None).map_err(take_err)?);
        }
        RecordBatch::try_new(schema, cols).map_err(take_err)
    }
}
