/*
description: "Per partner and currency: orders, distinct customers, revenue, first and last order."
materialized: table
key: [partner_id, currency]
*/
SELECT o.partner_id, p.name AS partner_name, o.currency, COUNT(*) AS orders,
       COUNT(DISTINCT o.customer_id) AS customers,
       CAST(SUM(o.total_amount) AS DECIMAL(18,2)) AS revenue,
       MIN(o.created_at) AS first_order_at, MAX(o.created_at) AS last_order_at
FROM silver.orders o
LEFT JOIN silver.partners p ON o.partner_id = p.partner_id
GROUP BY 1, 2, 3
