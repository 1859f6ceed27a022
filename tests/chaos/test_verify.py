"""``pgras verify`` end to end on a real local cluster: a few faults, the report read
back as JSON, every promise checked (about 80 s with the cluster start)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from postgres_ras.dcs.consul import client
from postgres_ras.local.cluster import LocalCluster
from postgres_ras.verify import partition

FAULTS = "kill-primary,stop-primary,kill-replica"


def pgras(cluster: LocalCluster, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    layout = cluster.layout
    argv = [sys.executable, "-m", "postgres_ras", "--work-dir", str(layout.work_dir)]
    argv += ["--base-port", str(layout.base_port), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def test_verify_async_faults_keep_the_promises(chaos_cluster: LocalCluster) -> None:
    png = Path(chaos_cluster.layout.work_dir) / "timeline.png"
    result = pgras(
        chaos_cluster,
        "verify", "--faults", FAULTS, "--settle", "2", "--json", "--plot", str(png),
        timeout=240,
    )  # fmt: skip
    print(result.stderr)
    report = json.loads(result.stdout)
    print(json.dumps({k: report[k] for k in ("total", "violations")}, indent=2))
    assert result.returncode == 0, report["violations"]
    assert report["ok"] is True and report["violations"] == []
    assert [f["fault"] for f in report["faults"]] == FAULTS.split(",")
    total = report["total"]
    assert total["split_brain_intervals"] == 0
    assert total["duplicate_writes"] == 0
    assert total["acknowledged_writes"] > 500
    assert total["lost_acknowledged_writes"] <= report["lost_bound"]
    for fault in report["faults"]:
        assert fault["recovery_s"] is not None and fault["recovery_s"] < 60, fault
        assert fault["max_write_outage_s"] < 20, fault
    primary_faults = [f for f in report["faults"] if f["fault"] != "kill-replica"]
    assert all(f["leader_after"] != f["leader_before"] for f in primary_faults)
    assert png.stat().st_size > 10_000


def test_verify_synchronous_sets_the_mode_or_says_why_not(chaos_cluster: LocalCluster) -> None:
    """verify turns synchronous mode on and every promise holds (0 lost writes); a
    cluster that refuses the setting is reported (exit 3) with the config key restored."""
    prefix = "pgras/pgras/"
    kv = client(chaos_cluster.layout.consul_url).kv
    before = kv.get(prefix + "config")[1]
    result = pgras(
        chaos_cluster, "verify", "--synchronous", "--faults", "kill-primary", "--json",
        timeout=240,
    )  # fmt: skip
    print(result.stderr)
    if result.returncode == 3:
        assert "synchronous mode not available" in result.stderr
        after = kv.get(prefix + "config")[1]
        assert json.loads(after["Value"]) == json.loads(before["Value"])
    else:
        report = json.loads(result.stdout)
        assert report["mode"] == "synchronous"
        assert result.returncode == 0, report["violations"]
        assert report["total"]["lost_acknowledged_writes"] == 0


@pytest.mark.skipif(bool(partition.unavailable()), reason=partition.unavailable() or "available")
def test_verify_partitioned_primary_steps_down_before_a_new_one_leads(
    chaos_cluster: LocalCluster,
) -> None:
    """The primary cut off from Consul and its replicas (clients still reach it): writes
    it acknowledged after the cut may be lost (asynchronous), but it must stop accepting
    them before another member is promoted, and rejoin afterwards."""
    result = pgras(
        chaos_cluster, "verify", "--faults", "partition-primary", "--settle", "2", "--json",
        timeout=180,
    )  # fmt: skip
    print(result.stderr)
    report = json.loads(result.stdout)
    print(json.dumps({k: report[k] for k in ("total", "violations", "faults")}, indent=2))
    assert result.returncode == 0, report["violations"]
    (fault,) = report["faults"]
    assert fault["leader_after"] != fault["leader_before"]
    assert fault["split_brain_intervals"] == 0 and fault["recovery_s"] is not None
    assert report["total"]["lost_acknowledged_writes"] <= report["lost_bound"]
    rules = subprocess.run(
        ["iptables", "-S", "OUTPUT"], capture_output=True, text=True, timeout=10
    ).stdout
    assert f"pgras-verify-{chaos_cluster.layout.base_port}" not in rules, "rules left behind"
