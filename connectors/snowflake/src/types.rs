//! Arrow to Snowflake: column types, identifiers, and the load form of a batch.
//!
//! | Arrow | Snowflake column | loaded as (Parquet) |
//! |---|---|---|
//! | Boolean | BOOLEAN | as is |
//! | Int8–Int64, UInt8–UInt32 | NUMBER(38,0) | Int64 |
//! | UInt64 | NUMBER(20,0) | Decimal128(20,0) |
//! | Float16–Float64 | FLOAT | Float64 |
//! | Decimal128(p,s), Decimal256(p≤38,s) | NUMBER(p,s) | Decimal128(p,s) |
//! | Utf8, LargeUtf8, Utf8View | VARCHAR | Utf8 |
//! | Binary, LargeBinary, FixedSizeBinary, BinaryView | BINARY | Binary |
//! | Date32, Date64 | DATE | Date32 |
//! | Time32/Time64 | TIME(9) | Time64(ns) |
//! | Timestamp(unit, none) | TIMESTAMP_NTZ(digits of unit) | as is |
//! | Timestamp(unit, tz) | TIMESTAMP_TZ(digits of unit) | the UTC instant |
//! | Duration | NUMBER(38,0) (the count of its unit) | Int64 |
//! | Struct, List, LargeList, FixedSizeList, Map | VARIANT | JSON text, `PARSE_JSON` at the merge |
//! | Dictionary(k, v) | the type of v | v |
//! | Null | VARCHAR | Utf8 nulls |
//!
//! Names: a plain name (`order_id`) becomes the quoted upper-case identifier `"ORDER_ID"`,
//! which is what Snowflake stores for the unquoted name, so analysts write `order_id` in any
//! case; any other name is quoted exactly as it is.

use arrow_array::{Array, ArrayRef, RecordBatch, StringArray, new_null_array};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use std::sync::Arc;
use stratalake_core::{Error, ErrorKind, Result};

/// The identifier Snowflake stores for a column or table name (see the module docs).
pub fn ident(name: &str) -> String {
    let plain = name.chars().enumerate().all(|(i, c)| {
        c == '_' || c.is_ascii_alphabetic() || (i > 0 && (c.is_ascii_digit() || c == '$'))
    });
    if plain && !name.is_empty() {
        format!("\"{}\"", name.to_ascii_uppercase())
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// The stored name of a column (upper case for plain names).
pub fn stored_name(name: &str) -> String {
    let id = ident(name);
    id[1..id.len() - 1].replace("\"\"", "\"")
}

/// A SQL string literal.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

fn digits(unit: TimeUnit) -> u8 {
    match unit {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 3,
        TimeUnit::Microsecond => 6,
        TimeUnit::Nanosecond => 9,
    }
}

/// Whether a column is loaded as JSON text into a VARIANT.
pub fn is_nested(dt: &DataType) -> bool {
    match dt {
        DataType::Dictionary(_, v) => is_nested(v),
        DataType::Struct(_)
        | DataType::List(_)
        | DataType::LargeList(_)
        | DataType::FixedSizeList(_, _)
        | DataType::ListView(_)
        | DataType::LargeListView(_)
        | DataType::Map(_, _) => true,
        _ => false,
    }
}

/// The Snowflake column type of an Arrow type (module table).
///
/// # Errors
/// Unsupported for intervals, unions, run-end encoded arrays and decimals wider than 38 digits,
/// naming the column.
pub fn snowflake_type(field: &Field) -> Result<String> {
    Ok(match field.data_type() {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::Duration(_) => "NUMBER(38,0)".into(),
        DataType::UInt64 => "NUMBER(20,0)".into(),
        DataType::Float16 | DataType::Float32 | DataType::Float64 => "FLOAT".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) if *p <= 38 => {
            format!("NUMBER({p},{})", (*s).max(0))
        }
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) => {
            format!("NUMBER({p},{})", (*s).max(0))
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
            "VARCHAR".into()
        }
        DataType::Binary
        | DataType::LargeBinary
        | DataType::FixedSizeBinary(_)
        | DataType::BinaryView => "BINARY".into(),
        DataType::Date32 | DataType::Date64 => "DATE".into(),
        DataType::Time32(_) | DataType::Time64(_) => "TIME(9)".into(),
        DataType::Timestamp(u, None) => format!("TIMESTAMP_NTZ({})", digits(*u)),
        DataType::Timestamp(u, Some(_)) => format!("TIMESTAMP_TZ({})", digits(*u)),
        DataType::Dictionary(_, v) => {
            return snowflake_type(&Field::new(field.name(), (**v).clone(), true));
        }
        dt if is_nested(dt) => "VARIANT".into(),
        other => {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "snowflake: column {} has type {other}, which has no Snowflake column type; cast it first",
                    field.name()
                ),
            ));
        }
    })
}

