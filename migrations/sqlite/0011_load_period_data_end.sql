-- Each load's latest ChargePeriodEnd per billing period, written at commit, so "data as of"
-- (budgets, the weekly report, reconcile) reads a few rows per load instead of every charge.
-- Filled here for the loads already in the ledger (text in the charges' own format). Same
-- version number as the other backend's 0011.
ALTER TABLE load_periods ADD COLUMN data_end TEXT;
UPDATE load_periods SET data_end = (
    SELECT MAX(c.charge_period_end) FROM charges c
    WHERE c.id BETWEEN load_periods.load_id * 4294967296 AND load_periods.load_id * 4294967296 + 4294967295
      AND substr(c.billing_period_start, 1, 7) = load_periods.period
);
