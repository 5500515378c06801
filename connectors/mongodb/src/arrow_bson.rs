//! Arrow rows to BSON documents, for the sink.
//!
//! | Arrow | BSON |
//! |---|---|
//! | null | Null |
//! | boolean | Boolean |
//! | int8/16/32, uint8/16 | Int32 |
//! | int64, uint32 | Int64 |
//! | uint64 | Int64 (a value above `i64::MAX` is an error naming the column) |
//! | float16/32/64 | Double |
//! | decimal128/256 | Decimal128 (exact digits) |
//! | utf8, large utf8, utf8 view | String |
//! | binary (all kinds) | Binary (generic) |
//! | date32/64, timestamp (any unit, any zone) | DateTime (UTC milliseconds: finer units are truncated) |
//! | struct | Document |
//! | list, large list, fixed-size list | Array |
//! | dictionary | its values' type |
//!
//! Other types (durations, intervals, maps, unions) are a Schema error naming the column.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Date64Type, Float16Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use bson::spec::BinarySubtype;
use bson::{Binary, Bson, DateTime, Decimal128, Document};
use std::str::FromStr;
use stratalake_core::{Error, ErrorKind, Result};

/// The rows of `batch` as documents (null values are written as BSON null).
///
/// # Errors
/// Schema for a type BSON cannot hold; Data for a value out of range, naming column and row.
pub fn batch_to_documents(batch: &RecordBatch) -> Result<Vec<Document>> {
    let mut docs = vec![Document::new(); batch.num_rows()];
    for (field, col) in batch.schema().fields().iter().zip(batch.columns()) {
        let values = values(col, field.name())?;
        for (d, v) in docs.iter_mut().zip(values) {
            d.insert(field.name().clone(), v);
        }
    }
    Ok(docs)
}

fn prim<T: arrow_array::ArrowPrimitiveType>(
    a: &ArrayRef,
    f: impl Fn(T::Native) -> Bson,
) -> Vec<Bson> {
    let a = a.as_primitive::<T>();
    (0..a.len())
        .map(|i| {
            if a.is_null(i) {
                Bson::Null
            } else {
                f(a.value(i))
            }
        })
        .collect()
}

fn out_of_range(column: &str, row: usize, value: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Data, "the value does not fit a BSON type")
        .with_context("column", column)
        .with_context("row", row)
        .with_context("value", value)
}

