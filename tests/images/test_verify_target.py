"""``pgras verify --target docker`` against the chart-made pods of this tier: the same
checker as the local cluster's, with the faults Docker injects (docker kill, docker
pause, docker network disconnect), run as a user would (a subprocess, a target file,
the password in a file).

Asynchronous mode may lose acknowledged writes, but no more than the run's bound;
synchronous mode (switched on through the cluster's dynamic config in Consul) loses
none. Either way: no split brain, every fault back at full strength, the cluster
left healthy for the next test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.images.conftest import LAYOUT
from tests.images.pods import API_PORT, PG_PORT, DockerCluster

pytestmark = [pytest.mark.images, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
ASYNC_FAULTS = "kill-primary,stop-primary,partition-primary"


def write_target_file(cluster: DockerCluster, directory: Path) -> Path:
    """The target file for ``cluster``: every pod's containers, DSN and controller URL,
    the HAProxy and pgpool endpoints, Consul and the password in a file beside it."""
    user, password = cluster.superuser
    secret = directory / "superuser-password"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    env = cluster.pod_runs[cluster.pods[0]].containers[-1].env

    def dsn(host: str, port: int) -> str:
        return f"host={host} port={port} dbname=postgres user={user}"

    spec: dict[str, Any] = {
        "members": [
            {
                "name": pod,
                "containers": cluster.pod_containers(pod),
                "dsn": dsn(cluster.pod_ip(pod), PG_PORT),
                "api": f"http://{cluster.pod_ip(pod)}:{API_PORT}",
            }
            for pod in cluster.pods
        ],
        "write": dsn(cluster.address(3), LAYOUT.haproxy_write),
        "read": dsn(cluster.address(3), LAYOUT.haproxy_read),
        "pgpool": dsn(cluster.address(4), PG_PORT),
        "network": cluster.network,
        "consul_url": f"http://{cluster.address(2)}:8500",
        "cluster": env["PGRAS_CLUSTER"],
        "password_file": secret.name,
    }
    path = directory / "target.json"
    path.write_text(json.dumps(spec, indent=2))
    return path


def pgras_verify(target: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "postgres_ras", "verify", "--target", "docker"]
    argv += ["--target-file", str(target), "--json", *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    print(proc.stderr)
    return proc


def summary(report: dict[str, Any]) -> list[dict[str, Any]]:
    keys = ("fault", "target", "leader_before", "leader_after", "lost_acknowledged_writes")
    keys += ("split_brain_intervals", "max_write_outage_s", "recovery_s", "note")
    return [{k: f.get(k) for k in keys} for f in report["faults"]]


def check_report(report: dict[str, Any], faults: list[str]) -> None:
    """Fields present and consistent; no split brain; every fault recovered."""
    print(json.dumps({"total": report["total"], "faults": summary(report)}, indent=2))
    assert report["target"] == "docker" and report["members"] == 3, report
    assert [f["fault"] for f in report["faults"]] == faults
    total = report["total"]
    assert total["acknowledged_writes"] > 0, total
    assert total["split_brain_intervals"] == 0, report["violations"]
    assert total["duplicate_writes"] == 0, report["violations"]
    assert total["lost_acknowledged_writes"] == sum(
        f["lost_acknowledged_writes"] for f in report["faults"]
    )
    for fault in report["faults"]:
        assert fault["recovery_s"] is not None, f"not recovered: {fault}"
        assert fault["split_brain_intervals"] == 0, fault
        assert fault["leader_after"] != fault["leader_before"], f"no failover: {fault}"
    assert report["final_primary"] in {f["leader_after"] for f in report["faults"]}


def test_verify_docker_target_async(healthy: DockerCluster, tmp_path: Path) -> None:
    target = write_target_file(healthy, tmp_path)
    proc = pgras_verify(target, "--faults", ASYNC_FAULTS, "--settle", "2", timeout=800)
    report = json.loads(proc.stdout)
    check_report(report, ASYNC_FAULTS.split(","))
    assert report["mode"] == "asynchronous"
    assert report["total"]["lost_acknowledged_writes"] <= report["lost_bound"], report
    assert proc.returncode == 0, report["violations"]
    healthy.wait_healthy(timeout=60)


def test_verify_docker_target_synchronous_loses_nothing(
    healthy: DockerCluster, tmp_path: Path
) -> None:
    target = write_target_file(healthy, tmp_path)
    proc = pgras_verify(
        target, "--synchronous", "--faults", "kill-primary,stop-primary", "--settle", "2",
        timeout=600,
    )  # fmt: skip
    if proc.returncode == 3:
        pytest.fail(f"synchronous mode not available on the pods: {proc.stderr[-800:]}")
    report = json.loads(proc.stdout)
    check_report(report, ["kill-primary", "stop-primary"])
    assert report["mode"] == "synchronous"
    assert report["total"]["lost_acknowledged_writes"] == 0, report["violations"]
    assert proc.returncode == 0, report["violations"]
    healthy.wait_healthy(timeout=60)


def test_verify_docker_target_refuses_a_bad_target(healthy: DockerCluster, tmp_path: Path) -> None:
    """A container that does not exist: one clear line, exit 2, no traceback."""
    target = write_target_file(healthy, tmp_path)
    spec = json.loads(target.read_text())
    spec["members"][1]["containers"].append("pgras-no-such-container")
    target.write_text(json.dumps(spec))
    proc = pgras_verify(target, "--faults", "kill-primary", timeout=120)
    assert proc.returncode == 2, proc
    assert proc.stderr.strip().splitlines() == [
        f"error: docker target (target file {target}): no such container: pgras-no-such-container"
    ], proc.stderr
