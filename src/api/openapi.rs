//! The OpenAPI 3.1 document of `/api/v1`, generated from the handlers' and views' Rust types
//! (`utoipa`), served at `/api/v1/openapi.json`. A test checks real responses against it.

use std::collections::BTreeMap;

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

/// Per schema name, its property names (every object schema of the document).
pub fn schema_properties() -> BTreeMap<String, Vec<String>> {
    let doc: serde_json::Value = serde_json::from_str(&document()).unwrap_or_default();
    let mut out = BTreeMap::new();
    if let Some(schemas) = doc.pointer("/components/schemas").and_then(|s| s.as_object()) {
        for (name, s) in schemas {
            let mut props = Vec::new();
            collect_properties(&doc, s, &mut props);
            out.insert(name.clone(), props);
        }
    }
    out
}

fn collect_properties(doc: &serde_json::Value, s: &serde_json::Value, out: &mut Vec<String>) {
    if let Some(r) = s.get("$ref").and_then(|r| r.as_str())
        && let Some(target) = r.strip_prefix('#').and_then(|p| doc.pointer(p))
    {
        collect_properties(doc, target, out);
    }
    if let Some(p) = s.get("properties").and_then(|p| p.as_object()) {
        out.extend(p.keys().cloned());
    }
    for k in ["allOf", "oneOf", "anyOf"] {
        if let Some(list) = s.get(k).and_then(|l| l.as_array()) {
            for x in list {
                collect_properties(doc, x, out);
            }
        }
    }
}
