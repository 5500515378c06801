-- Customers by recency and frequency: champion, loyal, recent, at risk, lapsed.
SELECT CUSTOMER_ID, CURRENCY, RECENCY_DAYS, FREQUENCY, MONETARY,
       CASE WHEN RECENCY_DAYS <= 30 AND FREQUENCY >= 5 THEN 'champion'
            WHEN RECENCY_DAYS <= 90 AND FREQUENCY >= 2 THEN 'loyal'
            WHEN RECENCY_DAYS <= 90 THEN 'recent'
            WHEN RECENCY_DAYS <= 365 THEN 'at_risk'
            ELSE 'lapsed' END AS SEGMENT
FROM CUSTOMER_ACTIVITY
