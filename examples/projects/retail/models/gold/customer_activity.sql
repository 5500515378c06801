/*
description: "Per customer and currency: orders, spend, first and last order, and recency/frequency/monetary scores."
materialized: table
key: [customer_id, currency]
*/
WITH last AS (SELECT MAX(CAST(created_at AS DATE)) AS d FROM silver.orders),
agg AS (
  SELECT customer_id, currency, COUNT(*) AS orders, SUM(total_amount) AS spend,
         MIN(created_at) AS first_order_at, MAX(created_at) AS last_order_at
  FROM silver.orders
  GROUP BY customer_id, currency
)
SELECT a.customer_id, a.currency, a.orders, CAST(a.spend AS DECIMAL(18,2)) AS spend,
       a.first_order_at, a.last_order_at,
       CAST(arrow_cast(last.d, 'Int32') - arrow_cast(CAST(a.last_order_at AS DATE), 'Int32') AS BIGINT) AS recency_days,
       a.orders AS frequency, CAST(a.spend AS DECIMAL(18,2)) AS monetary
FROM agg a CROSS JOIN last
