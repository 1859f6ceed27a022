"""The chaos tier: a real local cluster (access layer included) for ``pgras verify``.

The cluster lives in its own work directory under /tmp (0755: the unprivileged
postgres user must reach it when the tests run as root), on base port 23000
(``PGRAS_CHAOS_BASE_PORT``). The fixture stops every process it started, by
PID, and prints the tail of every log when a test of the module failed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from postgres_ras.local.cluster import LocalCluster
from tests.helpers import local_cluster

BASE_PORT = int(os.environ.get("PGRAS_CHAOS_BASE_PORT", "23000"))


@pytest.fixture(scope="module")
def chaos_cluster(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """One cluster for the module's tests (each leaves it at full strength, as verify
    does); its start and stop take about half a minute together on a busy machine."""
    with local_cluster("pgras-chaos-", BASE_PORT, request, access=True, wait=90) as cluster:
        yield cluster
