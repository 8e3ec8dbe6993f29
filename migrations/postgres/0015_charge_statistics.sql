-- The planner's statistics of `charge_rows` cover the columns reads filter, join, group or
-- sort on (times, loads, contexts, dimensions); not the amounts, quantities and unit prices
-- (only ever summed), the free text and lineage (description, tags JSON, x_extra, the source
-- reference) or the row number. Computing those per ANALYZE was 40% of it (0.85 -> 0.5 s for
-- 1M lines), and every large load runs one (see `refresh_stats`). A target of 0 leaves a column
-- out of ANALYZE; the planner's defaults apply to it.
-- Same version number as migrations/sqlite/0015 (nothing to do there: SQLite's planner reads
-- no statistics costledger keeps).
ALTER TABLE charge_rows
    ALTER COLUMN charge_description SET STATISTICS 0,
    ALTER COLUMN billed_cost SET STATISTICS 0,
    ALTER COLUMN effective_cost SET STATISTICS 0,
    ALTER COLUMN list_cost SET STATISTICS 0,
    ALTER COLUMN contracted_cost SET STATISTICS 0,
    ALTER COLUMN pricing_quantity SET STATISTICS 0,
    ALTER COLUMN consumed_quantity SET STATISTICS 0,
    ALTER COLUMN tags SET STATISTICS 0,
    ALTER COLUMN x_extra SET STATISTICS 0,
    ALTER COLUMN x_source_ref SET STATISTICS 0,
    ALTER COLUMN row_no SET STATISTICS 0,
    ALTER COLUMN sku_price_details SET STATISTICS 0,
    ALTER COLUMN commitment_discount_quantity SET STATISTICS 0,
    ALTER COLUMN contracted_unit_price SET STATISTICS 0,
    ALTER COLUMN list_unit_price SET STATISTICS 0,
    ALTER COLUMN pricing_currency_contracted_unit_price SET STATISTICS 0,
    ALTER COLUMN pricing_currency_effective_cost SET STATISTICS 0,
    ALTER COLUMN pricing_currency_list_unit_price SET STATISTICS 0;
