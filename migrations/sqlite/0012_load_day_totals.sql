-- Each load's lines per billing period × provider × billing account × sub account × UTC charge
-- day × currency (a JSON array; amounts as exact canonical decimal text), written at commit
-- with the load's other per-period figures. The reconciler's period totals and the accounts'
-- first appearance read these few rows per load instead of scanning every charge. Loads
-- committed before this migration keep NULL here and are read from their charges, with the
-- same result, until they are re-imported. Same version number as the other backend's 0012.
ALTER TABLE load_periods ADD COLUMN day_totals TEXT;
