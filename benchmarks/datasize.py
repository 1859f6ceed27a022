#!/usr/bin/env python3
"""Rejoin and replica bootstrap at a real data size, postgres-ras versus Patroni.

For each implementation: start 3 members, load ``--size-mb`` of pgbench data
(server-side generation, replicated), wait until every replica has replayed
it, then ``--runs`` times:

- an unplanned failover under the single writer (measure.failover_run): the
  killed primary's rejoin is a pg_rewind of a diverged 1 GB cluster;
- a re-clone: a replica is SIGKILLed, its data directory deleted and the
  member restarted; the time from the restart until it streams on the
  primary's timeline is the replica bootstrap (pg_basebackup of the whole
  data set, by the implementation's own code path).

Prints both side by side with the ratio ours/Patroni and writes a results
file per implementation (``datasize-<slug>-<time>.json``). Everything started
is stopped by PID at the end, also on failure.

    python benchmarks/datasize.py --size-mb 1000 --runs 3
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Protocol

import psycopg
from clusters import BenchmarkError, ClusterUnderTest, wait
from measure import HEALTHY_TIMEOUT, RejoinProbe, Run, Scenario, failover_run, primary_timeline
from patroni_cluster import PatroniCluster
from patroni_install import DEFAULT_VENV
from pgras_cluster import PgrasCluster
from results import RESULTS_DIR, Results
from throughput import Pgbench, pgbench_init

MB_PER_SCALE = 15  # pgbench: one scale unit is 100,000 accounts, ~15 MB with its index
RECLONE_TIMEOUT = 600.0
CATCH_UP_TIMEOUT = 300.0
FIGURES = (("failover", "outage"), ("failover", "rejoin"), ("reclone", "reclone"))


class WithDataDir(ClusterUnderTest, Protocol):
    def data_dir(self, name: str) -> Path: ...


def _one(dsn: str, sql: str) -> object:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(sql).fetchone()
    return row[0] if row else None


def caught_up(cluster: ClusterUnderTest, leader: str) -> bool:
    target = _one(cluster.node_dsn(leader), "SELECT pg_current_wal_lsn()")
    for name in cluster.members():
        if name == leader:
            continue
        try:
            lag = _one(
                cluster.node_dsn(name),
                f"SELECT pg_wal_lsn_diff('{target}', pg_last_wal_replay_lsn())",
            )
        except psycopg.Error:
            return False
        if lag is None or float(str(lag)) > 0:
            return False
    return True


def reclone_run(cluster: WithDataDir) -> Run:
    leader = cluster.leader()
    if leader is None:
        raise BenchmarkError(f"{cluster.name}: no leader before the re-clone")
    victim = next(m for m in cluster.members() if m != leader)
    cluster.kill(victim)
    time.sleep(0.5)  # the killed processes release the directory
    shutil.rmtree(cluster.data_dir(victim))
    probe = RejoinProbe(cluster.node_dsn(victim), primary_timeline(cluster.node_dsn(leader)))
    cluster.restart(victim)
    probe.start = time.monotonic()
    seconds = wait(f"{victim} re-cloned and streaming", probe, RECLONE_TIMEOUT, step=0.1)
    cluster.wait_healthy(HEALTHY_TIMEOUT)
    return {"reclone": seconds}


def measure(cluster: WithDataDir, scale: int, runs: int) -> Results:
    out: dict[str, list[Run]] = {"failover": [], "reclone": []}
    scenario = Scenario(nodes=3)
    workload: dict[str, object] = {"pgbench_scale": scale}
    try:
        cluster.start(3)
        t = time.monotonic()
        pgbench_init(cluster.writer_dsn(), Pgbench(scale=scale))
        leader = cluster.leader()
        if leader is None:
            raise BenchmarkError(f"{cluster.name}: no leader after loading")
        size = _one(cluster.node_dsn(leader), "SELECT pg_database_size('postgres')")
        workload["database_mb"] = round(int(str(size)) / 2**20)
        wait("replicas caught up", lambda: caught_up(cluster, leader), CATCH_UP_TIMEOUT, 0.5)
        print(
            f"{cluster.name}: loaded {workload['database_mb']} MB and replicated in "
            f"{time.monotonic() - t:.0f}s",
            flush=True,
        )
        for i in range(runs):
            out["failover"].append(failover_run(cluster, scenario))
            out["reclone"].append(reclone_run(cluster))
            print(f"{cluster.name} run {i + 1}: {out['failover'][-1]} {out['reclone'][-1]}")
    finally:
        cluster.stop()
    return Results(
        implementation=cluster.name,
        slug=f"datasize-{cluster.slug}",
        settings=cluster.settings(),
        scenario=scenario,
        runs=out,
        workload=workload,
    )


def _stats(res: Results, kind: str, key: str) -> tuple[float, float, float]:
    values = [r[key] for r in res.runs[kind]]
    return min(values), statistics.median(values), max(values)


def print_table(ref: Results, ours: Results) -> None:
    print(f"\n{'figure':<22} {ref.implementation:>24} {ours.implementation:>24}  ratio")
    for kind, key in FIGURES:
        a, b = _stats(ref, kind, key), _stats(ours, kind, key)
        cells = [" / ".join(f"{v:.2f}" for v in s) for s in (a, b)]
        print(f"{kind + ' ' + key:<22} {cells[0]:>24} {cells[1]:>24}  {b[1] / a[1]:.2f}x")
    lost = [sum(int(r["lost"]) for r in res.runs["failover"]) for res in (ref, ours)]
    print(f"{'lost on failover':<22} {lost[0]:>24} {lost[1]:>24}")
    print("(seconds, min / median / max; ratio of the medians, ours / reference)")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size-mb", type=int, default=1000, help="data to load (pgbench)")
    ap.add_argument("--runs", type=int, default=3, help="failovers and re-clones each")
    ap.add_argument("--ours-only", action="store_true", help="skip Patroni")
    ap.add_argument("--base-port", type=int, default=29900, help="Patroni's base port")
    ap.add_argument("--ours-base-port", type=int, default=29500, help="postgres-ras base port")
    ap.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="Patroni venv (cached)")
    ap.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    ap.add_argument("--keep", action="store_true", help="keep work dirs and logs")
    args = ap.parse_args()
    if args.runs < 1 or args.size_mb < MB_PER_SCALE:
        ap.error(f"--runs must be at least 1 and --size-mb at least {MB_PER_SCALE}")
    scale = max(1, round(args.size_mb / MB_PER_SCALE))
    t0 = time.monotonic()
    done: list[Results] = []
    clusters: list[WithDataDir] = (
        [] if args.ours_only else [PatroniCluster(args.venv, args.base_port, args.keep)]
    )
    clusters.append(PgrasCluster(args.ours_base_port, args.keep))
    for cluster in clusters:
        try:
            res = measure(cluster, scale, args.runs)
        except BenchmarkError as exc:
            print(f"{cluster.name}: benchmark aborted: {exc}", flush=True)
            return 1
        print(f"results written to {res.save(args.results_dir)}", flush=True)
        done.append(res)
    if len(done) == 2:
        print_table(done[0], done[1])
    else:
        for kind, key in FIGURES:
            low, mid, high = _stats(done[0], kind, key)
            print(f"{kind} {key}: {low:.2f} / {mid:.2f} / {high:.2f} s")
    print(f"\ntotal wall time {time.monotonic() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
