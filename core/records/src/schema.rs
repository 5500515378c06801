//! Declared schemas and the policies for records that do not match them: the schema source
//! (inferred or explicit), the type names of `explicit` columns, and what happens to a value
//! of another type or a field the schema does not have.

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use stratalake_core::{Error, Result};

/// What to do with a value whose type does not match its column (a number column that
/// sometimes holds a string).
///
/// In YAML, `type_drift: null` (unquoted, which YAML reads as a null value rather than the
/// word) means [`TypeDriftPolicy::Null`], as it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TypeDriftPolicy {
    /// Send the whole record to quarantine, with the column and value in the reason.
    #[default]
    Quarantine,
    /// Keep the record with that value set to null (counted as coerced).
    Null,
    /// Stop the run with an error naming the file, line, column and value.
    Fail,
}

impl<'de> Deserialize<'de> for TypeDriftPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match Option::<String>::deserialize(d)?.as_deref() {
            None | Some("null") => Ok(Self::Null),
            Some("quarantine") => Ok(Self::Quarantine),
            Some("fail") => Ok(Self::Fail),
            Some(other) => Err(serde::de::Error::unknown_variant(
                other,
                &["quarantine", "null", "fail"],
            )),
        }
    }
}

/// What to do with fields that are not in the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum UnknownFieldPolicy {
    /// Drop them from the record (counted as coerced, reported once per field).
    #[default]
    Ignore,
    /// Send the record to quarantine.
    Quarantine,
    /// Stop the run with an error naming the file, line and field.
    Fail,
}

/// Where the schema comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum SchemaSource {
    /// Inferred from the first records of the first files (bounded).
    Infer {
        /// Records sampled at most.
        #[serde(default = "default_sample_records")]
        sample_records: usize,
        /// Bytes sampled at most.
        #[serde(default = "default_sample_bytes")]
        sample_bytes: u64,
    },
    /// Declared: `name: type` per column, types as in [`parse_data_type`]; every column is
    /// nullable unless its type ends with `not null`.
    Explicit(Vec<ColumnSpec>),
}

impl SchemaSource {
    /// An explicit schema from `(name, type)` pairs, e.g. `stratalake_datagen::orders_schema()`.
    pub fn explicit<'a>(columns: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        SchemaSource::Explicit(
            columns
                .into_iter()
                .map(|(n, t)| ColumnSpec {
                    name: n.to_string(),
                    data_type: t.to_string(),
                })
                .collect(),
        )
    }
}

impl Default for SchemaSource {
    fn default() -> Self {
        SchemaSource::Infer {
            sample_records: default_sample_records(),
            sample_bytes: default_sample_bytes(),
        }
    }
}

fn default_sample_records() -> usize {
    10_000
}
fn default_sample_bytes() -> u64 {
    8 << 20
}

/// One declared column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// The column name.
    pub name: String,
    /// Its type, e.g. `int64`, `utf8`, `timestamp`, `decimal(18,2)`, `list<struct<sku: utf8>>`,
    /// optionally followed by `not null`.
    #[serde(rename = "type")]
    pub data_type: String,
}

