//! The policy file: tags per column, masking rules by tag or column with role exceptions,
//! row filters, k-anonymity checks, and where the masking keys come from.
//!
//! ```yaml
//! keys: { env: STRATA_MASKING_KEY }          # the secret's name, never its value
//! columns:                                   # declared tags (override classification)
//!   customers.email: [email]
//!   customers.notes: []                      # not PII
//! rules:
//!   - match: { tag: email }
//!     method: { type: tokenize }
//!     unmasked_for: [pii_admin]              # everyone except pii_admin sees it masked
//!   - match: { column: customers.birth_date }
//!     method: { type: generalize, to: year }
//! row_filters:
//!   - { table: orders, role: partner_analyst, column: partner_id, attribute: partner_id }
//! k_anonymity:
//!   - { table: dim_customer, quasi_identifiers: [city, country], k: 5 }
//! ```
//!
//! Every value is checked while it is read, so an error names its line and column in the file:
//! unknown keys, unknown tags and methods, regular expressions that do not compile.

use crate::classify::Tag;
use regex::Regex;
use secrecy::SecretString;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use stratalake_core::{Error, ErrorKind, Result};

/// A regular expression checked when the policy is read.
#[derive(Debug, Clone)]
pub struct Pattern(pub Regex);

impl TryFrom<String> for Pattern {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        Regex::new(&s)
            .map(Pattern)
            .map_err(|e| format!("not a regular expression: {e}"))
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Pattern::try_from(s).map_err(serde::de::Error::custom)
    }
}

/// What a generalisation keeps.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "to", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Generalize {
    /// A date (or `YYYY-MM-DD` text) becomes the first day of its year.
    Year,
    /// Text keeps its first `keep` characters, the rest become `*`.
    Prefix {
        /// Characters kept. Range: 0..=1024.
        #[serde(deserialize_with = "stratalake_core::bounds::usize_in::<_, 0, 1024>")]
        keep: usize,
    },
    /// A number is rounded down to a multiple of `step`.
    Round {
        /// The multiple (above 0).
        #[serde(deserialize_with = "stratalake_core::bounds::positive_f64")]
        step: f64,
    },
}

/// How a value is masked.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Method {
    /// Keyed deterministic hashing: HMAC-SHA256 as 64 hex digits; equal values give equal
    /// hashes under one key, so joins on masked keys still work.
    Hash,
    /// Format-preserving tokenization: digits stay digits, letters letters, punctuation stays;
    /// an email keeps its `@` and top-level domain; `keep_last` characters stay as they are (a
    /// card keeps its last four digits). Keyed and deterministic.
    Tokenize {
        /// Trailing characters kept.
        #[serde(default)]
        keep_last: usize,
    },
    /// Replace every match of `pattern` with `replacement`.
    Redact {
        /// The regular expression.
        pattern: Pattern,
        /// The replacement (`$1` refers to groups).
        #[serde(default = "star")]
        replacement: String,
    },
    /// NULL.
    Null,
    /// A constant text.
    Constant {
        /// The value.
        value: String,
    },
    /// Keep a coarser value (module [`Generalize`]).
    Generalize(Generalize),
}

fn star() -> String {
    "*".into()
}

/// Which columns a rule masks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Match {
    /// Columns carrying this tag.
    #[serde(default)]
    pub tag: Option<Tag>,
    /// This column: `table.column` (nested fields as `table.address.street`).
    #[serde(default)]
    pub column: Option<String>,
}

/// One masking rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Rule {
    /// What it applies to.
    #[serde(rename = "match")]
    pub matches: Match,
    /// How.
    pub method: Method,
    /// Roles that see the value unmasked (everyone else sees it masked).
    #[serde(default)]
    pub unmasked_for: Vec<String>,
}

/// A partner-scoped (or otherwise attribute-scoped) role sees only its rows.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RowFilter {
    /// The table.
    pub table: String,
    /// The role the filter applies to.
    pub role: String,
    /// The column compared.
    pub column: String,
    /// The attribute of the user (an entitlement) the column must equal.
    pub attribute: String,
}

/// A k-anonymity requirement on an output table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct KAnonymity {
    /// The table.
    pub table: String,
    /// The quasi-identifier columns.
    pub quasi_identifiers: Vec<String>,
    /// The smallest group allowed. Range: 2..=1_000_000.
    #[serde(deserialize_with = "stratalake_core::bounds::usize_in::<_, 2, 1_000_000>")]
    pub k: usize,
}

/// Where the masking key comes from: an environment variable or a file (a secret the platform
/// mounts). A key never appears in the policy file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct KeySource {
    /// The environment variable holding the key (at least 16 bytes).
    #[serde(default)]
    pub env: Option<String>,
    /// A file holding the key (relative paths from the policy file's directory).
    #[serde(default)]
    pub file: Option<std::path::PathBuf>,
}

/// A policy file. See the module docs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Policy {
    /// The key's source.
    pub keys: KeySource,
    /// Declared tags per `table.column`.
    #[serde(default)]
    pub columns: BTreeMap<String, Vec<Tag>>,
    /// Masking rules, first match wins.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Row filters.
    #[serde(default)]
    pub row_filters: Vec<RowFilter>,
    /// k-anonymity checks.
    #[serde(default)]
    pub k_anonymity: Vec<KAnonymity>,
}

impl Policy {
    /// The retail platform's policy ([`crate::RETAIL_POLICY_YAML`]).
    ///
    /// # Panics
    /// Never: the file is parsed by this crate's tests.
    pub fn retail() -> Self {
        Self::from_yaml(crate::RETAIL_POLICY_YAML, "retail.yaml")
            .expect("the bundled retail policy parses")
    }

