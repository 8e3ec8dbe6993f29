-- Charge kinds: the low-cardinality texts of a charge line that do not depend on its account
-- — category and class, charge frequency, region (id, name, availability zone), the pricing and
-- consumed units, pricing category and currency, resource type, service subcategory, the account
-- types, the commitment discount's category, type, status and unit, the capacity reservation's
-- status — are one row of `charge_kinds`, which each charge row names by `kind_id`, as it names
-- its context by `ctx_id` (migration 0014). A bill has tens to a few thousand kinds for millions
-- of lines; storing them once takes ~110 bytes off every charge row (~470 bytes before), which
-- is work the server no longer does per row when a load is copied in.
--
-- `charges` stays what every read sees: the same columns in the same order (and `kind_id` last,
-- for a read that fills the kind columns itself), joining each row to its kind (a LEFT JOIN on the kind's primary key, which the planner drops from a query that reads
-- no kind column). Kinds, like contexts, are found by value, never changed and never deleted;
-- the same kind stored twice (two writers at once) reads the same.
--
-- Existing rows get their kind by rank: the kinds are the distinct kind values numbered by
-- dense_rank in one order, and each row's kind id is its rank in the same order (equal values,
-- equal rank, NULLs equal), so no 19-column join is needed.
-- Same version number as migrations/postgres/0016.

CREATE TABLE charge_kinds (
    id                                      INTEGER PRIMARY KEY,
    charge_category                         TEXT NOT NULL,
    charge_class                            TEXT,
    charge_frequency                        TEXT,
    region_id                               TEXT,
    region_name                             TEXT,
    availability_zone                       TEXT,
    pricing_unit                            TEXT,
    consumed_unit                           TEXT,
    pricing_category                        TEXT,
    pricing_currency                        TEXT,
    resource_type                           TEXT,
    service_subcategory                     TEXT,
    billing_account_type                    TEXT,
    sub_account_type                        TEXT,
    commitment_discount_category            TEXT,
    commitment_discount_type                TEXT,
    commitment_discount_status              TEXT,
    commitment_discount_unit                TEXT,
    capacity_reservation_status             TEXT
);

INSERT INTO charge_kinds (id, charge_category, charge_class, charge_frequency, region_id, region_name, availability_zone, pricing_unit, consumed_unit, pricing_category, pricing_currency, resource_type, service_subcategory, billing_account_type, sub_account_type, commitment_discount_category, commitment_discount_type, commitment_discount_status, commitment_discount_unit, capacity_reservation_status)
    SELECT dense_rank() OVER (ORDER BY charge_category, charge_class, charge_frequency, region_id, region_name, availability_zone, pricing_unit, consumed_unit, pricing_category, pricing_currency, resource_type, service_subcategory, billing_account_type, sub_account_type, commitment_discount_category, commitment_discount_type, commitment_discount_status, commitment_discount_unit, capacity_reservation_status), charge_category, charge_class, charge_frequency, region_id, region_name, availability_zone, pricing_unit, consumed_unit, pricing_category, pricing_currency, resource_type, service_subcategory, billing_account_type, sub_account_type, commitment_discount_category, commitment_discount_type, commitment_discount_status, commitment_discount_unit, capacity_reservation_status
    FROM (SELECT DISTINCT charge_category, charge_class, charge_frequency, region_id, region_name, availability_zone, pricing_unit, consumed_unit, pricing_category, pricing_currency, resource_type, service_subcategory, billing_account_type, sub_account_type, commitment_discount_category, commitment_discount_type, commitment_discount_status, commitment_discount_unit, capacity_reservation_status FROM charge_rows) d;

