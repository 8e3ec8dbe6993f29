//! Config → running connector: the one place the closed set of source types is matched.

use costledger_core::Connector;
use costledger_focus::FocusConnector;

use crate::config::SourceParams;

pub fn build(params: &SourceParams) -> Box<dyn Connector> {
    match params {
        SourceParams::Focus(p) => Box::new(FocusConnector::new(p.all_paths())),
    }
}
