-- Every FOCUS 1.2 Cost and Usage column in the ledger: the columns a charge line carries beyond
-- its core (commitments, pricing detail, capacity reservations, account types, subcategories).
-- All nullable: a bill that does not carry one leaves it NULL, and every charge loaded before
-- this version keeps its values (adding a nullable column rewrites no row). Decimal columns
-- hold exact values like every amount (NUMERIC here). Same version number as the other backend's 0008.
ALTER TABLE charges
    ADD COLUMN availability_zone TEXT,
    ADD COLUMN billing_account_type TEXT,
    ADD COLUMN capacity_reservation_id TEXT,
    ADD COLUMN capacity_reservation_status TEXT,
    ADD COLUMN charge_frequency TEXT,
    ADD COLUMN commitment_discount_category TEXT,
    ADD COLUMN commitment_discount_name TEXT,
    ADD COLUMN commitment_discount_status TEXT,
    ADD COLUMN commitment_discount_type TEXT,
    ADD COLUMN commitment_discount_unit TEXT,
    ADD COLUMN pricing_category TEXT,
    ADD COLUMN pricing_currency TEXT,
    ADD COLUMN region_name TEXT,
    ADD COLUMN resource_type TEXT,
    ADD COLUMN service_subcategory TEXT,
    ADD COLUMN sku_meter TEXT,
    ADD COLUMN sku_price_details TEXT,
    ADD COLUMN sku_price_id TEXT,
    ADD COLUMN sub_account_type TEXT,
    ADD COLUMN commitment_discount_quantity NUMERIC,
    ADD COLUMN contracted_unit_price NUMERIC,
    ADD COLUMN list_unit_price NUMERIC,
    ADD COLUMN pricing_currency_contracted_unit_price NUMERIC,
    ADD COLUMN pricing_currency_effective_cost NUMERIC,
    ADD COLUMN pricing_currency_list_unit_price NUMERIC;
