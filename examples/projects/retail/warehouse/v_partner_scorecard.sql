-- Per partner and currency: orders, customers, revenue, average order value, first and last order.
SELECT a.PARTNER_ID, a.PARTNER_NAME, p.COUNTRY, p.CITY, a.CURRENCY, a.ORDERS, a.CUSTOMERS,
       a.REVENUE, a.REVENUE / NULLIF(a.ORDERS, 0) AS AVERAGE_ORDER_VALUE, a.FIRST_ORDER_AT, a.LAST_ORDER_AT
FROM PARTNER_ACTIVITY a
LEFT JOIN DIM_PARTNER p ON a.PARTNER_ID = p.PARTNER_ID
