-- The (load_id, row_no) primary key of charges becomes a BRIN index on load_id. A load's rows
-- arrive together (COPY appends them), so a block-range index finds them for the per-load
-- DELETE of retention and failure; joins to current loads read the table in full either way.
-- Maintaining the B-tree was a fifth of the server's work in a bulk COPY. (load_id, row_no)
-- stays unique by construction: one loader numbers the rows of its own load.
-- Same version number as migrations/sqlite/0004.

ALTER TABLE charges DROP CONSTRAINT charges_pkey;
CREATE INDEX charges_load ON charges USING brin (load_id);
