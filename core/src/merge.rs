//! What keyed (merge/upsert) sinks share: the [`DeleteWhen`] rule, the check that the key,
//! version and delete columns are in the rows written, and what every table sink does with
//! columns its table lacks ([`SchemaEvolution`]).
//!
//! Each sink turns these into its own statement (a Delta MERGE, a Snowflake DELETE + INSERT,
//! a MongoDB `$merge`); the configuration reads the same in every pipeline file:
//!
//! ```yaml
//! write: { type: merge, key: [order_id], version_column: updated_at,
//!          delete_when: { column: _op, equals: delete } }
//! ```

use crate::error::{Error, ErrorKind, Result};
use arrow_schema::Schema;
use serde::Deserialize;

/// What a sink does with columns its table does not have yet (the same words in the Delta,
/// Snowflake and project configurations).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SchemaEvolution {
    /// Add them to the table (nullable) before the data is written.
    #[default]
    AddColumns,
    /// Refuse the epoch with a Schema error naming them.
    Freeze,
    /// Drop them from the rows written.
    Discard,
}

/// How a keyed sink (Delta, Snowflake, MongoDB) lands an epoch's rows: appended, or merged
/// by key. One vocabulary for every sink that can merge.
///
/// ```yaml
/// write: { type: merge, key: [order_id], version_column: updated_at,
///          delete_when: { column: _op, equals: delete } }
/// ```
///
/// Not `#[non_exhaustive]`, on purpose: each sink matches it exhaustively, so a new mode is
/// a compile error in every sink that has not decided what it means, not a runtime surprise.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum WriteMode {
    /// Every row is new: appended (Delta files, Snowflake INSERT, MongoDB documents).
    #[default]
    Append,
    /// One row per key: within an epoch and against the stored row, the highest
    /// `version_column` wins (without one, the epoch's last row wins and always replaces the
    /// stored one); rows matching `delete_when` delete their key. (`upsert` is read as
    /// `merge`.)
    #[serde(alias = "upsert")]
    Merge {
        /// The key columns.
        key: Vec<String>,
        /// The column ordering versions of a key (`updated_at`).
        #[serde(default)]
        version_column: Option<String>,
        /// Rows that delete their key instead.
        #[serde(default)]
        delete_when: Option<DeleteWhen>,
    },
}

/// Rows whose `column` equals `equals` delete their key instead of writing it (the operation
/// column of a change feed: `_op = delete`, `_change_type = delete`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DeleteWhen {
    /// The operation column.
    pub column: String,
    /// The value that means delete, compared as text.
    pub equals: String,
}

impl DeleteWhen {
    /// Rows with `column == equals` delete their key.
    pub fn new(column: impl Into<String>, equals: impl Into<String>) -> Self {
        Self {
            column: column.into(),
            equals: equals.into(),
        }
    }
}

/// Check that every key column, the version column and the delete column are in `schema`.
///
/// # Errors
/// A Schema error naming the missing column and listing the columns there are; the caller
/// adds where it was writing (table, collection).
pub fn check_merge_columns(
    schema: &Schema,
    key: &[String],
    version_column: Option<&String>,
    delete_when: Option<&DeleteWhen>,
) -> Result<()> {
    let wanted = key
        .iter()
        .map(|k| ("key", k))
        .chain(version_column.map(|v| ("version", v)))
        .chain(delete_when.map(|d| ("delete", &d.column)));
    for (role, column) in wanted {
        if schema.field_with_name(column).is_err() {
            let present = schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Error::new(
                ErrorKind::Schema,
                format!(
                    "the {role} column `{column}` is not in the rows written (they have: {present})"
                ),
            )
            .with_context("column", column));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_schema::{DataType, Field};

    #[test]
    fn one_write_mode_for_every_keyed_sink_and_upsert_reads_as_merge() {
        let m: WriteMode =
            serde_json::from_str(r#"{"type": "upsert", "key": ["_id"], "version_column": "v"}"#)
                .unwrap();
        assert_eq!(
            m,
            WriteMode::Merge {
                key: vec!["_id".into()],
                version_column: Some("v".into()),
                delete_when: None
            }
        );
        let a: WriteMode = serde_json::from_str(r#"{"type": "append"}"#).unwrap();
        assert_eq!(a, WriteMode::default());
        assert!(serde_json::from_str::<WriteMode>(r#"{"type": "merge", "keys": []}"#).is_err());
    }

    #[test]
    fn names_the_missing_column_and_its_role() {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("v", DataType::Int64, true),
        ]);
        let key = vec!["id".to_string()];
        check_merge_columns(&schema, &key, Some(&"v".into()), None).unwrap();
        let err = check_merge_columns(
            &schema,
            &key,
            Some(&"v".into()),
            Some(&DeleteWhen::new("_op", "delete")),
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Schema);
        let text = err.to_string();
        assert!(text.contains("delete column `_op`"), "{text}");
        assert!(text.contains("(they have: id, v)"), "{text}");
        let err = check_merge_columns(&schema, &["order_id".into()], None, None).unwrap_err();
        assert!(err.to_string().contains("key column `order_id`"), "{err}");
    }
}
