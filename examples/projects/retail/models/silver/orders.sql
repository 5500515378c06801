/*
description: >
  One row per order, the newest version (updated_at) of each, typed and validated: a row
  with a missing id, an unknown currency or status, or a line with a quantity below 1 goes
  to silver/orders/_quarantine with the rule, the column and the value.
materialized: merge
key: [order_id]
version_column: updated_at
mask: orders
conform:
  types:
    - { name: order_id, type: "utf8" }
    - { name: partner_id, type: "utf8" }
    - { name: customer_id, type: "utf8" }
    - { name: status, type: "utf8" }
    - { name: channel, type: "utf8" }
    - { name: currency, type: "utf8" }
    - { name: created_at, type: "timestamp" }
    - { name: updated_at, type: "timestamp" }
    - { name: lines, type: "list<struct<line_no: int32, product_id: utf8, quantity: int32, unit_price: decimal(12,2), discount: decimal(12,2)>>" }
    - { name: total_amount, type: "decimal(14,2)" }
    - { name: coupon_code, type: "utf8" }
  rules:
    - { column: order_id, check: { type: required } }
    - { column: partner_id, check: { type: required } }
    - { column: customer_id, check: { type: required } }
    - { column: created_at, check: { type: required } }
    - { column: updated_at, check: { type: required } }
    - { column: total_amount, check: { type: required } }
    - { column: lines, check: { type: required } }
    - { column: currency, check: { type: one_of, values: [AED, AUD, BGN, BRL, CAD, CHF, CNY, CZK, DKK, EUR, GBP, HKD, HUF, IDR, ILS, INR, ISK, JPY, KRW, MXN, MYR, NOK, NZD, PHP, PLN, RON, SAR, SEK, SGD, THB, TRY, TWD, USD, ZAR] } }
    - { column: status, check: { type: one_of, values: [placed, paid, shipped, delivered, cancelled, returned] } }
    - { column: "lines[].quantity", check: { type: min, value: 1 } }
    - { column: "lines[].unit_price", check: { type: min, value: 0 } }
columns:
  order_id: The order's id.
  created_at: When the order was placed (UTC).
  updated_at: The version of the order; the newest wins.
  total_amount: The order's total in its currency.
*/
SELECT * FROM bronze.orders
