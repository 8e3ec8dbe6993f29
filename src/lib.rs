//! costledger: multi-cloud cost ingestion and reconciliation with an exact-decimal ledger.

pub mod allocation;
pub mod cli;
pub mod config;
pub mod export;
pub mod ingest;
pub mod ledger;
pub mod registry;
pub mod sample;
