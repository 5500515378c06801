/*
description: >
  One row per customer, the newest version. Direct identifiers arrive masked by the privacy
  policy (mask runs before anything else sees the rows).
materialized: merge
key: [customer_id]
version_column: updated_at
mask: customers
conform:
  types:
    - { name: customer_id, type: "utf8" }
    - { name: first_name, type: "utf8" }
    - { name: last_name, type: "utf8" }
    - { name: email, type: "utf8" }
    - { name: phone, type: "utf8" }
    - { name: birth_date, type: "date" }
    - { name: address, type: "struct<street: utf8, postal_code: utf8, city: utf8, country: utf8>" }
    - { name: card_number, type: "utf8" }
    - { name: marketing_opt_in, type: "boolean" }
    - { name: created_at, type: "timestamp" }
    - { name: updated_at, type: "timestamp" }
  rules:
    - { column: customer_id, check: { type: required } }
    - { column: updated_at, check: { type: required } }
*/
SELECT * FROM bronze.customers
