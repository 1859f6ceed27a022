"""A replica left on an abandoned timeline (more WAL than the promoted node) is rewound.

The most advanced replica is frozen when the primary dies, so a less advanced
one is promoted (within maximum_lag_on_failover). When the frozen replica
resumes it holds WAL the new timeline never had: its walreceiver cannot
follow, and the controller rewinds it after STUCK_REPLICA_AFTER seconds.
"""

from __future__ import annotations

import signal

from tests.integration.conftest import Harness


def test_replica_on_an_abandoned_timeline_is_rewound(cluster: Harness) -> None:
    old = cluster.leader().name
    ahead, lagging = [n for n in cluster.c.node_names() if n != old]
    cluster.sql(old, "CREATE TABLE fork (x int)")
    cluster.wait_for(
        "the table on every replica",
        lambda: all(
            cluster.sql(n, "SELECT to_regclass('fork') IS NOT NULL")[0][0] for n in (ahead, lagging)
        ),
        timeout=10,
    )
    cluster.cut_stream(lagging)
    cluster.sql(old, "INSERT INTO fork SELECT generate_series(1, 1000)")  # ~100 kB of WAL
    cluster.wait_for(
        f"{ahead} to receive the rows",
        lambda: cluster.sql(ahead, "SELECT count(*) FROM fork")[0][0] == 1000,
        timeout=10,
    )
    cluster.c.kill(ahead, signal.SIGSTOP)
    try:
        cluster.c.kill(old, signal.SIGKILL)
        cluster.restore_stream(lagging)
        new = cluster.wait_new_leader(old, timeout=30)
        assert new == lagging
        cluster.sql(new, "INSERT INTO fork VALUES (-1)")  # only on the new timeline
    finally:
        cluster.c.kill(ahead, signal.SIGCONT)
    took = cluster.wait_for(
        f"{ahead} to be rewound onto {new}'s timeline",
        lambda: cluster.sql(ahead, "SELECT count(*), min(x) FROM fork")[0] == (1, -1),
        timeout=60,
    )
    print(f"diverged replica rewound and streaming {took:.1f}s after it resumed")
    assert (
        "rewinding: no stream from leader"
        in cluster.c.table.log_file(f"{ahead}-controller").read_text()
    )
    assert cluster.writable_nodes() == [new]
