"""The four images as a three-pod cluster in Docker: issue 4, items 1-5.

The tests run in file order on one cluster (the ``cluster`` session fixture) and
each one waits for the state it needs first, so a failure names its own step.
Figures (outage, fencing, rejoin, stop times) are printed: run with ``-s`` to see
them live; they are also in the summary of ``make test-images``.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

from tests.images.conftest import (
    FIGURES,
    IMAGES,
    NODES,
    STOP_GRACE,
    DockerCluster,
    docker,
    http_get,
    wait_for,
)

pytestmark = [pytest.mark.images, pytest.mark.timeout(420)]

TABLE = "pgras_test_writes"

LAST_ERROR: list[str] = []


def figure(name: str, seconds: float) -> None:
    FIGURES[name] = seconds
    print(f"\n[images] {name}: {seconds:.1f}s")


def write(conninfo: str, seq: int, phase: str) -> str | None:
    """One INSERT on a fresh connection; the acknowledging server's address, or None."""
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            row = conn.execute(
                f"INSERT INTO {TABLE} (seq, phase) VALUES (%s, %s) "
                "RETURNING host(inet_server_addr())",
                (seq, phase),
            ).fetchone()
            return str(row[0]) if row else None
    except psycopg.Error as exc:
        LAST_ERROR[:] = [f"seq {seq}: {str(exc).strip()}"]
        return None


def seqs_on(conninfo: str) -> set[int] | None:
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            return {r[0] for r in conn.execute(f"SELECT seq FROM {TABLE}").fetchall()}
    except psycopg.Error:
        return None


def writable_in_pod(cluster: DockerCluster, node: str) -> bool:
    """True only if the pod's own postgres still accepts a write (rolled back)."""
    probe = cluster.psql_in_pod(
        node, f"BEGIN; INSERT INTO {TABLE} (seq, phase) VALUES (-1, 'probe'); ROLLBACK;"
    )
    return probe.returncode == 0


def wait_healthy_cluster(cluster: DockerCluster, timeout: float = 120) -> tuple[str, list[str]]:
    """One primary and two streaming replicas; returns (primary, replicas)."""

    def state() -> tuple[str, list[str]] | None:
        primaries, replicas = cluster.primaries(), cluster.replicas()
        if len(primaries) == 1 and len(replicas) == len(NODES) - 1:
            return primaries[0], replicas
        return None

    try:
        return wait_for("one primary and two replicas", state, timeout, 1.0)  # type: ignore[no-any-return]
    except AssertionError as exc:
        raise AssertionError(f"{exc}\ncluster view:\n{cluster.describe()}") from None


@dataclass
class Writer:
    """Writes seq 1, 2, ... through ``conninfo`` in a thread; records who acknowledged."""

    conninfo: str
    phase: str
    start_seq: int
    acks: list[tuple[int, str, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Writer:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=15)

    def _run(self) -> None:
        seq = self.start_seq
        while not self._stop.is_set():
            server = write(self.conninfo, seq, self.phase)
            if server is not None:
                self.acks.append((seq, server, time.monotonic()))
            else:
                time.sleep(0.05)
            seq += 1
            time.sleep(0.05)


@pytest.fixture(scope="module")
def writes_table(cluster: DockerCluster) -> str:
    """The table the fault tests write into, created through pgpool."""
    wait_healthy_cluster(cluster, timeout=180)

    def create() -> bool:
        try:
            with psycopg.connect(cluster.pgpool_conninfo(), autocommit=True) as conn:
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {TABLE} "
                    "(seq bigint PRIMARY KEY, phase text NOT NULL, at timestamptz DEFAULT now())"
                )
            return True
        except psycopg.Error as exc:
            LAST_ERROR[:] = [str(exc)]
            return False

    wait_for(f"CREATE TABLE through pgpool (last error: {LAST_ERROR})", create, 60, 1.0)
    return TABLE


