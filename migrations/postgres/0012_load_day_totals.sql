-- Each load's lines per billing period × provider × billing account × sub account × UTC charge
-- day × currency (a JSON array of [provider, billing account, sub account, day, currency,
-- lines, BilledCost, EffectiveCost, earliest ChargePeriodStart]; amounts as exact decimal
-- text), written at commit with the load's other per-period figures. The reconciler's period
-- totals and the accounts' first appearance read these few rows per load instead of scanning
-- every charge. Filled here for the current loads already in the ledger (timestamps as UTC
-- text, with microseconds only when there are any; a load without them would be read from its
-- charges, with the same result). Same version number as the other backend's 0012.
ALTER TABLE load_periods ADD COLUMN day_totals TEXT;
UPDATE load_periods lp SET day_totals = (
    SELECT COALESCE(json_agg(json_build_array(g.provider_name, g.billing_account_id, g.sub_account_id, g.day,
                                              g.billing_currency, g.n, g.billed, g.effective,
                                              CASE WHEN date_trunc('second', g.first_start) = g.first_start
                                                   THEN to_char(g.first_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                                                   ELSE to_char(g.first_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') END)),
                    '[]')::text
    FROM (
        SELECT c.provider_name, c.billing_account_id, c.sub_account_id,
               to_char(c.charge_period_start AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day,
               c.billing_currency, COUNT(*) AS n, SUM(c.billed_cost)::text AS billed,
               SUM(c.effective_cost)::text AS effective, MIN(c.charge_period_start) AS first_start
        FROM charges c
        WHERE c.load_id = lp.load_id
          AND to_char(c.billing_period_start AT TIME ZONE 'UTC', 'YYYY-MM') = lp.period
        GROUP BY 1, 2, 3, 4, 5
    ) AS g
)
FROM loads l
WHERE l.id = lp.load_id AND l.state = 'current';
