-- Daily rollups no longer hold the SKU: on real bills it has nearly the cardinality of a
-- resource (thousands of SKUs or meters per account), so a rollup keyed by it was barely
-- smaller than the charges and was given up. SKU questions are answered from the charges.
-- A rollup built with the SKU ("v1") stays valid without it (its rows are finer, and rollup
-- rows are summed): its spec is renamed, nothing is rebuilt. Same version number as the other
-- backend's 0010.
ALTER TABLE rollups DROP COLUMN sku_id;
UPDATE loads SET rollup_spec = 'v2' || substr(rollup_spec, 3) WHERE rollup_spec LIKE 'v1 %';
