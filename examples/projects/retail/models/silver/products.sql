/*
description: "One row per product of a partner's catalogue."
materialized: merge
key: [product_id]
conform:
  types:
    - { name: product_id, type: "utf8" }
    - { name: partner_id, type: "utf8" }
    - { name: name, type: "utf8" }
    - { name: category, type: "utf8" }
    - { name: price, type: "decimal(12,2)" }
    - { name: currency, type: "utf8" }
    - { name: created_at, type: "timestamp" }
  rules:
    - { column: product_id, check: { type: required } }
    - { column: price, check: { type: min, value: 0 } }
*/
SELECT * FROM bronze.products
