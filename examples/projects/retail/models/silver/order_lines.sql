/*
description: "One row per order line of silver.orders (already masked, typed and validated), with its order's ids, status, currency and times."
materialized: merge
key: [order_id, line_no]
version_column: updated_at
explode:
  column: lines
  keep: [order_id, partner_id, customer_id, status, currency, created_at, updated_at]
expectations:
  - { name: known_product, expect: relationships, column: product_id, to: silver.products }
  - { name: one_row_per_line, expect: unique, columns: [order_id, line_no] }
*/
SELECT * FROM silver.orders