def test_bootstrap_primary_two_replicas_and_app(cluster: DockerCluster) -> None:
    """Item 1: one primary, two streaming replicas, the app answers through pgpool."""
    start = time.monotonic()
    primary, _ = wait_healthy_cluster(cluster, timeout=180)
    figure("bootstrap to one primary + two replicas", time.monotonic() - start)

    with psycopg.connect(cluster.node_conninfo(primary), autocommit=True) as conn:
        rows = conn.execute("SELECT application_name, state FROM pg_stat_replication").fetchall()
    streaming = sorted(name for name, state in rows if state == "streaming")
    assert len(streaming) == 2, f"primary {primary} streams to {rows}, wanted two replicas"

    def app_answers() -> bool:
        status, body = http_get(cluster.app_url("/api/puppies"))
        return status == 200 and isinstance(body, dict) and body.get("status") == "success"

    wait_for("the demo app to answer GET /api/puppies through pgpool", app_answers, 90, 1.0)
    status, body = http_get(cluster.app_url("/healthz"))
    assert status == 200, body

    # A write through the app lands on the primary and shows up in a read.
    req = _post_json(
        cluster.app_url("/api/puppies"), {"name": "Docker", "breed": "Pod", "age": 1, "sex": "F"}
    )
    assert req[0] == 200, req

    # Reads are balanced to the replicas (async): the row shows up within moments.
    def app_reads_it() -> bool:
        status, body = http_get(cluster.app_url("/api/puppies"))
        return status == 200 and any(p["name"] == "Docker" for p in body["data"])

    wait_for("the puppy written through the app to be read back", app_reads_it, 10, 0.2)


@pytest.mark.parametrize("name", sorted(IMAGES))
@pytest.mark.usefixtures("docker_engine")
def test_image_metadata(name: str) -> None:
    """Every image: non-root user, exec-form entry point under tini, a stop signal,
    a HEALTHCHECK and the OCI labels."""
    config = json.loads(docker("image", "inspect", "-f", "{{json .Config}}", IMAGES[name]).stdout)
    assert config["User"] not in ("", "root", "0"), f"{name} runs as root"
    assert config["Entrypoint"][0] == "/usr/bin/tini", config["Entrypoint"]
    assert config["StopSignal"] in ("SIGTERM", "SIGINT"), config["StopSignal"]
    assert config["Healthcheck"]["Test"][0] == "CMD", config["Healthcheck"]
    labels = config["Labels"] or {}
    for key in ("title", "description", "source", "licenses", "version"):
        assert labels.get(f"org.opencontainers.image.{key}"), f"{name}: no {key} label"


def test_healthchecks_report_healthy(cluster: DockerCluster) -> None:
    """The images' HEALTHCHECKs pass on a working cluster."""
    wait_healthy_cluster(cluster)
    names = [cluster.agent(n) for n in NODES] + [cluster.controller(n) for n in NODES]
    names += [f"{cluster.run_id}-pgpool", f"{cluster.run_id}-app"]

    def unhealthy() -> list[str]:
        out = []
        for name in names:
            health = docker("inspect", "-f", "{{.State.Health.Status}}", name).stdout.strip()
            if health != "healthy":
                out.append(f"{name}={health}")
        return out

    start = time.monotonic()
    try:
        wait_for("every container to report healthy", lambda: not unhealthy(), 60, 1.0)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {unhealthy()}") from None
    figure("containers healthy (after bootstrap test)", time.monotonic() - start)


def _post_json(url: str, payload: dict[str, Any]) -> tuple[int, Any]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError as exc:
        return 0, str(exc)


KILLED: dict[str, str] = {}


