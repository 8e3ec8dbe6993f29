#!/usr/bin/env bash
# AWS legacy CUR import benchmark (not a test): generate a 195-column CUR month laid out as AWS
# delivers it (bench/gen_cur.py), time `import --format aws-cur` of the directory into SQLite
# and into PostgreSQL, report lines/s and peak RSS, and check the imported total against the
# generator's exact total.
#
#   bench/aws_cur.sh [ROWS] [POSTGRES_ADMIN_URL]
#   ROWS defaults to 1000000 (~830 MB); the PostgreSQL URL defaults to
#   postgres://postgres@127.0.0.1:5432/postgres (a database costledger_bench is dropped and
#   re-created there). Needs GNU time (/usr/bin/time) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-1000000}
PG_ADMIN=${2:-postgres://postgres@127.0.0.1:5432/postgres}
OUT=bench-out/cur-$ROWS
mkdir -p "$OUT"
cargo build --release --quiet
BIN=target/release/costledger

if [ ! -f "$OUT/expected.txt" ]; then
  echo "generating $ROWS CUR lines…"
  python3 bench/gen_cur.py "$OUT" "$ROWS" > "$OUT/expected.txt"
fi
cat "$OUT/expected.txt"
expected=$(grep -oE 'USD [-0-9.E]+' "$OUT/expected.txt" | cut -d' ' -f2)

measure() { # label, then the command
  local label=$1; shift
  local t="$OUT/time.txt"
  /usr/bin/time -f "%e %M" -o "$t" "$@" > "$OUT/last.log"
  read -r secs kb < "$t"
  local rows
  rows=$(grep -oE '[0-9]+ rows, [0-9]+ quarantined' "$OUT/last.log" | head -n 1 | cut -d' ' -f1)
  awk -v l="$label" -v s="$secs" -v k="$kb" -v r="$rows" \
    'BEGIN { printf "%-28s %10d lines %8.2f s %10.0f lines/s   peak RSS %6.1f MB\n", l, r, s, r / s, k / 1024 }'
  if ! grep -q "BilledCost USD $expected" "$OUT/last.log"; then
    echo "  total differs from the generator's USD $expected:"; grep -E 'BilledCost' "$OUT/last.log" | head -n 3
  fi
}

rm -f "$OUT"/bench.db*
measure "sqlite aws-cur $ROWS" $BIN --database "sqlite://$OUT/bench.db" import --format aws-cur --source cur "$OUT"
if psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS costledger_bench" && psql "$PG_ADMIN" -qc "CREATE DATABASE costledger_bench"; then
  PG_URL="${PG_ADMIN%/*}/costledger_bench"
  measure "postgres aws-cur $ROWS" $BIN --database "$PG_URL" import --format aws-cur --source cur "$OUT"
else
  echo "PostgreSQL not reachable at $PG_ADMIN: skipped"
fi
