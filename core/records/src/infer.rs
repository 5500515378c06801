//! Schema inference from a bounded sample.

use arrow_schema::{DataType, Field, Fields, Schema, TimeUnit};
use serde_json::Value;
use std::sync::Arc;
use stratalake_core::{Error, ErrorKind, Result};

/// Infer an NDJSON schema from sampled lines. Malformed lines and lines the decoders would
/// refuse (too deep, two values on a line) are left out: they will be quarantined when read.
/// Text fields whose every sampled value is an ISO-8601 date-time become
/// `Timestamp(µs, UTC)`; every sampled value a date, `Date32`.
///
/// A field that holds several kinds is given the widest type that keeps every value exactly
/// where one exists (integers and fractions: `float64`; numbers and text: text), and otherwise
/// the kind most values have: the few records that disagree (at most
/// [`OUTLIER_SHARE`] of the field's values) are type drift when read, handled by the
/// `type_drift` policy. Only when no kind dominates is inference refused.
///
/// # Errors
/// [`ErrorKind::Schema`] when the sample holds no object, or a field is an object in many
/// records and a scalar in many others (declare the schema then).
pub fn infer_ndjson(sample: &[u8], max_records: usize, describe: &str) -> Result<Schema> {
    let values: Vec<Value> = sample
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .filter(|l| {
            crate::decode::screen_json(l, crate::decode::DEFAULT_NESTING_DEPTH, &[])
                .iter()
                .all(|(_, f)| *f == crate::decode::Flag::Fraction)
        })
        .filter_map(|l| serde_json::from_slice::<Value>(l).ok())
        .filter(Value::is_object)
        .take(max_records)
        .collect();
    if values.is_empty() {
        return Err(Error::new(
            ErrorKind::Schema,
            "no JSON object found to infer a schema from: declare the schema",
        )
        .with_context("file", describe));
    }
    let refs: Vec<&Value> = values.iter().collect();
    let fields = object_fields(&refs).map_err(|column| {
        Error::new(
            ErrorKind::Schema,
            "cannot infer a schema: a field is an object in many records and a scalar or list in many others; declare the schema",
        )
        .with_context("file", describe)
        .with_context("column", column)
    })?;
    Ok(Schema::new(fields))
}

/// The share of a field's values that may disagree with its inferred kind (they are type
/// drift when read).
pub const OUTLIER_SHARE: f64 = 0.05;

/// The fields of a set of objects, in first-seen order; `Err` names a field no type fits.
fn object_fields(objects: &[&Value]) -> std::result::Result<Vec<Field>, String> {
    let mut names: Vec<&str> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for o in objects {
        if let Some(m) = o.as_object() {
            for k in m.keys() {
                if seen.insert(k.as_str()) {
                    names.push(k.as_str());
                }
            }
        }
    }
    names
        .into_iter()
        .map(|name| {
            let vals: Vec<&Value> = objects.iter().filter_map(|o| o.get(name)).collect();
            infer_type(&vals)
                .map(|dt| Field::new(name, dt, true))
                .map_err(|inner| {
                    if inner.is_empty() {
                        name.to_string()
                    } else {
                        format!("{name}.{inner}")
                    }
                })
        })
        .collect()
}

/// The type of one field from its sampled values (nulls ignored).
fn infer_type(values: &[&Value]) -> std::result::Result<DataType, String> {
    let vals: Vec<&Value> = values.iter().copied().filter(|v| !v.is_null()).collect();
    if vals.is_empty() {
        return Ok(DataType::Utf8);
    }
    let (mut bools, mut ints, mut floats, mut strings, mut objects, mut arrays) =
        (0, 0, 0, 0, 0, 0);
    for v in &vals {
        match v {
            Value::Bool(_) => bools += 1,
            Value::Number(n) if n.is_f64() => floats += 1,
            Value::Number(_) => ints += 1,
            Value::String(_) => strings += 1,
            Value::Object(_) => objects += 1,
            Value::Array(_) => arrays += 1,
            Value::Null => {}
        }
    }
    let n = vals.len();
    #[expect(clippy::cast_precision_loss, reason = "sample counts are small")]
    let minor = |k: usize| (k as f64) <= (n as f64) * OUTLIER_SHARE;
    let scalars = bools + ints + floats + strings;
    // Nested kinds win by majority; the rest of the values are drift.
    if objects > 0 && minor(n - objects) {
        let objs: Vec<&Value> = vals.iter().copied().filter(|v| v.is_object()).collect();
        return object_fields(&objs).map(|f| DataType::Struct(Fields::from(f)));
    }
    if arrays > 0 && minor(n - arrays) {
        let items: Vec<&Value> = vals.iter().filter_map(|v| v.as_array()).flatten().collect();
        let item = infer_type(&items).map_err(|e| {
            format!(
                "[]{}",
                if e.is_empty() {
                    String::new()
                } else {
                    format!(".{e}")
                }
            )
        })?;
        return Ok(DataType::List(Arc::new(Field::new("item", item, true))));
    }
    if objects + arrays > 0 && !minor(objects + arrays) {
        return Err(String::new());
    }
    // Scalars: the widest exact type, else the majority.
    let numbers = ints + floats;
    Ok(if strings > 0 && !minor(strings) {
        // Text holds numbers and booleans exactly (coerced when read).
        refine_text(&vals)
    } else if numbers > 0 && minor(scalars - numbers) {
        if floats > 0 {
            DataType::Float64
        } else {
            DataType::Int64
        }
    } else if bools > 0 && minor(scalars - bools) {
        DataType::Boolean
    } else if strings > 0 {
        refine_text(&vals)
    } else if numbers >= bools {
        if floats > 0 {
            DataType::Float64
        } else {
            DataType::Int64
        }
    } else {
        DataType::Boolean
    })
}

