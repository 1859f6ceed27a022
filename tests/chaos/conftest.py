"""The chaos tier: a real local cluster (access layer included) for ``pgras verify``.

The cluster lives in its own work directory under /tmp (0755: the unprivileged
postgres user must reach it when the tests run as root), on base port 23000
(``PGRAS_CHAOS_BASE_PORT``). The fixture stops every process it started, by
PID, and prints the tail of every log when a test of the module failed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from postgres_ras.local.cluster import LocalCluster
from postgres_ras.local.layout import Layout

BASE_PORT = int(os.environ.get("PGRAS_CHAOS_BASE_PORT", "23000"))


def dump_logs(work_dir: Path, lines: int = 40) -> None:
    for log in sorted((work_dir / "logs").glob("*.log")):
        print(f"\n===== {log} (last {lines} lines) =====")
        print("\n".join(log.read_text(errors="replace").splitlines()[-lines:]))


@pytest.fixture(scope="module")
def chaos_cluster(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """One cluster for the module's tests (each leaves it at full strength, as verify
    does); its start and stop take about half a minute together on a busy machine."""
    work = Path(tempfile.mkdtemp(prefix="pgras-chaos-", dir="/tmp"))
    work.chmod(0o755)
    cluster = LocalCluster(Layout(work, BASE_PORT))
    failed_before = request.session.testsfailed
    try:
        cluster.up(nodes=3, access=True, wait=90)
        yield cluster
    finally:
        try:
            cluster.down()
        finally:
            if request.session.testsfailed > failed_before:
                dump_logs(work)
            shutil.rmtree(work, ignore_errors=True)
