-- costledger reconciler tables, SQLite dialect. Same version numbers as migrations/postgres.
-- Amounts are canonical decimal TEXT, summed exactly in Rust (ExactSum), never with SUM().

-- The allocation of the current charges, aggregated: one row per billing period, ISO week,
-- provider, accounts, service, category, currency and outcome. resource_id is kept only for
-- unallocated rows (the report lists the top unallocated resources). Replaced per period.
CREATE TABLE allocations (
    period              TEXT NOT NULL,
    week                TEXT NOT NULL,
    provider_name       TEXT,
    billing_account_id  TEXT NOT NULL,
    sub_account_id      TEXT,
    service_name        TEXT,
    charge_category     TEXT NOT NULL,
    currency            TEXT NOT NULL,
    owner               TEXT,
    basis               TEXT NOT NULL,
    reason              TEXT,
    resource_id         TEXT,
    coverage            TEXT,
    rows                INTEGER NOT NULL,
    amount              TEXT NOT NULL
);
CREATE INDEX allocations_period ON allocations (period);
CREATE INDEX allocations_week ON allocations (week);

-- Which inputs each period's allocation was computed from (rules, time zone, current loads).
CREATE TABLE reconcile_state (
    period       TEXT PRIMARY KEY,
    fingerprint  TEXT NOT NULL,
    data_start   TEXT,
    data_end     TEXT,
    updated_at   TEXT NOT NULL
);

CREATE TABLE findings (
    id                  INTEGER PRIMARY KEY,
    check_name          TEXT NOT NULL,
    period              TEXT NOT NULL,
    billing_account_id  TEXT,
    currency            TEXT,
    amount              TEXT,
    subject             TEXT,
    message             TEXT NOT NULL,
    evidence            TEXT NOT NULL
);
CREATE INDEX findings_period ON findings (period);

-- Invoice totals supplied by finance (costledger reconcile --invoices FILE).
CREATE TABLE invoices (
    invoice_id          TEXT NOT NULL,
    billing_account_id  TEXT NOT NULL,
    period              TEXT NOT NULL,
    currency            TEXT NOT NULL,
    amount              TEXT NOT NULL,
    provenance          TEXT NOT NULL,
    PRIMARY KEY (invoice_id, billing_account_id, period, currency)
);

-- Exchange rates for converted report totals (costledger fx import FILE).
CREATE TABLE fx_rates (
    month          TEXT NOT NULL,
    from_currency  TEXT NOT NULL,
    to_currency    TEXT NOT NULL,
    rate           TEXT NOT NULL,
    provenance     TEXT NOT NULL,
    PRIMARY KEY (month, from_currency, to_currency)
);

-- What a weekly report said about its week, so a later change to that week is a finding.
CREATE TABLE reported_weeks (
    week     TEXT PRIMARY KEY,
    totals   TEXT NOT NULL
);
