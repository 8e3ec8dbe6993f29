-- Charges keep their repeated context once: the billing account and sub account (ids and
-- names), the billing period, the service (name and category), the provider, publisher and
-- invoice issuer, the billing currency and the invoice id of a line are one row of
-- `charge_contexts`, which each charge row names by `ctx_id`. A bill has a few hundred such
-- contexts for a million lines; storing them once takes ~190 bytes off every row (the SQLite
-- ledger of 1M FOCUS lines: 691 MB for a 608 MB CSV before, ~0.8x after) and a third off the
-- server's COPY work on PostgreSQL.
--
-- `charges` stays what every read sees: a view with the same columns, joining each row to its
-- context (a LEFT JOIN on the context's primary key, which both databases drop from a query
-- that reads no context column). Writers write `charge_rows` and `charge_contexts`. Contexts are
-- looked up by value; the same context stored twice (two writers at once) is harmless, a
-- context is never changed or deleted, and an unreferenced one costs a row.
-- Same version number as migrations/postgres/0014.

CREATE TABLE charge_contexts (
    id                                      INTEGER PRIMARY KEY,
    billing_account_id                      TEXT NOT NULL,
    billing_account_name                    TEXT,
    sub_account_id                          TEXT,
    sub_account_name                        TEXT,
    billing_period_start                    TEXT NOT NULL,
    billing_period_end                      TEXT NOT NULL,
    service_name                            TEXT,
    service_category                        TEXT,
    provider_name                           TEXT,
    publisher_name                          TEXT,
    invoice_issuer_name                     TEXT,
    billing_currency                        TEXT NOT NULL,
    invoice_id                              TEXT
);
-- How a writer finds a context by value (the rest of its columns are compared in the row).
CREATE INDEX charge_contexts_lookup ON charge_contexts (billing_period_start, billing_account_id, sub_account_id, service_name);

INSERT INTO charge_contexts (billing_account_id, billing_account_name, sub_account_id, sub_account_name, billing_period_start, billing_period_end, service_name, service_category, provider_name, publisher_name, invoice_issuer_name, billing_currency, invoice_id)
    SELECT DISTINCT billing_account_id, billing_account_name, sub_account_id, sub_account_name, billing_period_start, billing_period_end, service_name, service_category, provider_name, publisher_name, invoice_issuer_name, billing_currency, invoice_id FROM charges;

