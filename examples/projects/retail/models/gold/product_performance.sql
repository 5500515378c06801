/*
description: "Per product and currency: orders, units, revenue, cancelled and returned units."
materialized: table
key: [product_id, currency]
*/
-- Lines are first summed per order (one row per product, currency and order), so that
-- `orders` is a plain count: the same result as COUNT(DISTINCT order_id) next to the sums,
-- without a set of order ids held per product.
WITH per_order AS (
  SELECT product_id, currency, order_id,
         SUM(quantity) AS units,
         SUM(CAST(quantity AS DECIMAL(12,2)) * unit_price - discount) AS revenue,
         SUM(CASE WHEN status = 'cancelled' THEN quantity ELSE 0 END) AS cancelled_units,
         SUM(CASE WHEN status = 'returned' THEN quantity ELSE 0 END) AS returned_units
  FROM silver.order_lines
  GROUP BY 1, 2, 3
)
SELECT product_id, currency, COUNT(*) AS orders,
       CAST(SUM(units) AS BIGINT) AS units,
       CAST(SUM(revenue) AS DECIMAL(18,2)) AS revenue,
       CAST(SUM(cancelled_units) AS BIGINT) AS cancelled_units,
       CAST(SUM(returned_units) AS BIGINT) AS returned_units
FROM per_order
GROUP BY 1, 2
