//! Config → running connector: the one place the closed set of source types is matched.
//! Building may read files (an OCI key) but opens no connection; `Connector::check` does.

use costledger_core::{Connector, ConnectorError};
use costledger_focus::FocusConnector;

use crate::config::SourceParams;

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
