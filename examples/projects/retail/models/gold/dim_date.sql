/*
description: "The date dimension: every day with an order."
materialized: table
key: [date]
*/
SELECT DISTINCT CAST(created_at AS DATE) AS date,
       CAST(date_part('year', created_at) AS INT) AS year,
       CAST(date_part('month', created_at) AS INT) AS month,
       CAST(date_part('day', created_at) AS INT) AS day,
       CAST(date_part('dow', created_at) AS INT) AS day_of_week
FROM silver.orders
