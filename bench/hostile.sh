#!/usr/bin/env bash
# Memory on hostile files (not a test): import three files built to exhaust memory and report
# each one's peak RSS and outcome. Target: every peak ≤ 150 MB, every file refused or
# quarantined with a clear message.
#
#   bench/hostile.sh
#
# 1. a gzip of 10 GiB of zeros after a FOCUS header (about 10 MB on disk);
# 2. a header and 1 GiB of zeros, gzip;
# 3. a header and one 256 MB line with no line break (plain CSV).
# Needs GNU time (/usr/bin/time) and gzip.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench-out/hostile
mkdir -p "$OUT"
cargo build --release --quiet
BIN=target/release/costledger
HEAD="BilledCost,BillingCurrency,BillingAccountId,BillingPeriodStart,BillingPeriodEnd,ChargePeriodStart,ChargePeriodEnd,ChargeCategory"

make_zeros_gz() { # file, bytes of zeros
  [ -f "$1" ] || { { echo "$HEAD"; head -c "$2" /dev/zero; } | gzip -1 > "$1"; }
}
make_zeros_gz "$OUT/zeros-10g.csv.gz" $((10 << 30))
make_zeros_gz "$OUT/zeros-1g.csv.gz" $((1 << 30))
[ -f "$OUT/one-line-256m.csv" ] || { echo "$HEAD"; head -c $((256 << 20)) /dev/zero | tr '\0' '7'; } > "$OUT/one-line-256m.csv"
ls -l "$OUT"

for f in zeros-10g.csv.gz zeros-1g.csv.gz one-line-256m.csv; do
  rm -f "$OUT"/h.db*
  set +e
  /usr/bin/time -f "%e %M" -o "$OUT/time.txt" \
    "$BIN" --database "sqlite://$OUT/h.db" import --format focus "$OUT/$f" > "$OUT/out.txt" 2> "$OUT/err.txt"
  code=$?
  set -e
  read -r secs kb < <(tail -n 1 "$OUT/time.txt")
  awk -v f="$f" -v s="$secs" -v k="$kb" -v c="$code" \
    'BEGIN { printf "%-22s exit %d  %7.2f s  peak RSS %6.1f MB\n", f, c, s, k / 1024 }'
  { grep -h -m1 -E "FAILED|error|quarantined" "$OUT/err.txt" "$OUT/out.txt" || true; } | cut -c1-220 | sed 's/^/    /'
done