/// One column's values.
fn values(a: &ArrayRef, column: &str) -> Result<Vec<Bson>> {
    let n = a.len();
    let ms = |v: i64| Bson::DateTime(DateTime::from_millis(v));
    Ok(match a.data_type() {
        DataType::Null => vec![Bson::Null; n],
        DataType::Boolean => {
            let b = a.as_boolean();
            (0..n)
                .map(|i| {
                    if b.is_null(i) {
                        Bson::Null
                    } else {
                        Bson::Boolean(b.value(i))
                    }
                })
                .collect()
        }
        DataType::Int8 => prim::<Int8Type>(a, |v| Bson::Int32(v.into())),
        DataType::Int16 => prim::<Int16Type>(a, |v| Bson::Int32(v.into())),
        DataType::Int32 => prim::<Int32Type>(a, Bson::Int32),
        DataType::Int64 => prim::<Int64Type>(a, Bson::Int64),
        DataType::UInt8 => prim::<UInt8Type>(a, |v| Bson::Int32(v.into())),
        DataType::UInt16 => prim::<UInt16Type>(a, |v| Bson::Int32(v.into())),
        DataType::UInt32 => prim::<UInt32Type>(a, |v| Bson::Int64(v.into())),
        DataType::UInt64 => {
            let p = a.as_primitive::<UInt64Type>();
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                out.push(if p.is_null(i) {
                    Bson::Null
                } else {
                    let v = p.value(i);
                    Bson::Int64(i64::try_from(v).map_err(|_| out_of_range(column, i, v))?)
                });
            }
            out
        }
        DataType::Float16 => prim::<Float16Type>(a, |v| Bson::Double(v.to_f64())),
        DataType::Float32 => prim::<Float32Type>(a, |v| Bson::Double(v.into())),
        DataType::Float64 => prim::<Float64Type>(a, Bson::Double),
        DataType::Decimal128(..) | DataType::Decimal256(..) => {
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                out.push(if a.is_null(i) {
                    Bson::Null
                } else {
                    let text = match a.data_type() {
                        DataType::Decimal128(..) => a
                            .as_primitive::<arrow_array::types::Decimal128Type>()
                            .value_as_string(i),
                        _ => a
                            .as_primitive::<arrow_array::types::Decimal256Type>()
                            .value_as_string(i),
                    };
                    Bson::Decimal128(
                        Decimal128::from_str(&text).map_err(|_| out_of_range(column, i, &text))?,
                    )
                });
            }
            out
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let s = arrow_cast::cast(a, &DataType::Utf8).map_err(|e| {
                Error::new(ErrorKind::Schema, "cannot read a text column")
                    .with_context("column", column)
                    .with_source(e)
            })?;
            let s = s.as_string::<i32>();
            (0..n)
                .map(|i| {
                    if s.is_null(i) {
                        Bson::Null
                    } else {
                        Bson::String(s.value(i).to_owned())
                    }
                })
                .collect()
        }
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => {
            let b = arrow_cast::cast(a, &DataType::LargeBinary).map_err(|e| {
                Error::new(ErrorKind::Schema, "cannot read a binary column")
                    .with_context("column", column)
                    .with_source(e)
            })?;
            let b = b.as_binary::<i64>();
            (0..n)
                .map(|i| {
                    if b.is_null(i) {
                        Bson::Null
                    } else {
                        Bson::Binary(Binary {
                            subtype: BinarySubtype::Generic,
                            bytes: b.value(i).to_vec(),
                        })
                    }
                })
                .collect()
        }
        DataType::Date32 => prim::<Date32Type>(a, |d| ms(i64::from(d) * 86_400_000)),
        DataType::Date64 => prim::<Date64Type>(a, ms),
        DataType::Timestamp(unit, _) => match unit {
            TimeUnit::Second => prim::<TimestampSecondType>(a, |v| ms(v.saturating_mul(1000))),
            TimeUnit::Millisecond => prim::<TimestampMillisecondType>(a, ms),
            TimeUnit::Microsecond => {
                prim::<TimestampMicrosecondType>(a, |v| ms(v.div_euclid(1000)))
            }
            TimeUnit::Nanosecond => {
                prim::<TimestampNanosecondType>(a, |v| ms(v.div_euclid(1_000_000)))
            }
        },
        DataType::Dictionary(_, value_type) => {
            let plain = arrow_cast::cast(a, value_type).map_err(|e| {
                Error::new(ErrorKind::Schema, "cannot unpack a dictionary column")
                    .with_context("column", column)
                    .with_source(e)
            })?;
            values(&plain, column)?
        }
        DataType::Struct(fields) => {
            let s = a.as_struct();
            let mut docs = vec![Document::new(); n];
            for (f, child) in fields.iter().zip(s.columns()) {
                let vals = values(child, &format!("{column}.{}", f.name()))?;
                for (d, v) in docs.iter_mut().zip(vals) {
                    d.insert(f.name().clone(), v);
                }
            }
            docs.into_iter()
                .enumerate()
                .map(|(i, d)| {
                    if s.is_null(i) {
                        Bson::Null
                    } else {
                        Bson::Document(d)
                    }
                })
                .collect()
        }
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => {
            let (child, ranges): (ArrayRef, Vec<Option<(usize, usize)>>) = match a.data_type() {
                DataType::List(_) => {
                    let l = a.as_list::<i32>();
                    let o = l.value_offsets();
                    (
                        l.values().clone(),
                        (0..n)
                            .map(|i| (!l.is_null(i)).then(|| (o[i] as usize, o[i + 1] as usize)))
                            .collect(),
                    )
                }
                DataType::LargeList(_) => {
                    let l = a.as_list::<i64>();
                    let o = l.value_offsets();
                    (
                        l.values().clone(),
                        (0..n)
                            .map(|i| (!l.is_null(i)).then(|| (o[i] as usize, o[i + 1] as usize)))
                            .collect(),
                    )
                }
                _ => {
                    let l = a.as_fixed_size_list();
                    let w = l.value_length() as usize;
                    (
                        l.values().clone(),
                        (0..n)
                            .map(|i| (!l.is_null(i)).then(|| (i * w, (i + 1) * w)))
                            .collect(),
                    )
                }
            };
            let mut items = values(&child, &format!("{column}[]"))?;
            let mut out = Vec::with_capacity(n);
            for r in ranges {
                out.push(match r {
                    None => Bson::Null,
                    Some((s, e)) => {
                        Bson::Array(items[s..e].iter_mut().map(std::mem::take).collect())
                    }
                });
            }
            out
        }
        other => {
            return Err(Error::new(
                ErrorKind::Schema,
                "the column's type has no BSON equivalent; cast it first (a Select transform)",
            )
            .with_context("column", column)
            .with_context("type", other));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::builder::{Int64Builder, ListBuilder};
    use arrow_array::{
        BooleanArray, Decimal128Array, Int32Array, StringArray, StructArray,
        TimestampMicrosecondArray,
    };
    use arrow_schema::{Field, Fields};
    use std::sync::Arc;

    #[test]
    fn every_kind_of_column_becomes_its_bson_value() {
        let mut list = ListBuilder::new(Int64Builder::new());
        list.values().append_value(1);
        list.values().append_value(2);
        list.append(true);
        list.append(false);
        let st = StructArray::new(
            Fields::from(vec![Field::new("city", DataType::Utf8, true)]),
            vec![Arc::new(StringArray::from(vec![Some("Lyon"), None])) as ArrayRef],
            None,
        );
        let batch = RecordBatch::try_from_iter(vec![
            ("id", Arc::new(Int32Array::from(vec![1, 2])) as ArrayRef),
            ("ok", Arc::new(BooleanArray::from(vec![Some(true), None]))),
            (
                "amount",
                Arc::new(
                    Decimal128Array::from(vec![Some(12_345), Some(-5)])
                        .with_precision_and_scale(10, 2)
                        .unwrap(),
                ),
            ),
            (
                "at",
                Arc::new(
                    TimestampMicrosecondArray::from(vec![Some(1_700_000_000_123_456), None])
                        .with_timezone("UTC"),
                ),
            ),
            ("tags", Arc::new(list.finish())),
            ("address", Arc::new(st)),
        ])
        .unwrap();
        let docs = batch_to_documents(&batch).unwrap();
        assert_eq!(
            docs[0],
            bson::doc! {
                "id": 1, "ok": true,
                "amount": Decimal128::from_str("123.45").unwrap(),
                "at": DateTime::from_millis(1_700_000_000_123),
                "tags": [1_i64, 2_i64],
                "address": {"city": "Lyon"},
            }
        );
        assert_eq!(
            docs[1],
            bson::doc! {
                "id": 2, "ok": Bson::Null,
                "amount": Decimal128::from_str("-0.05").unwrap(),
                "at": Bson::Null, "tags": Bson::Null,
                "address": {"city": Bson::Null},
            }
        );
    }

    #[test]
    fn unsupported_types_name_the_column() {
        let batch = RecordBatch::try_from_iter(vec![(
            "wait",
            Arc::new(arrow_array::DurationSecondArray::from(vec![1])) as ArrayRef,
        )])
        .unwrap();
        let e = batch_to_documents(&batch).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Schema);
        assert_eq!(e.context_value("column"), Some("wait"));
    }
}
