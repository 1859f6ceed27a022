#!/usr/bin/env python3
"""The pg_auto_failover reference: benchmarks/measure.py's measurements on pg_auto_failover
2.0, and on ours.

Starts a pg_auto_failover 2.0 cluster (a monitor and N Postgres nodes, Debian's
postgresql-15-auto-failover and pg-auto-failover-cli, installed with apt-get
when missing; benchmarks/pgaf_cluster.py) with its DEFAULT settings, or with
--tuned its monitor timeouts lowered to their floor, runs the same measurements
as benchmarks/patroni_reference.py through the same code, and writes
results/pgaf-<time>.json (date, machine, settings, scenario, every run).

pg_auto_failover replicates synchronously by default (ANY 1 of the standbys),
whatever --synchronous says; the results file records what its primary ran.
With --ours, postgres-ras is then measured in the same run (same code,
machine, PostgreSQL) and both are printed side by side with the ratio
ours/pg_auto_failover. Everything started is stopped by PID at the end and
the temporary directories removed.

    python benchmarks/pgaf_reference.py --runs 5 [--tuned] [--ours]
"""

from __future__ import annotations

import argparse
import sys
import time

from bench_cli import add_common, check, measure_one
from pgaf_cluster import PgafCluster
from pgras_cluster import PgrasCluster
from report import print_side_by_side, print_summary


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common(ap)
    ap.add_argument("--tuned", action="store_true", help="monitor timeouts at their floor")
    ap.add_argument("--ours", action="store_true", help="then measure postgres-ras too")
    ap.add_argument("--base-port", type=int, default=29700, help="pg_auto_failover base port")
    ap.add_argument("--ours-base-port", type=int, default=29500, help="postgres-ras base port")
    args = ap.parse_args()
    scenario = check(ap, args)
    t0 = time.monotonic()
    cluster = PgafCluster(args.base_port, tuned=args.tuned, keep=args.keep)
    pgaf = measure_one(cluster, scenario, args)
    if pgaf is not None:
        names = pgaf.settings.get("synchronous_standby_names")
        print(f"note: pg_auto_failover ran synchronous_standby_names = {names!r}", flush=True)
    ours = None
    if args.ours:
        ours = measure_one(PgrasCluster(args.ours_base_port, args.keep), scenario, args)
    if pgaf is not None and ours is not None:
        print_summary(pgaf)
        print()
        print_summary(ours)
        print()
        print_side_by_side(pgaf, ours)
    print(f"\ntotal wall time {time.monotonic() - t0:.0f}s")
    return 0 if pgaf is not None and (ours is not None or not args.ours) else 1


if __name__ == "__main__":
    sys.exit(main())
