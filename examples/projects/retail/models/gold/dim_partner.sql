/*
description: "The partner dimension."
materialized: table
key: [partner_id]
*/
SELECT partner_id, name, country, city, currency, onboarded_at FROM silver.partners
