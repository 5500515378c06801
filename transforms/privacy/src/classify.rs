//! PII classification: column names and sampled values to tags, with a confidence and masked
//! evidence.
//!
//! Values are checked by validators, not only shapes: card numbers by the Luhn check, IBANs by
//! their mod-97 check digits, IP addresses by parsing. Names (`email`, `birth_date`,
//! `postal_code`, ...) raise the confidence; a name alone (person names, postal codes) gives a
//! lower one.

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::sync::LazyLock;

/// A kind of personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Tag {
    /// An email address.
    Email,
    /// A phone number.
    Phone,
    /// A person's name.
    PersonName,
    /// A street address.
    StreetAddress,
    /// A postal code.
    PostalCode,
    /// A date of birth.
    DateOfBirth,
    /// A payment card number (Luhn-valid).
    CardNumber,
    /// An IBAN (check digits valid).
    Iban,
    /// An IP address.
    IpAddress,
    /// A national identifier (US SSN shape, or declared).
    NationalId,
}

impl Tag {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Tag::Email => "email",
            Tag::Phone => "phone",
            Tag::PersonName => "person_name",
            Tag::StreetAddress => "street_address",
            Tag::PostalCode => "postal_code",
            Tag::DateOfBirth => "date_of_birth",
            Tag::CardNumber => "card_number",
            Tag::Iban => "iban",
            Tag::IpAddress => "ip_address",
            Tag::NationalId => "national_id",
        }
    }
}

/// One column's classification.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ColumnClass {
    /// The column path (`address.street` for a nested field).
    pub column: String,
    /// The tag.
    pub tag: Tag,
    /// 0 to 1.
    pub confidence: f64,
    /// A sampled value, masked (`a***@***.com`), or the name hint.
    pub evidence: String,
}

static EMAIL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$").unwrap());
static PHONE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\+?[0-9(][0-9 ()\-./]{5,}[0-9]$").unwrap());
static IBAN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$").unwrap());
static SSN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[0-9]{3}-[0-9]{2}-[0-9]{4}$").unwrap());
static DATE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(19|20)[0-9]{2}-[01][0-9]-[0-3][0-9]").unwrap());
static STREET: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)(^\d+\s+\p{L}.*|\p{L}.*\s\d+[a-z]?$)").unwrap());
static STREET_WORD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(street|st\.|avenue|ave|road|rd|lane|way|straße|strasse|str\.|weg|allee|platz|gasse|rue|via|calle|boulevard|blvd)").unwrap()
});