@pytest.mark.usefixtures("writes_table")
def test_kill_primary_pod_promotes_a_replica(cluster: DockerCluster) -> None:
    """Item 2: docker kill both containers of the primary pod; writes work again."""
    old, _ = wait_healthy_cluster(cluster)
    pgpool = cluster.pgpool_conninfo()
    for seq in range(100, 110):
        assert write(pgpool, seq, "before-kill") is not None, LAST_ERROR
    # Let the replicas replay what was acknowledged (async replication).
    time.sleep(1)

    t0 = time.monotonic()
    cluster.kill_pod(old)
    KILLED["node"] = old
    seq = 1000
    while True:
        if write(pgpool, seq, "after-kill") is not None:
            break
        assert time.monotonic() - t0 < 90, f"no write through pgpool 90s after killing {old}"
        seq += 1
        time.sleep(0.1)
    figure("kill primary pod -> first write through pgpool", time.monotonic() - t0)

    others = tuple(n for n in NODES if n != old)
    new = cluster.wait_primary(others, timeout=30)
    figure("kill primary pod -> new primary answers /primary", time.monotonic() - t0)
    assert new != old

    def app_writes() -> bool:
        status, _ = _post_json(
            cluster.app_url("/api/puppies"),
            {"name": "After", "breed": "Kill", "age": 2, "sex": "M"},
        )
        return status == 200

    wait_for("the demo app to write again", app_writes, 60, 0.5)
    figure("kill primary pod -> demo app writes again", time.monotonic() - t0)

    on_new = seqs_on(cluster.node_conninfo(new))
    assert on_new is not None
    missing = set(range(100, 110)) - on_new
    assert not missing, (
        f"writes acknowledged before the kill are missing on {new}: {sorted(missing)}"
    )


@pytest.mark.usefixtures("writes_table")
def test_killed_pod_restarts_on_its_volume_as_replica(cluster: DockerCluster) -> None:
    """Item 3: the killed pod starts again on the same volume and rejoins as a replica."""
    node = KILLED.get("node")
    if node is None:
        pytest.skip("the kill test did not run")
    with psycopg.connect(cluster.pgpool_conninfo(), autocommit=True) as conn:
        conn.execute(f"INSERT INTO {TABLE} (seq, phase) VALUES (2000, 'while-down')")

    t0 = time.monotonic()
    cluster.start_pod(node)
    try:
        wait_for(f"{node} to answer /replica", lambda: cluster.api(node, "/replica")[0] == 200, 90)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\ncluster view:\n{cluster.describe()}") from None
    figure("restart killed pod -> streaming replica", time.monotonic() - t0)

    # Its old data (from before the kill) and what was written while it was down.
    def has_data() -> bool:
        seqs = seqs_on(cluster.node_conninfo(node)) or set()
        return set(range(100, 110)) <= seqs and 2000 in seqs

    wait_for(f"{node} to hold the old rows and the rows written while it was down", has_data, 30)
    wait_healthy_cluster(cluster, timeout=30)


