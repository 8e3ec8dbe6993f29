#!/usr/bin/env bash
# Query benchmark (not a test): import ROWS synthetic FOCUS lines (`costledger sample`) into
# SQLite and PostgreSQL, then time `costledger query` — answered from the daily rollups (month ×
# service, day × tag:team) and from the charges (a resource-level top 10, and month × service
# forced onto the charges by a filter on the resource; owner: every line allocated) and from the
# pricing rollups (SKU × commitment status, `explain`, `commitments`) — median of RUNS runs, with
# peak RSS; then one `export csv`, one `reconcile`, one with nothing to recompute and one
# reconciled `report weekly` (written under a temporary directory). On PostgreSQL, psql's own
# `\copy` of the charges (to /dev/null, as the export's output is) and the export's time over it.
#
#   bench/query.sh [ROWS] [RUNS] [POSTGRES_ADMIN_URL]
#   Defaults: 1000000 lines, 5 runs, postgres://postgres@127.0.0.1:5432/postgres (a database
#   costledger_qbench is dropped and re-created there). Needs GNU time (/usr/bin/time).
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-1000000}
RUNS=${2:-5}
PG_ADMIN=${3:-postgres://postgres@127.0.0.1:5432/postgres}
OUT=bench-out
mkdir -p "$OUT"
cargo build --release --quiet
BIN=target/release/costledger
[ -f "$OUT/bills-$ROWS.csv" ] || $BIN sample --rows "$ROWS" --seed 1 --out "$OUT/bills-$ROWS.csv" > /dev/null

import() { # label, url
  /usr/bin/time -f "%e %M" -o "$OUT/time.txt" $BIN --database "$2" import --format focus "$OUT/bills-$ROWS.csv" > /dev/null
  read -r secs kb < "$OUT/time.txt"
  awk -v l="$1" -v s="$secs" -v k="$kb" -v r="$ROWS" \
    'BEGIN { printf "%-44s %8.2f s %10.0f lines/s   peak RSS %6.1f MB\n", l, s, r / s, k / 1024 }'
}

q() { # label, url, query arguments…
  local label=$1 url=$2; shift 2
  local times=() kb=0 from=""
  for _ in $(seq "$RUNS"); do
    /usr/bin/time -f "%e %M" -o "$OUT/time.txt" $BIN --database "$url" query --format csv "$@" > "$OUT/q.csv" 2> "$OUT/q.err"
    read -r secs k < "$OUT/time.txt"
    times+=("$secs"); [ "$k" -gt "$kb" ] && kb=$k
    from=$(grep -oE '\((daily rollups|charges)\)' "$OUT/q.err" | tr -d '()')
  done
  median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
  awk -v l="$label" -v m="$median" -v k="$kb" -v f="$from" -v r="$(($(wc -l < "$OUT/q.csv") - 1))" \
    'BEGIN { printf "  %-42s %8.3f s (median)  %5d rows  from %-13s peak RSS %6.1f MB\n", l, m, r, f, k / 1024 }'
}

t() { # label, url, command…  (median of RUNS runs of any read command)
  local label=$1 url=$2; shift 2
  local times=() kb=0
  for _ in $(seq "$RUNS"); do
    /usr/bin/time -f "%e %M" -o "$OUT/time.txt" $BIN --database "$url" "$@" > /dev/null 2> "$OUT/t.err" || true
    read -r secs k < <(tail -1 "$OUT/time.txt")
    times+=("$secs"); [ "$k" -gt "$kb" ] && kb=$k
  done
  median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
  awk -v l="$label" -v m="$median" -v k="$kb" \
    'BEGIN { printf "  %-42s %8.3f s (median)  peak RSS %6.1f MB\n", l, m, k / 1024 }'
}

once() { # label, url, command…  (one run: time, lines/s over ROWS, peak RSS)
  local label=$1 url=$2; shift 2
  # `reconcile` exits 1 when it has findings (the synthetic bills have some): timed all the same.
  /usr/bin/time -f "%e %M" -o "$OUT/time.txt" $BIN --database "$url" "$@" > /dev/null 2> "$OUT/once.err" || true
  read -r secs kb < <(tail -1 "$OUT/time.txt")
  LAST_SECS=$secs
  awk -v l="$label" -v s="$secs" -v k="$kb" -v r="$ROWS" \
    'BEGIN { printf "  %-42s %8.2f s %10.0f lines/s   peak RSS %6.1f MB\n", l, s, r / s, k / 1024 }'
}

copy_reference() { # PostgreSQL url: psql's own \copy of the charges, the export target's yardstick
  /usr/bin/time -f "%e" -o "$OUT/time.txt" psql "$1" -qc '\copy (SELECT * FROM charges) TO STDOUT CSV' > /dev/null
  read -r secs < <(tail -1 "$OUT/time.txt")
  awk -v s="$secs" -v e="$EXPORT_SECS" -v r="$ROWS" \
    'BEGIN { printf "  %-42s %8.2f s %10.0f lines/s   export csv / \\copy = %.2f\n", "psql \\copy (SELECT * FROM charges)", s, r / s, e / s }'
}

queries() { # url
  q "month x service" "$1" --group-by service --grain month
  q "day x tag:team" "$1" --group-by tag:team --grain day
  q "resource, top 10 (charges)" "$1" --group-by resource --top 10
  q "month x service, forced onto the charges" "$1" --group-by service --grain month --where 'resource!=no-such'
  q "owner, top 10 (charges, allocated)" "$1" --group-by owner --top 10
  q "sku x commitment_status by week (pricing)" "$1" --group-by sku,commitment_status --grain week
  t "explain week on week (pricing rollups)" "$1" explain --from 2026-W42 --to 2026-W43
  t "commitments of a month (pricing rollups)" "$1" commitments --from 2026-10 --to 2026-10
  once "export csv (all lines)" "$1" export csv
  EXPORT_SECS=$LAST_SECS
  once "reconcile" "$1" reconcile
  once "reconcile, nothing to recompute" "$1" reconcile
  once "report weekly, reconciled" "$1" report weekly --out "$OUT/reports"
}

rm -f "$OUT"/qbench.db*
import "sqlite import $ROWS (with rollups)" "sqlite://$OUT/qbench.db"
queries "sqlite://$OUT/qbench.db"
if psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS costledger_qbench" && psql "$PG_ADMIN" -qc "CREATE DATABASE costledger_qbench"; then
  PG_URL="${PG_ADMIN%/*}/costledger_qbench?sslmode=disable"
  import "postgres import $ROWS (with rollups)" "$PG_URL"
  queries "$PG_URL"
  copy_reference "$PG_URL"
else
  echo "PostgreSQL not reachable at $PG_ADMIN: skipped"
fi
