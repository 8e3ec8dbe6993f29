-- Each load's lines per billing period × provider × billing account × sub account × UTC charge
-- day × currency (a JSON array of [provider, billing account, sub account, day, currency,
-- lines, BilledCost, EffectiveCost, earliest ChargePeriodStart]; amounts as exact decimal
-- text), written at commit with the load's other per-period figures. The reconciler's period
-- totals and the accounts' first appearance read these few rows per load instead of scanning
-- every charge. Filled here for the current loads already in the ledger, summed exactly by
-- `decimal_sum` (a load without them would be read from its charges, with the same result).
-- Same version number as the other backend's 0012.
ALTER TABLE load_periods ADD COLUMN day_totals TEXT;
UPDATE load_periods SET day_totals = (
    SELECT json_group_array(json_array(g.provider_name, g.billing_account_id, g.sub_account_id, g.day,
                                       g.billing_currency, g.n, g.billed, g.effective, g.first_start))
    FROM (
        SELECT c.provider_name, c.billing_account_id, c.sub_account_id, substr(c.charge_period_start, 1, 10) AS day,
               c.billing_currency, COUNT(*) AS n, decimal_sum(c.billed_cost) AS billed,
               decimal_sum(c.effective_cost) AS effective, MIN(c.charge_period_start) AS first_start
        FROM charges c
        WHERE c.id BETWEEN load_periods.load_id * 4294967296 AND load_periods.load_id * 4294967296 + 4294967295
          AND substr(c.billing_period_start, 1, 7) = load_periods.period
        GROUP BY 1, 2, 3, 4, 5
    ) AS g
)
WHERE load_id IN (SELECT id FROM loads WHERE state = 'current');
