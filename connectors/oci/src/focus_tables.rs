//! What an OCI cost report does not say in FOCUS terms (pure tables): the FOCUS
//! ServiceCategory and ServiceSubcategory of a `product/service`, a region's name, the resource
//! type an OCID names, and a unit description in FOCUS's unit format.

/// `product/service` → (ServiceCategory, ServiceSubcategory), FOCUS 1.2 allowed values; sorted.
/// A service not listed is `Other` / `Other (Other)`.
const SERVICES: &costledger_core::focus_columns::ServiceTable = &[
    ("API_GATEWAY", "Integration", "API Management"),
    ("AUTONOMOUS_DATABASE", "Databases", "Relational Databases"),
    ("BLOCK_STORAGE", "Storage", "Block Storage"),
    ("COMPUTE", "Compute", "Virtual Machines"),
    ("CONTAINER_ENGINE", "Compute", "Containers"),
    ("DATABASE", "Databases", "Relational Databases"),
    ("DNS", "Networking", "Network Routing"),
    ("FILE_STORAGE", "Storage", "File Storage"),
    ("FUNCTIONS", "Compute", "Serverless Compute"),
    ("KEY_MANAGEMENT", "Security", "Secret Management"),
    ("LOAD_BALANCER", "Networking", "Application Networking"),
    ("LOGGING", "Management and Governance", "Observability"),
    ("MONITORING", "Management and Governance", "Observability"),
    ("MYSQL", "Databases", "Relational Databases"),
    ("NETWORK", "Networking", "Network Connectivity"),
    ("NOSQL", "Databases", "NoSQL Databases"),
    ("NOTIFICATIONS", "Integration", "Messaging"),
    ("OBJECTSTORE", "Storage", "Object Storage"),
    ("OKE", "Compute", "Containers"),
    ("ORACLE_STREAMING_SERVICE", "Analytics", "Streaming Analytics"),
    ("QUEUE", "Integration", "Messaging"),
    ("TELEMETRY", "Management and Governance", "Observability"),
    ("VAULT", "Security", "Secret Management"),
    ("WAF", "Networking", "Network Security"),
];

/// OCI region identifier → its name.
const REGIONS: &[(&str, &str)] = &[
    ("ap-hyderabad-1", "India South (Hyderabad)"),
    ("ap-melbourne-1", "Australia Southeast (Melbourne)"),
    ("ap-mumbai-1", "India West (Mumbai)"),
    ("ap-osaka-1", "Japan Central (Osaka)"),
    ("ap-seoul-1", "South Korea Central (Seoul)"),
    ("ap-singapore-1", "Singapore (Singapore)"),
    ("ap-sydney-1", "Australia East (Sydney)"),
    ("ap-tokyo-1", "Japan East (Tokyo)"),
    ("ca-montreal-1", "Canada Southeast (Montreal)"),
    ("ca-toronto-1", "Canada Southeast (Toronto)"),
    ("eu-amsterdam-1", "Netherlands Northwest (Amsterdam)"),
    ("eu-frankfurt-1", "Germany Central (Frankfurt)"),
    ("eu-madrid-1", "Spain Central (Madrid)"),
    ("eu-marseille-1", "France South (Marseille)"),
    ("eu-milan-1", "Italy Northwest (Milan)"),
    ("eu-paris-1", "France Central (Paris)"),
    ("eu-stockholm-1", "Sweden Central (Stockholm)"),
    ("eu-zurich-1", "Switzerland North (Zurich)"),
    ("me-dubai-1", "UAE East (Dubai)"),
    ("sa-saopaulo-1", "Brazil East (Sao Paulo)"),
    ("uk-london-1", "UK South (London)"),
    ("us-ashburn-1", "US East (Ashburn)"),
    ("us-phoenix-1", "US West (Phoenix)"),
    ("us-sanjose-1", "US West (San Jose)"),
];

/// (ServiceCategory, ServiceSubcategory) of a `product/service`.
pub fn service_category(service: Option<&str>) -> (&'static str, &'static str) {
    costledger_core::focus_columns::service_category_in(SERVICES, service)
}

pub fn region_name(region: &str) -> Option<&'static str> {
    costledger_core::focus_columns::name_in(REGIONS, region)
}

/// The resource type an OCID names: `ocid1.<type>.<realm>.…` → `<type>` (`ocid1.instance.oc1…`
/// → `instance`). `None` for anything that is not an OCID.
pub fn resource_type(ocid: &str) -> Option<String> {
    let mut parts = ocid.split('.');
    let version = parts.next()?;
    let kind = parts.next()?;
    (version.starts_with("ocid") && !kind.is_empty() && parts.next().is_some()).then(|| kind.to_string())
}

/// An OCI unit description in FOCUS's unit format: `GB Months` → `GB-Months`, `OCPU Hours` →
/// `OCPU-Hours`, `Instance per hour` → `Instance/Hour`, `Million Datapoints` →
/// `1000000 Datapoints`, `GB Of Data Transferred` → `GB`. Anything else is kept.
pub fn focus_unit(oci: &str) -> String {
    let t = oci.trim();
    for (word, n) in [("Million ", "1000000"), ("Thousand ", "1000")] {
        if let Some(rest) = t.strip_prefix(word) {
            return format!("{n} {}", focus_unit(rest));
        }
    }
    if let Some((unit, _)) = t.split_once(" Of ") {
        return unit.trim().to_string();
    }
    let lower = t.to_ascii_lowercase();
    for (suffix, time) in [(" per hour", "Hour"), (" per day", "Day"), (" per month", "Month")] {
        if lower.ends_with(suffix) {
            return format!("{}/{time}", t[..t.len() - suffix.len()].trim());
        }
    }
    for time in ["Months", "Hours", "Days", "Years", "Seconds", "Minutes"] {
        if let Some(unit) = t.strip_suffix(time).map(str::trim_end)
            && !unit.is_empty()
            && t[unit.len()..].starts_with(' ')
        {
            return format!("{unit}-{time}");
        }
    }
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted_and_names_and_units_follow_focus() {
        use costledger_core::focus_columns::keys_sorted;
        assert!(keys_sorted(SERVICES, |s| s.0), "SERVICES must be sorted");
        assert!(keys_sorted(REGIONS, |r| r.0), "REGIONS must be sorted");
        assert_eq!(service_category(Some("BLOCK_STORAGE")), ("Storage", "Block Storage"));
        assert_eq!(service_category(Some("SOMETHING_NEW")), ("Other", "Other (Other)"));
        assert_eq!(region_name("us-sanjose-1"), Some("US West (San Jose)"));
        assert_eq!(resource_type("ocid1.instance.oc1.us-sanjose-1.abc").as_deref(), Some("instance"));
        assert_eq!(resource_type("not-an-ocid"), None);
        for (oci, focus) in [
            ("GB Months", "GB-Months"),
            ("OCPU Hours", "OCPU-Hours"),
            ("Hours", "Hours"),
            ("TB", "TB"),
            ("Instance per hour", "Instance/Hour"),
            ("Gigabytes Per Hour", "Gigabytes/Hour"),
            ("Million Datapoints", "1000000 Datapoints"),
            ("GB Of Data Transferred", "GB"),
        ] {
            assert_eq!(focus_unit(oci), focus, "{oci}");
        }
    }
}
