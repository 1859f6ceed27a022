#!/usr/bin/env python3
"""pgbench throughput and latency, async versus synchronous replication, postgres-ras versus
Patroni, measured in the same run. Prints figures; not a test.

For each mode (async, then synchronous) and each run, postgres-ras (PgrasCluster,
default settings) and then Patroni 4.1.5 (PatroniCluster, default settings) are
started with 3 members, ``pgbench -i`` fills the database through the writer DSN
(libpq multi-host, target_session_attrs=read-write), a CHECKPOINT is taken, and
``pgbench`` runs for --seconds (builtin tpcb-like, 8 clients, 2 threads by
default); the cluster is stopped before the next one starts, so only the cluster
under test shares the cores with pgbench. Interleaved (ours, Patroni, ours,
Patroni, ...) so that machine noise hits both alike.

TPS is pgbench's own ("without initial connection time"); p50/p99 latency come
from its per-transaction log (``-l``). The table shows the median and range over
the runs, the sync/async ratio of each implementation and the ours/Patroni ratio of
each mode. Each implementation and mode writes
results/throughput-<slug>-<UTC time>.json (date, machine, settings, pgbench options,
every run).

With --failover N, then N runs per mode of benchmarks/measure.py's failover and
switchover under loads.PgbenchLoad (8 clients, 2 threads, one unique INSERT per
transaction: outage from pgbench's per-transaction log, lost acknowledged writes
counted on the new primary), ours and Patroni interleaved, printed side by side;
results/<slug>-<UTC time>.json with load "pgbench".

Everything started is stopped by PID when the script ends, also on ^C, SIGTERM or
error.

    python benchmarks/throughput.py --runs 2 --seconds 20 --failover 2
"""

from __future__ import annotations

import argparse
import math
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from clusters import BenchmarkError, ClusterUnderTest
from loads import CLIENTS, INSERT_SCRIPT, JOBS, parse_log_line, pgbench_path
from measure import Run, Scenario, series
from patroni_cluster import PatroniCluster
from patroni_install import DEFAULT_VENV, ensure_venv
from pgras_cluster import PgrasCluster
from report import print_side_by_side, print_summary
from results import RESULTS_DIR, Results, machine

MODES = {"async": False, "sync": True}
HEALTHY_TIMEOUT = 120.0
INIT_TIMEOUT = 300.0


@dataclass(frozen=True)
class Pgbench:
    builtin: str = "tpcb-like"
    scale: int = 10
    clients: int = 8
    jobs: int = 2
    seconds: int = 30

    def describe(self) -> str:
        return (
            f"pgbench {self.builtin}, scale {self.scale}, {self.clients} clients, "
            f"{self.jobs} threads, {self.seconds} s per run"
        )


def percentile(sorted_values: list[int], q: float) -> float:
    """Nearest-rank percentile of sorted values (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = min(max(1, math.ceil(q / 100 * len(sorted_values))), len(sorted_values))
    return float(sorted_values[rank - 1])


def parse_tps(out: str) -> float:
    m = re.search(r"^tps = ([0-9.]+) \(without initial connection time\)", out, re.M)
    if m is None:
        raise BenchmarkError(f"no tps in pgbench's output: {out[-300:]!r}")
    return float(m.group(1))


def latencies_us(directory: Path) -> list[int]:
    """Every completed transaction's latency in pgbench's per-transaction logs, sorted."""
    out: list[int] = []
    for path in directory.glob("pgbench_log.*"):
        for raw in path.read_text(errors="replace").splitlines():
            line = parse_log_line(raw)
            if line is not None:
                out.append(line.latency_us)
    return sorted(out)


def _pgbench(argv: list[str], timeout: float, what: str) -> str:
    """Run pgbench to its end (killed by PID on timeout or ^C, by subprocess.run)."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchmarkError(f"{what} did not finish in {timeout:.0f}s") from None
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise BenchmarkError(f"{what} failed (exit {done.returncode}): {tail}")
    return done.stdout


def pgbench_init(dsn: str, opts: Pgbench) -> None:
    # Server-side data generation (G): the rows are made on the primary and replicated.
    argv = [str(pgbench_path()), "-i", "-I", "dtGvp", "-s", str(opts.scale), dsn]
    _pgbench(argv, INIT_TIMEOUT, "pgbench -i")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CHECKPOINT")  # the run does not pay for the load's checkpoint