/// Build an Arrow schema from declared columns.
///
/// # Errors
/// [`stratalake_core::ErrorKind::Config`] naming the column and type at fault.
pub fn explicit_schema(cols: &[ColumnSpec]) -> Result<SchemaRef> {
    if cols.is_empty() {
        return Err(Error::config(
            "an explicit schema needs at least one column",
        ));
    }
    let fields = cols
        .iter()
        .map(|c| {
            let (ty, nullable) = match c.data_type.trim().strip_suffix("not null") {
                Some(t) => (t.trim(), false),
                None => (c.data_type.trim(), true),
            };
            let dt = parse_data_type(ty).map_err(|e| e.with_context("column", &c.name))?;
            Ok(Field::new(&c.name, dt, nullable))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

/// Parse a type name: `bool`, `int8`..`int64`, `uint8`..`uint64`, `float32`, `float64`,
/// `utf8` (or `string`), `large_utf8`, `binary`, `date` (date32), `timestamp` (microseconds,
/// UTC), `timestamp_ms`, `timestamp_ntz` (no zone), `decimal(p,s)`, `list<T>`,
/// `struct<name: T, ...>`.
///
/// # Errors
/// [`stratalake_core::ErrorKind::Config`] naming the type.
pub fn parse_data_type(s: &str) -> Result<DataType> {
    let mut p = TypeParser {
        s: s.as_bytes(),
        i: 0,
        src: s,
        depth: 0,
    };
    let t = p.parse()?;
    p.ws();
    if p.i != p.s.len() {
        return Err(p.err("unexpected text after the type"));
    }
    Ok(t)
}

/// The type name [`parse_data_type`] reads back as `dt` (`int64`, `list<struct<sku: utf8>>`,
/// `timestamp`), for printing an inferred schema as a declaration; `None` for a type the
/// declaration syntax cannot name.
pub fn data_type_name(dt: &DataType) -> Option<String> {
    Some(match dt {
        DataType::Boolean => "bool".into(),
        DataType::Int8 => "int8".into(),
        DataType::Int16 => "int16".into(),
        DataType::Int32 => "int32".into(),
        DataType::Int64 => "int64".into(),
        DataType::UInt8 => "uint8".into(),
        DataType::UInt16 => "uint16".into(),
        DataType::UInt32 => "uint32".into(),
        DataType::UInt64 => "uint64".into(),
        DataType::Float32 => "float32".into(),
        DataType::Float64 => "float64".into(),
        DataType::Utf8 => "utf8".into(),
        DataType::LargeUtf8 => "large_utf8".into(),
        DataType::Binary => "binary".into(),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) if tz.as_ref() == "+00:00" => {
            "timestamp".into()
        }
        DataType::Timestamp(TimeUnit::Millisecond, Some(tz)) if tz.as_ref() == "+00:00" => {
            "timestamp_ms".into()
        }
        DataType::Timestamp(TimeUnit::Microsecond, None) => "timestamp_ntz".into(),
        DataType::Decimal128(p, s) => format!("decimal({p},{s})"),
        DataType::List(f) => format!("list<{}>", data_type_name(f.data_type())?),
        DataType::Struct(fields) => {
            let parts = fields
                .iter()
                .map(|f| {
                    let ok = !f.name().is_empty()
                        && f.name()
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
                    ok.then(|| data_type_name(f.data_type()).map(|t| format!("{}: {t}", f.name())))
                        .flatten()
                })
                .collect::<Option<Vec<_>>>()?;
            format!("struct<{}>", parts.join(", "))
        }
        _ => return None,
    })
}

struct TypeParser<'a> {
    s: &'a [u8],
    i: usize,
    src: &'a str,
    depth: u32,
}

/// The deepest `list<...>`/`struct<...>` nesting a declared type may have.
pub const MAX_TYPE_DEPTH: u32 = 64;

impl TypeParser<'_> {
    fn err(&self, what: &str) -> Error {
        Error::config(format!("invalid type: {what}"))
            .with_context("type", crate::decode::truncate(self.src, 120))
            .with_context("at", self.i)
    }
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn ident(&mut self) -> String {
        self.ws();
        let start = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric() || self.s[self.i] == b'_')
        {
            self.i += 1;
        }
        self.src[start..self.i].to_ascii_lowercase()
    }
    fn expect(&mut self, c: u8) -> Result<()> {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(&format!("expected `{}`", c as char)))
        }
    }
    fn number(&mut self) -> Result<i64> {
        self.ws();
        let start = self.i;
        while self.i < self.s.len() && (self.s[self.i].is_ascii_digit() || self.s[self.i] == b'-') {
            self.i += 1;
        }
        self.src[start..self.i]
            .parse()
            .map_err(|_| self.err("expected a number"))
    }
    fn parse(&mut self) -> Result<DataType> {
        self.depth += 1;
        if self.depth > MAX_TYPE_DEPTH {
            return Err(self.err(&format!("nested deeper than {MAX_TYPE_DEPTH} levels")));
        }
        let t = self.parse_inner();
        self.depth -= 1;
        t
    }
    fn parse_inner(&mut self) -> Result<DataType> {
        let name = self.ident();
        Ok(match name.as_str() {
            "bool" | "boolean" => DataType::Boolean,
            "int8" => DataType::Int8,
            "int16" => DataType::Int16,
            "int32" | "int" => DataType::Int32,
            "int64" | "bigint" | "long" => DataType::Int64,
            "uint8" => DataType::UInt8,
            "uint16" => DataType::UInt16,
            "uint32" => DataType::UInt32,
            "uint64" => DataType::UInt64,
            "float32" | "float" => DataType::Float32,
            "float64" | "double" => DataType::Float64,
            "utf8" | "string" | "text" => DataType::Utf8,
            "large_utf8" => DataType::LargeUtf8,
            "binary" => DataType::Binary,
            "date" | "date32" => DataType::Date32,
            "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
            "timestamp_ms" => DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())),
            "timestamp_ntz" => DataType::Timestamp(TimeUnit::Microsecond, None),
            "decimal" | "decimal128" => {
                self.expect(b'(')?;
                let p = self.number()?;
                self.expect(b',')?;
                let s = self.number()?;
                self.expect(b')')?;
                let p = u8::try_from(p)
                    .ok()
                    .filter(|p| (1..=38).contains(p))
                    .ok_or_else(|| self.err("precision must be 1..=38"))?;
                let s = i8::try_from(s).map_err(|_| self.err("scale out of range"))?;
                DataType::Decimal128(p, s)
            }
            "list" => {
                self.expect(b'<')?;
                let inner = self.parse()?;
                self.expect(b'>')?;
                DataType::List(Arc::new(Field::new("item", inner, true)))
            }
            "struct" => {
                self.expect(b'<')?;
                let mut fields = Vec::new();
                loop {
                    let fname = {
                        self.ws();
                        let start = self.i;
                        while self.i < self.s.len() && !matches!(self.s[self.i], b':' | b' ') {
                            self.i += 1;
                        }
                        self.src[start..self.i].to_string()
                    };
                    if fname.is_empty() {
                        return Err(self.err("expected a field name"));
                    }
                    self.expect(b':')?;
                    let t = self.parse()?;
                    fields.push(Field::new(fname, t, true));
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'>') => {
                            self.i += 1;
                            break;
                        }
                        _ => return Err(self.err("expected `,` or `>`")),
                    }
                }
                DataType::Struct(Fields::from(fields))
            }
            "" => return Err(self.err("expected a type name")),
            other => return Err(self.err(&format!("unknown type `{other}`"))),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn type_names_read_back_as_the_same_type() {
        for t in [
            "bool",
            "int64",
            "float64",
            "utf8",
            "date",
            "timestamp",
            "timestamp_ntz",
            "decimal(12,2)",
            "list<struct<sku: utf8, qty: int32>>",
        ] {
            let dt = super::parse_data_type(t).unwrap();
            assert_eq!(super::data_type_name(&dt).as_deref(), Some(t));
        }
    }

    use super::*;

    #[test]
    fn parses_nested_types() {
        let t =
            parse_data_type("list<struct<sku: utf8, qty: int64, price: decimal(12,2)>>").unwrap();
        let DataType::List(f) = t else { panic!("list") };
        let DataType::Struct(fields) = f.data_type() else {
            panic!("struct")
        };
        assert_eq!(fields.len(), 3);
        assert_eq!(fields[2].data_type(), &DataType::Decimal128(12, 2));
        assert_eq!(
            parse_data_type("timestamp").unwrap(),
            DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))
        );
    }

    #[test]
    fn bad_types_name_the_column() {
        let e = explicit_schema(&[ColumnSpec {
            name: "qty".into(),
            data_type: "int65".into(),
        }])
        .unwrap_err();
        assert_eq!(e.context_value("column"), Some("qty"));
        assert!(e.to_string().contains("unknown type `int65`"), "{e}");
        let s = explicit_schema(&[ColumnSpec {
            name: "id".into(),
            data_type: "int64 not null".into(),
        }])
        .unwrap();
        assert!(!s.field(0).is_nullable());
    }
}
