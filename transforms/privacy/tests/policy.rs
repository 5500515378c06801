//! The retail policy file: it parses, and its Snowflake governance DDL is as reviewed.

use strata_privacy::Policy;
use strata_privacy::warehouse::governance_ddl;

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
