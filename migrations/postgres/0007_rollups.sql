-- Daily rollups: each current load's lines summed per local day over the query dimensions
-- (no resource id; tags only for the configured rollup keys), written in the load's commit
-- transaction and deleted when the load is superseded. `loads.rollup_spec` names what a
-- load's rollup was built with (time zone, tag keys, aliases); queries read the rollups only
-- when every current load's spec is today's config, and scan the charges otherwise. Amounts are
-- exact canonical decimal text on both backends (summed by costledger, not by SQL). Loads of an
-- older ledger have no spec until `costledger rollup` builds theirs. Same version number as the
-- other backend's 0007.
ALTER TABLE loads ADD COLUMN rollup_spec TEXT;
CREATE TABLE rollups (
    load_id             BIGINT NOT NULL,
    day                 TEXT NOT NULL,
    billing_period      TEXT NOT NULL,
    provider_name       TEXT,
    billing_account_id  TEXT NOT NULL,
    sub_account_id      TEXT,
    service_name        TEXT,
    service_category    TEXT,
    region_id           TEXT,
    charge_category     TEXT NOT NULL,
    charge_class        TEXT,
    sku_id              TEXT,
    pricing_unit        TEXT,
    billing_currency    TEXT NOT NULL,
    tags                TEXT,
    lines               BIGINT NOT NULL,
    billed_cost         TEXT NOT NULL,
    effective_cost      TEXT,
    list_cost           TEXT,
    contracted_cost     TEXT,
    pricing_quantity    TEXT,
    consumed_quantity   TEXT
);
CREATE INDEX rollups_load_day ON rollups (load_id, day);
