//! What a CUR does not say in FOCUS terms, from AWS's own published names (pure tables):
//! the FOCUS ServiceCategory and ServiceSubcategory of a product code, and the region name of a
//! region code (the pricing `location` AWS writes in `product/location` where it has one).

/// `lineItem/ProductCode` → (ServiceCategory, ServiceSubcategory), FOCUS 1.2 allowed values.
/// A product code not listed is `Other` / `Other (Other)`: a category is never guessed from a
/// service's name.
const SERVICES: &costledger_core::focus_columns::ServiceTable = &[
    ("AWSBackup", "Storage", "Backup Storage"),
    ("AWSCertificateManager", "Security", "Other (Security)"),
    ("AWSCloudFormation", "Management and Governance", "Architecture"),
    ("AWSCloudShell", "Developer Tools", "Development Environments"),
    ("AWSCloudTrail", "Management and Governance", "Compliance"),
    ("AWSCodeBuild", "Developer Tools", "Continuous Integration and Deployment"),
    ("AWSCodeCommit", "Developer Tools", "Source Code Management"),
    ("AWSCodePipeline", "Developer Tools", "Continuous Integration and Deployment"),
    ("AWSConfig", "Management and Governance", "Compliance"),
    ("AWSCostExplorer", "Management and Governance", "Cost Management"),
    ("AWSDataTransfer", "Networking", "Network Connectivity"),
    ("AWSDirectConnect", "Networking", "Network Connectivity"),
    ("AWSELB", "Networking", "Application Networking"),
    ("AWSEvents", "Integration", "Messaging"),
    ("AWSGlue", "Analytics", "Data Processing"),
    ("AWSIoT", "Internet of Things", "IoT Platforms"),
    ("AWSLambda", "Compute", "Serverless Compute"),
    ("AWSMigrationHubRefactorSpaces", "Migration", "Resource Migration"),
    ("AWSQueueService", "Integration", "Messaging"),
    ("AWSSecretsManager", "Security", "Secret Management"),
    ("AWSSecurityHub", "Security", "Security Posture Management"),
    ("AWSShield", "Networking", "Network Security"),
    ("AWSSupportBusiness", "Management and Governance", "Support"),
    ("AWSSupportEnterprise", "Management and Governance", "Support"),
    ("AWSSystemsManager", "Management and Governance", "Endpoint Management"),
    ("AWSTransfer", "Migration", "Data Migration"),
    ("AmazonApiGateway", "Integration", "API Management"),
    ("AmazonAthena", "Analytics", "Data Processing"),
    ("AmazonBedrock", "AI and Machine Learning", "Generative AI"),
    ("AmazonCloudFront", "Networking", "Content Delivery"),
    ("AmazonCloudWatch", "Management and Governance", "Observability"),
    ("AmazonCognito", "Identity", "Identity and Access Management"),
    ("AmazonDocDB", "Databases", "NoSQL Databases"),
    ("AmazonDynamoDB", "Databases", "NoSQL Databases"),
    ("AmazonEC2", "Compute", "Virtual Machines"),
    ("AmazonECR", "Compute", "Containers"),
    ("AmazonECS", "Compute", "Containers"),
    ("AmazonEFS", "Storage", "File Storage"),
    ("AmazonEKS", "Compute", "Containers"),
    ("AmazonES", "Analytics", "Search"),
    ("AmazonElastiCache", "Databases", "Caching"),
    ("AmazonFSx", "Storage", "File Storage"),
    ("AmazonGlacier", "Storage", "Backup Storage"),
    ("AmazonGuardDuty", "Security", "Threat Detection and Response"),
    ("AmazonKinesis", "Analytics", "Streaming Analytics"),
    ("AmazonKinesisFirehose", "Analytics", "Streaming Analytics"),
    ("AmazonLightsail", "Compute", "Virtual Machines"),
    ("AmazonMSK", "Analytics", "Streaming Analytics"),
    ("AmazonNeptune", "Databases", "NoSQL Databases"),
    ("AmazonQuickSight", "Analytics", "Business Intelligence"),
    ("AmazonRDS", "Databases", "Relational Databases"),
    ("AmazonRedshift", "Databases", "Data Warehouses"),
    ("AmazonRoute53", "Networking", "Network Routing"),
    ("AmazonS3", "Storage", "Object Storage"),
    ("AmazonSNS", "Integration", "Messaging"),
    ("AmazonSageMaker", "AI and Machine Learning", "Machine Learning"),
    ("AmazonStates", "Integration", "Workflow Orchestration"),
    ("AmazonVPC", "Networking", "Network Infrastructure"),
    ("AmazonWorkSpaces", "Compute", "End User Computing"),
    ("awskms", "Security", "Secret Management"),
];

