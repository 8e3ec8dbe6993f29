#!/usr/bin/env python3
"""Generate a legacy AWS CUR month laid out as AWS delivers it (for bench/aws_cur.sh).

    gen_cur.py OUT_DIR ROWS

Writes OUT_DIR/cur/bench-cur/20241001-20241101/<assembly>/bench-cur-1.csv (195 columns,
about 830 bytes a line, every line item type, E-notation amounts, resource tags) and the
month-level manifest naming that assembly. Deterministic; prints the exact UnblendedCost total
(computed with decimal.Decimal) so the import can be checked.
"""
import json
import os
import random
import sys
from decimal import Decimal

out, rows = sys.argv[1], int(sys.argv[2])
rng = random.Random(1)
assembly = "7f1c2d3e-0000-4000-8000-bench%07d" % rows
month = os.path.join(out, "cur", "bench-cur", "20241001-20241101")
os.makedirs(os.path.join(month, assembly), exist_ok=True)

core = [
    "identity/LineItemId", "identity/TimeInterval", "bill/InvoiceId", "bill/InvoicingEntity",
    "bill/BillingEntity", "bill/BillType", "bill/PayerAccountId", "bill/BillingPeriodStartDate",
    "bill/BillingPeriodEndDate", "lineItem/UsageAccountId", "lineItem/LineItemType",
    "lineItem/UsageStartDate", "lineItem/UsageEndDate", "lineItem/ProductCode", "lineItem/UsageType",
    "lineItem/Operation", "lineItem/AvailabilityZone", "lineItem/ResourceId", "lineItem/UsageAmount",
    "lineItem/CurrencyCode", "lineItem/UnblendedRate", "lineItem/UnblendedCost", "lineItem/BlendedCost",
    "lineItem/LineItemDescription", "product/ProductName", "product/region", "product/regionCode",
    "product/sku", "pricing/publicOnDemandCost", "pricing/unit", "reservation/EffectiveCost",
    "savingsPlan/SavingsPlanEffectiveCost", "resourceTags/user:team", "resourceTags/user:env",
    "resourceTags/user:Cost Center",
]
filler = ["product/attr%03d" % i for i in range(195 - len(core))]
header = core + filler
assert len(header) == 195

kinds = ["Usage"] * 14 + ["DiscountedUsage", "SavingsPlanCoveredUsage", "SavingsPlanNegation", "Tax", "Credit", "RIFee"]
services = [("AmazonEC2", "Amazon Elastic Compute Cloud"), ("AmazonS3", "Amazon Simple Storage Service"),
            ("AmazonRDS", "Amazon Relational Database Service"), ("AWSLambda", "AWS Lambda")]
regions = ["us-east-1", "eu-central-1", "ap-southeast-2"]
teams = ["payments", "search", "platform", "data", "", "Payments"]
filler_values = ["", "", "", "", "", "", "Yes", "No", "Linux", "GP"]

total = Decimal(0)
path = os.path.join(month, assembly, "bench-cur-1.csv")
with open(path, "w", newline="") as f:
    f.write(",".join('"%s"' % h if " " in h else h for h in header) + "\n")
    buf = []
    for i in range(rows):
        kind = kinds[i % len(kinds)]
        code, name = services[i % len(services)]
        region = regions[i % len(regions)]
        day = 1 + i % 31
        hour = i % 24
        start = "2024-10-%02dT%02d:00:00Z" % (day, hour)
        end = "2024-10-%02dT%02d:59:59Z" % (day, hour)
        cents = rng.randrange(1, 10_000_000)
        cost = Decimal(cents).scaleb(-10)
        if kind in ("Credit", "SavingsPlanNegation"):
            cost = -cost
        text = "%s" % cost if i % 7 else "%.9E" % cost
        total += Decimal(text)
        team = teams[i % len(teams)]
        vals = [
            "lid%012d" % i, start + "/" + end, "", "\"Amazon Web Services, Inc.\"", "AWS", "Anniversary",
            "111122223333", "2024-10-01T00:00:00Z", "2024-11-01T00:00:00Z", "4444555566%02d" % (i % 40),
            kind, start, end, code, "USE1-BoxUsage:m5.large", "RunInstances", region + "a",
            "arn:aws:ec2:%s:444455556666:instance/i-%017x" % (region, i % 50000), "1.0000000000", "USD",
            "0.0960000000", text, text, "\"$0.096 per On Demand Linux m5.large Instance Hour\"", name,
            region, region, "SKU%08d" % (i % 5000), text, "Hrs",
            text if kind == "DiscountedUsage" else "", text if kind == "SavingsPlanCoveredUsage" else "",
            team, "prod" if i % 3 else "dev", "CC-%d" % (i % 9),
        ]
        vals += [filler_values[(i + j) % len(filler_values)] for j in range(len(filler))]
        buf.append(",".join(vals))
        if len(buf) >= 10_000:
            f.write("\n".join(buf) + "\n")
            buf = []
    if buf:
        f.write("\n".join(buf) + "\n")

manifest = {
    "assemblyId": assembly, "account": "111122223333", "charset": "UTF-8", "compression": "GZIP",
    "contentType": "text/csv", "reportName": "bench-cur",
    "billingPeriod": {"start": "20241001T000000.000Z", "end": "20241101T000000.000Z"},
    "bucket": "acme-cur", "reportKeys": ["cur/bench-cur/20241001-20241101/%s/bench-cur-1.csv" % assembly],
}
with open(os.path.join(month, "bench-cur-Manifest.json"), "w") as f:
    json.dump(manifest, f)
print("%d lines, %d bytes, UnblendedCost USD %s" % (rows, os.path.getsize(path), format(total.normalize(), "f")))
