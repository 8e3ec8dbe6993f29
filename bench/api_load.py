#!/usr/bin/env python3
"""Load the read API on loopback: CLIENTS concurrent keep-alive clients request PATH for SECONDS;
a probe asks /healthz once a second meanwhile. Prints requests/s, p50/p90/p99/max latency,
the status codes seen, and the probe's worst latency (the daemon must stay healthy).

    bench/api_load.py PORT TOKEN [PATH] [CLIENTS] [SECONDS]

Standard library only (http.client, threads): a benchmark, not a test.
"""

import http.client
import statistics
import sys
import threading
import time
from collections import Counter

port = int(sys.argv[1])
token = sys.argv[2]
path = sys.argv[3] if len(sys.argv) > 3 else "/api/v1/costs?group_by=service&grain=month"
clients = int(sys.argv[4]) if len(sys.argv) > 4 else 50
seconds = float(sys.argv[5]) if len(sys.argv) > 5 else 10.0

lock = threading.Lock()
latencies = []
statuses = Counter()
probe = []
deadline = time.monotonic() + seconds


def client() -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Authorization": "Bearer " + token}
    mine, codes = [], Counter()
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        try:
            conn.request("GET", path, headers=headers)
            r = conn.getresponse()
            r.read()
            codes[r.status] += 1
            if r.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        except (OSError, http.client.HTTPException) as e:
            codes[type(e).__name__] += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        mine.append(time.monotonic() - t0)
    with lock:
        latencies.extend(mine)
        statuses.update(codes)


def prober() -> None:
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            c.request("GET", "/healthz")
            ok = c.getresponse().status == 200
        except OSError:
            ok = False
        probe.append((ok, time.monotonic() - t0))
        time.sleep(1)


threads = [threading.Thread(target=client) for _ in range(clients)] + [threading.Thread(target=prober)]
start = time.monotonic()
for t in threads:
    t.start()
for t in threads:
    t.join()
took = time.monotonic() - start

lat = sorted(latencies)


def pct(p: float) -> float:
    return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")


print(f"{path}: {clients} clients, {took:.1f} s, {len(lat)} requests, {len(lat) / took:.1f} req/s")
print(f"  latency ms: p50 {pct(0.50):.1f}  p90 {pct(0.90):.1f}  p99 {pct(0.99):.1f}  max {lat[-1] * 1000 if lat else 0:.1f}"
      f"  mean {statistics.mean(lat) * 1000 if lat else 0:.1f}")
print(f"  statuses: {dict(statuses)}")
healthy = all(ok for ok, _ in probe)
print(f"  /healthz during the load: {len(probe)} probes, all 200: {healthy}, worst {max((d for _, d in probe), default=0) * 1000:.1f} ms")
