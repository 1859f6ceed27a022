"""`pgras list` tells the truth about a dead member: never a running leader, never dropped."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tests.integration.conftest import Harness


def _row(h: Harness, name: str) -> tuple[str, bool]:
    rows = {r.name: r for r in h.c.members(probe=True)}
    assert name in rows, f"{name} vanished from `pgras list`: {sorted(rows)}"
    return rows[name].state, rows[name].leader


def test_killed_leader_is_listed_unreachable_then_down(cluster: Harness) -> None:
    old = cluster.leader().name
    cluster.c.kill(old, signal.SIGKILL)
    # At once, while its key still waits out the TTL: not "running".
    state, _ = _row(cluster, old)
    assert state in ("unreachable", "down"), f"killed leader {old} listed as {state!r}"
    cluster.wait_new_leader(old)
    state, leader = _row(cluster, old)
    assert state == "down" and not leader, f"after failover {old} is {state!r}, leader={leader}"


def test_list_and_endpoints_work_from_any_directory(
    cluster: Harness, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    env_args = ["--work-dir", str(cluster.c.layout.work_dir)]
    out = subprocess.run(
        [sys.executable, "-m", "postgres_ras", *env_args, "endpoints"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert f"password={cluster.password} " in out
    missing = subprocess.run(
        [sys.executable, "-m", "postgres_ras", "--work-dir", str(elsewhere / "none"), "endpoints"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert missing.returncode == 2 and "password" not in missing.stdout
    assert "no local cluster in" in missing.stderr and "pgras up" in missing.stderr
