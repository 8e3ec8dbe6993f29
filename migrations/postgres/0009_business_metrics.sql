-- Business metrics (`costledger metrics import FILE`): daily values such as requests or active
-- users, per owner and further dimensions, that a cost is divided by for unit costs. Values are
-- exact decimals kept as canonical text, like every amount. Same version number as the other
-- backend's 0009.
CREATE TABLE business_metrics (
    name        TEXT NOT NULL,
    day         TEXT NOT NULL,   -- YYYY-MM-DD
    owner       TEXT NOT NULL,   -- '' when the value is not per owner
    dimensions  TEXT NOT NULL,   -- canonical JSON object of further dimensions, '{}' when none
    value       TEXT NOT NULL,
    provenance  TEXT NOT NULL,   -- file:line
    PRIMARY KEY (name, day, owner, dimensions)
);
