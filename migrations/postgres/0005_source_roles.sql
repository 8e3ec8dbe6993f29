-- A source's role: 'primary' sources are the bill (summed into totals, allocation, reports,
-- exports); 'check' sources are loaded only for the cross-source check. Same version number as
-- migrations/sqlite/0005.
ALTER TABLE sources ADD COLUMN role TEXT NOT NULL DEFAULT 'primary' CHECK (role IN ('primary', 'check'));