@pytest.mark.usefixtures("writes_table")
def test_partitioned_primary_is_fenced_and_rejoins(cluster: DockerCluster) -> None:
    """Item 4: network-disconnect the primary pod: fenced, replaced; back as replica, no
    write acknowledged by the new primary is lost."""
    old, _ = wait_healthy_cluster(cluster)
    old_ip = cluster.ip(cluster.agent(old))
    assert writable_in_pod(cluster, old), f"probe write on {old} failed before the partition"
    others = tuple(n for n in NODES if n != old)

    with Writer(cluster.pgpool_conninfo(), "partition", 10_000) as writer:
        time.sleep(2)
        t0 = time.monotonic()
        cluster.disconnect(old)
        wait_for(
            f"{old} to stop accepting writes", lambda: not writable_in_pod(cluster, old), 30, 0.2
        )
        figure("partition -> old primary fenced", time.monotonic() - t0)
        new = cluster.wait_primary(others, timeout=60)
        figure("partition -> new primary answers /primary", time.monotonic() - t0)
        new_ip = cluster.ip(cluster.agent(new))
        wait_for(
            "a write acknowledged by the new primary",
            lambda: any(ip == new_ip for _, ip, _ in writer.acks),
            60,
        )
        first_new = min(t for _, ip, t in writer.acks if ip == new_ip)
        figure("partition -> first write acknowledged by the new primary", first_new - t0)
        time.sleep(3)
        # Cut off: still not writable, and no other node claims to be primary.
        assert not writable_in_pod(cluster, old), f"{old} accepts writes again while cut off"

    acks_old = {s for s, ip, _ in writer.acks if ip == old_ip}
    acks_new = {s for s, ip, _ in writer.acks if ip == new_ip}
    assert acks_new, "no write was acknowledged by the new primary"

    t1 = time.monotonic()
    cluster.connect(old)
    try:
        wait_for(
            f"{old} to rejoin as a replica", lambda: cluster.api(old, "/replica")[0] == 200, 120
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\ncluster view:\n{cluster.describe()}") from None
    figure("reconnect -> old primary streams as replica", time.monotonic() - t1)
    assert cluster.primaries() == [new], f"primaries after rejoin: {cluster.primaries()}"

    on_new = seqs_on(cluster.node_conninfo(new)) or set()
    lost = acks_new - on_new
    assert not lost, (
        f"writes acknowledged by the new primary {new} are missing there: {sorted(lost)}"
    )

    def old_caught_up() -> bool:
        return acks_new <= (seqs_on(cluster.node_conninfo(old)) or set())

    wait_for(f"{old} to replay every write the new primary acknowledged", old_caught_up, 30)
    lost_old = acks_old - on_new
    print(
        f"\n[images] partition: {len(acks_old)} writes acknowledged by the old primary, "
        f"{len(acks_new)} by the new one; {len(lost_old)} of the old primary's acknowledged "
        "writes are not on the new primary (async replication window)"
    )
    wait_healthy_cluster(cluster, timeout=60)


def _stop(cluster: DockerCluster, container: str) -> tuple[float, dict[str, Any]]:
    t0 = time.monotonic()
    docker("stop", "-t", str(STOP_GRACE), container, timeout=STOP_GRACE + 30)
    took = time.monotonic() - t0
    state = json.loads(docker("inspect", "-f", "{{json .State}}", container).stdout)
    return took, state


def test_every_container_stops_cleanly(cluster: DockerCluster) -> None:
    """Item 5: `docker stop` ends each container well within its grace period (no
    SIGKILL), and each postgres is shut down cleanly (pg_controldata)."""
    run = cluster.run_id
    order = [f"{run}-app", f"{run}-pgpool"]
    order += [cluster.controller(n) for n in NODES]
    order += [cluster.agent(n) for n in NODES]
    report = []
    for name in order:
        took, state = _stop(cluster, name)
        report.append(f"{name}: {took:.1f}s exit {state['ExitCode']}")
        assert state["Status"] == "exited", (name, state)
        assert state["ExitCode"] != 137 and not state["OOMKilled"], (
            f"{name} was killed (exit {state['ExitCode']}) instead of stopping on SIGTERM:\n"
            f"{cluster.logs(name)}"
        )
        assert took < STOP_GRACE - 1, f"{name} took {took:.1f}s to stop (grace {STOP_GRACE}s)"
    print("\n[images] docker stop: " + "; ".join(report))

    for node in NODES:
        proc = docker(
            "run", "--rm", *cluster.labels, "-v", f"{cluster.volume(node)}:/var/lib/pgras",
            "--entrypoint", "sh", IMAGES["postgres"], "-c",
            "d=$(find /var/lib/pgras -maxdepth 3 -name PG_VERSION | awk '{print length, $0}'"
            " | sort -n | head -1 | cut -d' ' -f2); pg_controldata \"$(dirname \"$d\")\"",
            check=False, timeout=60,
        )  # fmt: skip
        state = [ln for ln in proc.stdout.splitlines() if ln.startswith("Database cluster state")]
        assert state and ("shut down" in state[0]), f"{node}: {state or proc.stderr}"
