/*
description: "The customer dimension (no direct identifiers)."
materialized: table
key: [customer_id]
*/
SELECT customer_id, address.city AS city, address.country AS country,
       marketing_opt_in, created_at
FROM silver.customers
