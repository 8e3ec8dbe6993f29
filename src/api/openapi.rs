//! The OpenAPI 3.1 document of `/api/v1`, generated from the handlers' and views' Rust types
//! (`utoipa`), served at `/api/v1/openapi.json`. A test checks real responses against it.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::app::read;
use crate::query::aggregate::{AnsweredFrom, QueryResult, QueryRow, TotalRow};

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A read-only token of the config's api.tokens (required when any is configured)"))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "costledger API",
        description = "Read-only access to the cost ledger: exact amounts as decimal strings, \
                       the same answers as `costledger query`.",
        license(name = "Apache-2.0")
    ),
    paths(
        super::costs,
        super::explain,
        super::commitments,
        super::budgets,
        super::unit_costs,
        super::dimensions,
        super::dimension_values,
        super::sources,
        super::loads,
        super::periods,
        super::findings,
        super::allocation,
    ),
    components(schemas(
        super::CostsPage,
        super::ApiError,
        super::ErrorBody,
        QueryResult,
        QueryRow,
        TotalRow,
        AnsweredFrom,
        crate::explain::Explanation,
        crate::explain::GroupChange,
        crate::explain::ChangeTotal,
        crate::explain::Parts,
        crate::explain::QuantityChange,
        crate::explain::Period,
        crate::commitments::Commitments,
        crate::commitments::UtilisationRow,
        crate::commitments::CoverageRow,
        crate::budgets::BudgetStatus,
        crate::budgets::ForecastMethod,
        crate::unit_costs::UnitCosts,
        crate::unit_costs::UnitCostRow,
        read::SourceView,
        read::LoadView,
        read::PeriodView,
        read::FindingView,
        read::AllocationView,
        read::DimensionValue,
        read::DimensionView,
    )),
    modifiers(&Bearer),
)]
struct ApiDoc;

/// The document as JSON text.
pub fn document() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc.to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"cannot render the OpenAPI document: {e}\"}}"))
}
