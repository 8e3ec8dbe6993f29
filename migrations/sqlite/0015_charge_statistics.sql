-- PostgreSQL's 0015 leaves the amounts, free text and lineage of `charge_rows` out of the
-- planner's statistics. SQLite's planner reads no statistics costledger keeps: nothing to do
-- but keep the two dialects' numbering aligned.
SELECT 1;
