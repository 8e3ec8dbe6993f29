-- costledger ledger, SQLite dialect. Same version numbers as migrations/postgres.
-- Money is canonical decimal TEXT (no exponent, no trailing zeros) and is summed only with the
-- exact decimal_sum() aggregate that costledger registers on every connection; never SUM().
-- Timestamps are TEXT 'YYYY-MM-DDTHH:MM:SSZ' (UTC), which sorts in time order.

CREATE TABLE sources (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE TABLE loads (
    id                  INTEGER PRIMARY KEY,
    source_id           INTEGER NOT NULL REFERENCES sources(id),
    scope               TEXT NOT NULL,
    billing_period      TEXT,
    delivery_key        TEXT NOT NULL,
    description         TEXT,
    state               TEXT NOT NULL CHECK (state IN ('staging', 'current', 'superseded', 'failed')),
    owner               TEXT NOT NULL,
    started_at          TEXT NOT NULL,
    heartbeat_at        TEXT NOT NULL,
    finished_at         TEXT,
    row_count           INTEGER NOT NULL DEFAULT 0,
    quarantined_count   INTEGER NOT NULL DEFAULT 0,
    rounded_count       INTEGER NOT NULL DEFAULT 0,
    totals              TEXT,
    quarantined_totals  TEXT,
    checksum            TEXT,
    superseded_by       INTEGER REFERENCES loads(id),
    superseded_at       TEXT,
    error               TEXT
);
-- At most one current load per (source, scope): readers see the old bill or the new one.
CREATE UNIQUE INDEX loads_one_current ON loads (source_id, scope) WHERE state = 'current';
CREATE INDEX loads_state ON loads (state);

CREATE TABLE charges (
    -- No FOREIGN KEY: a per-row check (a trigger per row on PostgreSQL) would halve bulk
    -- staging speed; the loader is the only writer and always stages under an existing load.
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
    -- The line's position in its load (0-based), numbered by the loader: with load_id it
    -- identifies a charge and is the last tie-break of the export order. (PostgreSQL: an
    -- identity column here would make COPY insert row by row, ten times slower.)
    row_no                  INTEGER NOT NULL,
    PRIMARY KEY (load_id, row_no)
);

CREATE TABLE quarantine (
    id          INTEGER PRIMARY KEY,
    load_id     INTEGER NOT NULL REFERENCES loads(id),
    location    TEXT NOT NULL,
    reason      TEXT NOT NULL,
    raw         TEXT NOT NULL,
    raw_amount  TEXT,
    currency    TEXT
);
CREATE INDEX quarantine_load ON quarantine (load_id);

-- What each load contributed to each billing period (small: a few rows per load). Period
-- totals are recomputed from these at commit, inside the one short transaction.
CREATE TABLE load_periods (
    load_id      INTEGER NOT NULL REFERENCES loads(id),
    period       TEXT NOT NULL,
    row_count    INTEGER NOT NULL,
    totals       TEXT NOT NULL,
    invoice_ids  TEXT,
    all_invoiced INTEGER NOT NULL,
    PRIMARY KEY (load_id, period)
);

CREATE TABLE billing_periods (
    source_id       INTEGER NOT NULL REFERENCES sources(id),
    period          TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('open', 'final', 'corrected')),
    invoice_ids     TEXT,
    current_load_id INTEGER REFERENCES loads(id),
    totals          TEXT,
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (source_id, period)
);

CREATE TABLE runs (
    id              INTEGER PRIMARY KEY,
    job             TEXT NOT NULL,
    source          TEXT,
    started_at      TEXT NOT NULL,
    finished_at     TEXT,
    status          TEXT NOT NULL CHECK (status IN ('running', 'ok', 'failed', 'skipped', 'cancelled')),
    attempts        INTEGER NOT NULL DEFAULT 1,
    error           TEXT,
    rows            INTEGER NOT NULL DEFAULT 0,
    loads_created   INTEGER NOT NULL DEFAULT 0,
    loads_skipped   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX runs_started ON runs (started_at);
