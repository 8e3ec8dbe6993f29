#!/usr/bin/env bash
# Render a weekly report's HTML headless with Debian's Chromium to a PNG, to see that it
# displays. Usage: scripts/render-report.sh [REPORT.html] [OUT.png]
# Without arguments it runs the demo and renders its report.
set -euo pipefail
cd "$(dirname "$0")/.."
html=${1:-}
png=${2:-report.png}
if [ -z "$html" ]; then
  cargo run --release --quiet -- demo --dir costledger-demo >/dev/null
  html=$(ls costledger-demo/reports/weekly-*.html | sort | tail -n 1)
fi
chromium=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$chromium" ]; then
  echo "Chromium is not installed: apt-get install -y chromium" >&2
  exit 2
fi
"$chromium" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1200,2400 \
  --screenshot="$png" "file://$(realpath "$html")" 2>/dev/null
echo "rendered $html -> $png"
