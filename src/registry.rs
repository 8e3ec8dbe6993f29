//! Config → running connector, and `import --format` → connector: the one place the closed
//! sets of source types and bill file formats are matched to what reads them. Building may
//! read files (an OCI key) but opens no connection; `Connector::check` does.

use std::path::PathBuf;

use costledger_aws::{AwsFileConnector, AwsFormat};
use costledger_core::{Connector, ConnectorError};
use costledger_focus::FocusConnector;
use costledger_oci::reports::{OciReportConnector, ReportKind};

use crate::config::SourceParams;

/// The connector of a configured source.
pub async fn build(params: &SourceParams) -> Result<Box<dyn Connector>, ConnectorError> {
    Ok(match params {
        SourceParams::Focus(p) => Box::new(FocusConnector::new(p.all_paths())),
        SourceParams::AwsCostExplorer(p) => Box::new(costledger_aws::build_cost_explorer(p).await),
        SourceParams::AwsCur(p) => Box::new(costledger_aws::build_files(p, false).await?),
        SourceParams::AwsDataExports(p) => Box::new(costledger_aws::build_files(p, true).await?),
        SourceParams::AzureCostQuery(p) => Box::new(costledger_azure::build_query(p)?),
        SourceParams::AzureCostExport(p) => Box::new(costledger_azure::build_export(p)?),
        SourceParams::Gcp(p) => Box::new(costledger_gcp::build(p).await?),
        SourceParams::OciUsage(p) => Box::new(costledger_oci::build_usage(p)?),
        SourceParams::OciCostReport(p) => Box::new(costledger_oci::build_reports(p)?),
    })
}

/// The bill file formats `costledger import --format` reads (the doc comments are its help).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FileFormat {
    /// FOCUS 1.0–1.2 CSV.
    Focus,
    /// AWS legacy Cost and Usage Report files (by manifest, or loose CSV).
    AwsCur,
    /// AWS CUR 2.0 Data Exports (BILLING_PERIOD=YYYY-MM folders, or loose CSV).
    AwsCur2,
    /// AWS FOCUS 1.0/1.2 Data Exports.
    AwsFocus,
    /// Azure cost exports (EA, MCA, pay-as-you-go or FOCUS CSV; manifest runs, old-style files).
    AzureExport,
    /// GCP billing export rows extracted from BigQuery (JSON lines, or CSV of the flattened query).
    GcpExport,
    /// OCI cost reports (reports/cost-csv/*.csv.gz).
    OciCost,
    /// OCI FOCUS reports (FOCUS Reports/…/*.csv.gz).
    OciFocus,
}

impl FileFormat {
    /// The name on the command line (`--format aws-cur`), also the default source name's tail.
    pub fn name(self) -> &'static str {
        match self {
            FileFormat::Focus => "focus",
            FileFormat::AwsCur => "aws-cur",
            FileFormat::AwsCur2 => "aws-cur2",
            FileFormat::AwsFocus => "aws-focus",
            FileFormat::AzureExport => "azure-export",
            FileFormat::GcpExport => "gcp-export",
            FileFormat::OciCost => "oci-cost",
            FileFormat::OciFocus => "oci-focus",
        }
    }

    /// The source an ad hoc import loads into when none is named: `import-<format>`.
    pub fn default_source(self) -> String {
        format!("import-{}", self.name())
    }
}

/// The connector reading `paths` (files or directories) in `format`, for an ad hoc import.
pub fn ad_hoc(format: FileFormat, paths: Vec<PathBuf>) -> Box<dyn Connector> {
    match format {
        FileFormat::Focus => Box::new(FocusConnector::ad_hoc(paths)),
        FileFormat::AwsCur => Box::new(AwsFileConnector::ad_hoc(AwsFormat::Cur, paths)),
        FileFormat::AwsCur2 => Box::new(AwsFileConnector::ad_hoc(AwsFormat::Cur2, paths)),
        FileFormat::AwsFocus => Box::new(AwsFileConnector::ad_hoc(AwsFormat::Focus, paths)),
        FileFormat::AzureExport => Box::new(costledger_azure::AzureExportConnector::ad_hoc(paths, None)),
        FileFormat::GcpExport => Box::new(costledger_gcp::GcpFileConnector::ad_hoc(paths)),
        FileFormat::OciCost => Box::new(OciReportConnector::ad_hoc(ReportKind::Cost, paths)),
        FileFormat::OciFocus => Box::new(OciReportConnector::ad_hoc(ReportKind::Focus, paths)),
    }
}