/// The Luhn check.
pub fn luhn(digits: &str) -> bool {
    let ds: Vec<u32> = digits
        .chars()
        .filter(|c| c.is_ascii_digit())
        .filter_map(|c| c.to_digit(10))
        .collect();
    if !(13..=19).contains(&ds.len())
        || digits
            .chars()
            .any(|c| !(c.is_ascii_digit() || c == ' ' || c == '-'))
    {
        return false;
    }
    let sum: u32 = ds
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 1 {
                if d * 2 > 9 { d * 2 - 9 } else { d * 2 }
            } else {
                *d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The IBAN mod-97 check.
pub fn iban_valid(v: &str) -> bool {
    let v: String = v.chars().filter(|c| !c.is_whitespace()).collect();
    if !IBAN.is_match(&v) {
        return false;
    }
    let (head, tail) = v.split_at(4);
    let mut rem: u64 = 0;
    for c in tail.chars().chain(head.chars()) {
        let n = match c.to_digit(36) {
            Some(n) => n as u64,
            None => return false,
        };
        for d in n.to_string().chars() {
            rem = (rem * 10 + d.to_digit(10).unwrap_or(0) as u64) % 97;
        }
    }
    rem == 1
}

fn value_tags(v: &str) -> Vec<Tag> {
    let v = v.trim();
    let mut t = Vec::new();
    if EMAIL.is_match(v) {
        t.push(Tag::Email);
    }
    if luhn(v) {
        t.push(Tag::CardNumber);
    } else if PHONE.is_match(v)
        && v.chars().filter(char::is_ascii_digit).count() >= 7
        && !DATE.is_match(v)
    {
        t.push(Tag::Phone);
    }
    if iban_valid(v) {
        t.push(Tag::Iban);
    }
    if v.parse::<std::net::IpAddr>().is_ok() {
        t.push(Tag::IpAddress);
    }
    if SSN.is_match(v) {
        t.push(Tag::NationalId);
    }
    if STREET.is_match(v) && STREET_WORD.is_match(v) {
        t.push(Tag::StreetAddress);
    }
    t
}

pub(crate) fn name_tags(name: &str) -> Vec<(Tag, f64)> {
    let n = name.to_ascii_lowercase();
    let last = n.rsplit('.').next().unwrap_or(&n);
    let mut t = Vec::new();
    let has = |w: &[&str]| w.iter().any(|x| last.contains(x));
    if has(&["email", "e_mail", "mail"]) {
        t.push((Tag::Email, 0.6));
    }
    if has(&["phone", "mobile", "msisdn", "fax"]) {
        t.push((Tag::Phone, 0.6));
    }
    if has(&[
        "first_name",
        "last_name",
        "full_name",
        "surname",
        "given_name",
        "firstname",
        "lastname",
    ]) {
        t.push((Tag::PersonName, 0.8));
    }
    if has(&["street", "address_line"]) {
        t.push((Tag::StreetAddress, 0.6));
    }
    if has(&["postal", "zip", "postcode", "plz"]) {
        t.push((Tag::PostalCode, 0.8));
    }
    if has(&["birth", "dob"]) {
        t.push((Tag::DateOfBirth, 0.8));
    }
    if has(&["card_number", "pan", "credit_card", "cc_number"]) {
        t.push((Tag::CardNumber, 0.6));
    }
    if has(&["iban"]) {
        t.push((Tag::Iban, 0.6));
    }
    if last == "ip" || has(&["ip_address", "ip_addr"]) {
        t.push((Tag::IpAddress, 0.6));
    }
    if has(&["ssn", "national_id", "tax_id", "passport"]) {
        t.push((Tag::NationalId, 0.7));
    }
    t
}

/// `anna.schmidt@example.com` -> `a***t@e***.com`: enough to recognise the kind, never the
/// value.
pub fn masked_evidence(v: &str) -> String {
    let chars: Vec<char> = v.chars().collect();
    if let Some(at) = v.find('@') {
        let (local, domain) = v.split_at(at);
        let tld = domain.rsplit('.').next().unwrap_or("");
        let first = local.chars().next().unwrap_or('*');
        return format!("{first}***@***.{tld}");
    }
    match chars.len() {
        0..=4 => "*".repeat(chars.len()),
        n => format!(
            "{}{}{}",
            chars[0],
            "*".repeat(n - 3),
            chars[n - 2..].iter().collect::<String>()
        ),
    }
}

/// Classify one column from its path and a sample of its text values.
pub fn classify_values(column: &str, sample: &[String]) -> Vec<ColumnClass> {
    let mut out: Vec<ColumnClass> = Vec::new();
    let n = sample.iter().filter(|v| !v.trim().is_empty()).count();
    let hints = name_tags(column);
    let mut counts: std::collections::BTreeMap<Tag, (usize, String)> = Default::default();
    for v in sample.iter().filter(|v| !v.trim().is_empty()) {
        for t in value_tags(v) {
            let e = counts.entry(t).or_insert((0, masked_evidence(v)));
            e.0 += 1;
        }
    }
    for (tag, (hits, evidence)) in counts {
        let share = hits as f64 / n.max(1) as f64;
        if share < 0.5 {
            continue;
        }
        let hint = hints.iter().find(|(t, _)| *t == tag).map_or(0.0, |h| h.1);
        let confidence = (0.2 + 0.7 * share + 0.3 * hint).min(1.0);
        out.push(ColumnClass {
            column: column.into(),
            tag,
            confidence: (confidence * 100.0).round() / 100.0,
            evidence,
        });
    }
    for (tag, conf) in hints {
        if out.iter().any(|c| c.tag == tag) {
            continue;
        }
        // A name hint alone; dates of birth also need date-shaped values.
        let dates = sample.iter().filter(|v| DATE.is_match(v)).count();
        let conf = match tag {
            Tag::DateOfBirth if n > 0 && dates * 2 >= n => 0.9,
            Tag::DateOfBirth => continue,
            Tag::PersonName | Tag::PostalCode if n > 0 => conf,
            _ if n > 0 => conf * 0.5,
            _ => conf * 0.5,
        };
        let evidence = sample
            .iter()
            .find(|v| !v.is_empty())
            .map_or_else(|| format!("name `{column}`"), |v| masked_evidence(v));
        out.push(ColumnClass {
            column: column.into(),
            tag,
            confidence: conf,
            evidence,
        });
    }
    out.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
    out
}

fn collect(prefix: &str, col: &ArrayRef, max: usize, out: &mut Vec<(String, Vec<String>)>) {
    match col.data_type() {
        DataType::Struct(fields) => {
            let s = col.as_struct();
            for (f, c) in fields.iter().zip(s.columns()) {
                collect(&format!("{prefix}.{}", f.name()), c, max, out);
            }
        }
        DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View
        | DataType::Date32
        | DataType::Int64 => {
            let text = arrow_cast::cast(col, &DataType::Utf8).ok();
            let vals = text
                .map(|t| {
                    t.as_string::<i32>()
                        .iter()
                        .flatten()
                        .take(max)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            out.push((prefix.to_string(), vals));
        }
        _ => out.push((prefix.to_string(), Vec::new())),
    }
}

/// Classify every column (and nested field) of `batches` from up to `sample` values each.
pub fn classify(batches: &[RecordBatch], sample: usize) -> Vec<ColumnClass> {
    let Some(first) = batches.first() else {
        return Vec::new();
    };
    let mut per: Vec<(String, Vec<String>)> = Vec::new();
    for b in batches {
        let mut cols = Vec::new();
        for (f, c) in b.schema().fields().iter().zip(b.columns()) {
            collect(f.name(), c, sample, &mut cols);
        }
        if per.is_empty() {
            per = cols;
        } else {
            for ((_, acc), (_, v)) in per.iter_mut().zip(cols) {
                if acc.len() < sample {
                    acc.extend(v.into_iter().take(sample - acc.len()));
                }
            }
        }
    }
    let _ = first;
    per.iter()
        .flat_map(|(c, v)| classify_values(c, v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn validators() {
        assert!(luhn("4111 1111 1111 1111"));
        assert!(!luhn("4111 1111 1111 1112"));
        assert!(iban_valid("DE89370400440532013000"));
        assert!(!iban_valid("DE89370400440532013001"));
    }

    #[test]
    fn values_and_names_give_tags_with_masked_evidence() {
        let c = classify_values("contact", &s(&["anna@example.com", "bo@shop.de"]));
        assert_eq!(c[0].tag, Tag::Email);
        assert_eq!(c[0].evidence, "a***@***.com");
        let c = classify_values(
            "card_number",
            &s(&["4111111111111111", "5500 0000 0000 0004"]),
        );
        assert_eq!((c[0].tag, c[0].confidence), (Tag::CardNumber, 1.0));
        assert!(!c[0].evidence.contains("411111111111"));
        let c = classify_values("iban", &s(&["DE89370400440532013000"]));
        assert_eq!(c[0].tag, Tag::Iban);
        let c = classify_values("client", &s(&["10.0.0.1", "2001:db8::1"]));
        assert_eq!(c[0].tag, Tag::IpAddress);
        let c = classify_values("birth_date", &s(&["1985-03-12"]));
        assert_eq!(c[0].tag, Tag::DateOfBirth);
        let c = classify_values("address.street", &s(&["12 Baker Street", "Hauptstraße 5"]));
        assert_eq!(c[0].tag, Tag::StreetAddress);
        let c = classify_values("first_name", &s(&["Anna"]));
        assert_eq!(c[0].tag, Tag::PersonName);
        let c = classify_values("ssn", &s(&["123-45-6789"]));
        assert_eq!(c[0].tag, Tag::NationalId);
        assert!(classify_values("status", &s(&["paid", "shipped"])).is_empty());
        assert!(classify_values("created_at", &s(&["2024-01-01"])).is_empty());
    }
}
