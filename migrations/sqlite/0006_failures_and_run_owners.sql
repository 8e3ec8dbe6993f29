-- A failed load that fails again the same way (same file, same error) is counted on its first
-- row instead of adding a row per retry: `attempts` and `finished_at` (last try) say how often
-- and when. A run records the process that runs it (`host:pid`), so a run left 'running' by
-- a dead process is closed as 'abandoned' at the next start. Same version number as
-- migrations/postgres/0006.
ALTER TABLE loads ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1;
ALTER TABLE runs ADD COLUMN owner TEXT;

-- 'abandoned' joins the run statuses. SQLite cannot alter a CHECK constraint: the table is
-- rebuilt with the same columns, rows and indexes.
CREATE TABLE runs_v6 (
    id              INTEGER PRIMARY KEY,
    job             TEXT NOT NULL,
    source          TEXT,
    started_at      TEXT NOT NULL,
    finished_at     TEXT,
    status          TEXT NOT NULL CHECK (status IN ('running', 'ok', 'failed', 'skipped', 'cancelled', 'abandoned')),
    attempts        INTEGER NOT NULL DEFAULT 1,
    error           TEXT,
    rows            INTEGER NOT NULL DEFAULT 0,
    loads_created   INTEGER NOT NULL DEFAULT 0,
    loads_skipped   INTEGER NOT NULL DEFAULT 0,
    tick            TEXT,
    owner           TEXT
);
INSERT INTO runs_v6 (id, job, source, started_at, finished_at, status, attempts, error, rows, loads_created, loads_skipped, tick, owner)
    SELECT id, job, source, started_at, finished_at, status, attempts, error, rows, loads_created, loads_skipped, tick, owner FROM runs;
DROP TABLE runs;
ALTER TABLE runs_v6 RENAME TO runs;
CREATE INDEX runs_started ON runs (started_at);
CREATE UNIQUE INDEX runs_one_per_tick ON runs (job, COALESCE(source, ''), tick) WHERE tick IS NOT NULL;
