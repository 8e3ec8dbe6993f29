-- A second kind of daily rollup, the pricing rollup (`kind` 1; the existing rows are the daily
-- rollup, `kind` 0): a load's lines summed per local day, billing period and currency over the
-- provider, service category, service, SKU, pricing unit, charge category and class, pricing
-- category and the commitment columns (id, type, category, status) — without accounts, regions
-- or tags. It answers explanations (service × SKU × unit), commitment utilisation and coverage,
-- which the daily rollup cannot (it leaves out the SKU and the commitment columns). Columns a
-- kind does not hold are NULL ('' for the NOT NULL billing account) and never read.
-- `loads.pricing_rollup_spec` names what a load's pricing rollup was built with; loads of an
-- older ledger have none until `costledger rollup` builds it (until then those questions read the
-- charges, as before). Same version number as the other backend's 0013.
ALTER TABLE rollups ADD COLUMN kind SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE rollups ADD COLUMN sku_id TEXT;
ALTER TABLE rollups ADD COLUMN pricing_category TEXT;
ALTER TABLE rollups ADD COLUMN commitment_discount_id TEXT;
ALTER TABLE rollups ADD COLUMN commitment_discount_type TEXT;
ALTER TABLE rollups ADD COLUMN commitment_discount_category TEXT;
ALTER TABLE rollups ADD COLUMN commitment_discount_status TEXT;
ALTER TABLE loads ADD COLUMN pricing_rollup_spec TEXT;
DROP INDEX rollups_load_day;
CREATE INDEX rollups_load_kind_day ON rollups (load_id, kind, day);
