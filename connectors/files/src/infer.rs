//! Schema inference from a bounded sample.

use arrow_schema::{DataType, Field, Fields, Schema, TimeUnit};
use serde_json::Value;
use std::sync::Arc;
use strata_core::{Error, ErrorKind, Result};

/// Infer an NDJSON schema from sampled lines (malformed lines are skipped: they will be
/// quarantined when read). Text fields whose every sampled value is an ISO-8601 date-time become
/// `Timestamp(µs, UTC)`; every sampled value a date, `Date32`.
///
/// # Errors
/// [`ErrorKind::Schema`] when the sample holds no object, or a field is an object in one
/// record and a scalar in another (declare the schema then).
pub fn infer_ndjson(sample: &[u8], max_records: usize, describe: &str) -> Result<Schema> {
    let values: Vec<Value> = sample
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
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
    let schema =
        arrow_json::reader::infer_json_schema_from_iterator(values.iter().map(|v| Ok(v.clone())))
            .map_err(|e| {
            Error::new(
            ErrorKind::Schema,
            "cannot infer a schema: a field changes between object and scalar; declare the schema",
        )
        .with_context("file", describe)
        .with_source(e)
        })?;
    let refs: Vec<&Value> = values.iter().collect();
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| refine(f, &child_values(&refs, f.name())))
        .collect();
    Ok(Schema::new(fields))
}

fn child_values<'a>(values: &[&'a Value], name: &str) -> Vec<&'a Value> {
    values
        .iter()
        .filter_map(|v| v.get(name))
        .filter(|v| !v.is_null())
        .collect()
}

fn refine(field: &Field, values: &[&Value]) -> Field {
    let dt = match field.data_type() {
        DataType::Utf8
            if !values.is_empty() && values.iter().all(|v| v.as_str().is_some_and(is_datetime)) =>
        {
            DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))
        }
        DataType::Utf8
            if !values.is_empty()
                && values.iter().all(|v| {
                    v.as_str()
                        .is_some_and(|s| s.len() == 10 && s.parse::<chrono::NaiveDate>().is_ok())
                }) =>
        {
            DataType::Date32
        }
        DataType::Struct(fields) => DataType::Struct(Fields::from(
            fields
                .iter()
                .map(|f| refine(f, &child_values(values, f.name())))
                .collect::<Vec<_>>(),
        )),
        DataType::List(item) => {
            let items: Vec<&Value> = values
                .iter()
                .filter_map(|v| v.as_array())
                .flatten()
                .filter(|v| !v.is_null())
                .collect();
            DataType::List(Arc::new(refine(item, &items)))
        }
        other => other.clone(),
    };
    Field::new(field.name(), dt, true)
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
    fn object_scalar_clash_is_a_clear_error() {
        let e = infer_ndjson(b"{\"a\":{\"b\":1}}\n{\"a\":3}\n", 100, "f.ndjson").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Schema);
        assert_eq!(e.context_value("file"), Some("f.ndjson"));
    }
}
