#!/usr/bin/env bash
# Read API load benchmark (not a test): import ROWS synthetic FOCUS lines into SQLite, start
# `costledger serve` with a token on loopback, and load `/api/v1/costs` (month × service, and a
# resource-level top 10 read from the charges) with CLIENTS concurrent clients for SECONDS
# each (bench/api_load.py), probing /healthz meanwhile.
#
#   bench/api.sh [ROWS] [CLIENTS] [SECONDS]
#   Defaults: 1000000 lines, 50 clients, 10 s.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-1000000}
CLIENTS=${2:-50}
SECONDS_EACH=${3:-10}
OUT=bench-out
mkdir -p "$OUT"
cargo build --release --quiet
BIN=target/release/costledger
[ -f "$OUT/bills-$ROWS.csv" ] || $BIN sample --rows "$ROWS" --seed 1 --out "$OUT/bills-$ROWS.csv" > /dev/null
DB="sqlite://$OUT/apibench-$ROWS.db"
if [ ! -f "$OUT/apibench-$ROWS.db" ]; then
  $BIN --database "$DB" import --format focus "$OUT/bills-$ROWS.csv" > /dev/null
fi
PORT=19466
TOKEN=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
CFG="$OUT/apibench.yaml"
printf 'server: { bind: "127.0.0.1:%s", max_connections: 256 }\napi: { tokens: ["%s"] }\n' "$PORT" "$TOKEN" > "$CFG"
$BIN --database "$DB" --config "$CFG" serve 2> "$OUT/apibench-serve.log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" > /dev/null && break; sleep 0.1; done
echo "ledger: $ROWS lines (SQLite)"
python3 bench/api_load.py "$PORT" "$TOKEN" "/api/v1/costs?group_by=service&grain=month" "$CLIENTS" "$SECONDS_EACH"
python3 bench/api_load.py "$PORT" "$TOKEN" "/api/v1/costs?group_by=resource&top=10" "$CLIENTS" "$SECONDS_EACH"
echo "peak RSS of the server: $(awk '/VmHWM/ { printf "%.1f MB", $2 / 1024 }' "/proc/$SERVER/status")"
