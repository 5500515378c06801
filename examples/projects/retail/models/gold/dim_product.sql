/*
description: "The product dimension."
materialized: table
key: [product_id]
*/
SELECT product_id, partner_id, name, category, price, currency FROM silver.products
