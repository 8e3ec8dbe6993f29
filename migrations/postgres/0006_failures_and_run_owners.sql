-- A failed load that fails again the same way (same file, same error) is counted on its first
-- row instead of adding a row per retry: `attempts` and `finished_at` (last try) say how often
-- and when. A run records the process that runs it (`host:pid`), so a run left 'running' by
-- a dead process is closed as 'abandoned' at the next start. Same version number as
-- migrations/sqlite/0006.
ALTER TABLE loads ADD COLUMN attempts BIGINT NOT NULL DEFAULT 1;
ALTER TABLE runs ADD COLUMN owner TEXT;

-- 'abandoned' joins the run statuses.
ALTER TABLE runs DROP CONSTRAINT runs_status_check;
ALTER TABLE runs ADD CONSTRAINT runs_status_check
    CHECK (status IN ('running', 'ok', 'failed', 'skipped', 'cancelled', 'abandoned'));