/// The Arrow type a column is loaded as (module table).
fn load_type(dt: &DataType) -> DataType {
    match dt {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::Duration(_) => DataType::Int64,
        DataType::UInt64 => DataType::Decimal128(20, 0),
        DataType::Float16 | DataType::Float32 => DataType::Float64,
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) | DataType::Decimal256(p, s) => {
            DataType::Decimal128(*p, *s)
        }
        DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => DataType::Utf8,
        DataType::LargeBinary | DataType::FixedSizeBinary(_) | DataType::BinaryView => {
            DataType::Binary
        }
        DataType::Date64 => DataType::Date32,
        DataType::Time32(_) | DataType::Time64(_) => DataType::Time64(TimeUnit::Nanosecond),
        DataType::Timestamp(u, Some(_)) => DataType::Timestamp(*u, Some("+00:00".into())),
        DataType::Dictionary(_, v) => load_type(v),
        dt if is_nested(dt) => DataType::Utf8,
        other => other.clone(),
    }
}

/// The schema batches are loaded with: plain names as stored, load types.
pub fn load_schema(schema: &Schema) -> Result<SchemaRef> {
    let fields = schema
        .fields()
        .iter()
        .map(|f| {
            snowflake_type(f)?;
            Ok(Field::new(
                stored_name(f.name()),
                load_type(f.data_type()),
                true,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

/// Convert a batch to its load form ([`load_schema`]).
///
/// # Errors
/// Data when a value cannot be converted, naming the column.
pub fn to_load_batch(batch: &RecordBatch, load: &SchemaRef) -> Result<RecordBatch> {
    let cols = batch
        .columns()
        .iter()
        .zip(batch.schema().fields())
        .zip(load.fields())
        .map(|((c, f), lf)| to_load_column(c, f, lf.data_type()))
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(load.clone(), cols)
        .map_err(|e| Error::internal("snowflake: the load batch is malformed").with_source(e))
}

fn to_load_column(c: &ArrayRef, f: &Field, to: &DataType) -> Result<ArrayRef> {
    let c = if let DataType::Dictionary(_, v) = c.data_type() {
        arrow_cast::cast(c, v)
            .map_err(|e| Error::data(format!("snowflake: column {}", f.name())).with_source(e))?
    } else {
        c.clone()
    };
    if is_nested(c.data_type()) {
        return json_text(&c, f);
    }
    if c.data_type() == &DataType::Null {
        return Ok(new_null_array(&DataType::Utf8, c.len()));
    }
    if let DataType::Duration(_) = c.data_type() {
        let ints = arrow_cast::cast(&c, &DataType::Int64)
            .map_err(|e| Error::data(format!("snowflake: column {}", f.name())).with_source(e))?;
        return Ok(ints);
    }
    if c.data_type() == to {
        return Ok(c);
    }
    let opts = arrow_cast::CastOptions {
        safe: false,
        ..Default::default()
    };
    arrow_cast::cast_with_options(&c, to, &opts).map_err(|e| {
        Error::data(format!(
            "snowflake: column {}: a {} value cannot be loaded as {to}",
            f.name(),
            c.data_type()
        ))
        .with_source(e)
    })
}

fn json_text(c: &ArrayRef, f: &Field) -> Result<ArrayRef> {
    let field = Arc::new(Field::new("v", c.data_type().clone(), true));
    let opts = arrow_json::writer::EncoderOptions::default();
    let mut enc = arrow_json::writer::make_encoder(&field, c.as_ref(), &opts).map_err(|e| {
        Error::data(format!(
            "snowflake: column {} cannot be written as JSON",
            f.name()
        ))
        .with_source(e)
    })?;
    let mut buf = Vec::new();
    let mut out: Vec<Option<String>> = Vec::with_capacity(c.len());
    for i in 0..c.len() {
        if c.is_null(i) {
            out.push(None);
            continue;
        }
        buf.clear();
        enc.encode(i, &mut buf);
        out.push(Some(String::from_utf8_lossy(&buf).into_owned()));
    }
    Ok(Arc::new(StringArray::from(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_literals() {
        assert_eq!(ident("order_id"), "\"ORDER_ID\"");
        assert_eq!(ident("_op"), "\"_OP\"");
        assert_eq!(ident("Weird name"), "\"Weird name\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(stored_name("a\"b"), "a\"b");
        assert_eq!(literal("it's"), "'it''s'");
    }

    #[test]
    fn types_map_as_documented() {
        let t = |dt: DataType| snowflake_type(&Field::new("c", dt, true)).unwrap();
        assert_eq!(t(DataType::UInt64), "NUMBER(20,0)");
        assert_eq!(t(DataType::Decimal128(14, 2)), "NUMBER(14,2)");
        assert_eq!(
            t(DataType::Timestamp(
                TimeUnit::Microsecond,
                Some("+00:00".into())
            )),
            "TIMESTAMP_TZ(6)"
        );
        assert_eq!(
            t(DataType::Timestamp(TimeUnit::Millisecond, None)),
            "TIMESTAMP_NTZ(3)"
        );
        assert_eq!(
            t(DataType::List(Arc::new(Field::new(
                "item",
                DataType::Int64,
                true
            )))),
            "VARIANT"
        );
        assert_eq!(
            t(DataType::Dictionary(
                Box::new(DataType::Int32),
                Box::new(DataType::Utf8)
            )),
            "VARCHAR"
        );
        let e = snowflake_type(&Field::new(
            "span",
            DataType::Interval(arrow_schema::IntervalUnit::DayTime),
            true,
        ))
        .unwrap_err();
        assert!(e.message().contains("column span"), "{}", e.message());
    }
}
