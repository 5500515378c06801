/*
description: "Per product and currency: orders, units, revenue, cancelled and returned units."
materialized: table
key: [product_id, currency]
*/
SELECT product_id, currency, COUNT(DISTINCT order_id) AS orders,
       CAST(SUM(quantity) AS BIGINT) AS units,
       CAST(SUM(CAST(quantity AS DECIMAL(12,2)) * unit_price - discount) AS DECIMAL(18,2)) AS revenue,
       CAST(SUM(CASE WHEN status = 'cancelled' THEN quantity ELSE 0 END) AS BIGINT) AS cancelled_units,
       CAST(SUM(CASE WHEN status = 'returned' THEN quantity ELSE 0 END) AS BIGINT) AS returned_units
FROM silver.order_lines
GROUP BY 1, 2