/// AWS region code → the region's name as AWS's price list and `product/location` write it.
const REGIONS: &[(&str, &str)] = &[
    ("af-south-1", "Africa (Cape Town)"),
    ("ap-east-1", "Asia Pacific (Hong Kong)"),
    ("ap-northeast-1", "Asia Pacific (Tokyo)"),
    ("ap-northeast-2", "Asia Pacific (Seoul)"),
    ("ap-northeast-3", "Asia Pacific (Osaka)"),
    ("ap-south-1", "Asia Pacific (Mumbai)"),
    ("ap-south-2", "Asia Pacific (Hyderabad)"),
    ("ap-southeast-1", "Asia Pacific (Singapore)"),
    ("ap-southeast-2", "Asia Pacific (Sydney)"),
    ("ap-southeast-3", "Asia Pacific (Jakarta)"),
    ("ap-southeast-4", "Asia Pacific (Melbourne)"),
    ("ap-southeast-5", "Asia Pacific (Malaysia)"),
    ("ap-southeast-7", "Asia Pacific (Thailand)"),
    ("ca-central-1", "Canada (Central)"),
    ("ca-west-1", "Canada West (Calgary)"),
    ("eu-central-1", "EU (Frankfurt)"),
    ("eu-central-2", "EU (Zurich)"),
    ("eu-north-1", "EU (Stockholm)"),
    ("eu-south-1", "EU (Milan)"),
    ("eu-south-2", "EU (Spain)"),
    ("eu-west-1", "EU (Ireland)"),
    ("eu-west-2", "EU (London)"),
    ("eu-west-3", "EU (Paris)"),
    ("global", "Global"),
    ("il-central-1", "Israel (Tel Aviv)"),
    ("me-central-1", "Middle East (UAE)"),
    ("me-south-1", "Middle East (Bahrain)"),
    ("mx-central-1", "Mexico (Central)"),
    ("sa-east-1", "South America (Sao Paulo)"),
    ("us-east-1", "US East (N. Virginia)"),
    ("us-east-2", "US East (Ohio)"),
    ("us-gov-east-1", "AWS GovCloud (US-East)"),
    ("us-gov-west-1", "AWS GovCloud (US-West)"),
    ("us-west-1", "US West (N. California)"),
    ("us-west-2", "US West (Oregon)"),
];

/// An AWS pricing unit in FOCUS's unit format: AWS abbreviates or singularises the time part of a
/// unit (`GB-Mo`, `Obj-Month`, `Hrs`), FOCUS writes `<unit>-<plural time unit>` and whole time
/// unit names (`GB-Months`, `Obj-Months`, `Hours`). Anything else is kept as AWS wrote it.
pub fn focus_unit(aws: &str) -> String {
    const TIME: [(&str, &str); 8] = [
        ("Mo", "Months"),
        ("Month", "Months"),
        ("Hrs", "Hours"),
        ("Hr", "Hours"),
        ("Hour", "Hours"),
        ("Day", "Days"),
        ("Second", "Seconds"),
        ("Sec", "Seconds"),
    ];
    let full = |t: &str| TIME.iter().find(|(a, _)| *a == t).map(|(_, f)| *f);
    if let Some(f) = full(aws) {
        return f.to_string();
    }
    if let Some((unit, time)) = aws.rsplit_once('-')
        && !unit.is_empty()
        && let Some(f) = full(time)
    {
        return format!("{unit}-{f}");
    }
    aws.to_string()
}

/// (ServiceCategory, ServiceSubcategory) of a product code.
pub fn service_category(product_code: Option<&str>) -> (&'static str, &'static str) {
    costledger_core::focus_columns::service_category_in(SERVICES, product_code)
}

/// The name of a region code AWS publishes.
pub fn region_name(code: &str) -> Option<&'static str> {
    costledger_core::focus_columns::name_in(REGIONS, code)
}

/// Bare EC2-family resource ids by prefix → their ARN resource type (`service/type`), longest
/// prefix first where one contains another (`tgw-attach-` before `tgw-`).
const ID_PREFIXES: &[(&str, &str)] = &[
    ("ami-", "ec2/image"),
    ("eipalloc-", "ec2/elastic-ip"),
    ("eni-", "ec2/network-interface"),
    ("fs-", "elasticfilesystem/file-system"),
    ("i-", "ec2/instance"),
    ("igw-", "ec2/internet-gateway"),
    ("nat-", "ec2/natgateway"),
    ("snap-", "ec2/snapshot"),
    ("tgw-attach-", "ec2/transit-gateway-attachment"),
    ("tgw-", "ec2/transit-gateway"),
    ("vol-", "ec2/volume"),
    ("vpce-", "ec2/vpc-endpoint"),
    ("vpn-", "ec2/vpn-connection"),
];

