-- Each load's latest ChargePeriodEnd per billing period, written at commit, so "data as of"
-- (budgets, the weekly report, reconcile) reads a few rows per load instead of every charge.
-- Filled here for the loads already in the ledger, as UTC text (`YYYY-MM-DDTHH:MM:SSZ`, with
-- microseconds only when there are any). Same version number as the other backend's 0011.
ALTER TABLE load_periods ADD COLUMN data_end TEXT;
UPDATE load_periods lp SET data_end = (
    SELECT CASE WHEN date_trunc('second', m) = m
                THEN to_char(m AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                ELSE to_char(m AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') END
    FROM (SELECT MAX(c.charge_period_end) AS m FROM charges c
          WHERE c.load_id = lp.load_id
            AND to_char(c.billing_period_start AT TIME ZONE 'UTC', 'YYYY-MM') = lp.period) AS t
);
