"""Issue 9.4: a leader whose postgres cannot start gives the lock up within primary_start_timeout.

An invalid setting in the primary's postgresql.conf, then SIGKILL of its
postmaster: postgres cannot come back, so the leader must stop trying, make
sure postgres is stopped and release the lock; the best replica takes over.
"""

from __future__ import annotations

import json
import os
import signal
import time

from postgres_ras.dcs.consul import client as consul_client
from tests.integration.conftest import Harness

TIMEOUT = 5.0  # primary_start_timeout for this test (dynamic config in Consul)
SLACK = 10.0  # detection, the race and promotion on a busy 2-core machine


def _set_primary_start_timeout(h: Harness, seconds: float) -> None:
    kv = consul_client(h.c.layout.consul_url).kv
    key = f"pgras/{h.c.layout.cluster}/config"
    _, item = kv.get(key)
    config = json.loads(item["Value"]) if item and item.get("Value") else {}
    config["primary_start_timeout"] = seconds
    assert kv.put(key, json.dumps(config))


def test_leader_whose_postgres_cannot_start_releases_the_lock(cluster: Harness) -> None:
    old = cluster.leader().name
    _set_primary_start_timeout(cluster, TIMEOUT)
    time.sleep(2.0)  # every controller reads the dynamic config on its next cycle
    conf = cluster.c.layout.node_dir(old) / "data" / "postgresql.conf"
    with conf.open("a") as f:
        f.write("\nshared_buffers = 'not-a-size'  # issue 9.4: postgres cannot start\n")
    pid = cluster.c.postmaster_pid(old)
    assert pid is not None
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    took = cluster.wait_for(
        "a replica to become writable",
        lambda: any(n != old for n in cluster.writable_nodes()),
        timeout=TIMEOUT + 30,
    )
    new = cluster.wait_new_leader(old, timeout=10)
    print(
        f"{old}: postgres cannot start; {new} writable {took:.2f}s after the kill "
        f"(primary_start_timeout {TIMEOUT:.0f}s)"
    )
    assert took < TIMEOUT + SLACK, f"took {took:.1f}s"
    assert cluster.writable_nodes() == [new]
    assert cluster.c.postmaster_pid(old) is None
    assert time.monotonic() - killed_at < TIMEOUT + SLACK + 15
