"""The tutorial scenario end to end, against a real local cluster (``pgras up``).

One cluster for the module: 3 nodes (real PostgreSQL, Consul, agents,
controllers) with the access layer (HAProxy write/read endpoints, pgpool and the
three puppies apps), in a fresh 0755 directory under /tmp, on ports 28500-28850
(two runs of this module on one machine at once collide there).

The steps follow the tutorial: the seed row through the write and the read app;
insert, update, insert, delete through the write app, seen through the read app;
then the primary node is killed while a reader hammers the read app and writers
the write and the pgpool apps. The outage figures are printed (reads: success
ratio and longest gap; writes: time to the first success, every failure a 503
JSON) and bounded; the old primary rejoins as a streaming replica and every node
ends with the same rows, with no write lost that was acknowledged after the kill.

Every wait is bounded; on failure the tail of every log is printed.
"""

from __future__ import annotations

import functools
import itertools
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
import requests

from postgres_ras.demo_app import create_app
from postgres_ras.demo_app.db import app_conninfo
from postgres_ras.local.access import endpoints
from postgres_ras.local.cluster import LocalCluster
from tests.helpers import local_cluster, poll_value

pytestmark = [pytest.mark.access, pytest.mark.timeout(240)]

BASE_PORT = int(os.environ.get("PGRAS_TUTORIAL_BASE_PORT", "28500"))  # uses base..base+350
SEED = {"name": "Tyler", "breed": "Retrieved", "age": 3, "sex": "M"}
FIELDS = ("name", "breed", "age", "sex")

# Bounds on the failover (figures printed). Measured locally (2 vCPU): reads 100% ok,
# longest gap 0.1-1.2 s (at most one read of ~1 s per run, likely HAProxy's 1 s
# turn-around before it retries a connection the dead node refused); writes back
# after 4-6 s. Without a read fallback while no replica streams and no primary is up,
# the gap was 2.9-4.8 s with reads failing: the gap bound tells the two apart.
MIN_READ_SUCCESS = 0.95
MAX_READ_GAP_S = 2.5
MAX_WRITE_OUTAGE_S = 20.0


def wait_for(what: str, check: Callable[[], Any], timeout: float, step: float = 0.2) -> Any:
    """``poll_value`` at this module's pace: what ``check`` returned once truthy."""
    return poll_value(what, check, timeout, step)


@dataclass
class Tutorial:
    cluster: LocalCluster
    eps: dict[str, str]

    def node_dsn(self, port: int, dbname: str = "puppies") -> str:
        user, password = self.cluster.superuser
        return (
            f"host=127.0.0.1 port={port} user={user} password={password} dbname={dbname} "
            "connect_timeout=2"
        )

    def node_rows(self, port: int) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.node_dsn(port), autocommit=True) as conn:
            return conn.execute("SELECT id, name, breed, age, sex FROM pups ORDER BY id").fetchall()

    def pgpool_dsn(self, dbname: str = "puppies") -> str:
        return self.eps["pgpool"].replace("dbname=postgres", f"dbname={dbname}")

    def haproxy_up(self) -> dict[str, set[str]]:
        """Backend name -> the servers HAProxy has UP in it (from its stats CSV)."""
        text = requests.get(self.eps["haproxy_stats"] + ";csv", timeout=2).text
        up: dict[str, set[str]] = {}
        for line in text.splitlines()[1:]:
            cols = line.split(",")
            if len(cols) > 17 and cols[1] not in ("FRONTEND", "BACKEND") and cols[17] == "UP":
                up.setdefault(cols[0], set()).add(cols[1])
        return up

    def wait_routed(self, timeout: float = 15.0) -> None:
        """Until HAProxy routes writes to the leader and reads to every streaming replica
        (its checks trail the cluster's state by up to a check interval or two)."""

        def routed() -> bool:
            rows = self.cluster.members()
            leader = {r.name for r in rows if r.leader and r.role == "primary"}
            replicas = {r.name for r in rows if r.role == "replica" and r.streaming}
            up = self.haproxy_up()
            return up.get("write") == leader and up.get("read") == replicas and bool(replicas)

        wait_for("HAProxy to route to the leader and the replicas", routed, timeout)

    def ports_by_role(self) -> tuple[int, set[int]]:
        """The leader's postgres port and the streaming replicas' ports (from Consul)."""
        rows = self.cluster.members()
        leader = [r.port for r in rows if r.leader and r.role == "primary"]
        replicas = {r.port for r in rows if r.role == "replica" and r.streaming}
        assert len(leader) == 1, rows
        return leader[0], replicas


