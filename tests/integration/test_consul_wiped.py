"""Issue 9.2: a node with an empty data directory never initializes a new cluster while a
reachable member has data (Consul lost its keys).

The cluster stops, Consul's keys are wiped and one member's data directory is
emptied. The members with data start first and are kept from racing for a
while (a pending switchover to a member that does not exist); the empty one
starts meanwhile. It must not run initdb: it waits, says why, and clones once
a member with data leads. The cluster keeps its system identifier and its rows.
"""

from __future__ import annotations

import json
import shutil
import time

from postgres_ras.dcs.consul import client as consul_client
from postgres_ras.local import consul_server
from tests.integration.conftest import Harness


def test_empty_member_does_not_initialize_while_members_have_data(cluster: Harness) -> None:
    leader = cluster.leader().name
    cluster.sql(leader, "CREATE TABLE kept AS SELECT generate_series(1, 1000) AS id")
    empty = next(n for n in cluster.c.node_names() if n != leader)
    others = [n for n in cluster.c.node_names() if n != empty]
    kv = consul_client(cluster.c.layout.consul_url).kv
    prefix = f"pgras/{cluster.c.layout.cluster}/"
    _, item = kv.get(prefix + "initialize")
    sysid = item["Value"].decode()
    for name in others:  # every member with data has replayed the rows
        cluster.wait_for(
            f"{name} to hold the rows",
            lambda name=name: cluster.sql(name, "SELECT count(*) FROM kept")[0][0] == 1000,
            timeout=30,
        )

    cluster.c.down()
    shutil.rmtree(cluster.c.layout.node_dir(empty) / "data")
    consul_server.start(cluster.c.layout, cluster.c.table)
    kv.delete(prefix, recurse=True)  # Consul lost everything
    blocker = {"from": "ghost", "to": "ghost", "at": time.time()}
    kv.put(prefix + "switchover", json.dumps(blocker))  # no race for a while
    for name in others:
        cluster.c.start_node(cluster.c.layout.node(int(name.removeprefix("node"))))
    cluster.wait_for(
        "the members with data to run read-only",
        lambda: sum(r.role == "replica" and r.state == "running" for r in cluster.c.members()) == 2,
        timeout=60,
    )
    cluster.c.start_node(cluster.c.layout.node(int(empty.removeprefix("node"))))
    time.sleep(8.0)
    _, item = kv.get(prefix + "initialize")
    during = item["Value"].decode() if item else None
    log = cluster.c.table.log_file(f"{empty}-controller").read_text(errors="replace")
    print(
        f"{empty} (empty) with {others} holding data, Consul wiped: initialize={during!r} "
        f"(the cluster's system id: {sysid})"
    )
    # The members with data may lead by now (the blocker lapses after one ttl) and
    # write back the cluster's own system id; a new one means the empty member forked.
    assert during in (None, sysid), f"{empty} initialized a new cluster ({during!r})"
    assert "holds data: not initializing a new cluster" in log
    assert "initializing a new cluster (initdb)" not in log

    kv.delete(prefix + "switchover")
    cluster.c.wait_healthy(3, 120)
    _, item = kv.get(prefix + "initialize")
    assert item["Value"].decode() == sysid
    assert cluster.sql(empty, "SELECT count(*) FROM kept")[0][0] == 1000
