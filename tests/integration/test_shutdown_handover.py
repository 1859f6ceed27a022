"""Issue 10: SIGTERM on the primary's controller (a pod deletion) costs a switchover, not a TTL.

The controller hands leadership to the best streaming replica before it
stops; the agent and postgres stay up meanwhile, as the agent container's
preStop hook keeps them in a pod.
"""

from __future__ import annotations

import signal
import time

from postgres_ras.local.workload import Writer, lost_writes
from tests.integration.conftest import Harness


def test_sigterm_on_the_primary_controller_hands_over_without_losing_writes(
    cluster: Harness,
) -> None:
    old = cluster.leader().name
    controller = cluster.c.table.get(f"{old}-controller")
    assert controller is not None
    with Writer(cluster.writer_dsn()) as writer:
        time.sleep(1.0)
        started = time.monotonic()
        assert cluster.c.table.send_signal(f"{old}-controller", signal.SIGTERM)
        new = cluster.wait_new_leader(old, timeout=10)
        took = time.monotonic() - started
        # The controller exits on its own once the handover is done (bounded wait).
        cluster.wait_for(
            f"{old}'s controller to exit",
            lambda: cluster.c.table.get(f"{old}-controller") is None,
            timeout=20,
        )
        time.sleep(1.5)
    outage = writer.result.outage_after(started)
    missing = lost_writes(cluster.node_dsn(new), writer.result.acked)
    print(
        f"SIGTERM on {old}'s controller: {new} leads after {took:.2f}s, write outage "
        f"{outage:.2f}s, {len(writer.result.acked)} acknowledged, {len(missing)} lost"
    )
    assert missing == []
    # A switchover (stop + catch-up + promote), far below ttl + promotion (~3.5 s).
    assert outage < 2.5, f"write outage {outage:.2f}s: that is a failover, not a handover"
    cluster.wait_log(f"{old}-controller", f"handed leadership to {new}")


def test_sigterm_on_a_replica_controller_moves_nothing(cluster: Harness) -> None:
    leader = cluster.leader().name
    replica = sorted(set(cluster.c.node_names()) - {leader})[0]
    assert cluster.c.table.stop(f"{replica}-controller", timeout=15)
    time.sleep(2)
    assert cluster.leader().name == leader
    assert cluster.writable_nodes() == [leader]