/// Text, or a timestamp or a date when every text value is one.
fn refine_text(vals: &[&Value]) -> DataType {
    let texts: Vec<&str> = vals.iter().filter_map(|v| v.as_str()).collect();
    if !texts.is_empty() && texts.len() == vals.len() {
        if texts.iter().all(|s| is_datetime(s)) {
            return DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()));
        }
        if texts
            .iter()
            .all(|s| s.len() == 10 && s.parse::<chrono::NaiveDate>().is_ok())
        {
            return DataType::Date32;
        }
    }
    DataType::Utf8
}

fn is_datetime(s: &str) -> bool {
    s.len() >= 16
        && s.as_bytes()
            .get(10)
            .is_some_and(|c| *c == b'T' || *c == b' ')
        && arrow_cast::parse::string_to_datetime(&chrono::Utc, s).is_ok()
}

/// Infer a CSV schema from the sample (whose first line is the header when `header`).
///
/// # Errors
/// [`ErrorKind::Schema`] naming the file.
pub fn infer_csv(
    sample: &[u8],
    delimiter: u8,
    header: bool,
    max_records: usize,
    describe: &str,
) -> Result<Schema> {
    // Only whole lines: the sample may end mid-record.
    let end = memchr::memrchr(b'\n', sample).map_or(sample.len(), |i| i + 1);
    let format = arrow_csv::reader::Format::default()
        .with_header(header)
        .with_delimiter(delimiter);
    let (schema, _) = format
        .infer_schema(std::io::Cursor::new(&sample[..end]), Some(max_records))
        .map_err(|e| {
            Error::new(ErrorKind::Schema, "cannot infer the CSV schema")
                .with_context("file", describe)
                .with_source(e)
        })?;
    Ok(schema)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_nested_lists_are_inferred() {
        let s = infer_ndjson(
            b"{\"id\":1,\"at\":\"2024-01-02T03:04:05+02:00\",\"day\":\"2024-01-02\",\"lines\":[{\"sku\":\"a\",\"q\":1}]}\n{bad\n{\"id\":2,\"at\":null}\n",
            100,
            "t",
        )
        .unwrap();
        assert_eq!(
            s.field_with_name("at").unwrap().data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))
        );
        assert_eq!(
            s.field_with_name("day").unwrap().data_type(),
            &DataType::Date32
        );
        assert!(matches!(
            s.field_with_name("lines").unwrap().data_type(),
            DataType::List(_)
        ));
    }

    #[test]
    fn object_scalar_clash_without_a_majority_is_a_clear_error() {
        let e = infer_ndjson(b"{\"a\":{\"b\":1}}\n{\"a\":3}\n", 100, "f.ndjson").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Schema);
        assert_eq!(e.context_value("file"), Some("f.ndjson"));
        assert_eq!(e.context_value("column"), Some("a"));
    }

    #[test]
    fn types_widen_where_lossless_and_minority_outliers_do_not_abort() {
        let mut s = String::new();
        for i in 0..100 {
            s.push_str(&format!("{{\"id\":{i},\"amount\":{}.5,\"qty\":{i},\"code\":{i},\"nested\":{{\"x\":{i}}}}}\n", i));
        }
        // Drift: one string among integers, one scalar where an object is, codes that are
        // text in half the records, an integer among floats.
        s.push_str("{\"id\":\"n/a\",\"amount\":7,\"qty\":2,\"code\":\"A1\",\"nested\":5}\n");
        for i in 0..100 {
            s.push_str(&format!("{{\"id\":{i},\"code\":\"C{i}\"}}\n"));
        }
        let schema = infer_ndjson(s.as_bytes(), 10_000, "f").unwrap();
        let ty = |n: &str| schema.field_with_name(n).unwrap().data_type().clone();
        assert_eq!(
            ty("id"),
            DataType::Int64,
            "one text id is drift, not a text column"
        );
        assert_eq!(
            ty("amount"),
            DataType::Float64,
            "integers widen into float64"
        );
        assert_eq!(ty("code"), DataType::Utf8, "numbers widen into text");
        assert!(
            matches!(ty("nested"), DataType::Struct(_)),
            "one scalar is drift"
        );
    }
}
