-- Charges keyed by their rowid, id = load_id * 2^32 + row_no, instead of a separate
-- (load_id, row_no) primary-key index: the rows of one load are one contiguous rowid range
-- (queries join on it), and bulk staging no longer maintains a second B-tree per row (about
-- 10% of a million-line import). Same version number as migrations/postgres/0004.

CREATE TABLE charges_v4 (
    -- load_id * 2^32 + row_no: the rowid, so the rows of one load are one contiguous key range.
    id                      INTEGER PRIMARY KEY,
    -- No FOREIGN KEY and no secondary index: the loader is the only writer and always
    -- stages under an existing load.
    load_id                 INTEGER NOT NULL,
    billing_account_id      TEXT NOT NULL,
    billing_account_name    TEXT,
    sub_account_id          TEXT,
    sub_account_name        TEXT,
    billing_period_start    TEXT NOT NULL,
    billing_period_end      TEXT NOT NULL,
    charge_period_start     TEXT NOT NULL,
    charge_period_end       TEXT NOT NULL,
    charge_category         TEXT NOT NULL,
    charge_class            TEXT,
    charge_description      TEXT,
    service_name            TEXT,
    service_category        TEXT,
    provider_name           TEXT,
    publisher_name          TEXT,
    invoice_issuer_name     TEXT,
    region_id               TEXT,
    resource_id             TEXT,
    resource_name           TEXT,
    sku_id                  TEXT,
    billed_cost             TEXT NOT NULL,
    effective_cost          TEXT,
    list_cost               TEXT,
    contracted_cost         TEXT,
    billing_currency        TEXT NOT NULL,
    pricing_quantity        TEXT,
    pricing_unit            TEXT,
    consumed_quantity       TEXT,
    consumed_unit           TEXT,
    commitment_discount_id  TEXT,
    invoice_id              TEXT,
    tags                    TEXT,
    x_extra                 TEXT,
    x_source_ref            TEXT,
    -- The line's position in its load (0-based), numbered by the loader: the low 32 bits
    -- of id, and the last tie-break of the export order.
    row_no                  INTEGER NOT NULL
);

INSERT INTO charges_v4 (id, load_id, billing_account_id, billing_account_name, sub_account_id, sub_account_name, billing_period_start, billing_period_end, charge_period_start, charge_period_end, charge_category, charge_class, charge_description, service_name, service_category, provider_name, publisher_name, invoice_issuer_name, region_id, resource_id, resource_name, sku_id, billed_cost, effective_cost, list_cost, contracted_cost, billing_currency, pricing_quantity, pricing_unit, consumed_quantity, consumed_unit, commitment_discount_id, invoice_id, tags, x_extra, x_source_ref, row_no)
    SELECT load_id * 4294967296 + row_no, load_id, billing_account_id, billing_account_name, sub_account_id, sub_account_name, billing_period_start, billing_period_end, charge_period_start, charge_period_end, charge_category, charge_class, charge_description, service_name, service_category, provider_name, publisher_name, invoice_issuer_name, region_id, resource_id, resource_name, sku_id, billed_cost, effective_cost, list_cost, contracted_cost, billing_currency, pricing_quantity, pricing_unit, consumed_quantity, consumed_unit, commitment_discount_id, invoice_id, tags, x_extra, x_source_ref, row_no FROM charges;
DROP TABLE charges;
ALTER TABLE charges_v4 RENAME TO charges;
