//! Legacy CUR rows shared by the AWS tests: AWS's documented sample rows (every line item type).

use std::io::Write;
use std::path::Path;

pub const HEADER: &str = "identity/LineItemId,identity/TimeInterval,bill/InvoiceId,bill/BillType,bill/PayerAccountId,bill/BillingPeriodStartDate,bill/BillingPeriodEndDate,lineItem/UsageAccountId,lineItem/LineItemType,lineItem/UsageStartDate,lineItem/UsageEndDate,lineItem/ProductCode,lineItem/UsageType,lineItem/Operation,lineItem/ResourceId,lineItem/UsageAmount,lineItem/CurrencyCode,lineItem/UnblendedRate,lineItem/UnblendedCost,lineItem/BlendedCost,lineItem/LineItemDescription,reservation/EffectiveCost,savingsPlan/SavingsPlanEffectiveCost,reservation/UnusedAmortizedUpfrontFeeForBillingPeriod,reservation/UnusedRecurringFee,resourceTags/user:team,resourceTags/user:Cost Center";

/// AWS's documented legacy CUR sample rows (every line item type), plus the RI unused-fee columns.
pub fn rows(invoice: &str) -> String {
    [
        "k1,2024-03-05T10:00:00Z/2024-03-05T11:00:00Z,INV,Anniversary,111122223333,2024-03-01T00:00:00.000Z,2024-04-01T00:00:00.000Z,444455556666,Usage,2024-03-05T10:00:00.000Z,2024-03-05T11:00:00.000Z,AmazonEC2,USE1-BoxUsage:m5.large,RunInstances,i-0abc1234def567890,1.0000000000,USD,0.0960000000,0.0960000000,0.0960000000,\"$0.096 per On Demand Linux m5.large Instance Hour\",,,,,payments,CC-1001",
        "k2,2024-03-05T10:00:00Z/2024-03-05T11:00:00Z,INV,Anniversary,111122223333,2024-03-01T00:00:00.000Z,2024-04-01T00:00:00.000Z,444455556666,DiscountedUsage,2024-03-05T10:00:00.000Z,2024-03-05T11:00:00.000Z,AmazonEC2,USE1-BoxUsage:m5.large,RunInstances,i-0abc1234def567891,1.0000000000,USD,0.0000000000,0.0000000000,0.0589000000,\"Linux/UNIX (Amazon VPC), m5.large reserved instance applied\",0.0589041096,,,,payments,CC-1001",
        "k3,2024-03-05T10:00:00Z/2024-03-05T11:00:00Z,INV,Anniversary,111122223333,2024-03-01T00:00:00.000Z,2024-04-01T00:00:00.000Z,444455556666,SavingsPlanCoveredUsage,2024-03-05T10:00:00.000Z,2024-03-05T11:00:00.000Z,AmazonEC2,USE1-BoxUsage:c6g.xlarge,RunInstances,i-0abc1234def567892,1.0000000000,USD,0.1360000000,0.1360000000,0.1360000000,\"Savings Plan covered usage\",,0.0884000000,,,search,",
        "k4,2024-03-05T10:00:00Z/2024-03-05T11:00:00Z,INV,Anniversary,111122223333,2024-03-01T00:00:00.000Z,2024-04-01T00:00:00.000Z,444455556666,SavingsPlanNegation,2024-03-05T10:00:00.000Z,2024-03-05T11:00:00.000Z,ComputeSavingsPlans,USE1-BoxUsage:c6g.xlarge,RunInstances,i-0abc1234def567892,1.0000000000,USD,-0.1360000000,-0.1360000000,-0.1360000000,\"SavingsPlanNegation used by AccountId : 444455556666\",,,,,search,",
        "k5,2024-03-05T00:00:00Z/2024-03-06T00:00:00Z,INV,Anniversary,111122223333,2024-03-01T00:00:00.000Z,2024-04-01T00:00:00.000Z,444455556666,Usage,2024-03-05T00:00:00.000Z,2024-03-06T00:00:00.000Z,AmazonS3,USE1-Requests-Tier2,GetObject,my-bucket,12.0000000000,USD,0.0000004000,4.8E-6,4.8E-6,\"$0.0004 per 1,000 GET and all other requests\",,,,,,",
        "k6,2024-03-01T00:00:00Z/2024-04-01T00:00:00Z,INV,Anniversary,111122223333,2024-03-01T00:00:00.000Z,2024-04-01T00:00:00.000Z,444455556666,RIFee,2024-03-01T00:00:00.000Z,2024-04-01T00:00:00.000Z,AmazonEC2,HeavyUsage:m5.large,RunInstances,,744.0000000000,USD,0.0589041096,43.8246575424,43.8246575424,\"USD 0.0589041096 hourly fee\",,,1.25,2.5,,",
        "k7,2024-03-01T00:00:00Z/2024-04-01T00:00:00Z,INV,Anniversary,111122223333,2024-03-01T00:00:00.000Z,2024-04-01T00:00:00.000Z,444455556666,Credit,2024-03-01T00:00:00.000Z,2024-04-01T00:00:00.000Z,AmazonEC2,,,,0.0000000000,USD,,-25.0000000000,-25.0000000000,\"AWS Activate Credits\",,,,,,",
        "k8,2024-03-01T00:00:00Z/2024-04-01T00:00:00Z,INV,Anniversary,111122223333,2024-03-01T00:00:00.000Z,2024-04-01T00:00:00.000Z,444455556666,Tax,2024-03-01T00:00:00.000Z,2024-04-01T00:00:00.000Z,AmazonEC2,,,,1.0,USD,,3.9180000000,3.9180000000,Tax for product code AmazonEC2,,,,,,",
        "k9,2024-02-01T00:00:00Z/2024-03-01T00:00:00Z,INV,Refund,111122223333,2024-03-01T00:00:00.000Z,2024-04-01T00:00:00.000Z,444455556666,Refund,2024-02-01T00:00:00.000Z,2024-03-01T00:00:00.000Z,AmazonRDS,,,,0.0000000000,USD,,-7.5000000000,-7.5000000000,\"Refund for February RDS outage\",,,,,,",
    ]
    .iter()
    .map(|r| format!("{}\n", r.replace(",INV,", &format!(",{invoice},"))))
    .collect()
}

pub fn gz(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
    let mut e =
        flate2::write::GzEncoder::new(std::fs::File::create(path).expect("create"), flate2::Compression::fast());
    e.write_all(text.as_bytes()).expect("gz");
    e.finish().expect("gz");
}

/// Gzip bytes of `text` (an S3 object body).
pub fn gz_bytes(text: &str) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(text.as_bytes()).expect("gz");
    e.finish().expect("gz")
}
