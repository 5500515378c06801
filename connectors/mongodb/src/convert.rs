//! BSON to the JSON lines the Arrow decoder reads: every BSON type is normalised here, in one
//! place, before it reaches an Arrow builder (the driver's serde output for ObjectId, DateTime
//! and Decimal128 is extended-JSON-like structs that no Arrow type matches).
//!
//! | BSON | JSON written | Arrow (explicit or inferred) |
//! |---|---|---|
//! | ObjectId | 24-hex string | utf8 |
//! | DateTime | RFC 3339, UTC, milliseconds | timestamp (UTC) |
//! | Decimal128 | its exact digits as a number | decimal(p,s) (float64 when inferred) |
//! | Int32, Int64, Double | numbers (widen to the column's type) | int32/int64/float64 |
//! | Document, Array | objects, arrays | struct, list |
//! | Binary | lowercase hex string | utf8 |
//! | Timestamp | its 64-bit value | int64 |
//! | Regex, JavaScript, Symbol | their text | utf8 |
//! | Null, Undefined, MinKey, MaxKey, non-finite doubles | null | - |
//!
//! Under the `json_text` policy a document or array in a column declared `utf8` is written as
//! its JSON text instead of failing the record.

use bson::{Bson, Document};
use std::fmt::Write as _;

fn push_str(out: &mut String, s: &str) {
    // serde_json writes a valid JSON string literal (escapes, no raw newlines).
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

fn push_decimal(out: &mut String, d: &bson::Decimal128) {
    let text = d.to_string();
    // Plain digits go as a number (arrow-json parses decimals from the literal, exactly);
    // exponents, NaN and infinities as text (a decimal column rejects them by policy).
    if text
        .bytes()
        .all(|c| c.is_ascii_digit() || c == b'.' || c == b'-')
        && !text.is_empty()
    {
        out.push_str(&text);
    } else {
        push_str(out, &text);
    }
}

/// Write one BSON value as JSON.
pub fn write_value(v: &Bson, out: &mut String) {
    match v {
        Bson::Double(f) if f.is_finite() => {
            let _ = write!(out, "{f:?}");
        }
        Bson::Double(_) | Bson::Null | Bson::Undefined | Bson::MinKey | Bson::MaxKey => {
            out.push_str("null");
        }
        Bson::String(s) | Bson::Symbol(s) | Bson::JavaScriptCode(s) => push_str(out, s),
        Bson::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(x, out);
            }
            out.push(']');
        }
        Bson::Document(d) => write_document(d, out, None),
        Bson::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        Bson::Int32(i) => {
            let _ = write!(out, "{i}");
        }
        Bson::Int64(i) => {
            let _ = write!(out, "{i}");
        }
        Bson::Timestamp(t) => {
            let _ = write!(
                out,
                "{}",
                (u64::from(t.time) << 32) | u64::from(t.increment)
            );
        }
        Bson::ObjectId(o) => push_str(out, &o.to_hex()),
        Bson::DateTime(d) => match d.try_to_rfc3339_string() {
            Ok(s) => push_str(out, &s),
            Err(_) => out.push_str("null"),
        },
        Bson::Decimal128(d) => push_decimal(out, d),
        Bson::Binary(b) => {
            let mut hex = String::with_capacity(b.bytes.len() * 2);
            for byte in &b.bytes {
                let _ = write!(hex, "{byte:02x}");
            }
            push_str(out, &hex);
        }
        Bson::RegularExpression(r) => push_str(out, &format!("/{}/{}", r.pattern, r.options)),
        Bson::JavaScriptCodeWithScope(c) => push_str(out, &c.code),
        Bson::DbPointer(_) => out.push_str("null"),
    }
}

/// Write a document as one JSON object. `text_columns` names top-level fields whose
/// documents and arrays are written as JSON text (the `json_text` policy).
pub fn write_document(d: &Document, out: &mut String, text_columns: Option<&[String]>) {
    out.push('{');
    for (i, (k, v)) in d.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_str(out, k);
        out.push(':');
        let as_text = matches!(v, Bson::Document(_) | Bson::Array(_))
            && text_columns.is_some_and(|c| c.iter().any(|c| c == k));
        if as_text {
            let mut inner = String::new();
            write_value(v, &mut inner);
            push_str(out, &inner);
        } else {
            write_value(v, out);
        }
    }
    out.push('}');
}

/// The `_id` of a document, for errors and quarantine: its JSON form.
pub fn id_text(d: &Document) -> String {
    d.get("_id").map_or_else(
        || "(no _id)".to_string(),
        |v| {
            let mut s = String::new();
            write_value(v, &mut s);
            s
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, oid::ObjectId, spec::BinarySubtype};

    #[test]
    fn every_bson_type_becomes_json_arrow_can_read() {
        let oid = ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").unwrap();
        let d = doc! {
            "_id": oid,
            "at": bson::DateTime::from_millis(1_704_067_200_123),
            "price": "123.45".parse::<bson::Decimal128>().unwrap(),
            "i": 7_i32, "l": 8_i64, "f": 2.5, "nan": f64::NAN,
            "nested": { "a": [1, 2, { "b": "x\ny" }] },
            "bin": bson::Binary { subtype: BinarySubtype::Generic, bytes: vec![0, 255, 16] },
            "none": Bson::Null, "ok": true,
        };
        let mut out = String::new();
        write_document(&d, &mut out, None);
        assert_eq!(
            out,
            r#"{"_id":"65a1b2c3d4e5f60718293a4b","at":"2024-01-01T00:00:00.123Z","price":123.45,"i":7,"l":8,"f":2.5,"nan":null,"nested":{"a":[1,2,{"b":"x\ny"}]},"bin":"00ff10","none":null,"ok":true}"#
        );
        let mut text = String::new();
        write_document(
            &doc! {"nested": {"a": 1}},
            &mut text,
            Some(&["nested".to_string()]),
        );
        assert_eq!(text, r#"{"nested":"{\"a\":1}"}"#);
    }
}
