//! The retail model's silver tables: orders, order lines, customers, partners, products.
//!
//! Direct identifiers (names, e-mail, phone, birth date, card, street) stay in bronze: silver
//! keeps what the business tables need until the privacy policies (strata-privacy) mask them.

use crate::conform::{Check, ConformSpec, Rule};

/// Currencies accepted in orders: ISO 4217 codes of trade (not the `X..` test and metal codes).
pub const CURRENCIES: &[&str] = &[
    "AED", "AUD", "BGN", "BRL", "CAD", "CHF", "CNY", "CZK", "DKK", "EUR", "GBP", "HKD", "HUF",
    "IDR", "ILS", "INR", "ISK", "JPY", "KRW", "MXN", "MYR", "NOK", "NZD", "PHP", "PLN", "RON",
    "SAR", "SEK", "SGD", "THB", "TRY", "TWD", "USD", "ZAR",
];

/// Order statuses.
pub const STATUSES: &[&str] = &[
    "placed",
    "paid",
    "shipped",
    "delivered",
    "cancelled",
    "returned",
];

fn cols(c: &[(&str, &str)]) -> Vec<(String, String)> {
    c.iter()
        .map(|(a, b)| ((*a).to_string(), (*b).to_string()))
        .collect()
}

fn list(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_string()).collect()
}

/// Orders: typed, UTC timestamps, required ids, known currency and status, positive
/// quantities on every line.
pub fn orders() -> ConformSpec {
    ConformSpec {
        table: "silver.orders".into(),
        columns: cols(&[
            ("order_id", "utf8"),
            ("partner_id", "utf8"),
            ("customer_id", "utf8"),
            ("status", "utf8"),
            ("channel", "utf8"),
            ("currency", "utf8"),
            ("created_at", "timestamp"),
            ("updated_at", "timestamp"),
            (
                "lines",
                "list<struct<line_no: int32, product_id: utf8, quantity: int32, unit_price: decimal(12,2), discount: decimal(12,2)>>",
            ),
            ("total_amount", "decimal(14,2)"),
            ("coupon_code", "utf8"),
        ]),
        rules: vec![
            Rule::new("order_id", Check::Required),
            Rule::new("partner_id", Check::Required),
            Rule::new("customer_id", Check::Required),
            Rule::new("created_at", Check::Required),
            Rule::new("updated_at", Check::Required),
            Rule::new("total_amount", Check::Required),
            Rule::new("lines", Check::Required),
            Rule::new(
                "currency",
                Check::OneOf {
                    values: list(CURRENCIES),
                },
            ),
            Rule::new(
                "status",
                Check::OneOf {
                    values: list(STATUSES),
                },
            ),
            Rule::new("lines[].quantity", Check::Min { value: 1.0 }),
            Rule::new("lines[].unit_price", Check::Min { value: 0.0 }),
        ],
        key: list(&["order_id"]),
    }
}

/// The order columns repeated on each order line.
pub const ORDER_LINE_PARENT: &[&str] = &[
    "order_id",
    "partner_id",
    "customer_id",
    "status",
    "currency",
    "created_at",
    "updated_at",
];

/// Customers: the direct identifiers arrive masked by the privacy policy (`strata-privacy`'s
/// `Mask` runs before `Conform` in the silver pipeline).
pub fn customers() -> ConformSpec {
    ConformSpec {
        table: "silver.customers".into(),
        columns: cols(&[
            ("customer_id", "utf8"),
            ("first_name", "utf8"),
            ("last_name", "utf8"),
            ("email", "utf8"),
            ("phone", "utf8"),
            ("birth_date", "date"),
            (
                "address",
                "struct<street: utf8, postal_code: utf8, city: utf8, country: utf8>",
            ),
            ("card_number", "utf8"),
            ("marketing_opt_in", "boolean"),
            ("created_at", "timestamp"),
            ("updated_at", "timestamp"),
        ]),
        rules: vec![
            Rule::new("customer_id", Check::Required),
            Rule::new("updated_at", Check::Required),
        ],
        key: list(&["customer_id"]),
    }
}

/// Partners (contact details and IBAN masked by the privacy policy before conforming).
pub fn partners() -> ConformSpec {
    ConformSpec {
        table: "silver.partners".into(),
        columns: cols(&[
            ("partner_id", "utf8"),
            ("name", "utf8"),
            ("country", "utf8"),
            ("city", "utf8"),
            ("currency", "utf8"),
            ("contact_email", "utf8"),
            ("contact_phone", "utf8"),
            ("iban", "utf8"),
            ("onboarded_at", "timestamp"),
        ]),
        rules: vec![
            Rule::new("partner_id", Check::Required),
            Rule::new(
                "currency",
                Check::OneOf {
                    values: list(CURRENCIES),
                },
            ),
        ],
        key: list(&["partner_id"]),
    }
}

/// Products.
pub fn products() -> ConformSpec {
    ConformSpec {
        table: "silver.products".into(),
        columns: cols(&[
            ("product_id", "utf8"),
            ("partner_id", "utf8"),
            ("name", "utf8"),
            ("category", "utf8"),
            ("price", "decimal(12,2)"),
            ("currency", "utf8"),
            ("created_at", "timestamp"),
        ]),
        rules: vec![
            Rule::new("product_id", Check::Required),
            Rule::new("price", Check::Min { value: 0.0 }),
        ],
        key: list(&["product_id"]),
    }
}
