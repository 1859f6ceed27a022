#!/usr/bin/env python3
"""Failover, switchover and rejoin benchmark on a real local cluster. Prints figures; not a test.

For each run: a writer inserts increasing ids through a libpq multi-host
connection (target_session_attrs=read-write) while the primary is SIGKILLed
(postgres, agent and controller together) or switched over. Measured:
- write outage: the longest gap between acknowledged writes around the fault;
- lost writes: acknowledged ids missing on the new primary afterwards;
- rejoin: from restarting the killed node to its walreceiver streaming on the
  leader's timeline.

Reference figures (Patroni 4.1.5 with its defaults, same PostgreSQL, Consul,
writer and probes, measured on this machine by benchmarks/patroni_reference.py)
are printed beside ours as ratios.

    python benchmarks/failover.py --runs 5
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from postgres_ras.local.cluster import LocalCluster
from postgres_ras.local.layout import Layout
from postgres_ras.local.workload import Writer, lost_writes, multi_host_dsn

# Patroni 4.1.5 with its defaults on this machine, same PostgreSQL and Consul, same writer
# and probes: (min, median, max) seconds from `python benchmarks/patroni_reference.py
# --runs 5`, which also runs this script's measurements side by side.
REFERENCE = {
    "failover outage": (25.04, 26.09, 27.69),
    "switchover outage": (2.06, 2.08, 2.10),
    "rejoin": (12.55, 12.75, 13.59),
}


def node_dsn(cluster: LocalCluster, name: str) -> str:
    user, password = cluster.superuser
    port = cluster.layout.node(int(name.removeprefix("node"))).postgres
    return (
        f"host=127.0.0.1 port={port} user={user} password={password} "
        "dbname=postgres connect_timeout=1"
    )


PRIMARY_TLI_SQL = (
    "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"
)


def primary_timeline(cluster: LocalCluster, name: str) -> int:
    with psycopg.connect(node_dsn(cluster, name), autocommit=True) as conn:
        row = conn.execute(PRIMARY_TLI_SQL).fetchone()
    assert row is not None
    return int(row[0])


def streaming(cluster: LocalCluster, name: str, timeline: int) -> bool:
    """Streaming on the primary's timeline: a walreceiver shows 'streaming' for a moment
    even when the primary is about to refuse it (diverged history), so status alone lies."""
    try:
        with psycopg.connect(node_dsn(cluster, name), autocommit=True) as conn:
            row = conn.execute("SELECT status, received_tli FROM pg_stat_wal_receiver").fetchone()
            return row is not None and row[0] == "streaming" and row[1] == timeline
    except psycopg.Error:
        return False


def wait(what: str, check: Callable[[], bool], timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.02)
    raise SystemExit(f"benchmark aborted: no {what} within {timeout:.0f}s")


def writer_dsn(cluster: LocalCluster) -> str:
    user, password = cluster.superuser
    return multi_host_dsn([("127.0.0.1", p.postgres) for p in cluster.node_ports()], user, password)


def failover_run(cluster: LocalCluster) -> dict[str, float]:
    old = cluster.leader()
    assert old is not None
    with Writer(writer_dsn(cluster)) as writer:
        time.sleep(1.0)
        t_kill = time.monotonic()
        cluster.kill(old.name, signal.SIGKILL)
        wait(
            "new leader",
            lambda: (
                (r := cluster.leader()) is not None and r.name != old.name and r.role == "primary"
            ),
            60,
        )
        wait(
            "writes after failover", lambda: any(s + g >= t_kill for s, g in writer.result.gaps), 60
        )
        time.sleep(0.3)
    new = cluster.leader()
    assert new is not None
    lost = len(lost_writes(node_dsn(cluster, new.name), writer.result.acked))
    timeline = primary_timeline(cluster, new.name)
    cluster.up(access=False, wait=0)
    rejoin = wait("rejoin", lambda: streaming(cluster, old.name, timeline), 60)
    cluster.wait_healthy(len(cluster.node_names()), 60)
    return {"outage": writer.result.outage_after(t_kill), "lost": lost, "rejoin": rejoin}


def switchover_run(cluster: LocalCluster) -> dict[str, float]:
    with Writer(writer_dsn(cluster)) as writer:
        time.sleep(1.0)
        t0 = time.monotonic()
        _, new = cluster.switchover(None)
        time.sleep(1.0)
    lost = len(lost_writes(node_dsn(cluster, new), writer.result.acked))
    cluster.wait_healthy(len(cluster.node_names()), 60)
    return {"outage": writer.result.outage_after(t0), "lost": lost}


def summary(name: str, values: list[float], unit: str = "s") -> str:
    lo, med, hi = min(values), statistics.median(values), max(values)
    line = f"{name:<20} min {lo:6.2f}{unit}  median {med:6.2f}{unit}  max {hi:6.2f}{unit}"
    ref = REFERENCE.get(name)
    if ref:
        line += (
            f"   | Patroni 4.1.5 median {ref[1]:.2f}s (range {ref[0]}-{ref[2]}): "
            f"ratio {med / ref[1]:.2f}x"
        )
    return line


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--base-port", type=int, default=29500)
    ap.add_argument("--json", action="store_true", help="print raw figures as JSON too")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pgras-bench-", dir="/tmp"))
    work.chmod(0o755)
    cluster = LocalCluster(Layout(work, args.base_port))
    failovers: list[dict[str, float]] = []
    switchovers: list[dict[str, float]] = []
    try:
        t = time.monotonic()
        cluster.up(nodes=args.nodes, access=False, wait=120)
        print(f"bootstrap: {args.nodes} nodes healthy in {time.monotonic() - t:.2f}s", flush=True)
        for i in range(args.runs):
            failovers.append(failover_run(cluster))
            print(f"failover run {i + 1}: {failovers[-1]}", flush=True)
        for i in range(args.runs):
            switchovers.append(switchover_run(cluster))
            print(f"switchover run {i + 1}: {switchovers[-1]}", flush=True)
    finally:
        cluster.down()
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(
        f"postgres-ras, {args.nodes} nodes, {args.runs} runs each, default settings "
        "(ttl 4s, retry_timeout 3s, loop_wait 1s), async replication"
    )
    print(summary("failover outage", [r["outage"] for r in failovers]))
    print(summary("rejoin", [r["rejoin"] for r in failovers]))
    print(summary("switchover outage", [r["outage"] for r in switchovers]))
    print(
        f"{'lost writes':<20} failover (async) {sum(int(r['lost']) for r in failovers)} total, "
        f"switchover {sum(int(r['lost']) for r in switchovers)} total"
    )
    if args.json:
        print(json.dumps({"failover": failovers, "switchover": switchovers}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
