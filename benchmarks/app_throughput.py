"""Demo-app throughput: through pgpool versus through the write endpoint directly.

Runs against a running local cluster (``pgras up``), located by its work dir and
base port. For each app (app-pgpool, app-write) it drives ``GET /api/puppies``
and then ``POST /api/puppies`` for a bounded duration with N keep-alive client
threads on loopback, and prints requests/s, p50/p99 latency, errors, and the
pgpool/write ratios. GETs run before any POST so both apps list the same rows.
POSTed rows are named ``bench-<run>-<n>`` and stay in the table.

    python benchmarks/app_throughput.py --work-dir ~/.pgras --base-port 25000 --duration 10
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from postgres_ras.local.layout import DEFAULT_BASE_PORT, Layout


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    elapsed: float = 0.0


def _worker(host: str, port: int, method: str, stop_at: float, tag: str, out: Result) -> None:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    lat: list[float] = []
    errors = 0
    n = 0
    while time.monotonic() < stop_at:
        n += 1
        body = json.dumps({"name": f"bench-{tag}-{n}", "breed": "bench", "age": 1, "sex": "f"})
        start = time.perf_counter()
        try:
            if method == "GET":
                conn.request("GET", "/api/puppies")
            else:
                conn.request("POST", "/api/puppies", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                errors += 1
                continue
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=10)
            time.sleep(0.05)
            continue
        lat.append(time.perf_counter() - start)
    conn.close()
    out.latencies.extend(lat)  # list.extend is atomic under the GIL
    out.errors += errors


def run(host: str, port: int, method: str, duration: float, clients: int, tag: str) -> Result:
    result = Result()
    stop_at = time.monotonic() + duration
    threads = [
        threading.Thread(
            target=_worker, args=(host, port, method, stop_at, f"{tag}-{i}", result), daemon=True
        )
        for i in range(clients)
    ]
    begin = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration + 30)
    result.elapsed = time.monotonic() - begin
    return result


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path(".pgras"))
    parser.add_argument("--base-port", type=int, default=DEFAULT_BASE_PORT)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    if not 0 < args.duration <= 300:
        parser.error("--duration must be in (0, 300]")
    layout = Layout(work_dir=args.work_dir, base_port=args.base_port)
    targets = {"pgpool": layout.app_pgpool, "write": layout.app_write}
    tag = uuid.uuid4().hex[:6]
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for method in ("GET", "POST"):
        for name, port in targets.items():
            res = run(layout.host, port, method, args.duration, args.clients, f"{tag}-{name}")
            ok = len(res.latencies)
            rows[(name, method)] = {
                "requests": ok,
                "errors": res.errors,
                "rps": ok / res.elapsed if res.elapsed else 0.0,
                "p50_ms": percentile(res.latencies, 50) * 1000,
                "p99_ms": percentile(res.latencies, 99) * 1000,
            }
    print(f"app throughput, {args.clients} clients, {args.duration:.0f}s each, {layout.host}")
    print(f"{'app':8} {'op':5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'ok':>7} {'errors':>6}")
    for (name, method), r in rows.items():
        print(
            f"{name:8} {method:5} {r['rps']:9.1f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f}"
            f" {int(r['requests']):7d} {int(r['errors']):6d}"
        )
    for method in ("GET", "POST"):
        p, w = rows[("pgpool", method)], rows[("write", method)]
        if w["rps"] and w["p50_ms"]:
            print(
                f"pgpool/write {method}: throughput x{p['rps'] / w['rps']:.2f},"
                f" p50 x{p['p50_ms'] / w['p50_ms']:.2f}, p99 x{p['p99_ms'] / w['p99_ms']:.2f}"
            )
    if args.json:
        print(json.dumps({f"{n}_{m}": r for (n, m), r in rows.items()}, indent=2))
    failed = sum(r["requests"] == 0 for r in rows.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
