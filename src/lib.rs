//! costledger: multi-cloud cost ingestion and reconciliation with an exact-decimal ledger.

pub mod ledger;
pub mod config;
pub mod ingest;
pub mod registry;
pub mod sample;
pub mod export;
pub mod cli;
