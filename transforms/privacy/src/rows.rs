//! Row filters in the lake: a role scoped to an attribute (a partner) reads only its rows.

use crate::policy::Policy;
use arrow_array::cast::AsArray;
use arrow_array::{BooleanArray, RecordBatch};
use arrow_schema::{DataType, SchemaRef};
use std::collections::BTreeSet;
use stratalake_core::{BatchTransform, Context, Error, Result};

/// Keeps the rows whose filtered column holds one of the user's attribute values; rows of
/// roles without a filter pass.
#[derive(Debug)]
pub struct RowFilter {
    column: Option<String>,
    allowed: BTreeSet<String>,
    name: String,
}

impl RowFilter {
    /// The filter of `table` for `role`, whose user holds `values` of the filter's attribute.
    pub fn new(policy: &Policy, table: &str, role: &str, values: &[&str]) -> Self {
        let f = policy
            .row_filters
            .iter()
            .find(|f| f.table == table && f.role.eq_ignore_ascii_case(role));
        Self {
            column: f.map(|f| f.column.clone()),
            allowed: values.iter().map(|v| v.to_string()).collect(),
            name: format!("row_filter:{table}:{role}"),
        }
    }
}

impl BatchTransform for RowFilter {
    fn name(&self) -> &str {
        &self.name
    }
    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        Ok(input.clone())
    }
    fn apply(&self, batch: RecordBatch, _ctx: &Context) -> Result<RecordBatch> {
        let Some(col) = &self.column else {
            return Ok(batch);
        };
        let c = batch.column_by_name(col).ok_or_else(|| {
            Error::new(
                stratalake_core::ErrorKind::Schema,
                format!("row filter: no column {col}"),
            )
        })?;
        let c = arrow_cast::cast(c, &DataType::Utf8)
            .map_err(|e| Error::internal("row filter").with_source(e))?;
        let keep: BooleanArray = c
            .as_string::<i32>()
            .iter()
            .map(|v| Some(v.is_some_and(|v| self.allowed.contains(v))))
            .collect();
        arrow_select::filter::filter_record_batch(&batch, &keep)
            .map_err(|e| Error::internal("row filter").with_source(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, StringArray};
    use std::sync::Arc;

    #[test]
    fn a_partner_scoped_role_reads_only_its_rows() {
        let p = Policy::from_yaml(
            "keys: { env: K }\nrow_filters:\n  - { table: orders, role: partner_analyst, column: partner_id, attribute: partner_id }\n",
            "p",
        )
        .unwrap();
        let b = RecordBatch::try_from_iter(vec![(
            "partner_id",
            Arc::new(StringArray::from(vec!["P-1", "P-2", "P-1", "P-3"])) as ArrayRef,
        )])
        .unwrap();
        let ctx = Context::new("t");
        let scoped = RowFilter::new(&p, "orders", "PARTNER_ANALYST", &["P-1"]);
        assert_eq!(scoped.apply(b.clone(), &ctx).unwrap().num_rows(), 2);
        let other_role = RowFilter::new(&p, "orders", "finance", &[]);
        assert_eq!(other_role.apply(b.clone(), &ctx).unwrap().num_rows(), 4);
        let other_table = RowFilter::new(&p, "customers", "partner_analyst", &["P-1"]);
        assert_eq!(other_table.apply(b, &ctx).unwrap().num_rows(), 4);
    }
}
