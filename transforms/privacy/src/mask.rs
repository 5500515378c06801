//! [`Mask`]: the policy applied to batches (a [`BatchTransform`]), and the masking methods.

use crate::classify::{Tag, name_tags};
use crate::policy::{Generalize, Method, Policy};
use arrow_array::builder::StringBuilder;
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, Date32Array, RecordBatch, StructArray, new_null_array};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};
use ring::hmac;
use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use std::sync::Arc;
use stratalake_core::{BatchTransform, Context, Error, Result};

/// A keyed masker: the methods of [`Method`] on single values.
pub struct Masker {
    key: hmac::Key,
}

impl fmt::Debug for Masker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Masker { key: <secret> }")
    }
}

impl Masker {
    /// A masker with this key.
    pub fn new(key: &SecretString) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key.expose_secret().as_bytes()),
        }
    }

    /// HMAC-SHA256 of the value, 64 hex digits.
    pub fn hash(&self, v: &str) -> String {
        let tag = hmac::sign(&self.key, v.as_bytes());
        let mut s = String::with_capacity(64);
        for b in tag.as_ref() {
            s.push(char::from(b"0123456789abcdef"[(b >> 4) as usize]));
            s.push(char::from(b"0123456789abcdef"[(b & 15) as usize]));
        }
        s
    }

    fn stream(&self, v: &str, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 32);
        let mut block = 0u32;
        while out.len() < n {
            let mut ctx = hmac::Context::with_key(&self.key);
            ctx.update(&block.to_be_bytes());
            ctx.update(v.as_bytes());
            out.extend_from_slice(ctx.sign().as_ref());
            block += 1;
        }
        out
    }

    fn token_chars(&self, seed: &str, part: &str) -> String {
        let bytes = self.stream(seed, part.len());
        part.chars()
            .zip(bytes)
            .map(|(c, b)| match c {
                '0'..='9' => char::from(b'0' + b % 10),
                'a'..='z' => char::from(b'a' + b % 26),
                'A'..='Z' => char::from(b'A' + b % 26),
                c if c.is_alphabetic() => char::from(b'a' + b % 26),
                c => c,
            })
            .collect()
    }

    /// Format-preserving token: digits to digits, letters to letters, the rest kept; an email
    /// keeps `@` and its top-level domain; the last `keep_last` characters stay.
    pub fn tokenize(&self, v: &str, keep_last: usize) -> String {
        if let Some(at) = v.rfind('@') {
            let (local, domain) = (&v[..at], &v[at + 1..]);
            let (host, tld) = domain.rsplit_once('.').unwrap_or((domain, ""));
            let t = self.token_chars(v, &format!("{local}@{host}"));
            return if tld.is_empty() {
                t
            } else {
                format!("{t}.{tld}")
            };
        }
        let chars: Vec<char> = v.chars().collect();
        let split = chars.len().saturating_sub(keep_last);
        let head: String = chars[..split].iter().collect();
        let tail: String = chars[split..].iter().collect();
        format!("{}{tail}", self.token_chars(v, &head))
    }
}

/// What the transform does to one column path.
#[derive(Debug, Clone)]
struct Step {
    path: Vec<String>,
    method: Method,
    tags: Vec<Tag>,
}

/// The masking policy of one table as a batch transform: every column (or nested field) that a
/// rule masks for `role` is replaced; the rest pass untouched. Tags come from the policy's
/// declarations, else from the column names (`strata classify` suggests declarations from
/// values). Hash, tokenize, redact and constant produce text; null keeps the type;
/// generalisation keeps the type.
pub struct Mask {
    table: String,
    steps: Vec<Step>,
    masker: Arc<Masker>,
    name: String,
}

