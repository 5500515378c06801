/*
description: "Orders per day and status."
materialized: incremental
partition_by: order_date
partition_from:
  silver.orders: CAST(created_at AS DATE)
key: [order_date, status]
*/
SELECT CAST(created_at AS DATE) AS order_date, status, COUNT(*) AS orders
FROM silver.orders
GROUP BY 1, 2
