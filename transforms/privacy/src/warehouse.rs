//! The same policy as Snowflake governance: tags, masking policies and row access policies,
//! as SQL statements (stratalake-snowflake executes them).
//!
//! Snowflake SQL has no keyed HMAC, so `hash` becomes `SHA2(val, 256)` and `tokenize` a
//! shape-keeping redaction there; the lake already holds the keyed values (silver masks before
//! writing), so the warehouse policies are the second line, for the roles the file names.

use crate::classify::{Tag, name_tags};
use crate::policy::{Generalize, Method, Policy};

fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn up(s: &str) -> String {
    s.to_ascii_uppercase().replace('.', "_")
}

fn expr(method: &Method) -> (String, &'static str) {
    match method {
        Method::Hash => ("SHA2(val, 256)".into(), "VARCHAR"),
        Method::Tokenize { keep_last } if *keep_last > 0 => (
            format!(
                "REPEAT('*', GREATEST(LENGTH(val) - {keep_last}, 0)) || RIGHT(val, {keep_last})"
            ),
            "VARCHAR",
        ),
        Method::Tokenize { .. } => ("REGEXP_REPLACE(val, '[A-Za-z0-9]', '*')".into(), "VARCHAR"),
        Method::Redact {
            pattern,
            replacement,
        } => (
            format!(
                "REGEXP_REPLACE(val, {}, {})",
                q(pattern.0.as_str()),
                q(replacement)
            ),
            "VARCHAR",
        ),
        Method::Null => ("NULL".into(), "VARCHAR"),
        Method::Constant { value } => (q(value), "VARCHAR"),
        Method::Generalize(Generalize::Year) => ("DATE_TRUNC('YEAR', val)".into(), "DATE"),
        Method::Generalize(Generalize::Prefix { keep }) => (
            format!("LEFT(val, {keep}) || REPEAT('*', GREATEST(LENGTH(val) - {keep}, 0))"),
            "VARCHAR",
        ),
        Method::Generalize(Generalize::Round { step }) => {
            (format!("FLOOR(val / {step}) * {step}"), "NUMBER")
        }
    }
}

/// The governance statements for `tables` (name and column names, as loaded), in order: the
/// `PII` tag, one masking policy per rule, the column tags and policies, the entitlements table
/// and the row access policies.
pub fn governance_ddl(policy: &Policy, tables: &[(&str, Vec<&str>)]) -> Vec<String> {
    let mut out = Vec::new();
    let allowed: Vec<String> = [
        Tag::Email,
        Tag::Phone,
        Tag::PersonName,
        Tag::StreetAddress,
        Tag::PostalCode,
        Tag::DateOfBirth,
        Tag::CardNumber,
        Tag::Iban,
        Tag::IpAddress,
        Tag::NationalId,
    ]
    .iter()
    .map(|t| q(t.as_str()))
    .collect();
    out.push(format!(
        "CREATE TAG IF NOT EXISTS PII ALLOWED_VALUES {}",
        allowed.join(", ")
    ));
    for (i, r) in policy.rules.iter().enumerate() {
        let (e, ty) = expr(&r.method);
        let exempt = if r.unmasked_for.is_empty() {
            "FALSE".to_string()
        } else {
            r.unmasked_for
                .iter()
                .map(|u| format!("IS_ROLE_IN_SESSION({})", q(&u.to_uppercase())))
                .collect::<Vec<_>>()
                .join(" OR ")
        };
        out.push(format!(
            "CREATE OR REPLACE MASKING POLICY STRATA_MASK_{i} AS (val {ty}) RETURNS {ty} -> CASE WHEN {exempt} THEN val ELSE {e} END"
        ));
    }
    for (table, cols) in tables {
        for c in cols {
            let tags: Vec<Tag> = match policy.declared(table, c) {
                Some(t) => t.to_vec(),
                None => name_tags(c).into_iter().map(|(t, _)| t).collect(),
            };
            if let Some(t) = tags.first() {
                out.push(format!(
                    "ALTER TABLE {} MODIFY COLUMN {} SET TAG PII = {}",
                    up(table),
                    up(c),
                    q(t.as_str())
                ));
            }
            // Rules as every role but the exempt ones sees them: the policy itself exempts.
            let rule = policy.rules.iter().position(|r| {
                r.matches.column.as_deref() == Some(format!("{table}.{c}").as_str())
                    || r.matches.tag.as_ref().is_some_and(|t| tags.contains(t))
            });
            if let Some(i) = rule {
                out.push(format!(
                    "ALTER TABLE {} MODIFY COLUMN {} SET MASKING POLICY STRATA_MASK_{i}",
                    up(table),
                    up(c)
                ));
            }
        }
    }
    if !policy.row_filters.is_empty() {
        out.push("CREATE TABLE IF NOT EXISTS STRATA_ENTITLEMENTS (USER_NAME VARCHAR, ATTRIBUTE VARCHAR, VALUE VARCHAR)".into());
    }
    for f in &policy.row_filters {
        let name = format!("STRATA_ROWS_{}_{}", up(&f.table), up(&f.role));
        out.push(format!(
            "CREATE OR REPLACE ROW ACCESS POLICY {name} AS (v VARCHAR) RETURNS BOOLEAN -> NOT IS_ROLE_IN_SESSION({}) OR EXISTS (SELECT 1 FROM STRATA_ENTITLEMENTS e WHERE e.USER_NAME = CURRENT_USER() AND e.ATTRIBUTE = {} AND e.VALUE = v)",
            q(&f.role.to_uppercase()),
            q(&f.attribute)
        ));
        out.push(format!(
            "ALTER TABLE {} ADD ROW ACCESS POLICY {name} ON ({})",
            up(&f.table),
            up(&f.column)
        ));
    }
    out
}
