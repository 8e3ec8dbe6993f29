//! What a GCP billing export does not say in FOCUS terms (pure tables): the FOCUS
//! ServiceCategory and ServiceSubcategory of a service, a region's name, and a unit in FOCUS's
//! unit format.

/// `service.description` → (ServiceCategory, ServiceSubcategory), FOCUS 1.2 allowed values;
/// sorted. A service not listed is `Other` / `Other (Other)`.
const SERVICES: &costledger_core::focus_columns::ServiceTable = &[
    ("App Engine", "Web", "Application Platforms"),
    ("Artifact Registry", "Developer Tools", "Other (Developer Tools)"),
    ("BigQuery", "Databases", "Data Warehouses"),
    ("Cloud Bigtable", "Databases", "NoSQL Databases"),
    ("Cloud Build", "Developer Tools", "Continuous Integration and Deployment"),
    ("Cloud DNS", "Networking", "Network Routing"),
    ("Cloud Dataflow", "Analytics", "Data Processing"),
    ("Cloud Functions", "Compute", "Serverless Compute"),
    ("Cloud Key Management Service (KMS)", "Security", "Secret Management"),
    ("Cloud Logging", "Management and Governance", "Observability"),
    ("Cloud Memorystore for Redis", "Databases", "Caching"),
    ("Cloud Monitoring", "Management and Governance", "Observability"),
    ("Cloud Pub/Sub", "Integration", "Messaging"),
    ("Cloud Run", "Compute", "Serverless Compute"),
    ("Cloud SQL", "Databases", "Relational Databases"),
    ("Cloud Spanner", "Databases", "Relational Databases"),
    ("Cloud Storage", "Storage", "Object Storage"),
    ("Compute Engine", "Compute", "Virtual Machines"),
    ("Dataproc", "Analytics", "Data Processing"),
    ("Filestore", "Storage", "File Storage"),
    ("Firestore", "Databases", "NoSQL Databases"),
    ("Gemini API", "AI and Machine Learning", "Generative AI"),
    ("Kubernetes Engine", "Compute", "Containers"),
    ("Looker Studio", "Analytics", "Business Intelligence"),
    ("Networking", "Networking", "Network Connectivity"),
    ("Secret Manager", "Security", "Secret Management"),
    ("Support", "Management and Governance", "Support"),
    ("Vertex AI", "AI and Machine Learning", "AI Platforms"),
];

/// GCP region or multi-region → its name.
const REGIONS: &[(&str, &str)] = &[
    ("asia", "Asia"),
    ("asia-east1", "Taiwan"),
    ("asia-east2", "Hong Kong"),
    ("asia-northeast1", "Tokyo"),
    ("asia-northeast2", "Osaka"),
    ("asia-northeast3", "Seoul"),
    ("asia-south1", "Mumbai"),
    ("asia-southeast1", "Singapore"),
    ("asia-southeast2", "Jakarta"),
    ("australia-southeast1", "Sydney"),
    ("eu", "European Union"),
    ("europe-central2", "Warsaw"),
    ("europe-north1", "Finland"),
    ("europe-southwest1", "Madrid"),
    ("europe-west1", "Belgium"),
    ("europe-west2", "London"),
    ("europe-west3", "Frankfurt"),
    ("europe-west4", "Netherlands"),
    ("europe-west6", "Zurich"),
    ("europe-west8", "Milan"),
    ("europe-west9", "Paris"),
    ("me-central1", "Doha"),
    ("me-west1", "Tel Aviv"),
    ("northamerica-northeast1", "Montréal"),
    ("northamerica-northeast2", "Toronto"),
    ("southamerica-east1", "São Paulo"),
    ("us", "United States"),
    ("us-central1", "Iowa"),
    ("us-east1", "South Carolina"),
    ("us-east4", "Northern Virginia"),
    ("us-south1", "Dallas"),
    ("us-west1", "Oregon"),
    ("us-west2", "Los Angeles"),
];

pub fn service_category(service: Option<&str>) -> (&'static str, &'static str) {
    costledger_core::focus_columns::service_category_in(SERVICES, service)
}

pub fn region_name(region: &str) -> Option<&'static str> {
    costledger_core::focus_columns::name_in(REGIONS, region)
}

/// A GCP unit in FOCUS's unit format: the time part after a hyphen is a capitalised plural
/// time unit (`byte-seconds` → `byte-Seconds`); everything else is kept (`hour`, `gibibyte
/// month` are count units FOCUS accepts as written).
pub fn focus_unit(gcp: &str) -> String {
    let t = gcp.trim();
    if let Some((unit, time)) = t.rsplit_once('-') {
        let plural = match time.to_ascii_lowercase().as_str() {
            "second" | "seconds" => Some("Seconds"),
            "minute" | "minutes" => Some("Minutes"),
            "hour" | "hours" => Some("Hours"),
            "day" | "days" => Some("Days"),
            "month" | "months" => Some("Months"),
            "year" | "years" => Some("Years"),
            _ => None,
        };
        if let (Some(p), false) = (plural, unit.is_empty()) {
            return format!("{unit}-{p}");
        }
    }
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted_and_units_follow_focus() {
        use costledger_core::focus_columns::keys_sorted;
        assert!(keys_sorted(SERVICES, |s| s.0), "SERVICES must be sorted");
        assert!(keys_sorted(REGIONS, |r| r.0), "REGIONS must be sorted");
        assert_eq!(service_category(Some("Compute Engine")), ("Compute", "Virtual Machines"));
        assert_eq!(service_category(Some("Invoice")), ("Other", "Other (Other)"));
        assert_eq!(region_name("europe-west4"), Some("Netherlands"));
        assert_eq!(region_name("us"), Some("United States"));
        assert_eq!(focus_unit("byte-seconds"), "byte-Seconds");
        assert_eq!(focus_unit("hour"), "hour");
        assert_eq!(focus_unit("gibibyte month"), "gibibyte month");
    }
}
