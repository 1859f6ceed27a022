"""Issue 9.6: when a switchover's target dies after the lock was handed to it, the others
race within about one ttl (not after a 30 s wall-clock window), and a switchover to a
target that is not a healthy streaming replica is refused by the leader.
"""

from __future__ import annotations

import json
import signal
import time

from postgres_ras.dcs.base import Switchover
from postgres_ras.dcs.consul import client as consul_client
from tests.integration.conftest import Harness

TTL = 4.0
SLACK = 6.0  # the dead target's member key lapsing, the race, promotion (2 busy cores)


def _kill_target_on_release(h: Harness, target: str) -> bool:
    """Block on the leader key; SIGKILL the target the moment the lock is free.

    False when the target took the lock first (then the round proves nothing)."""
    kv = consul_client(h.c.layout.consul_url, timeout=5).kv
    key = f"pgras/{h.c.layout.cluster}/leader"
    index, item = kv.get(key)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        index, item = kv.get(key, index=index, wait="2s")
        if item is None or not item.get("Session"):
            h.c.kill(target, signal.SIGKILL)
            return True
        if item["Value"].decode() == target:
            return False
    raise AssertionError("the leader never released its lock for the switchover")


def test_switchover_target_dies_after_release_others_race_within_ttl(cluster: Harness) -> None:
    old = cluster.leader().name
    for attempt in range(3):
        old = cluster.leader().name
        target, other = [n for n in cluster.c.node_names() if n != old]
        cluster.wait_streaming_replica(target)
        cluster.wait_streaming_replica(other)
        kv = consul_client(cluster.c.layout.consul_url).kv
        request = Switchover(old, target, time.time())
        kv.put(f"pgras/{cluster.c.layout.cluster}/switchover", request.to_json())
        if _kill_target_on_release(cluster, target):
            break
        print(f"attempt {attempt + 1}: {target} took the lock before it could be killed")
        cluster.c.up(access=False, wait=0)
        cluster.c.wait_healthy(3, 90)
    else:
        raise AssertionError("the target always took the lock first")
    released = time.monotonic()
    took = cluster.wait_for(
        "another member to become writable",
        lambda: any(n != target for n in cluster.writable_nodes()),
        timeout=45,
    )
    new = cluster.wait_new_leader(target, timeout=10)
    print(f"switchover {old} -> {target}; {target} killed on release; {new} writable {took:.2f}s")
    assert took < TTL + SLACK, f"took {took:.1f}s"
    assert new != target
    assert time.monotonic() - released < 60


def test_switchover_to_a_replica_that_is_not_streaming_is_refused(cluster: Harness) -> None:
    old = cluster.leader().name
    target = next(n for n in cluster.c.node_names() if n != old)
    cluster.cut_stream(target)
    kv = consul_client(cluster.c.layout.consul_url).kv
    key = f"pgras/{cluster.c.layout.cluster}/switchover"
    kv.put(key, Switchover(old, target, time.time()).to_json())
    cluster.wait_for("the leader to drop the request", lambda: kv.get(key)[1] is None, timeout=10)
    cluster.wait_log(
        f"{old}-controller",
        f"refusing the switchover: {target} is not a healthy streaming replica",
    )
    print(json.dumps({"leader": old, "target": target, "still_leader": cluster.leader().name}))
    assert cluster.leader().name == old
    assert cluster.writable_nodes() == [old]
