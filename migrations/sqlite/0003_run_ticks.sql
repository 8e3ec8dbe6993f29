-- Scheduled runs are claimed per tick: the daemon inserts the run row of a (job, source, tick)
-- first, and the unique index lets exactly one process (replica) win it.
ALTER TABLE runs ADD COLUMN tick TEXT;
CREATE UNIQUE INDEX runs_one_per_tick ON runs (job, COALESCE(source, ''), tick) WHERE tick IS NOT NULL;
