//! costledger: multi-cloud cost ingestion and reconciliation with an exact-decimal ledger.

pub mod allocation;
pub mod api;
pub mod app;
pub mod budgets;
pub mod cli;
pub mod commitments;
pub mod config;
pub mod config_issue;
pub mod daemon;
pub mod explain;
pub mod export;
pub mod finance_files;
pub mod focus_export;
pub mod fx;
pub mod ingest;
pub mod json;
pub mod mcp;
/// The ledger crate, under its old path: `crate::ledger::…` everywhere.
pub use costledger_ledger as ledger;
pub mod outfile;
pub mod query;
pub mod reconcile;
pub mod registry;
pub mod report;
pub mod sample;
pub mod unit_costs;