CREATE TABLE charge_rows (
    -- load_id * 2^32 + row_no, as before (migration 0004).
    id                                      INTEGER PRIMARY KEY,
    charge_period_start                     TEXT NOT NULL,
    charge_period_end                       TEXT NOT NULL,
    charge_category                         TEXT NOT NULL,
    charge_class                            TEXT,
    charge_description                      TEXT,
    region_id                               TEXT,
    resource_id                             TEXT,
    resource_name                           TEXT,
    sku_id                                  TEXT,
    billed_cost                             TEXT NOT NULL,
    effective_cost                          TEXT,
    list_cost                               TEXT,
    contracted_cost                         TEXT,
    pricing_quantity                        TEXT,
    pricing_unit                            TEXT,
    consumed_quantity                       TEXT,
    consumed_unit                           TEXT,
    commitment_discount_id                  TEXT,
    tags                                    TEXT,
    x_extra                                 TEXT,
    x_source_ref                            TEXT,
    load_id                                 INTEGER NOT NULL,
    ctx_id                                  INTEGER NOT NULL,
    row_no                                  INTEGER NOT NULL,
    availability_zone                       TEXT,
    billing_account_type                    TEXT,
    capacity_reservation_id                 TEXT,
    capacity_reservation_status             TEXT,
    charge_frequency                        TEXT,
    commitment_discount_category            TEXT,
    commitment_discount_name                TEXT,
    commitment_discount_status              TEXT,
    commitment_discount_type                TEXT,
    commitment_discount_unit                TEXT,
    pricing_category                        TEXT,
    pricing_currency                        TEXT,
    region_name                             TEXT,
    resource_type                           TEXT,
    service_subcategory                     TEXT,
    sku_meter                               TEXT,
    sku_price_details                       TEXT,
    sku_price_id                            TEXT,
    sub_account_type                        TEXT,
    commitment_discount_quantity            TEXT,
    contracted_unit_price                   TEXT,
    list_unit_price                         TEXT,
    pricing_currency_contracted_unit_price  TEXT,
    pricing_currency_effective_cost         TEXT,
    pricing_currency_list_unit_price        TEXT
);
INSERT INTO charge_rows (id, charge_period_start, charge_period_end, charge_category, charge_class, charge_description, region_id, resource_id, resource_name, sku_id, billed_cost, effective_cost, list_cost, contracted_cost, pricing_quantity, pricing_unit, consumed_quantity, consumed_unit, commitment_discount_id, tags, x_extra, x_source_ref, load_id, ctx_id, row_no, availability_zone, billing_account_type, capacity_reservation_id, capacity_reservation_status, charge_frequency, commitment_discount_category, commitment_discount_name, commitment_discount_status, commitment_discount_type, commitment_discount_unit, pricing_category, pricing_currency, region_name, resource_type, service_subcategory, sku_meter, sku_price_details, sku_price_id, sub_account_type, commitment_discount_quantity, contracted_unit_price, list_unit_price, pricing_currency_contracted_unit_price, pricing_currency_effective_cost, pricing_currency_list_unit_price)
    SELECT c.id, c.charge_period_start, c.charge_period_end, c.charge_category, c.charge_class, c.charge_description, c.region_id, c.resource_id, c.resource_name, c.sku_id, c.billed_cost, c.effective_cost, c.list_cost, c.contracted_cost, c.pricing_quantity, c.pricing_unit, c.consumed_quantity, c.consumed_unit, c.commitment_discount_id, c.tags, c.x_extra, c.x_source_ref, c.load_id, (SELECT x.id FROM charge_contexts x
        WHERE x.billing_account_id IS c.billing_account_id
          AND x.billing_account_name IS c.billing_account_name
          AND x.sub_account_id IS c.sub_account_id
          AND x.sub_account_name IS c.sub_account_name
          AND x.billing_period_start IS c.billing_period_start
          AND x.billing_period_end IS c.billing_period_end
          AND x.service_name IS c.service_name
          AND x.service_category IS c.service_category
          AND x.provider_name IS c.provider_name
          AND x.publisher_name IS c.publisher_name
          AND x.invoice_issuer_name IS c.invoice_issuer_name
          AND x.billing_currency IS c.billing_currency
          AND x.invoice_id IS c.invoice_id
        ORDER BY x.id LIMIT 1), c.row_no, c.availability_zone, c.billing_account_type, c.capacity_reservation_id, c.capacity_reservation_status, c.charge_frequency, c.commitment_discount_category, c.commitment_discount_name, c.commitment_discount_status, c.commitment_discount_type, c.commitment_discount_unit, c.pricing_category, c.pricing_currency, c.region_name, c.resource_type, c.service_subcategory, c.sku_meter, c.sku_price_details, c.sku_price_id, c.sub_account_type, c.commitment_discount_quantity, c.contracted_unit_price, c.list_unit_price, c.pricing_currency_contracted_unit_price, c.pricing_currency_effective_cost, c.pricing_currency_list_unit_price
    FROM charges c;
DROP TABLE charges;
CREATE VIEW charges AS
    SELECT r.id, x.billing_account_id, x.billing_account_name, x.sub_account_id, x.sub_account_name, x.billing_period_start, x.billing_period_end, r.charge_period_start, r.charge_period_end, r.charge_category, r.charge_class, r.charge_description, x.service_name, x.service_category, x.provider_name, x.publisher_name, x.invoice_issuer_name, r.region_id, r.resource_id, r.resource_name, r.sku_id, r.billed_cost, r.effective_cost, r.list_cost, r.contracted_cost, x.billing_currency, r.pricing_quantity, r.pricing_unit, r.consumed_quantity, r.consumed_unit, r.commitment_discount_id, x.invoice_id, r.tags, r.x_extra, r.x_source_ref, r.load_id, r.row_no, r.availability_zone, r.billing_account_type, r.capacity_reservation_id, r.capacity_reservation_status, r.charge_frequency, r.commitment_discount_category, r.commitment_discount_name, r.commitment_discount_status, r.commitment_discount_type, r.commitment_discount_unit, r.pricing_category, r.pricing_currency, r.region_name, r.resource_type, r.service_subcategory, r.sku_meter, r.sku_price_details, r.sku_price_id, r.sub_account_type, r.commitment_discount_quantity, r.contracted_unit_price, r.list_unit_price, r.pricing_currency_contracted_unit_price, r.pricing_currency_effective_cost, r.pricing_currency_list_unit_price, r.ctx_id
    FROM charge_rows r LEFT JOIN charge_contexts x ON x.id = r.ctx_id;
