"""Faults on chart-made pods in Docker: node loss (kill), recreation on the same
volume, partition, a frozen controller, graceful pod deletion (handover), a clone
from scratch under the chart's probes.

Each test takes the state it needs from fixtures (``table``: a healthy cluster with
the writes table), never from the test before. Before a "no acknowledged write lost"
check the tests wait until the replicas have replayed the primary's WAL position
(LSNs compared), never a fixed sleep. Figures are printed and summarised at the end.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

from tests.images.pods import DockerCluster, figure, wait_for
from tests.images.workload import (
    LAST_ERROR,
    Writer,
    create_table,
    first_write_through,
    next_seq,
    next_seqs,
    post_json,
    seqs_on,
    wait_replayed,
    writable_in_pod,
    write,
)

pytestmark = [pytest.mark.images, pytest.mark.timeout(600)]


@pytest.fixture
def table(healthy: DockerCluster) -> DockerCluster:
    """A healthy cluster with the table the fault tests write into."""
    primary, _ = healthy.wait_healthy()
    create_table(healthy, primary)
    return healthy


# ---------------------------------------------------------------------------- faults


def test_kill_primary_pod_promotes_a_replica(table: DockerCluster) -> None:
    """docker kill of every container of the primary pod (node loss): a replica takes
    over, writes work again through pgpool and the app, no acknowledged write is lost."""
    cluster = table
    old, replicas = cluster.wait_healthy()
    pgpool = cluster.pgpool_conninfo()
    before = next_seqs(10)
    for seq in before:
        assert write(pgpool, seq, "before-kill") is not None, LAST_ERROR
    wait_replayed(cluster, old, replicas)

    t0 = time.monotonic()
    cluster.kill_pod(old)
    figure("kill primary pod -> first write through pgpool", first_write_through(pgpool, t0, "k"))
    new = cluster.wait_primary(replicas, timeout=30)
    figure("kill primary pod -> new primary answers /primary", time.monotonic() - t0)

    def app_writes() -> bool:
        status, _ = post_json(
            cluster.app_url("/api/puppies"),
            {"name": "After", "breed": "Kill", "age": 2, "sex": "M"},
        )
        return status == 200

    wait_for("the demo app to write again", app_writes, 60, 0.5)
    figure("kill primary pod -> demo app writes again", time.monotonic() - t0)
    missing = set(before) - (seqs_on(cluster.pod_conninfo(new)) or set())
    assert not missing, f"writes acknowledged before the kill are missing on {new}: {missing}"


def test_killed_pod_recreated_on_its_volume_rejoins_as_replica(table: DockerCluster) -> None:
    """The killed primary's pod is recreated (same name, same volume, as a StatefulSet
    does) and comes back as a streaming replica with its old rows and the new ones."""
    cluster = table
    old, replicas = cluster.wait_healthy()
    pgpool = cluster.pgpool_conninfo()
    before = next_seqs(5)
    for seq in before:
        assert write(pgpool, seq, "before-kill") is not None, LAST_ERROR
    wait_replayed(cluster, old, replicas)
    cluster.kill_pod(old)
    cluster.wait_primary(replicas, timeout=60)
    while_down = next_seq()
    wait_for("a write while the pod is down", lambda: write(pgpool, while_down, "down"), 60)

    t0 = time.monotonic()
    cluster.recreate_pod(old)
    cluster.wait_replica(old, f"{old} to answer /replica", 90)
    figure("recreate killed primary pod on its volume -> streaming replica", time.monotonic() - t0)

    def has_data() -> bool:
        return {*before, while_down} <= (seqs_on(cluster.pod_conninfo(old)) or set())

    wait_for(f"{old} to hold its old rows and the one written while it was down", has_data, 30)
    wait_for(f"{old} to pass its readiness probe", lambda: cluster.probe(old, "readiness"), 10)


def test_partitioned_primary_is_fenced_and_rejoins(table: DockerCluster) -> None:
    """docker network disconnect of the primary pod: fenced, replaced; reconnected, it
    streams as a replica and no write the new primary acknowledged is lost."""
    cluster = table
    old, replicas = cluster.wait_healthy()
    old_ip = cluster.pod_ip(old)
    assert writable_in_pod(cluster, old), f"probe write on {old} failed before the partition"

    with Writer(cluster.pgpool_conninfo(), "partition") as writer:
        wait_for("writes through pgpool", lambda: writer.acks, 30, 0.1)
        t0 = time.monotonic()
        cluster.disconnect(old)
        wait_for(f"{old} to stop accepting writes", lambda: not writable_in_pod(cluster, old), 30)
        figure("partition -> old primary fenced", time.monotonic() - t0)
        new = cluster.wait_primary(replicas, timeout=60)
        figure("partition -> new primary answers /primary", time.monotonic() - t0)
        wait_for(f"{new} ready", lambda: cluster.probe(new, "readiness"), 10)
        assert not cluster.probe(old, "readiness"), f"{old} looks ready while cut off"
        new_ip = cluster.pod_ip(new)
        wait_for(
            "a write acknowledged by the new primary",
            lambda: any(ip == new_ip for _, ip, _ in writer.acks),
            60,
        )
        first_new = min(t for _, ip, t in writer.acks if ip == new_ip)
        figure("partition -> first write acknowledged by the new primary", first_new - t0)
        assert not writable_in_pod(cluster, old), f"{old} accepts writes again while cut off"

    acks_old = {s for s, ip, _ in writer.acks if ip == old_ip}
    acks_new = {s for s, ip, _ in writer.acks if ip == new_ip}
    t1 = time.monotonic()
    cluster.connect(old)
    cluster.wait_replica(old, f"{old} to rejoin as a replica", 120)
    figure("reconnect -> old primary streams as replica", time.monotonic() - t1)
    assert cluster.primaries() == [new], f"primaries after rejoin: {cluster.primaries()}"
    lost = acks_new - (seqs_on(cluster.pod_conninfo(new)) or set())
    assert not lost, f"writes acknowledged by the new primary {new} are missing there: {lost}"
    wait_replayed(cluster, new, [old])
    missing_old = acks_new - (seqs_on(cluster.pod_conninfo(old)) or set())
    assert not missing_old, f"{old} replayed past them but lacks {missing_old}"
    print(
        f"\n[images] partition: {len(acks_old)} writes acknowledged by the old primary, "
        f"{len(acks_new)} by the new one; "
        f"{len(acks_old - (seqs_on(cluster.pod_conninfo(new)) or set()))} of the old primary's "
        "are not on the new one (the async replication window)"
    )


def test_frozen_controller_primary_is_fenced(table: DockerCluster) -> None:
    """SIGSTOP of the primary pod's controller (a hung sidecar): its agent's dead-man
    switch demotes postgres, a replica takes over; SIGCONT, and the old primary
    follows the new one."""
    cluster = table
    old, replicas = cluster.wait_healthy()
    t0 = time.monotonic()
    cluster.signal_processes(old, "controller", "STOP")
    try:
        wait_for(f"{old} to stop accepting writes", lambda: not writable_in_pod(cluster, old), 30)
        figure("controller SIGSTOP -> its primary fenced by the agent", time.monotonic() - t0)
        new = cluster.wait_primary(replicas, timeout=60)
        figure("controller SIGSTOP -> new primary answers /primary", time.monotonic() - t0)
        assert not writable_in_pod(cluster, old), f"{old} writable while its controller hangs"
        assert not cluster.probe(old, "readiness"), f"{old} still ready with a frozen controller"
        wait_for(f"{new} to pass its readiness probe", lambda: cluster.probe(new, "readiness"), 10)
    finally:
        cluster.signal_processes(old, "controller", "CONT")
    cluster.wait_replica(old, f"{old} to follow {new}", 120)
    assert cluster.primaries() == [new], cluster.primaries()


def test_delete_primary_pod_hands_over(table: DockerCluster) -> None:
    """Graceful deletion of the primary pod (preStop hooks, then SIGTERM, as a kubelet
    does): the controller hands leadership to a replica before postgres stops, so the
    write outage is a switchover's, and every container exits within the grace period."""
    cluster = table
    old, replicas = cluster.wait_healthy()
    grace = cluster.pod_runs[old].grace_seconds
    with Writer(cluster.pgpool_conninfo(), "delete") as writer:
        wait_for("writes through pgpool", lambda: writer.acks, 30, 0.1)
        states: dict[str, dict[str, Any]] = {}
        deleter = threading.Thread(target=lambda: states.update(cluster.delete_pod(old)))
        t0 = time.monotonic()
        deleter.start()
        new = cluster.wait_primary(replicas, timeout=30)
        handover = time.monotonic() - t0
        deleter.join(grace + 90)
        took = time.monotonic() - t0
        new_ip = cluster.pod_ip(new)
        wait_for(
            "a write acknowledged by the new primary",
            lambda: any(ip == new_ip for _, ip, _ in writer.acks),
            30,
        )
        time.sleep(0.5)  # let the writer record a few more acknowledgements past the gap
    outage = writer.longest_gap(t0)
    figure("delete primary pod -> new primary answers /primary (handover)", handover)
    figure("delete primary pod -> write outage through pgpool", outage)
    figure("delete primary pod -> every container stopped (preStop + SIGTERM)", took)
    ctl_log = cluster.logs(cluster.container(old, "controller"), tail=200)
    assert set(states) == {c.name for c in cluster.pod_runs[old].containers}, states
    for name, state in states.items():
        assert state["ExitCode"] not in (137,) and not state["OOMKilled"], (
            f"{old}/{name} was killed (exit {state['ExitCode']}) instead of stopping:\n"
            f"{cluster.logs(cluster.container(old, name))}"
        )
        assert state["took"] < grace, f"{old}/{name} took {state['took']:.1f}s (grace {grace}s)"
    assert "handed leadership to" in ctl_log, f"no handover in the controller's log:\n{ctl_log}"

    t1 = time.monotonic()
    cluster.recreate_pod(old)
    cluster.wait_replica(old, f"{old} back as a replica", 90)
    figure("deleted primary pod recreated -> streaming replica", time.monotonic() - t1)