impl fmt::Debug for Mask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mask")
            .field("table", &self.table)
            .field(
                "columns",
                &self
                    .steps
                    .iter()
                    .map(|s| s.path.join("."))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

fn paths(prefix: &[String], fields: &Fields, out: &mut Vec<Vec<String>>) {
    for f in fields {
        let mut p = prefix.to_vec();
        p.push(f.name().clone());
        if let DataType::Struct(children) = f.data_type() {
            paths(&p, children, out);
        } else {
            out.push(p);
        }
    }
}

impl Mask {
    /// The policy of `table` as seen by `role`, for batches of `schema`, with `key`.
    ///
    /// # Errors
    /// None today; fallible for future checks.
    pub fn try_new(
        policy: &Policy,
        table: &str,
        role: &str,
        schema: &Schema,
        key: &SecretString,
    ) -> Result<Self> {
        let mut all = Vec::new();
        paths(&[], schema.fields(), &mut all);
        let mut steps = Vec::new();
        for p in all {
            let col = p.join(".");
            let tags: Vec<Tag> = match policy.declared(table, &col) {
                Some(t) => t.to_vec(),
                None => name_tags(&col).into_iter().map(|(t, _)| t).collect(),
            };
            if let Some(rule) = policy.rule_for(table, &col, &tags, role) {
                steps.push(Step {
                    path: p,
                    method: rule.method.clone(),
                    tags,
                });
            }
        }
        Ok(Self {
            name: format!("mask:{table}"),
            table: table.into(),
            steps,
            masker: Arc::new(Masker::new(key)),
        })
    }

    /// The masked columns and their tags.
    pub fn masked_columns(&self) -> Vec<(String, Vec<Tag>)> {
        self.steps
            .iter()
            .map(|s| (s.path.join("."), s.tags.clone()))
            .collect()
    }

    fn out_type(method: &Method, dt: &DataType) -> DataType {
        match method {
            Method::Null | Method::Generalize(Generalize::Year | Generalize::Round { .. }) => {
                dt.clone()
            }
            _ => DataType::Utf8,
        }
    }

    fn mask_array(&self, col: &ArrayRef, method: &Method, path: &str) -> Result<ArrayRef> {
        let m = &self.masker;
        if let Method::Null = method {
            return Ok(new_null_array(col.data_type(), col.len()));
        }
        match (method, col.data_type()) {
            (Method::Generalize(Generalize::Year), DataType::Date32) => {
                let d = col.as_primitive::<arrow_array::types::Date32Type>();
                let out: Date32Array = d
                    .iter()
                    .map(|v| {
                        v.and_then(|days| {
                            let date =
                                chrono::NaiveDate::from_num_days_from_ce_opt(days + 719_163)?;
                            let jan1 = chrono::NaiveDate::from_ymd_opt(
                                chrono::Datelike::year(&date),
                                1,
                                1,
                            )?;
                            Some(chrono::Datelike::num_days_from_ce(&jan1) - 719_163)
                        })
                    })
                    .collect();
                return Ok(Arc::new(out));
            }
            (Method::Generalize(Generalize::Round { step }), dt) if dt.is_numeric() => {
                let f = arrow_cast::cast(col, &DataType::Float64)
                    .map_err(|e| Error::internal("mask").with_source(e))?;
                let f = f.as_primitive::<arrow_array::types::Float64Type>();
                let r: arrow_array::Float64Array = f
                    .iter()
                    .map(|v| v.map(|x| (x / step).floor() * step))
                    .collect();
                return arrow_cast::cast(&(Arc::new(r) as ArrayRef), dt)
                    .map_err(|e| Error::internal("mask").with_source(e));
            }
            _ => {}
        }
        let text = arrow_cast::cast(col, &DataType::Utf8).map_err(|e| {
            Error::data(format!(
                "privacy: column {path} of {} cannot be masked as text",
                self.table
            ))
            .with_source(e)
        })?;
        let text = text.as_string::<i32>();
        let mut b =
            StringBuilder::with_capacity(text.len(), text.value_data().len() + 16 * text.len());
        for v in text.iter() {
            let Some(v) = v else {
                b.append_null();
                continue;
            };
            match method {
                Method::Hash => b.append_value(m.hash(v)),
                Method::Tokenize { keep_last } => b.append_value(m.tokenize(v, *keep_last)),
                Method::Redact {
                    pattern,
                    replacement,
                } => b.append_value(pattern.0.replace_all(v, replacement.as_str())),
                Method::Constant { value } => b.append_value(value),
                Method::Generalize(Generalize::Year) => match v.get(..4) {
                    Some(y) if y.chars().all(|c| c.is_ascii_digit()) => {
                        b.append_value(format!("{y}-01-01"))
                    }
                    _ => b.append_null(),
                },
                Method::Generalize(Generalize::Prefix { keep }) => {
                    let n = v.chars().count();
                    let head: String = v.chars().take(*keep).collect();
                    b.append_value(format!("{head}{}", "*".repeat(n.saturating_sub(*keep))));
                }
                Method::Generalize(Generalize::Round { .. }) => b.append_null(),
                Method::Null => b.append_null(),
            }
        }
        Ok(Arc::new(b.finish()))
    }

    fn replace(
        &self,
        col: &ArrayRef,
        field: &Field,
        rest: &[String],
        step: &Step,
    ) -> Result<(ArrayRef, Field)> {
        if rest.is_empty() {
            let out = self.mask_array(col, &step.method, &step.path.join("."))?;
            let f = field
                .clone()
                .with_data_type(out.data_type().clone())
                .with_nullable(true);
            return Ok((out, f));
        }
        let s = col.as_struct();
        let DataType::Struct(fields) = field.data_type() else {
            return Ok((col.clone(), field.clone()));
        };
        let mut cols: Vec<ArrayRef> = s.columns().to_vec();
        let mut fs: Vec<Field> = fields.iter().map(|f| f.as_ref().clone()).collect();
        if let Some(i) = fields.iter().position(|f| f.name() == &rest[0]) {
            let (c, f) = self.replace(&cols[i], &fs[i], &rest[1..], step)?;
            cols[i] = c;
            fs[i] = f;
        }
        let fs = Fields::from(fs);
        let out = StructArray::try_new(fs.clone(), cols, s.nulls().cloned())
            .map_err(|e| Error::internal("mask: struct").with_source(e))?;
        Ok((
            Arc::new(out),
            field.clone().with_data_type(DataType::Struct(fs)),
        ))
    }
}

impl BatchTransform for Mask {
    fn name(&self) -> &str {
        &self.name
    }

    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        for step in &self.steps {
            if let Some(i) = fields.iter().position(|f| f.name() == &step.path[0]) {
                fields[i] = retype(&fields[i], &step.path[1..], &step.method);
            }
        }
        Ok(Arc::new(Schema::new_with_metadata(
            fields,
            input.metadata().clone(),
        )))
    }

    fn apply(&self, batch: RecordBatch, _ctx: &Context) -> Result<RecordBatch> {
        let schema = batch.schema();
        let mut cols = batch.columns().to_vec();
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        for step in &self.steps {
            if let Some(i) = fields.iter().position(|f| f.name() == &step.path[0]) {
                let (c, f) = self.replace(&cols[i], &fields[i], &step.path[1..], step)?;
                cols[i] = c;
                fields[i] = f;
            }
        }
        RecordBatch::try_new(
            Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())),
            cols,
        )
        .map_err(|e| Error::internal("mask: batch").with_source(e))
    }
}

