-- Every FOCUS 1.2 Cost and Usage column in the ledger: the columns a charge line carries beyond
-- its core (commitments, pricing detail, capacity reservations, account types, subcategories).
-- All nullable: a bill that does not carry one leaves it NULL, and every charge loaded before
-- this version keeps its values (adding a nullable column rewrites no row). Decimal columns
-- hold exact values like every amount (canonical decimal TEXT here). Same version number as the other backend's 0008.
ALTER TABLE charges ADD COLUMN availability_zone TEXT;
ALTER TABLE charges ADD COLUMN billing_account_type TEXT;
ALTER TABLE charges ADD COLUMN capacity_reservation_id TEXT;
ALTER TABLE charges ADD COLUMN capacity_reservation_status TEXT;
ALTER TABLE charges ADD COLUMN charge_frequency TEXT;
ALTER TABLE charges ADD COLUMN commitment_discount_category TEXT;
ALTER TABLE charges ADD COLUMN commitment_discount_name TEXT;
ALTER TABLE charges ADD COLUMN commitment_discount_status TEXT;
ALTER TABLE charges ADD COLUMN commitment_discount_type TEXT;
ALTER TABLE charges ADD COLUMN commitment_discount_unit TEXT;
ALTER TABLE charges ADD COLUMN pricing_category TEXT;
ALTER TABLE charges ADD COLUMN pricing_currency TEXT;
ALTER TABLE charges ADD COLUMN region_name TEXT;
ALTER TABLE charges ADD COLUMN resource_type TEXT;
ALTER TABLE charges ADD COLUMN service_subcategory TEXT;
ALTER TABLE charges ADD COLUMN sku_meter TEXT;
ALTER TABLE charges ADD COLUMN sku_price_details TEXT;
ALTER TABLE charges ADD COLUMN sku_price_id TEXT;
ALTER TABLE charges ADD COLUMN sub_account_type TEXT;
ALTER TABLE charges ADD COLUMN commitment_discount_quantity TEXT;
ALTER TABLE charges ADD COLUMN contracted_unit_price TEXT;
ALTER TABLE charges ADD COLUMN list_unit_price TEXT;
ALTER TABLE charges ADD COLUMN pricing_currency_contracted_unit_price TEXT;
ALTER TABLE charges ADD COLUMN pricing_currency_effective_cost TEXT;
ALTER TABLE charges ADD COLUMN pricing_currency_list_unit_price TEXT;
