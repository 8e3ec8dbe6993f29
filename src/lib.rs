//! costledger: multi-cloud cost ingestion and reconciliation with an exact-decimal ledger.

pub mod allocation;
pub mod app;
pub mod checks;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod export;
pub mod finance_files;
pub mod ingest;
pub mod ledger;
pub mod outfile;
pub mod reconcile;
pub mod registry;
pub mod report;
pub mod sample;
