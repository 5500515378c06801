/*
description: "One row per order line with its amount: the fact table of the star schema."
materialized: incremental
partition_by: order_date
partition_from:
  silver.order_lines: CAST(created_at AS DATE)
key: [order_id, line_no]
*/
SELECT order_id, line_no, CAST(created_at AS DATE) AS order_date, partner_id,
       customer_id, product_id, currency, status, quantity, unit_price, discount,
       CAST(CAST(quantity AS DECIMAL(12,2)) * unit_price - discount AS DECIMAL(14,2)) AS line_amount
FROM silver.order_lines