def get(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    resp = requests.get(url, timeout=timeout)
    return resp.status_code, resp.json()


def pups(url: str) -> list[dict[str, Any]]:
    status, body = get(url)
    assert status == 200, body
    assert body["status"] == "success" and body["message"] == "Retrieved ALL puppies", body
    return list(body["data"])


def as_rows(data: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(p["id"], *(p[f] for f in FIELDS)) for p in data]


@pytest.fixture(scope="module")
def tutorial(request: pytest.FixtureRequest) -> Iterator[Tutorial]:
    with local_cluster("pgras-tutorial-", BASE_PORT, request, access=True, wait=120) as cluster:
        tutorial = Tutorial(cluster, endpoints(cluster.layout, cluster.superuser))
        tutorial.wait_routed()
        yield tutorial


def test_pgpool_reads_reach_replicas_and_writes_the_primary(tutorial: Tutorial) -> None:
    leader_port, replica_ports = tutorial.ports_by_role()
    assert len(replica_ports) == 2
    wait_for(
        "the app through pgpool to serve the seed row", lambda: pups(tutorial.eps["app_pgpool"]), 30
    )
    seen: set[int] = set()
    for _ in range(12):  # a fresh session each time: HAProxy round-robins over the replicas
        with psycopg.connect(tutorial.pgpool_dsn(), connect_timeout=3, autocommit=True) as conn:
            port = conn.execute("SELECT inet_server_port()").fetchone()
            assert port is not None and port[0] in replica_ports, (port, replica_ports)
            seen.add(port[0])
    assert seen == replica_ports, f"reads reached only {seen} of the replicas {replica_ports}"
    with psycopg.connect(tutorial.pgpool_dsn(), connect_timeout=3) as conn:
        row = conn.execute(
            "INSERT INTO pups (name, breed, age, sex) VALUES ('routing', 'probe', 1, 'F') "
            "RETURNING id, inet_server_port()"
        ).fetchone()
        assert row is not None and row[1] == leader_port
        # After a write, the rest of the transaction stays on the primary too.
        after = conn.execute("SELECT inet_server_port(), pg_is_in_recovery()").fetchone()
        assert after == (leader_port, False)
        conn.execute("DELETE FROM pups WHERE id = %s", (row[0],))
        conn.commit()


def test_app_retries_a_cut_read_once_but_never_a_write(
    tutorial: Tutorial, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pooled connection cut under a request (as HAProxy cuts sessions to a node that
    changes role): a GET is answered from a fresh connection, a POST answers 503 and
    is not replayed."""
    app = create_app(tutorial.eps["write"], bootstrap=False)
    pool = app.extensions["puppies_pool"]
    cut_dsn = app_conninfo(tutorial.eps["write"])

    @contextmanager
    def cut_connection(*args: Any, **kwargs: Any) -> Iterator[psycopg.Connection[Any]]:
        conn = psycopg.connect(cut_dsn, autocommit=True)
        pid = conn.info.backend_pid
        with psycopg.connect(cut_dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            wait_for(
                "the cut backend to end",
                lambda: (
                    admin.execute(
                        "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = %s", (pid,)
                    ).fetchone()
                    == (True,)
                ),
                5,
                0.05,
            )
        try:
            yield conn
        finally:
            conn.close()

    try:
        monkeypatch.setattr(pool, "connection", cut_connection)
        client = app.test_client()
        resp = client.get("/api/puppies")
        assert resp.status_code == 200, resp.get_json()
        tyler = next(p for p in resp.get_json()["data"] if p["name"] == "Tyler")
        resp = client.get(f"/api/puppies/{tyler['id']}")
        assert resp.status_code == 200 and resp.get_json()["data"] == tyler
        resp = client.post("/api/puppies", json={"name": "cut-write", "age": 1})
        assert resp.status_code == 503 and resp.get_json()["status"] == "error"
        resp = client.put(f"/api/puppies/{tyler['id']}", json={"name": "cut-update"})
        assert resp.status_code == 503
    finally:
        pool.close()
    with psycopg.connect(tutorial.pgpool_dsn(), autocommit=True) as conn:
        written = conn.execute(
            "SELECT count(*) FROM pups WHERE name IN ('cut-write', 'cut-update')"
        ).fetchone()
    assert written == (0,), "a write was replayed on a fresh connection"


@dataclass(frozen=True)
class Sample:
    n: int  # the n-th request of its probe
    sent: float  # time.monotonic()
    answered: float
    status: int | None  # None: no HTTP answer (refused, timed out)
    body: Any  # the JSON answer, or the text, or the exception's name


@dataclass
class Probe:
    """Sends ``send(n)`` every ``interval`` seconds on a thread and records every answer."""

    name: str
    send: Callable[[int], requests.Response]
    interval: float
    samples: list[Sample] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> Probe:
        self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            sent = time.monotonic()
            status: int | None = None
            try:
                resp = self.send(n)
                status = resp.status_code
                try:
                    body: Any = resp.json()
                except ValueError:
                    body = resp.text[:300]
            except requests.RequestException as exc:
                body = type(exc).__name__
            self.samples.append(Sample(n, sent, time.monotonic(), status, body))
            self.stop.wait(max(0.0, self.interval - (time.monotonic() - sent)))

    def finish(self) -> None:
        self.stop.set()
        assert self.thread is not None
        self.thread.join(15)

    def since(self, t: float) -> list[Sample]:
        return [s for s in self.samples if s.sent >= t]

    def first_ok_after(self, t: float) -> float | None:
        """When the first request sent at or after ``t`` was answered 200."""
        return next((s.answered for s in self.since(t) if s.status == 200), None)


def read_figures(reader: Probe, since: float, until: float) -> tuple[int, int, float]:
    """(successes, attempts, longest gap in s between answered reads) in [since, until]."""
    window = [s for s in reader.since(since) if s.sent <= until]
    ok_times = [since] + [s.answered for s in window if s.status == 200] + [until]
    gap = max(b - a for a, b in itertools.pairwise(ok_times))
    return sum(1 for s in window if s.status == 200), len(window), gap


def check_write_outage(probe: Probe, killed_at: float) -> tuple[float, list[Sample]]:
    """While no primary is there, writes answer 503 JSON (never a 500, never "read-only
    transaction"); once one succeeds, every later one does. Returns (outage s, failures)."""
    back = probe.first_ok_after(killed_at)
    assert back is not None, f"{probe.name}: no write succeeded after the kill"
    failed = [s for s in probe.since(killed_at) if s.status != 200]
    for s in failed:
        assert s.status == 503, s
        assert isinstance(s.body, dict) and s.body.get("status") == "error", s
        assert "read-only" not in str(s.body), s
    later = [s for s in probe.samples if s.sent >= back]
    assert later and all(s.status == 200 for s in later), later
    return back - killed_at, failed


def acknowledged(probe: Probe, prefix: str, since: float = 0.0) -> set[str]:
    """The names of the rows ``probe`` wrote with a 200 answer, sent at or after ``since``."""
    return {f"{prefix}-{s.n}" for s in probe.since(since) if s.status == 200}


def test_tutorial_scenario(tutorial: Tutorial) -> None:
    cluster, eps = tutorial.cluster, tutorial.eps
    app_write, app_read, app_pgpool = eps["app_write"], eps["app_read"], eps["app_pgpool"]

    # 1. The seed row, through the write app and the read app.
    for url in (app_write, app_read):
        data = wait_for(f"{url} to serve the seed row", functools.partial(pups, url), 30)
        assert {k: data[0][k] for k in FIELDS} == SEED, data

    # 2. Insert (form), update (JSON), insert (JSON), delete, through the write app.
    resp = requests.post(app_write, data={"name": "Whisky", "breed": "annoying", "age": "3",
                                          "sex": "F"}, timeout=10)  # fmt: skip
    assert (resp.status_code, resp.json()) == (
        200, {"status": "success", "message": "Inserted one puppy"},
    )  # fmt: skip
    whisky = next(p for p in pups(app_write) if p["name"] == "Whisky")
    resp = requests.put(f"{app_write}/{whisky['id']}", json={"name": "Whisky", "breed":
                        "sleepy", "age": 4, "sex": "F"}, timeout=10)  # fmt: skip
    assert (resp.status_code, resp.json()) == (
        200, {"status": "success", "message": "Updated puppy"},
    )  # fmt: skip
    resp = requests.post(app_write, json={"name": "Hunter", "breed": "Basset Hound", "age": 2,
                                          "sex": "M"}, timeout=10)  # fmt: skip
    assert resp.status_code == 200, resp.text
    hunter = next(p for p in pups(app_write) if p["name"] == "Hunter")
    resp = requests.delete(f"{app_write}/{hunter['id']}", timeout=10)
    assert (resp.status_code, resp.json()) == (
        200, {"status": "success", "message": "Removed 1 puppy"},
    )  # fmt: skip
    assert requests.get(f"{app_write}/{hunter['id']}", timeout=10).status_code == 404

    expected = pups(app_write)
    assert [(p["name"], p["breed"], p["age"]) for p in expected] == [
        ("Tyler", "Retrieved", 3), ("Whisky", "sleepy", 4),
    ]  # fmt: skip
    # The replicas are asynchronous: the read app shows the same data soon.
    wait_for("the read app to show the writes", lambda: pups(app_read) == expected, 10)
    wait_for("the pgpool app to show the writes", lambda: pups(app_pgpool) == expected, 10)
    # Every replica has it before the primary dies, so no acknowledged write may be lost.
    ports = [p.postgres for p in cluster.node_ports()]
    wait_for(
        "every node to have the writes",
        lambda: all(tutorial.node_rows(p) == as_rows(expected) for p in ports),
        10,
    )

    # 3. Kill the primary node while reading through the read app and writing through
    #    the write app and the pgpool app.
    old = cluster.leader()
    assert old is not None and old.role == "primary"

    def post(url: str, prefix: str) -> Callable[[int], requests.Response]:
        return lambda n: requests.post(url, json={"name": f"{prefix}-{n}", "age": 1}, timeout=10)

    reader = Probe("reader", lambda n: requests.get(app_read, timeout=5), 0.1).start()
    writer = Probe("writer", post(app_write, "failover"), 0.2).start()
    pgpool_writer = Probe("pgpool-writer", post(app_pgpool, "failover-pgpool"), 0.2).start()
    probes = (reader, writer, pgpool_writer)
    try:
        time.sleep(1.0)
        cluster.kill(old.name, signal.SIGKILL)
        # Taken once every process of the node is signalled: a request sent later cannot
        # reach the old primary; one in flight at the kill may or may not have committed.
        killed_at = time.monotonic()
        for probe in (writer, pgpool_writer):
            wait_for(
                f"a write through {probe.name} to succeed after the failover",
                functools.partial(probe.first_ok_after, killed_at),
                MAX_WRITE_OUTAGE_S + 10,
            )
        new = wait_for(
            "a new leader",
            lambda: (row := cluster.leader()) is not None and row.name != old.name and row,
            10,
        )
        time.sleep(3.0)  # keep reading and writing a while on the new primary
    finally:
        for probe in probes:
            probe.finish()
    ended_at = time.monotonic()

    ok_reads, reads, gap = read_figures(reader, killed_at, ended_at)
    write_outage, write_failed = check_write_outage(writer, killed_at)
    pgpool_outage, pgpool_failed = check_write_outage(pgpool_writer, killed_at)
    print(
        f"\nfailover {old.name} -> {new.name}: reads through the read app {ok_reads}/{reads} ok "
        f"({ok_reads / max(reads, 1):.1%}), longest gap {gap:.2f}s, slowest read "
        f"{max(s.answered - s.sent for s in reader.since(killed_at)):.2f}s; writes back after "
        f"{write_outage:.2f}s through the write app ({len(write_failed)} answered 503), "
        f"{pgpool_outage:.2f}s through the pgpool app ({len(pgpool_failed)} answered 503)"
    )
    failed_reads = [s for s in reader.samples if s.status != 200]
    assert ok_reads / reads >= MIN_READ_SUCCESS, failed_reads
    assert gap < MAX_READ_GAP_S, failed_reads
    assert write_outage < MAX_WRITE_OUTAGE_S
    assert pgpool_outage < MAX_WRITE_OUTAGE_S
    # Replication is asynchronous: a write the old primary acknowledged just before it
    # died may be lost (counted below). Every write acknowledged after the kill must stay.
    written = acknowledged(writer, "failover", killed_at) | acknowledged(
        pgpool_writer, "failover-pgpool", killed_at
    )
    before_kill = acknowledged(writer, "failover") | acknowledged(pgpool_writer, "failover-pgpool")
    before_kill -= written

    # 4. The killed node comes back (``pgras up``) and rejoins as a streaming replica.
    cluster.up(access=True, wait=60)
    rows = {r.name: r for r in cluster.members()}
    assert rows[old.name].role == "replica" and rows[old.name].streaming, rows[old.name]
    assert [r.name for r in rows.values() if r.leader] == [new.name]

    # 5. With the old primary back as a replica (behind the read endpoint, so pgpool's
    #    backend 1), every write through either app lands on the primary: no
    #    "read-only transaction", no 503.
    for n in range(10):
        for url, prefix in ((app_pgpool, "rejoined-pgpool"), (app_write, "rejoined")):
            resp = requests.post(url, json={"name": f"{prefix}-{n}"}, timeout=10)
            assert resp.status_code == 200, resp.text
            written.add(f"{prefix}-{n}")

    # 6. Every node ends with the same rows, and no acknowledged write is lost.
    final = pups(app_write)
    names = {p["name"] for p in final}
    assert written <= names, f"acknowledged after the failover, then lost: {written - names}"
    print(
        f"writes acknowledged by the old primary before the kill: {len(before_kill)}, "
        f"lost (asynchronous replication): {len(before_kill - names)}"
    )
    assert [r for r in as_rows(final) if r[1] in ("Tyler", "Whisky")] == as_rows(expected)
    wait_for(
        "every node to hold the same rows as the primary",
        lambda: all(tutorial.node_rows(p) == as_rows(final) for p in ports),
        20,
    )
    wait_for("the read app to show them", lambda: pups(app_read) == final, 10)
