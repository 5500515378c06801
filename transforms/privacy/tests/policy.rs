//! The retail policy file: it parses, and its Snowflake governance DDL is as reviewed.

use stratalake_privacy::Policy;
use stratalake_privacy::warehouse::governance_ddl;

fn retail() -> Policy {
    Policy::retail()
}

#[test]
fn retail_governance_ddl_snapshot() {
    let ddl = governance_ddl(
        &retail(),
        &[
            (
                "customers",
                vec![
                    "customer_id",
                    "first_name",
                    "last_name",
                    "email",
                    "phone",
                    "birth_date",
                    "card_number",
                    "marketing_opt_in",
                ],
            ),
            (
                "partners",
                vec![
                    "partner_id",
                    "name",
                    "contact_email",
                    "contact_phone",
                    "iban",
                ],
            ),
        ],
    )
    .join(";\n")
        + ";\n";
    let expected = include_str!("snapshots/retail_governance.sql");
    if ddl != expected {
        std::fs::write(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/snapshots/retail_governance.sql.new"
            ),
            &ddl,
        )
        .unwrap();
    }
    assert_eq!(
        ddl, expected,
        "new output in tests/snapshots/retail_governance.sql.new"
    );
}

#[test]
fn keys_never_come_from_the_policy_file() {
    let p = retail();
    assert_eq!(p.keys.env.as_deref(), Some("STRATA_MASKING_KEY"));
    let e = Policy::from_yaml("keys: { env: A, file: b }\n", "p.yaml").unwrap_err();
    assert!(e.message().contains("exactly one"), "{}", e.message());
    let e = Policy::from_yaml("keys: { key: 0123456789abcdef0123 }\n", "p.yaml").unwrap_err();
    assert!(
        e.message().contains("p.yaml:1") && e.message().contains("unknown field `key`"),
        "{}",
        e.message()
    );
}

/// The documented Snowflake form of each governance statement Strata writes.
const GOVERNANCE_FORMS: &[(&str, &str)] = &[
    (
        "CREATE TAG ",
        "CREATE TAG IF NOT EXISTS {ident} ALLOWED_VALUES {strings}",
    ),
    (
        "CREATE OR REPLACE MASKING POLICY ",
        "CREATE OR REPLACE MASKING POLICY {name} AS ( {ident} {type} ) RETURNS {type} -> {expr}",
    ),
    (
        "CREATE OR REPLACE ROW ACCESS POLICY ",
        "CREATE OR REPLACE ROW ACCESS POLICY {name} AS ( {ident} {type} ) RETURNS {type} -> {expr}",
    ),
    ("CREATE TABLE ", "{statement}"),
];

fn governance_form(sql: &str) -> &'static str {
    if sql.starts_with("ALTER TABLE ") {
        return if sql.contains(" SET TAG ") {
            "ALTER TABLE {name} MODIFY COLUMN {ident} SET TAG {name} = {string}"
        } else if sql.contains(" SET MASKING POLICY ") {
            "ALTER TABLE {name} MODIFY COLUMN {ident} SET MASKING POLICY {name}"
        } else {
            "ALTER TABLE {name} ADD ROW ACCESS POLICY {name} ON ( {idents} )"
        };
    }
    GOVERNANCE_FORMS
        .iter()
        .find(|(prefix, _)| sql.starts_with(prefix))
        .map_or_else(|| panic!("a statement of no known form: {sql}"), |f| f.1)
}

/// fakesnow runs none of the tag and policy statements: each is read against Snowflake's
/// documented form, its names, types and expressions parsed by sqlparser's Snowflake dialect.
/// Every masking method appears (a policy of one rule each, besides the retail file).
#[test]
fn every_governance_statement_parses_as_snowflake_sql() {
    let every_method = Policy::from_yaml(
        r#"
keys: { env: STRATA_MASKING_KEY }
columns: { t.a: [email], t.b: [phone] }
rules:
  - { match: { column: t.a }, method: { type: hash }, unmasked_for: [admin, "o'brien"] }
  - { match: { column: t.b }, method: { type: tokenize } }
  - { match: { column: t.c }, method: { type: tokenize, keep_last: 4 } }
  - { match: { column: t.d }, method: { type: redact, pattern: "[0-9]{2}'$", replacement: "**" } }
  - { match: { column: t.e }, method: { type: null } }
  - { match: { column: t.f }, method: { type: constant, value: "it's hidden" } }
  - { match: { column: t.g }, method: { type: generalize, to: year } }
  - { match: { column: t.h }, method: { type: generalize, to: prefix, keep: 2 } }
  - { match: { column: t.i }, method: { type: generalize, to: round, step: 10 } }
row_filters:
  - { table: t, role: analyst, column: region, attribute: region }
"#,
        "every-method.yaml",
    )
    .unwrap();
    let columns = vec!["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    let mut checked = 0;
    for (policy, tables) in [
        (
            retail(),
            vec![
                (
                    "customers",
                    vec!["email", "phone", "birth_date", "card_number"],
                ),
                ("partners", vec!["contact_email", "iban"]),
                ("orders", vec!["partner_id"]),
            ],
        ),
        (every_method, vec![("t", columns)]),
    ] {
        for sql in governance_ddl(&policy, &tables) {
            stratalake_testkit::snowflake_sql::check(&sql, governance_form(&sql))
                .unwrap_or_else(|e| panic!("{e}"));
            checked += 1;
        }
    }
    assert!(checked > 20, "{checked} statements checked");
}
