//! What an Azure cost export does not say in FOCUS terms (pure tables): the FOCUS
//! ServiceCategory and ServiceSubcategory of a meter category, the display name of a region
//! code, and a unit of measure (`1 Hour`, `10K`, `1 GB/Month`) in FOCUS's unit format.

/// `MeterCategory` → (ServiceCategory, ServiceSubcategory), FOCUS 1.2 allowed values; sorted by
/// lower-case meter category. A meter category not listed is `Other` / `Other (Other)`.
const SERVICES: &costledger_core::focus_columns::ServiceTable = &[
    ("advanced data security", "Security", "Security Posture Management"),
    ("advanced threat protection", "Security", "Threat Detection and Response"),
    ("api management", "Integration", "API Management"),
    ("application gateway", "Networking", "Application Networking"),
    ("azure app service", "Web", "Application Platforms"),
    ("azure cosmos db", "Databases", "NoSQL Databases"),
    ("azure data explorer", "Analytics", "Analytics Platforms"),
    ("azure data factory v2", "Analytics", "Data Processing"),
    ("azure database for mariadb", "Databases", "Relational Databases"),
    ("azure database for mysql", "Databases", "Relational Databases"),
    ("azure database for postgresql", "Databases", "Relational Databases"),
    ("azure dns", "Networking", "Network Routing"),
    ("azure firewall", "Networking", "Network Security"),
    ("azure front door service", "Networking", "Content Delivery"),
    ("azure kubernetes service", "Compute", "Containers"),
    ("azure monitor", "Management and Governance", "Observability"),
    ("azure openai service", "AI and Machine Learning", "Generative AI"),
    ("azure synapse analytics", "Analytics", "Analytics Platforms"),
    ("backup", "Storage", "Backup Storage"),
    ("bandwidth", "Networking", "Network Connectivity"),
    ("cognitive services", "AI and Machine Learning", "AI Platforms"),
    ("container instances", "Compute", "Containers"),
    ("container registry", "Compute", "Containers"),
    ("content delivery network", "Networking", "Content Delivery"),
    ("event grid", "Integration", "Messaging"),
    ("event hubs", "Analytics", "Streaming Analytics"),
    ("expressroute", "Networking", "Network Connectivity"),
    ("functions", "Compute", "Serverless Compute"),
    ("key vault", "Security", "Secret Management"),
    ("load balancer", "Networking", "Application Networking"),
    ("log analytics", "Management and Governance", "Observability"),
    ("logic apps", "Integration", "Workflow Orchestration"),
    ("machine learning", "AI and Machine Learning", "Machine Learning"),
    ("microsoft defender for cloud", "Security", "Threat Detection and Response"),
    ("redis cache", "Databases", "Caching"),
    ("service bus", "Integration", "Messaging"),
    ("site recovery", "Management and Governance", "Disaster Recovery"),
    ("sql database", "Databases", "Relational Databases"),
    ("sql managed instance", "Databases", "Relational Databases"),
    ("storage", "Storage", "Storage Platforms"),
    ("virtual machines", "Compute", "Virtual Machines"),
    ("virtual machines licenses", "Compute", "Virtual Machines"),
    ("virtual network", "Networking", "Network Infrastructure"),
    ("vpn gateway", "Networking", "Network Connectivity"),
];

/// Azure region code (lower case) → its display name.
const REGIONS: &[(&str, &str)] = &[
    ("australiacentral", "Australia Central"),
    ("australiaeast", "Australia East"),
    ("australiasoutheast", "Australia Southeast"),
    ("brazilsouth", "Brazil South"),
    ("canadacentral", "Canada Central"),
    ("canadaeast", "Canada East"),
    ("centralindia", "Central India"),
    ("centralus", "Central US"),
    ("eastasia", "East Asia"),
    ("eastus", "East US"),
    ("eastus2", "East US 2"),
    ("francecentral", "France Central"),
    ("germanywestcentral", "Germany West Central"),
    ("global", "Global"),
    ("israelcentral", "Israel Central"),
    ("italynorth", "Italy North"),
    ("japaneast", "Japan East"),
    ("japanwest", "Japan West"),
    ("koreacentral", "Korea Central"),
    ("koreasouth", "Korea South"),
    ("mexicocentral", "Mexico Central"),
    ("northcentralus", "North Central US"),
    ("northeurope", "North Europe"),
    ("norwayeast", "Norway East"),
    ("polandcentral", "Poland Central"),
    ("qatarcentral", "Qatar Central"),
    ("southafricanorth", "South Africa North"),
    ("southcentralus", "South Central US"),
    ("southeastasia", "Southeast Asia"),
    ("southindia", "South India"),
    ("spaincentral", "Spain Central"),
    ("swedencentral", "Sweden Central"),
    ("switzerlandnorth", "Switzerland North"),
    ("uaenorth", "UAE North"),
    ("uksouth", "UK South"),
    ("ukwest", "UK West"),
    ("usgovarizona", "US Gov Arizona"),
    ("usgovvirginia", "US Gov Virginia"),
    ("westcentralus", "West Central US"),
    ("westeurope", "West Europe"),
    ("westindia", "West India"),
    ("westus", "West US"),
    ("westus2", "West US 2"),
    ("westus3", "West US 3"),
];

