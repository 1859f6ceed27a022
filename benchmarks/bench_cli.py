"""What failover.py and patroni_reference.py share on the command line: the scenario, the
run count, where results go, and measuring one cluster under test into a saved Results."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from clusters import BenchmarkError, ClusterUnderTest, Unsupported
from loads import LOADS
from measure import Scenario
from report import print_summary
from results import RESULTS_DIR, Results, record


def add_common(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--runs", type=int, default=5, help="runs of each measurement")
    ap.add_argument("--nodes", type=int, default=3, help="members per cluster")
    ap.add_argument(
        "--synchronous", action="store_true", help="synchronous replication (where supported)"
    )
    ap.add_argument("--load", choices=sorted(LOADS), default="writer", help="write load")
    ap.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="results files")
    ap.add_argument("--no-save", action="store_true", help="write no results file")
    ap.add_argument("--keep", action="store_true", help="keep work dirs and logs")
    ap.add_argument("--json", action="store_true", help="print raw figures as JSON too")


def check(ap: argparse.ArgumentParser, args: argparse.Namespace) -> Scenario:
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    if not 2 <= args.nodes <= 9:
        ap.error("--nodes must be between 2 and 9")
    return Scenario(nodes=args.nodes, synchronous=args.synchronous, load=args.load)


def measure_one(
    cluster: ClusterUnderTest, scenario: Scenario, args: argparse.Namespace
) -> Results | None:
    """Measure, save (unless --no-save) and print one cluster; None (said why) on failure."""
    try:
        res = record(cluster, scenario, args.runs)
    except Unsupported as exc:
        print(f"{cluster.name}: not measured: {exc}", flush=True)
        return None
    except BenchmarkError as exc:
        print(f"{cluster.name}: benchmark aborted: {exc}", flush=True)
        return None
    print()
    print_summary(res)
    if not args.no_save:
        print(f"results written to {res.save(args.results_dir)}")
    if args.json:
        print(json.dumps(res.runs))
    print(flush=True)
    return res
