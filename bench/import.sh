#!/usr/bin/env bash
# Import benchmark (not a test): generate FOCUS bills with `costledger sample`, time `import`
# into SQLite and into PostgreSQL, report lines/s and peak RSS; then import 3x the lines into
# SQLite to show memory stays flat.
#
#   bench/import.sh [ROWS] [POSTGRES_ADMIN_URL]
#   ROWS defaults to 1000000; the PostgreSQL URL defaults to postgres://postgres@127.0.0.1:5432/postgres
#   (a database costledger_bench is dropped and re-created there). Needs GNU time (/usr/bin/time).
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-1000000}
PG_ADMIN=${2:-postgres://postgres@127.0.0.1:5432/postgres}
BIG=$((ROWS * 3))
OUT=bench-out
mkdir -p "$OUT"
cargo build --release --quiet
BIN=target/release/costledger

measure() { # label, then the command
  local label=$1; shift
  local t="$OUT/time.txt"
  /usr/bin/time -f "%e %M" -o "$t" "$@" > "$OUT/last.log"
  read -r secs kb < "$t"
  local rows
  rows=$(grep -oE '[0-9]+ rows, [0-9]+ quarantined' "$OUT/last.log" | head -n 1 | cut -d' ' -f1)
  awk -v l="$label" -v s="$secs" -v k="$kb" -v r="$rows" \
    'BEGIN { printf "%-28s %10d lines %8.2f s %10.0f lines/s   peak RSS %6.1f MB\n", l, r, s, r / s, k / 1024 }'
}

echo "generating $ROWS and $BIG lines…"
[ -f "$OUT/bills-$ROWS.csv" ] || $BIN sample --rows "$ROWS" --seed 1 --out "$OUT/bills-$ROWS.csv" > /dev/null
[ -f "$OUT/bills-$BIG.csv" ] || $BIN sample --rows "$BIG" --seed 1 --out "$OUT/bills-$BIG.csv" > /dev/null
ls -l "$OUT"/bills-*.csv

rm -f "$OUT"/bench.db*
measure "sqlite $ROWS" $BIN --database "sqlite://$OUT/bench.db" import --format focus "$OUT/bills-$ROWS.csv"
measure "sqlite re-import (no-op)" $BIN --database "sqlite://$OUT/bench.db" import --format focus "$OUT/bills-$ROWS.csv" || true

if psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS costledger_bench" && psql "$PG_ADMIN" -qc "CREATE DATABASE costledger_bench"; then
  PG_URL="${PG_ADMIN%/*}/costledger_bench"
  # Loopback without TLS (the import itself), then over TLS (sslmode=prefer, the default),
  # which on loopback costs the TLS record layer of sqlx/rustls.
  measure "postgres $ROWS (COPY)" $BIN --database "$PG_URL?sslmode=disable" import --format focus "$OUT/bills-$ROWS.csv"
  psql "$PG_ADMIN" -qc "DROP DATABASE costledger_bench" && psql "$PG_ADMIN" -qc "CREATE DATABASE costledger_bench"
  measure "postgres $ROWS (COPY, TLS)" $BIN --database "$PG_URL" import --format focus "$OUT/bills-$ROWS.csv"
else
  echo "PostgreSQL not reachable at $PG_ADMIN: skipped"
fi

rm -f "$OUT"/bench.db*
measure "sqlite $BIG (memory flat?)" $BIN --database "sqlite://$OUT/bench.db" import --format focus "$OUT/bills-$BIG.csv"