/// The resource type an Azure Resource Manager id names: the provider namespace and the type
/// path after the last `/providers/` (`…/providers/Microsoft.Compute/virtualMachines/vm-1` →
/// `Microsoft.Compute/virtualMachines`; nested types keep their path:
/// `Microsoft.Sql/servers/databases`). `None` for an id that is not a provider resource.
pub fn resource_type(resource_id: &str) -> Option<String> {
    let lower = resource_id.to_ascii_lowercase();
    let at = lower.rfind("/providers/")? + "/providers/".len();
    let segments: Vec<&str> = resource_id[at..].split('/').filter(|s| !s.is_empty()).collect();
    let (namespace, rest) = segments.split_first()?;
    // rest alternates type, name, type, name…
    let types: Vec<&str> = rest.iter().step_by(2).copied().collect();
    if types.is_empty() {
        return None;
    }
    Some(format!("{namespace}/{}", types.join("/")))
}

/// (ServiceCategory, ServiceSubcategory) of a meter category (any case).
pub fn service_category(meter_category: Option<&str>) -> (&'static str, &'static str) {
    let key = meter_category.map(str::to_ascii_lowercase);
    costledger_core::focus_columns::service_category_in(SERVICES, key.as_deref())
}

/// The display name of a region code (any case).
pub fn region_name(code: &str) -> Option<&'static str> {
    costledger_core::focus_columns::name_in(REGIONS, &code.to_ascii_lowercase())
}

/// An Azure unit of measure in FOCUS's unit format: the block size becomes a quantity
/// (`10K` → `10000 Units`, `100 Hours` → `100 Hours`), a single unit loses its `1`
/// (`1 Hour` → `Hours`, `1 GB` → `GB`), a per-time unit becomes `<unit>-<times>`
/// (`1 GB/Month` → `GB-Months`) and a bare per-time unit its time (`1/Month` → `Months`).
pub fn focus_unit(azure: &str) -> String {
    let t = azure.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits == 0 {
        return plural_time(t).map(str::to_string).unwrap_or_else(|| t.to_string());
    }
    let mut n: u64 = t[..digits].parse().unwrap_or(1);
    let mut rest = &t[digits..];
    for (suffix, factor) in [("K", 1_000u64), ("M", 1_000_000)] {
        if let Some(r) = rest.strip_prefix(suffix)
            && (r.is_empty() || r.starts_with(' ') || r.starts_with('/'))
        {
            n = n.saturating_mul(factor);
            rest = r;
        }
    }
    let rest = rest.trim();
    let unit = if rest.is_empty() {
        "Units".to_string()
    } else if let Some(time) = rest.strip_prefix('/') {
        plural_time(time).map(str::to_string).unwrap_or_else(|| format!("Units/{time}"))
    } else if let Some((u, time)) = rest.split_once('/') {
        match plural_time(time) {
            Some(t) => format!("{}-{t}", u.trim()),
            None => rest.to_string(),
        }
    } else {
        plural_time(rest).map(str::to_string).unwrap_or_else(|| rest.to_string())
    };
    if n == 1 { unit } else { format!("{n} {unit}") }
}

fn plural_time(t: &str) -> Option<&'static str> {
    Some(match t.trim() {
        "Hour" | "Hours" => "Hours",
        "Day" | "Days" => "Days",
        "Month" | "Months" => "Months",
        "Year" | "Years" => "Years",
        "Minute" | "Minutes" => "Minutes",
        "Second" | "Seconds" => "Seconds",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted_and_units_follow_focus() {
        use costledger_core::focus_columns::keys_sorted;
        assert!(keys_sorted(SERVICES, |s| s.0), "SERVICES must be sorted");
        assert!(keys_sorted(REGIONS, |r| r.0), "REGIONS must be sorted");
        assert_eq!(service_category(Some("Virtual Machines")), ("Compute", "Virtual Machines"));
        assert_eq!(service_category(Some("Azure Data Factory v2")), ("Analytics", "Data Processing"));
        assert_eq!(service_category(Some("Quantum Things")), ("Other", "Other (Other)"));
        assert_eq!(region_name("EastUS2"), Some("East US 2"));
        assert_eq!(region_name("westus2"), Some("West US 2"));
        assert_eq!(region_name("Atlantis"), None);
        assert_eq!(
            resource_type("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm-1")
                .as_deref(),
            Some("Microsoft.Compute/virtualMachines")
        );
        assert_eq!(
            resource_type("/subscriptions/s/resourcegroups/rg/providers/Microsoft.Sql/servers/db1/databases/d")
                .as_deref(),
            Some("Microsoft.Sql/servers/databases")
        );
        assert_eq!(resource_type("/subscriptions/s/resourceGroups/rg"), None);
        assert_eq!(resource_type("vm-1"), None);
        for (azure, focus) in [
            ("1 Hour", "Hours"),
            ("100 Hours", "100 Hours"),
            ("10K", "10000 Units"),
            ("1K", "1000 Units"),
            ("1 GB", "GB"),
            ("1 GB/Month", "GB-Months"),
            ("1/Month", "Months"),
            ("1/Day", "Days"),
            ("10K Transactions", "10000 Transactions"),
            ("Hours", "Hours"),
            ("GB", "GB"),
        ] {
            assert_eq!(focus_unit(azure), focus, "{azure}");
        }
    }
}
