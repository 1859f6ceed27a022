"""Issue 2.4: a primary that loses Consul, its controller, or time itself stops being writable."""

from __future__ import annotations

import signal
import time

from tests.integration.conftest import Harness


def test_primary_cut_off_from_consul_demotes_itself_within_retry_timeout(cluster: Harness) -> None:
    old = cluster.leader().name
    consul = cluster.c.table.get("consul")
    assert consul is not None
    frozen_at = time.monotonic()
    cluster.c.table.send_signal("consul", signal.SIGSTOP)
    try:
        took = cluster.wait_for(
            f"{old} to stop accepting writes", lambda: not cluster.is_writable(old), timeout=15
        )
        print(f"primary fenced {took:.2f}s after Consul froze (retry_timeout 3s)")
        assert took < 3.0 + 1.5
        # Nobody can become primary while Consul is unreachable.
        time.sleep(1.0)
        assert cluster.writable_nodes() == []
    finally:
        cluster.c.table.send_signal("consul", signal.SIGCONT)
    cluster.wait_for("a writable primary again", lambda: len(cluster.writable_nodes()) == 1, 30)
    assert time.monotonic() - frozen_at < 60
    cluster.wait_for("a healthy cluster", lambda: cluster.c.is_healthy(3), 40)


def test_primary_whose_controller_dies_is_fenced_by_its_agent(cluster: Harness) -> None:
    old = cluster.leader().name
    cluster.c.table.send_signal(f"{old}-controller", signal.SIGKILL)
    took = cluster.wait_for(f"{old} to be fenced", lambda: not cluster.is_writable(old), timeout=10)
    print(f"agent fenced its primary {took:.2f}s after the controller died (fence_timeout 2s)")
    assert took < 2.0 + 1.5
    new = cluster.wait_new_leader(old, timeout=30)
    assert cluster.writable_nodes() == [new]
    cluster.c.up(access=False, wait=0)  # the controller comes back; the node rejoins
    cluster.wait_streaming_replica(old, timeout=30)
    assert cluster.writable_nodes() == [new]


def test_frozen_primary_does_not_stay_writable_after_resume(cluster: Harness) -> None:
    old = cluster.leader().name
    cluster.c.kill(old, signal.SIGSTOP)
    try:
        new = cluster.wait_new_leader(old, timeout=30)
    finally:
        cluster.c.kill(old, signal.SIGCONT)
    took = cluster.wait_for(
        f"{old} to stop being writable after resume",
        lambda: not cluster.is_writable(old),
        timeout=5,
    )
    print(f"resumed former primary fenced within {took:.2f}s")
    time.sleep(1.0)
    assert cluster.writable_nodes() == [new]
    cluster.wait_streaming_replica(old, timeout=30)
    assert cluster.writable_nodes() == [new]