def pgbench_run(dsn: str, opts: Pgbench) -> Run:
    with tempfile.TemporaryDirectory(prefix="pgras-pgbench-") as tmp:
        argv = [
            str(pgbench_path()),
            f"--builtin={opts.builtin}",
            f"--client={opts.clients}",
            f"--jobs={opts.jobs}",
            f"--time={opts.seconds}",
            "--log",
            f"--log-prefix={Path(tmp) / 'pgbench_log'}",
            dsn,
        ]
        out = _pgbench(argv, opts.seconds + 120, "pgbench")
        lat = latencies_us(Path(tmp))
    failed = re.search(r"^number of failed transactions: (\d+)", out, re.M)
    return {
        "tps": parse_tps(out),
        "p50_ms": percentile(lat, 50) / 1000,
        "p99_ms": percentile(lat, 99) / 1000,
        "transactions": len(lat),
        "failed": int(failed.group(1)) if failed else 0,
    }


def sync_names(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SHOW synchronous_standby_names").fetchone()
    return str(row[0]) if row else ""


def throughput_cell(
    cluster: ClusterUnderTest, nodes: int, synchronous: bool, opts: Pgbench
) -> tuple[Run, str]:
    """Start ``cluster``, fill and run pgbench, stop it (always); the figures and the
    primary's synchronous_standby_names during the run."""
    try:
        cluster.start(nodes, synchronous)
        dsn = cluster.writer_dsn()
        pgbench_init(dsn, opts)
        cluster.wait_healthy(HEALTHY_TIMEOUT)
        names = sync_names(dsn)
        if bool(names) != synchronous:
            raise BenchmarkError(
                f"{cluster.name}: synchronous_standby_names is {names!r} in "
                f"{'synchronous' if synchronous else 'async'} mode"
            )
        run = pgbench_run(dsn, opts)
        if synchronous and sync_names(dsn) != names:
            names += " (changed during the run)"
        return run, names
    finally:
        cluster.stop()


# --- printing ---------------------------------------------------------------------------
Cells = dict[tuple[str, str], list[Run]]  # (implementation, mode) -> runs


def _median(runs: list[Run], key: str) -> float | None:
    return statistics.median(r[key] for r in runs) if runs else None


def _cell(runs: list[Run], key: str, fmt: str) -> str:
    if not runs:
        return "n/a"
    values = [r[key] for r in runs]
    med, lo, hi = statistics.median(values), min(values), max(values)
    return f"{med:{fmt}} [{lo:{fmt}}-{hi:{fmt}}]"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "n/a"


def print_table(cells: Cells, names: list[str], modes: list[str]) -> None:
    print(f"{'implementation':<16} {'mode':<6} {'TPS':>22} {'p50 ms':>22} {'p99 ms':>22}  runs")
    for name in names:
        for mode in modes:
            runs = cells.get((name, mode), [])
            print(
                f"{name:<16} {mode:<6} {_cell(runs, 'tps', '.0f'):>22} "
                f"{_cell(runs, 'p50_ms', '.2f'):>22} {_cell(runs, 'p99_ms', '.2f'):>22}  "
                f"{len(runs)}"
            )
    print("(median [min-max] over the runs)")
    keys = (("TPS", "tps"), ("p50", "p50_ms"), ("p99", "p99_ms"))

    def ratios(a: list[Run], b: list[Run]) -> str:
        return ", ".join(f"{k} {_ratio(_median(a, key), _median(b, key))}" for k, key in keys)

    if set(modes) == set(MODES):
        for name in names:
            print(
                f"sync/async   {name:<16} {ratios(cells[(name, 'sync')], cells[(name, 'async')])}"
            )
    ours, ref = names
    for mode in modes:
        print(f"ours/Patroni {mode:<16} {ratios(cells[(ours, mode)], cells[(ref, mode)])}")


# --- main -------------------------------------------------------------------------------
def _stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _save(res: Results, args: argparse.Namespace, log: Callable[[str], None]) -> None:
    if not args.no_save and any(res.runs.values()):
        log(f"results written to {res.save(args.results_dir)}")


def measure_throughput(
    clusters: list[ClusterUnderTest], args: argparse.Namespace, opts: Pgbench
) -> Cells:
    cells: Cells = {(c.name, m): [] for c in clusters for m in args.modes}
    for mode in args.modes:
        date, host = _stamp(), machine()
        for i in range(args.runs):
            for cluster in clusters:
                t = time.monotonic()
                try:
                    run, names = throughput_cell(cluster, args.nodes, MODES[mode], opts)
                except (BenchmarkError, psycopg.Error) as exc:
                    print(f"{cluster.name} {mode} run {i + 1}: aborted: {exc}", flush=True)
                    continue
                cells[(cluster.name, mode)].append(run)
                print(
                    f"{cluster.name} {mode} run {i + 1}: TPS {run['tps']:.0f}, p50 "
                    f"{run['p50_ms']:.2f} ms, p99 {run['p99_ms']:.2f} ms, "
                    f"{run['transactions']:.0f} transactions, {run['failed']:.0f} failed; "
                    f"synchronous_standby_names '{names}' ({time.monotonic() - t:.0f}s)",
                    flush=True,
                )
        for cluster in clusters:
            res = Results(
                cluster.name,
                f"throughput-{cluster.slug}",
                cluster.settings(),
                Scenario(args.nodes, MODES[mode], "pgbench"),
                {"throughput": cells[(cluster.name, mode)]},
                date,
                host,
                {"pgbench": asdict(opts)},
            )
            _save(res, args, print)
    return cells


def measure_failover(clusters: list[ClusterUnderTest], args: argparse.Namespace) -> None:
    workload = {
        "pgbench_load": {
            "clients": CLIENTS,
            "jobs": JOBS,
            "script": INSERT_SCRIPT,
        }
    }
    for mode in args.modes:
        scenario = Scenario(args.nodes, MODES[mode], "pgbench")
        date, host = _stamp(), machine()
        runs: dict[str, dict[str, list[Run]]] = {c.name: {} for c in clusters}
        for i in range(args.failover):
            for cluster in clusters:
                print(f"-- {mode} failover round {i + 1}: {cluster.name}", flush=True)
                try:
                    got = series(cluster, scenario, 1, lambda s: print(s, flush=True))
                except (BenchmarkError, psycopg.Error) as exc:
                    print(f"{cluster.name} {mode} failover run {i + 1}: aborted: {exc}")
                    continue
                for kind, values in got.items():
                    runs[cluster.name].setdefault(kind, []).extend(values)
        results = [
            Results(c.name, c.slug, c.settings(), scenario, runs[c.name], date, host, workload)
            for c in clusters
        ]
        print()
        for res in results:
            print_summary(res)
            _save(res, args, print)
            print()
        ours, patroni = results
        if ours.runs and patroni.runs:
            print_side_by_side(patroni, ours)
            print()


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=2, help="pgbench runs per implementation and mode")
    ap.add_argument("--seconds", type=int, default=30, help="seconds per pgbench run")
    ap.add_argument("--builtin", choices=("tpcb-like", "simple-update"), default="tpcb-like")
    ap.add_argument("--scale", type=int, default=10, help="pgbench -i scale")
    ap.add_argument("--clients", type=int, default=8, help="pgbench clients")
    ap.add_argument("--jobs", type=int, default=2, help="pgbench threads")
    ap.add_argument("--nodes", type=int, default=3, help="members per cluster")
    ap.add_argument("--modes", default="async,sync", help="async,sync | async | sync")
    ap.add_argument(
        "--failover", type=int, default=0, metavar="N", help="then N failover runs per mode"
    )
    ap.add_argument("--base-port", type=int, default=31000, help="postgres-ras base port")
    ap.add_argument("--patroni-base-port", type=int, default=31500, help="Patroni base port")
    ap.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="Patroni venv (cached)")
    ap.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="results files")
    ap.add_argument("--no-save", action="store_true", help="write no results file")
    ap.add_argument("--keep", action="store_true", help="keep work dirs and logs")
    args = ap.parse_args()
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not args.modes or any(m not in MODES for m in args.modes):
        ap.error("--modes: a comma-separated list of async and sync")
    if args.runs < 0 or args.failover < 0 or not 1 <= args.seconds <= 600:
        ap.error("--runs/--failover at least 0, --seconds 1..600")
    if not 2 <= args.nodes <= 9:
        ap.error("--nodes must be between 2 and 9")
    # SIGTERM ends the script like ^C: every cluster's stop() runs (finally), by PID.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    opts = Pgbench(args.builtin, args.scale, args.clients, args.jobs, args.seconds)
    try:
        pgbench_path()
        ensure_venv(args.venv)
    except BenchmarkError as exc:
        print(exc)
        return 1
    clusters: list[ClusterUnderTest] = [
        PgrasCluster(args.base_port, args.keep),
        PatroniCluster(args.venv, args.patroni_base_port, args.keep),
    ]
    t0 = time.monotonic()
    print(f"{opts.describe()}; {args.nodes} members; {args.runs} runs per cell", flush=True)
    if args.runs:
        cells = measure_throughput(clusters, args, opts)
        print(f"\n{opts.describe()}; {args.nodes} members; machine {machine()['host']}")
        print_table(cells, [c.name for c in clusters], args.modes)
    if args.failover:
        print(
            f"\nfailover and switchover under pgbench (loads.PgbenchLoad), {args.failover} "
            "runs per mode",
            flush=True,
        )
        measure_failover(clusters, args)
    print(f"\ntotal wall time {time.monotonic() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
