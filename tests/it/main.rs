//! The integration tests, one binary: each module is one area (what `tests/<area>.rs` was),
//! sharing `common` (emulators, fixtures, the binary under test) compiled once.

#[macro_use]
mod common;
mod allocation;
mod aws;
mod aws_files;
mod azure;
mod budgets;
mod cli;
mod commitments;
mod crash;
mod daemon;
mod daemon_jobs;
mod explain;
mod focus_export;
mod gcp;
mod hardening;
mod integrity;
mod ledger_conformance;
mod mcp;
mod oci;
mod parquet;
mod query;
mod reconcile;
mod serve;
mod tidy;
mod unit_costs;
