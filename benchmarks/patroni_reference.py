#!/usr/bin/env python3
"""The Patroni reference: benchmarks/measure.py's measurements on Patroni, and on ours.

Starts a Patroni 4.1.5 cluster with Patroni's DEFAULT HA settings (ttl 30,
loop_wait 10, retry_timeout 10; use_pg_rewind, use_slots) on this machine,
with its own Consul server and PostgreSQL 15 (benchmarks/patroni_cluster.py),
runs the same measurements as benchmarks/failover.py through the same code,
and writes results/patroni-<time>.json (date, machine, settings, scenario,
every run), which failover.py then uses as its reference.

With --ours, postgres-ras is then measured in the same run (same code, same
machine, PostgreSQL and Consul) and both are printed side by side with the
ratio ours/Patroni. Patroni runs from a cached venv (default
/var/tmp/pgras-patroni-venv, installed from PyPI when missing). Everything
started is stopped by PID at the end and the temporary directories removed.

    python benchmarks/patroni_reference.py --runs 5 --ours
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench_cli import add_common, check, measure_one
from patroni_cluster import PatroniCluster
from patroni_install import DEFAULT_VENV
from pgras_cluster import PgrasCluster
from report import print_side_by_side, print_summary


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common(ap)
    ap.add_argument("--ours", action="store_true", help="then measure postgres-ras too")
    ap.add_argument("--base-port", type=int, default=29900, help="Patroni's base port")
    ap.add_argument("--ours-base-port", type=int, default=29500, help="postgres-ras base port")
    ap.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="Patroni venv (cached)")
    args = ap.parse_args()
    scenario = check(ap, args)
    t0 = time.monotonic()
    patroni = measure_one(PatroniCluster(args.venv, args.base_port, args.keep), scenario, args)
    ours = None
    if args.ours:
        ours = measure_one(PgrasCluster(args.ours_base_port, args.keep), scenario, args)
    if patroni is not None and ours is not None:
        print_summary(patroni)
        print()
        print_summary(ours)
        print()
        print_side_by_side(patroni, ours)
    print(f"\ntotal wall time {time.monotonic() - t0:.0f}s")
    return 0 if patroni is not None and (ours is not None or not args.ours) else 1


if __name__ == "__main__":
    sys.exit(main())
