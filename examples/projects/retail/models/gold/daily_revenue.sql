/*
description: "Orders, revenue and net revenue (after cancellations and returns) per day, partner and currency."
materialized: incremental
partition_by: order_date
partition_from:
  silver.orders: CAST(created_at AS DATE)
key: [order_date, partner_id, currency]
expectations:
  - { name: net_within_gross, expect: expression, expression: "net_revenue <= revenue", action: fail }
  - { name: one_row_per_key, expect: unique, columns: [order_date, partner_id, currency], action: fail }
  - { name: no_collapse, expect: row_count_change, max_decrease_percent: 50, action: fail }
*/
SELECT CAST(created_at AS DATE) AS order_date, partner_id, currency,
       COUNT(*) AS orders,
       CAST(SUM(total_amount) AS DECIMAL(18,2)) AS revenue,
       CAST(SUM(CASE WHEN status IN ('cancelled', 'returned') THEN 0 ELSE total_amount END) AS DECIMAL(18,2)) AS net_revenue
FROM silver.orders
GROUP BY 1, 2, 3
