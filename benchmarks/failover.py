#!/usr/bin/env python3
"""Failover, switchover and rejoin of postgres-ras on a local cluster. Prints figures; not a test.

Runs the measurements of benchmarks/measure.py (failover write outage, lost
writes, rejoin, switchover write outage) on a postgres-ras cluster with its
default settings, writes results/postgres-ras-<time>.json, and prints ratios
against Patroni only from a results file that patroni_reference.py wrote with
the same scenario (the newest in results/, or --reference FILE), naming its date
and machine. Without one it says so and prints no ratio. For both measured in
the same run: patroni_reference.py --ours.

    python benchmarks/failover.py --runs 5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench_cli import add_common, check, measure_one
from pgras_cluster import PgrasCluster
from report import print_side_by_side, title
from results import Results, newest


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common(ap)
    ap.add_argument("--base-port", type=int, default=29500, help="postgres-ras base port")
    ap.add_argument("--reference", type=Path, help="a Patroni results file to compare with")
    args = ap.parse_args()
    scenario = check(ap, args)
    ours = measure_one(PgrasCluster(args.base_port, args.keep), scenario, args)
    if ours is None:
        return 1
    path = args.reference or newest("patroni", scenario, args.results_dir)
    if path is None:
        print(
            f"no Patroni reference for this scenario ({scenario.describe()}) in "
            f"{args.results_dir}: no ratios. Measure one on this machine with "
            "`python benchmarks/patroni_reference.py --runs 5`, or pass --reference FILE."
        )
        return 0
    reference = Results.load(path)
    print(f"reference from {path}:\n  {title(reference)}")
    print_side_by_side(reference, ours)
    return 0


if __name__ == "__main__":
    sys.exit(main())