CREATE TABLE charge_rows_v16 (
    -- load_id * 2^32 + row_no, as before (migration 0004).
    id                                      INTEGER PRIMARY KEY,
    charge_period_start                     TEXT NOT NULL,
    charge_period_end                       TEXT NOT NULL,
    charge_description                      TEXT,
    resource_id                             TEXT,
    resource_name                           TEXT,
    sku_id                                  TEXT,
    billed_cost                             TEXT NOT NULL,
    effective_cost                          TEXT,
    list_cost                               TEXT,
    contracted_cost                         TEXT,
    pricing_quantity                        TEXT,
    consumed_quantity                       TEXT,
    commitment_discount_id                  TEXT,
    tags                                    TEXT,
    x_extra                                 TEXT,
    x_source_ref                            TEXT,
    load_id                                 INTEGER NOT NULL,
    ctx_id                                  INTEGER NOT NULL,
    kind_id                                 INTEGER NOT NULL,
    row_no                                  INTEGER NOT NULL,
    capacity_reservation_id                 TEXT,
    commitment_discount_name                TEXT,
    sku_meter                               TEXT,
    sku_price_details                       TEXT,
    sku_price_id                            TEXT,
    commitment_discount_quantity            TEXT,
    contracted_unit_price                   TEXT,
    list_unit_price                         TEXT,
    pricing_currency_contracted_unit_price  TEXT,
    pricing_currency_effective_cost         TEXT,
    pricing_currency_list_unit_price        TEXT
);
INSERT INTO charge_rows_v16 (id, charge_period_start, charge_period_end, charge_description, resource_id, resource_name, sku_id, billed_cost, effective_cost, list_cost, contracted_cost, pricing_quantity, consumed_quantity, commitment_discount_id, tags, x_extra, x_source_ref, load_id, ctx_id, row_no, capacity_reservation_id, commitment_discount_name, sku_meter, sku_price_details, sku_price_id, commitment_discount_quantity, contracted_unit_price, list_unit_price, pricing_currency_contracted_unit_price, pricing_currency_effective_cost, pricing_currency_list_unit_price, kind_id)
    SELECT id, charge_period_start, charge_period_end, charge_description, resource_id, resource_name, sku_id, billed_cost, effective_cost, list_cost, contracted_cost, pricing_quantity, consumed_quantity, commitment_discount_id, tags, x_extra, x_source_ref, load_id, ctx_id, row_no, capacity_reservation_id, commitment_discount_name, sku_meter, sku_price_details, sku_price_id, commitment_discount_quantity, contracted_unit_price, list_unit_price, pricing_currency_contracted_unit_price, pricing_currency_effective_cost, pricing_currency_list_unit_price, dense_rank() OVER (ORDER BY charge_category, charge_class, charge_frequency, region_id, region_name, availability_zone, pricing_unit, consumed_unit, pricing_category, pricing_currency, resource_type, service_subcategory, billing_account_type, sub_account_type, commitment_discount_category, commitment_discount_type, commitment_discount_status, commitment_discount_unit, capacity_reservation_status) FROM charge_rows;
DROP VIEW charges;
DROP TABLE charge_rows;
ALTER TABLE charge_rows_v16 RENAME TO charge_rows;
CREATE VIEW charges AS
    SELECT r.id, x.billing_account_id, x.billing_account_name, x.sub_account_id, x.sub_account_name, x.billing_period_start, x.billing_period_end, r.charge_period_start, r.charge_period_end, k.charge_category, k.charge_class, r.charge_description, x.service_name, x.service_category, x.provider_name, x.publisher_name, x.invoice_issuer_name, k.region_id, r.resource_id, r.resource_name, r.sku_id, r.billed_cost, r.effective_cost, r.list_cost, r.contracted_cost, x.billing_currency, r.pricing_quantity, k.pricing_unit, r.consumed_quantity, k.consumed_unit, r.commitment_discount_id, x.invoice_id, r.tags, r.x_extra, r.x_source_ref, r.load_id, r.row_no, k.availability_zone, k.billing_account_type, r.capacity_reservation_id, k.capacity_reservation_status, k.charge_frequency, k.commitment_discount_category, r.commitment_discount_name, k.commitment_discount_status, k.commitment_discount_type, k.commitment_discount_unit, k.pricing_category, k.pricing_currency, k.region_name, k.resource_type, k.service_subcategory, r.sku_meter, r.sku_price_details, r.sku_price_id, k.sub_account_type, r.commitment_discount_quantity, r.contracted_unit_price, r.list_unit_price, r.pricing_currency_contracted_unit_price, r.pricing_currency_effective_cost, r.pricing_currency_list_unit_price, r.ctx_id, r.kind_id
    FROM charge_rows r LEFT JOIN charge_contexts x ON x.id = r.ctx_id LEFT JOIN charge_kinds k ON k.id = r.kind_id;