/// ResourceType of a CUR line's `lineItem/ResourceId`, in the `service/type` form of AWS's
/// resource names (the ARN's service and resource type; the same shape as Azure's
/// `Microsoft.Compute/virtualMachines`): an ARN gives its own (`arn:aws:lambda:…:function:f` →
/// `lambda/function`; a resource part without a type, as for S3, `arn:aws:s3:::bucket` →
/// `s3/bucket`); a bare EC2-family id its prefix's (`i-0abc…` → `ec2/instance`); an S3 bucket
/// name (product `AmazonS3`) is `s3/bucket`; any other id the product code that billed it, so
/// a line with a resource id always has a type.
pub fn resource_type(resource_id: &str, product_code: Option<&str>) -> Option<String> {
    let id = resource_id.trim();
    if id.is_empty() {
        return None;
    }
    if let Some(rest) = id.strip_prefix("arn:") {
        // arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        if let [_, service, _, _, resource] = parts[..]
            && !service.is_empty()
        {
            let kind = resource.split(['/', ':']).next().filter(|k| *k != resource && !k.is_empty());
            return Some(match (service, kind) {
                (_, Some(k)) => format!("{service}/{k}"),
                ("s3", None) => "s3/bucket".to_string(),
                (_, None) => service.to_string(),
            });
        }
    }
    if let Some((_, t)) = ID_PREFIXES.iter().find(|(p, _)| id.starts_with(p)) {
        return Some((*t).to_string());
    }
    match product_code {
        Some("AmazonS3") => Some("s3/bucket".to_string()),
        Some(code) if !code.is_empty() => Some(code.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted_for_binary_search_and_use_focus_values() {
        use costledger_core::focus_columns::keys_sorted;
        assert!(keys_sorted(SERVICES, |s| s.0), "SERVICES must be sorted by product code");
        assert!(keys_sorted(REGIONS, |r| r.0), "REGIONS must be sorted by code");
        for (_, category, sub) in SERVICES {
            assert!(
                sub.starts_with("Other (") && sub.ends_with(&format!("({category})")) || !sub.starts_with("Other"),
                "{sub} under {category}"
            );
        }
        assert_eq!(service_category(Some("AmazonS3")), ("Storage", "Object Storage"));
        assert_eq!(service_category(Some("awskms")), ("Security", "Secret Management"));
        assert_eq!(service_category(Some("SomethingNew")), ("Other", "Other (Other)"));
        assert_eq!(service_category(None), ("Other", "Other (Other)"));
        for (id, code, kind) in [
            ("i-0aaa000000000001", Some("AmazonEC2"), Some("ec2/instance")),
            ("vol-0123", Some("AmazonEC2"), Some("ec2/volume")),
            ("tgw-attach-0123", Some("AmazonVPC"), Some("ec2/transit-gateway-attachment")),
            ("tgw-0123", Some("AmazonVPC"), Some("ec2/transit-gateway")),
            ("arn:aws:lambda:eu-west-1:444455556666:function:resize", Some("AWSLambda"), Some("lambda/function")),
            ("arn:aws:rds:eu-west-1:444455556666:db:orders", Some("AmazonRDS"), Some("rds/db")),
            (
                "arn:aws:elasticloadbalancing:eu-west-1:444455556666:loadbalancer/app/web/50dc6c",
                Some("AWSELB"),
                Some("elasticloadbalancing/loadbalancer"),
            ),
            ("arn:aws:s3:::my-bucket", Some("AmazonS3"), Some("s3/bucket")),
            ("my-bucket", Some("AmazonS3"), Some("s3/bucket")),
            ("Z0123456789", Some("AmazonRoute53"), Some("AmazonRoute53")),
            ("", Some("AmazonEC2"), None),
        ] {
            assert_eq!(resource_type(id, code).as_deref(), kind, "{id}");
        }
        assert_eq!(region_name("eu-west-1"), Some("EU (Ireland)"));
        assert_eq!(region_name("mars-1"), None);
        for (aws, focus) in [
            ("GB-Mo", "GB-Months"),
            ("Obj-Month", "Obj-Months"),
            ("Hrs", "Hours"),
            ("vCPU-Hours", "vCPU-Hours"),
            ("Requests", "Requests"),
            ("GB", "GB"),
            ("-Mo", "-Mo"),
        ] {
            assert_eq!(focus_unit(aws), focus, "{aws}");
        }
    }
}
