/*
description: "One row per partner (merchant); contact details and IBAN masked by policy."
materialized: merge
key: [partner_id]
mask: partners
conform:
  types:
    - { name: partner_id, type: "utf8" }
    - { name: name, type: "utf8" }
    - { name: country, type: "utf8" }
    - { name: city, type: "utf8" }
    - { name: currency, type: "utf8" }
    - { name: contact_email, type: "utf8" }
    - { name: contact_phone, type: "utf8" }
    - { name: iban, type: "utf8" }
    - { name: onboarded_at, type: "timestamp" }
  rules:
    - { column: partner_id, check: { type: required } }
    - { column: currency, check: { type: one_of, values: [AED, AUD, BGN, BRL, CAD, CHF, CNY, CZK, DKK, EUR, GBP, HKD, HUF, IDR, ILS, INR, ISK, JPY, KRW, MXN, MYR, NOK, NZD, PHP, PLN, RON, SAR, SEK, SGD, THB, TRY, TWD, USD, ZAR] } }
*/
SELECT * FROM bronze.partners