def test_probes_through_a_basebackup(table: DockerCluster) -> None:
    """A replica whose volume is gone (PVC deleted) clones from the primary over a
    slowed link (tc on the host end of its veth): its liveness probe stays green
    throughout (a long basebackup is never killed), its readiness fails until it
    streams, and passes from then on."""
    cluster = table
    primary, replicas = cluster.wait_healthy()
    with psycopg.connect(cluster.pod_conninfo(primary), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS pgras_test_bulk AS "
            "SELECT g, repeat(md5(g::text), 12) AS pad FROM generate_series(1, 300000) g"
        )
    victim = replicas[0]
    wait_replayed(cluster, primary, [victim])
    cluster.remove_pod(victim, volumes=True)
    t0 = time.monotonic()
    # ~130 MB at 120 Mbit/s: a clone of several seconds, longer than a liveness period.
    cluster.create_pod(int(victim.rsplit("-", 1)[1]), ingress_rate="120mbit")

    samples: list[tuple[float, bool | None, bool | None, bool, str | None]] = []

    def sample() -> bool:
        live = cluster.probe(victim, "liveness")
        ready = cluster.probe(victim, "readiness")
        status, body = cluster.api(victim, "/status")
        job = body.get("job") if status == 200 and isinstance(body, dict) else None
        streaming = cluster.api(victim, "/replica")[0] == 200
        samples.append((time.monotonic() - t0, live, ready, streaming, job))
        return streaming and bool(ready)

    wait_for(
        f"{victim} to become a ready replica within 180s of its recreation",
        sample,
        t0 + 180 - time.monotonic(),
        0.3,
        detail=lambda: f"last samples: {samples[-5:]}",
    )
    figure("empty volume -> cloned, streaming and ready", time.monotonic() - t0)

    jobs = {job for *_, job in samples if job}
    answered = [s for s in samples if s[1] is not None and s[1]]
    first_live = answered[0][0] if answered else None
    assert first_live is not None, f"liveness never passed: {samples}"
    failures = [s for s in samples if s[0] > first_live and not s[1]]
    assert not failures, f"liveness failed during the clone (jobs seen {jobs}): {failures}"
    early_ready = [s for s in samples if s[2] and not s[3]]
    assert not early_ready, f"ready while not streaming: {early_ready}"
    not_ready = [s for s in samples if s[0] >= first_live and not s[2]]
    cloning = [s for s in samples if s[4] == "clone" and s[0] >= first_live]
    print(
        f"\n[images] basebackup: {len(samples)} samples, jobs seen {sorted(jobs)}, "
        f"liveness green from {first_live:.1f}s, {len(cloning)} samples while cloning "
        f"(all live), not ready for {len(not_ready)} samples"
    )
    assert cloning, f"no sample caught the clone after liveness turned green: {samples}"
    assert not_ready, "the pod was never seen not ready: the clone was not observed"
    cluster.limit_ingress(victim, None)
    for _ in range(3):
        time.sleep(cluster.probe_period("readiness"))
        assert cluster.probe(victim, "readiness"), f"{victim} ready, then not, while streaming"
