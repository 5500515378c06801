/*
description: >
  One row per order, the newest version (updated_at) of each, typed and validated: a row
  with a missing id, an unknown currency or status, or a line with a quantity below 1 goes
  to silver/orders/_quarantine with the rule, the column and the value (its expectations).
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
  # Rules inside each line's list stay with conform (expectations look at top-level columns).
  rules:
    - { column: "lines[].quantity", check: { type: min, value: 1 } }
    - { column: "lines[].unit_price", check: { type: min, value: 0 } }
expectations:
  # Row rules: a failing row goes to silver/orders/_quarantine with the rule, column and value.
  - { name: has_order_id, expect: not_null, column: order_id, action: quarantine }
  - { name: has_partner, expect: not_null, column: partner_id, action: quarantine }
  - { name: has_customer, expect: not_null, column: customer_id, action: quarantine }
  - { name: has_created_at, expect: not_null, column: created_at, action: quarantine }
  - { name: has_updated_at, expect: not_null, column: updated_at, action: quarantine }
  - { name: has_total, expect: not_null, column: total_amount, action: quarantine }
  - { name: has_lines, expect: not_null, column: lines, action: quarantine }
  - name: known_currency
    expect: accepted_values
    column: currency
    values: [AED, AUD, BGN, BRL, CAD, CHF, CNY, CZK, DKK, EUR, GBP, HKD, HUF, IDR, ILS, INR, ISK, JPY, KRW, MXN, MYR, NOK, NZD, PHP, PLN, RON, SAR, SEK, SGD, THB, TRY, TWD, USD, ZAR]
    action: quarantine
  - { name: known_status, expect: accepted_values, column: status, values: [placed, paid, shipped, delivered, cancelled, returned], action: quarantine }
  # Table checks on silver.orders after each commit (a merge model's checks warn).
  - { name: one_row_per_order, expect: unique, columns: [order_id] }
  - { name: known_customer, expect: relationships, column: customer_id, to: silver.customers }
  - { name: known_partner, expect: relationships, column: partner_id, to: silver.partners }
  - name: orders_feed_fresh
    expect: sql
    description: "bronze.orders received rows in the last 26 hours (the feed is daily)"
    sql: >
      SELECT max(_ingested_at) AS last_ingest FROM bronze.orders
      HAVING date_part('epoch', now()) - date_part('epoch', max(_ingested_at)) > 93600
columns:
  order_id: The order's id.
  created_at: When the order was placed (UTC).
  updated_at: The version of the order; the newest wins.
  total_amount: The order's total in its currency.
*/
SELECT * FROM bronze.orders