    /// Parse a policy; `name` is used in errors (a file name).
    ///
    /// # Errors
    /// Config naming `name:line:column` and the key at fault.
    pub fn from_yaml(text: &str, name: &str) -> Result<Self> {
        let p: Policy = serde_yaml_ng::from_str(text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!("{name}:{}:{}", l.line(), l.column()))
                .unwrap_or_else(|| name.to_string());
            Error::new(ErrorKind::Config, format!("privacy policy {at}: {e}"))
        })?;
        if p.keys.env.is_some() == p.keys.file.is_some() {
            return Err(Error::config(format!(
                "privacy policy {name}: `keys` needs exactly one of `env` and `file`"
            )));
        }
        for (i, r) in p.rules.iter().enumerate() {
            if r.matches.tag.is_none() == r.matches.column.is_none() {
                return Err(Error::config(format!(
                    "privacy policy {name}: rules[{i}].match needs exactly one of `tag` and `column`"
                )));
            }
        }
        Ok(p)
    }

    /// Read a policy file.
    ///
    /// # Errors
    /// As [`Policy::from_yaml`], or the file cannot be read.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::config(format!("cannot read the privacy policy {}", path.display()))
                .with_source(e)
        })?;
        let mut p = Self::from_yaml(&text, &path.display().to_string())?;
        if let (Some(f), Some(dir)) = (&p.keys.file, path.parent())
            && f.is_relative()
        {
            p.keys.file = Some(dir.join(f));
        }
        Ok(p)
    }

    /// The masking key, from the variable or file the policy names.
    ///
    /// # Errors
    /// Config when it is missing or shorter than 16 bytes (never showing the value).
    pub fn key(&self) -> Result<SecretString> {
        let (v, from) = match (&self.keys.env, &self.keys.file) {
            (Some(env), _) => (
                std::env::var(env).map_err(|_| {
                    Error::config(format!(
                        "privacy: the masking key variable {env} is not set (a secret of at least 16 bytes)"
                    ))
                })?,
                env.clone(),
            ),
            (None, Some(f)) => (
                std::fs::read_to_string(f)
                    .map_err(|e| {
                        Error::config(format!("privacy: cannot read the masking key file {}", f.display())).with_source(e)
                    })?
                    .trim()
                    .to_string(),
                f.display().to_string(),
            ),
            (None, None) => return Err(Error::config("privacy: the policy names no key")),
        };
        if v.len() < 16 {
            return Err(Error::config(format!(
                "privacy: the masking key in {from} is shorter than 16 bytes"
            )));
        }
        Ok(v.into())
    }

    /// The rule for a column with these tags, as seen by `role`: `None` when nothing masks it
    /// (no rule, or the role is an exception).
    pub fn rule_for(&self, table: &str, column: &str, tags: &[Tag], role: &str) -> Option<&Rule> {
        let path = format!("{table}.{column}");
        self.rules
            .iter()
            .find(|r| {
                r.matches.column.as_deref() == Some(path.as_str())
                    || r.matches.tag.as_ref().is_some_and(|t| tags.contains(t))
            })
            .filter(|r| !r.unmasked_for.iter().any(|u| u.eq_ignore_ascii_case(role)))
    }

    /// The declared tags of `table.column`, when declared.
    pub fn declared(&self, table: &str, column: &str) -> Option<&[Tag]> {
        self.columns
            .get(&format!("{table}.{column}"))
            .map(Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_the_line_and_the_key() {
        let e = Policy::from_yaml(
            "keys: { env: K }\nrules:\n  - match: { tag: email }\n    methd: { type: hash }\n",
            "p.yaml",
        )
        .unwrap_err();
        assert!(
            e.message().contains("p.yaml:4") && e.message().contains("methd"),
            "{}",
            e.message()
        );
        let e = Policy::from_yaml(
            "keys: { env: K }\nrules:\n  - match: { tag: emial }\n    method: { type: hash }\n",
            "p.yaml",
        )
        .unwrap_err();
        assert!(
            e.message().contains("p.yaml:3") && e.message().contains("emial"),
            "{}",
            e.message()
        );
        let e = Policy::from_yaml(
            "keys: { env: K }\nrules:\n  - match: { tag: phone }\n    method: { type: redact, pattern: '[0-9' }\n",
            "p.yaml",
        )
        .unwrap_err();
        // Inside a tagged method the location is the rule's line, and the path names the rule.
        assert!(
            e.message().contains("p.yaml:3")
                && e.message().contains("rules[0]")
                && e.message().contains("regular expression"),
            "{}",
            e.message()
        );
        let e = Policy::from_yaml("keys: { env: K, value: hunter2hunter2hunter2 }\n", "p.yaml")
            .unwrap_err();
        assert!(
            e.message().contains("value"),
            "a key cannot be written in the file: {}",
            e.message()
        );
        assert!(!e.report().contains("hunter2"), "{}", e.report());
    }

    #[test]
    fn exceptions_and_first_match() {
        let p = Policy::from_yaml(
            "keys: { env: K }\nrules:\n  - match: { column: customers.email }\n    method: { type: null }\n  - match: { tag: email }\n    method: { type: hash }\n    unmasked_for: [pii_admin]\n",
            "p",
        )
        .unwrap();
        assert!(matches!(
            p.rule_for("customers", "email", &[Tag::Email], "x")
                .unwrap()
                .method,
            Method::Null
        ));
        assert!(matches!(
            p.rule_for("partners", "contact_email", &[Tag::Email], "x")
                .unwrap()
                .method,
            Method::Hash
        ));
        assert!(
            p.rule_for("partners", "contact_email", &[Tag::Email], "PII_ADMIN")
                .is_none()
        );
        assert!(p.rule_for("partners", "name", &[], "x").is_none());
    }
}
