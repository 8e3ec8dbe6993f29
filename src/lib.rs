//! costledger: multi-cloud cost ingestion and reconciliation with an exact-decimal ledger.

pub mod ledger;