fn retype(f: &Field, rest: &[String], method: &Method) -> Field {
    if rest.is_empty() {
        return f
            .clone()
            .with_data_type(Mask::out_type(method, f.data_type()))
            .with_nullable(true);
    }
    let DataType::Struct(children) = f.data_type() else {
        return f.clone();
    };
    let fs: Fields = children
        .iter()
        .map(|c| {
            if c.name() == &rest[0] {
                retype(c, &rest[1..], method)
            } else {
                c.as_ref().clone()
            }
        })
        .collect();
    f.clone().with_data_type(DataType::Struct(fs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::StringArray;

    fn key(s: &str) -> SecretString {
        s.to_string().into()
    }

    #[test]
    fn hashes_are_stable_per_key_and_differ_across_keys() {
        let a = Masker::new(&key("first-key-0123456789"));
        let b = Masker::new(&key("other-key-0123456789"));
        assert_eq!(a.hash("anna@example.com"), a.hash("anna@example.com"));
        assert_ne!(a.hash("anna@example.com"), b.hash("anna@example.com"));
        assert_eq!(a.hash("x").len(), 64);
        assert!(!format!("{a:?}").contains("first-key"));
    }

    #[test]
    fn tokens_keep_the_format() {
        let m = Masker::new(&key("first-key-0123456789"));
        let e = m.tokenize("anna.schmidt@example.com", 0);
        assert!(
            e.ends_with(".com") && e.contains('@') && e.len() == 24,
            "{e}"
        );
        assert_ne!(e, "anna.schmidt@example.com");
        let c = m.tokenize("4111 1111 1111 1234", 4);
        assert!(
            c.ends_with("1234") && c.len() == 19 && c.chars().nth(4) == Some(' '),
            "{c}"
        );
        assert_ne!(&c[..14], "4111 1111 1111");
        assert_eq!(
            m.tokenize("+49 30 1234567", 0)
                .chars()
                .filter(char::is_ascii_digit)
                .count(),
            11
        );
    }

    #[test]
    fn nested_fields_are_masked_in_place() {
        let p = Policy::from_yaml(
            "keys: { env: K }\nrules:\n  - match: { tag: street_address }\n    method: { type: constant, value: '[street]' }\n  - match: { tag: postal_code }\n    method: { type: generalize, to: prefix, keep: 2 }\n  - match: { tag: date_of_birth }\n    method: { type: generalize, to: year }\n",
            "p",
        )
        .unwrap();
        let addr = StructArray::from(vec![
            (
                Arc::new(Field::new("street", DataType::Utf8, true)),
                Arc::new(StringArray::from(vec!["12 Baker Street"])) as ArrayRef,
            ),
            (
                Arc::new(Field::new("postal_code", DataType::Utf8, true)),
                Arc::new(StringArray::from(vec!["10115"])) as ArrayRef,
            ),
            (
                Arc::new(Field::new("city", DataType::Utf8, true)),
                Arc::new(StringArray::from(vec!["Berlin"])) as ArrayRef,
            ),
        ]);
        let b = RecordBatch::try_from_iter(vec![
            ("address", Arc::new(addr) as ArrayRef),
            (
                "birth_date",
                Arc::new(StringArray::from(vec!["1985-03-12"])),
            ),
        ])
        .unwrap();
        let m = Mask::try_new(
            &p,
            "customers",
            "silver",
            &b.schema(),
            &key("k-0123456789abcdef"),
        )
        .unwrap();
        let out = m.apply(b.clone(), &Context::new("t")).unwrap();
        assert_eq!(out.schema(), m.output_schema(&b.schema()).unwrap());
        let text = arrow_cast::pretty::pretty_format_batches(&[out])
            .unwrap()
            .to_string();
        assert!(
            text.contains("{street: [street], postal_code: 10***, city: Berlin}"),
            "{text}"
        );
        assert!(text.contains("1985-01-01"), "{text}");
    }
}
