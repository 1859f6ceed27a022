"""A 3-server Consul losing its raft leader causes no failover (issue 9.15).

Three nodes, three real Consul servers (``--consul-servers 3``); node i's
controller talks to server (i-1) mod 3, as a pod talks to its local Consul
agent. A writer runs on the primary; the Consul raft leader is SIGKILLed and
restarted (as ``kill-consul-leader`` in verify does). Checked: the
postgres-ras leader key never names another node, at most one node is
writable at every check, no acknowledged write is lost.

Two cases, because they stress different timings: the killed server is a
replica's (the primary's controller waits out the Raft election through its own
server, which still answers: it keeps its session), or the primary's own (its
controller moves to another server, leaving its session, and the lock in it,
behind). No server can confirm any lock until the survivors have elected a
leader; when that takes longer than ``retry_timeout`` (seen at 3.5 s on a busy
CI machine) the primary's agent fences it, and once a leader is elected its
controller restarts it as primary under the same lock: an outage, but no
failover and no new timeline. In the second case Consul may also invalidate
the left-behind session (its node failed), and then a race follows: allowed,
provided the log names the lease that lapsed; still one writable node and
nothing lost.

A third test kills the primary's own server when it is a raft follower: no
election is needed, so the controller moves to the next server at once, takes
its leader key over into a session there, and postgres keeps running.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from postgres_ras.dcs.consul import client as consul_client
from postgres_ras.dcs.consul import cluster_prefix
from postgres_ras.local import consul_server
from postgres_ras.local.layout import ConsulPorts
from postgres_ras.local.workload import Writer, lost_writes
from tests.integration.conftest import Harness

SERVERS = 3
NODES = 3
# How long to watch after the kill: past 3 x ttl (4 s), so a lapsed session or a late
# demotion would have shown by then.
WATCH = 15.0
POLL = 0.1


@pytest.fixture
def three_servers(make_cluster: Callable[..., Harness]) -> Harness:
    return make_cluster(NODES, consul_servers=SERVERS)


def read_leader_key(h: Harness) -> tuple[bool, str | None]:
    """(answered, name in the postgres-ras leader key) from the first Consul server that
    answers: server 0 may be the one that was killed."""
    key = cluster_prefix(h.c.layout.cluster) + "leader"
    for server in h.c.layout.consul_servers(SERVERS):
        try:
            _, item = consul_client(server.url, timeout=0.5).kv.get(key)
        except Exception:  # this server is down or has no raft leader: ask the next
            continue
        value = (item.get("Value") or b"").decode() if item else ""
        return True, value or None
    return False, None


@dataclass
class Watch:
    """What a background poller saw: the leader key over time and the writable nodes."""

    leaders: list[str] = field(default_factory=list)  # distinct successive holders
    key_absent: int = 0  # polls on which a server answered with no leader key
    unanswered: int = 0  # polls on which no server could answer
    max_writable: int = 0
    primary_unwritable: int = 0  # polls on which the primary of before the kill was not writable
    split: list[tuple[float, list[str]]] = field(default_factory=list)
    polls: int = 0


def watch(h: Harness, stop: threading.Event, seen: Watch, primary: str) -> None:
    deadline = time.monotonic() + 120  # bounded even if the test forgets to stop it
    while not stop.is_set() and time.monotonic() < deadline:
        answered, name = read_leader_key(h)
        if not answered:
            seen.unanswered += 1
        elif name is None:
            seen.key_absent += 1
        elif not seen.leaders or seen.leaders[-1] != name:
            seen.leaders.append(name)
        writable = h.writable_nodes()
        seen.max_writable = max(seen.max_writable, len(writable))
        seen.primary_unwritable += primary not in writable
        if len(writable) > 1:
            seen.split.append((time.monotonic(), writable))
        seen.polls += 1
        time.sleep(POLL)


def server_of(h: Harness, node: str) -> ConsulPorts:
    return h.c.layout.node_consul(int(node.removeprefix("node")), SERVERS)


def consul_leader(h: Harness) -> ConsulPorts:
    found = consul_server.leader(h.c.layout, SERVERS)
    assert found is not None, "no Consul raft leader"
    return found


def arrange(h: Harness, primary_on_leader: bool) -> tuple[str, ConsulPorts]:
    """Switch the postgres-ras primary over so that it does (or does not) talk to the
    Consul raft leader; returns (primary, Consul leader)."""
    target = consul_leader(h)
    primary = h.leader().name
    if (server_of(h, primary) == target) != primary_on_leader:
        candidates = [
            n for n in h.c.node_names() if (server_of(h, n) == target) == primary_on_leader
        ]
        h.c.switchover(candidates[0])
        h.wait_for("a healthy cluster after the switchover", lambda: h.c.is_healthy(NODES), 60)
        primary = h.leader().name
    assert consul_leader(h) == target, "the Consul leader moved while arranging the case"
    assert (server_of(h, primary) == target) == primary_on_leader
    return primary, target


def new_log_lines(h: Harness, offsets: dict[str, int], words: tuple[str, ...]) -> list[str]:
    """Lines the controllers and agents logged since ``offsets`` that contain a word."""
    out = []
    for process, offset in offsets.items():
        out += [
            f"{process}: {line.strip()[-240:]}"
            for line in h.log_since(process, offset).splitlines()
            if any(w in line.lower() for w in words)
        ]
    return out


def log_offsets(h: Harness) -> dict[str, int]:
    processes = [f"{n}-{c}" for n in h.c.node_names() for c in ("controller", "agent")]
    return {p: h.log_mark(p) for p in processes if h.c.table.log_file(p).exists()}


@pytest.mark.parametrize(
    "primary_on_leader",
    [False, True],
    ids=["leader-is-a-replicas-server", "leader-is-the-primarys-server"],
)
def test_killing_the_consul_leader_causes_no_failover(
    three_servers: Harness, primary_on_leader: bool
) -> None:
    h = three_servers
    layout = h.c.layout
    # Each node's controller was configured with its own server.
    for i in range(1, NODES + 1):
        assert h.c.node_config(layout.node(i)).consul.url == layout.consul((i - 1) % SERVERS).url
    assert consul_server.healthy(layout, servers=SERVERS)
    primary, target = arrange(h, primary_on_leader)
    tl_before = h.sql(primary, "SELECT timeline_id FROM pg_control_checkpoint()")[0][0]
    postmaster_before = h.c.postmaster_pid(primary)

    seen = Watch()
    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(h, stop, seen, primary), daemon=True)
    offsets = log_offsets(h)
    elected: ConsulPorts | None = None
    reelection = rejoin = float("nan")
    try:
        watcher.start()
        with Writer(h.writer_dsn(), max_seconds=90) as writer:
            time.sleep(2.0)
            killed = consul_server.kill_leader(layout, h.c.table, SERVERS)
            killed_at = time.monotonic()
            assert killed == target, f"the Consul leader moved to {killed.name} meanwhile"
            elected = consul_server.wait_new_leader(layout, SERVERS, killed, timeout=30)
            reelection = time.monotonic() - killed_at
            # Brought back as the verify fault does: `up` starts whatever is missing.
            h.c.up(access=False, wait=0)
            rejoin = time.monotonic() - killed_at
            remaining = WATCH - (time.monotonic() - killed_at)
            if remaining > 0:
                time.sleep(remaining)
            acked = list(writer.result.acked)
    finally:
        stop.set()
        watcher.join(timeout=10)
    outage = writer.result.outage_after(killed_at)
    final_primary = h.leader().name
    tl_after = h.sql(final_primary, "SELECT timeline_id FROM pg_control_checkpoint()")[0][0]
    lost = lost_writes(h.writer_dsn(), acked)
    # A fenced primary restarted under the same leader key is no failover, but an outage.
    restarted = h.c.postmaster_pid(primary) != postmaster_before
    changes = max(0, len(seen.leaders) - 1)
    timing = new_log_lines(
        h,
        offsets,
        (
            "demot",
            "fenc",
            "retry_timeout",
            "lease",
            "consul unreachable",
            "promot",
            "session",
            "does not answer",
        ),
    )
    whose = "the primary's" if primary_on_leader else "a replica's"
    print(
        f"\nkilled Consul leader {killed.name} ({whose} server; primary {primary}); "
        f"new Consul leader {elected.name if elected else None} after {reelection:.2f}s; "
        f"{killed.name} back among the peers {rejoin:.2f}s after the kill"
    )
    print(
        f"write outage {outage:.2f}s, {len(acked)} writes acknowledged, {len(lost)} lost, "
        f"{writer.result.errors} write errors; postgres-ras leader changes {changes} "
        f"({' -> '.join(seen.leaders)}); leader key absent on {seen.key_absent} and Consul "
        f"unreadable on {seen.unanswered} of {seen.polls} polls; at most "
        f"{seen.max_writable} writable; timeline {tl_before} -> {tl_after}; {primary} not "
        f"writable on {seen.primary_unwritable} polls; its postgres "
        f"{'was stopped and restarted' if restarted else 'kept running'}"
    )
    for line in timing:
        print("  " + line)

    assert elected is not None, f"no new Consul leader within 30s of killing {killed.name}"
    assert seen.split == [], f"more than one writable node: {seen.split}"
    assert lost == [], f"{len(lost)} acknowledged writes lost: {lost[:10]}"
    failover = seen.leaders != [primary] or final_primary != primary
    if primary_on_leader and (failover or tl_after != tl_before):
        # Its own server is gone: when the election outlasts retry_timeout its agent
        # fences it, and if Consul also invalidated the session it left behind, the lock
        # is raced for again: won by a replica or by the same node on a new timeline.
        # Safe, but an outage: the log must name the timing that lapsed.
        assert any("no valid leader lease" in line for line in timing), "\n".join(timing)
        return
    assert not failover, (
        f"a failover happened ({' -> '.join(seen.leaders)}): the controllers logged\n"
        + "\n".join(timing)
    )
    assert tl_after == tl_before
    assert consul_server.healthy(layout, servers=SERVERS)


def test_a_primary_whose_own_consul_server_dies_moves_to_another(three_servers: Harness) -> None:
    h = three_servers
    layout = h.c.layout
    primary, consul_leader_before = arrange(h, primary_on_leader=False)
    own = server_of(h, primary)
    index = int(primary.removeprefix("node"))
    assert h.c.node_config(layout.node(index)).consul.fallback_urls == [
        s.url for s in layout.node_consul_fallbacks(index, SERVERS)
    ]
    postmaster_before = h.c.postmaster_pid(primary)
    proc = h.c.table.get(own.name)
    assert proc is not None, f"{own.name} is not in the process table"

    seen = Watch()
    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(h, stop, seen, primary), daemon=True)
    try:
        watcher.start()
        with Writer(h.writer_dsn(), max_seconds=90) as writer:
            time.sleep(2.0)
            os.kill(proc.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            text = h.wait_log(f"{primary}-controller", "does not answer: using", timeout=10)
            time.sleep(max(0.0, WATCH - (time.monotonic() - killed_at)))
            acked = list(writer.result.acked)
        h.c.up(access=False, wait=0)
    finally:
        stop.set()
        watcher.join(timeout=10)
    outage = writer.result.outage_after(killed_at)
    lost = lost_writes(h.writer_dsn(), acked)
    moved = [line for line in text.splitlines() if "does not answer: using" in line]
    print(
        f"\nkilled {own.name} ({primary}'s own server, a raft follower; raft leader "
        f"{consul_leader_before.name}); write outage {outage:.2f}s, {len(acked)} acknowledged, "
        f"{len(lost)} lost; leader key holders {' -> '.join(seen.leaders)}, absent on "
        f"{seen.key_absent} of {seen.polls} polls; {primary} not writable on "
        f"{seen.primary_unwritable} polls\n  {moved[-1][-200:]}"
    )
    assert seen.split == [], f"more than one writable node: {seen.split}"
    assert lost == [], f"{len(lost)} acknowledged writes lost: {lost[:10]}"
    assert seen.leaders == [primary], f"the leader key moved: {seen.leaders}"
    assert seen.key_absent == 0, "the leader key was released while the primary could serve"
    assert h.c.postmaster_pid(primary) == postmaster_before, "the primary was fenced"
    assert h.leader().name == primary
    h.wait_for(
        "all three Consul servers healthy",
        lambda: consul_server.healthy(layout, servers=SERVERS),
        30,
    )
