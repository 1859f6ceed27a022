"""pgpool + HAProxy + the three apps in front of a real primary/replica pair.

Fake controllers answer ``/primary`` and ``/replica`` so HAProxy routes like in
the local cluster; the access layer is started with ``start_access`` itself.
"""

from __future__ import annotations

import json
import random
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest

from postgres_ras.local.access import endpoints, reload_haproxy, start_access, stop_access
from postgres_ras.local.layout import Layout, NodePorts
from postgres_ras.local.procs import ProcessTable
from tests.access.conftest import SUPERUSER, PgServer
from tests.helpers import free_port, poll, reserve_ports

pytestmark = pytest.mark.access


class FakeController:
    """Answers the controller's role endpoints from ``self.role``."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.port = free_port()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                ok = {"/primary": "primary", "/replica": "replica"}.get(path) == owner.role
                if path == "/health":
                    ok = owner.role != "down"
                try:
                    self.send_response(200 if ok else 503)
                    self.end_headers()
                    self.wfile.write(json.dumps({"role": owner.role}).encode())
                except OSError:
                    pass  # HAProxy closes its check connection as soon as it has the status

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def reserve_base_port() -> int:
    """A base port whose access-layer ports (base+10..base+32) are all free."""
    for _ in range(200):
        base = random.randrange(27000, 27900, 50)
        if reserve_ports(range(base, base + 40)):
            return base
    raise RuntimeError("no free base port")


@pytest.fixture(scope="module")
def replica(scratch: Path, primary: PgServer) -> Iterator[PgServer]:
    server = PgServer(scratch, "replica-pgpool")
    server.init_replica(primary)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def controllers() -> Iterator[list[FakeController]]:
    ctls = [FakeController("primary"), FakeController("replica")]
    yield ctls
    for ctl in ctls:
        ctl.close()


@pytest.fixture(scope="module")
def nodes(
    primary: PgServer, replica: PgServer, controllers: list[FakeController]
) -> list[NodePorts]:
    return [
        NodePorts("node1", 1, primary.port, 0, controllers[0].port),
        NodePorts("node2", 2, replica.port, 0, controllers[1].port),
    ]


@pytest.fixture(scope="module")
def access(scratch: Path, nodes: list[NodePorts]) -> Iterator[tuple[Layout, ProcessTable]]:
    layout = Layout(work_dir=scratch / "access", base_port=reserve_base_port())
    table = ProcessTable(layout.run, layout.logs)
    try:
        start_access(layout, table, nodes, SUPERUSER)
        yield layout, table
    finally:
        stop_access(layout, table)


@pytest.fixture
def log_files(access: tuple[Layout, ProcessTable]) -> Callable[[], list[Path]]:
    table = access[1]
    return lambda: [table.log_file(n) for n in ("haproxy", "pgpool", "app-pgpool", "app-read")]


def one(dsn: str, sql: str, params: tuple[Any, ...] = ()) -> Any:
    with psycopg.connect(dsn, connect_timeout=3, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        row = cur.fetchone() if cur.description else None
        return row[0] if row else None


def port_of(dsn: str) -> Any:
    """The port of the server a fresh session through ``dsn`` lands on."""
    return one(dsn, "SELECT inet_server_port()")


def http(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def test_reads_via_pgpool_reach_replica_and_writes_the_primary(
    access: tuple[Layout, ProcessTable], primary: PgServer, replica: PgServer
) -> None:
    layout, _ = access
    eps = endpoints(layout, SUPERUSER)
    poll("reads to reach the replica", lambda: port_of(eps["read"]) == replica.port, 10)
    assert port_of(eps["write"]) == primary.port
    assert one(eps["write"], "SELECT pg_is_in_recovery()") is False
    assert one(eps["read"], "SELECT pg_is_in_recovery()") is True
    # Through pgpool: plain reads are load-balanced to backend 1 (the replica)...
    for _ in range(5):
        assert port_of(eps["pgpool"]) == replica.port
    # ...writes, and everything after a write in a transaction, go to the primary.
    with psycopg.connect(eps["pgpool"], connect_timeout=3) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS routing (x int)")
        conn.execute("INSERT INTO routing VALUES (1)")
        row = conn.execute("SELECT inet_server_port(), pg_is_in_recovery()").fetchone()
        assert row == (primary.port, False)
        conn.commit()


def test_three_apps_share_the_tutorial_data(access: tuple[Layout, ProcessTable]) -> None:
    layout, _ = access
    eps = endpoints(layout, SUPERUSER)

    def seeded(url: str) -> bool:
        status, body = http("GET", url)
        return status == 200 and body["data"][0]["name"] == "Tyler"

    for app in ("app_write", "app_read", "app_pgpool"):
        poll(f"{app} to serve the seed row", lambda app=app: seeded(eps[app]), 30, 0.3)
    assert http("POST", eps["app_pgpool"], {"name": "Whisky", "age": 2}) == (
        200, {"status": "success", "message": "Inserted one puppy"},
    )  # fmt: skip
    assert http("POST", eps["app_write"], {"name": "Hunter"})[0] == 200

    def names(url: str) -> set[str]:
        return {p["name"] for p in http("GET", url)[1]["data"]}

    poll("replication", lambda: {"Whisky", "Hunter"} <= names(eps["app_read"]), 10)
    assert {"Whisky", "Hunter"} <= names(eps["app_pgpool"])


def test_restarted_pgpool_does_not_remember_a_backend_down(
    access: tuple[Layout, ProcessTable], primary: PgServer, replica: PgServer, scratch: Path
) -> None:
    layout, table = access
    table.stop("pgpool", sig=signal.SIGINT)
    status_file = layout.component_dir("pgpool") / "run" / "pgpool_status"
    status_file.write_text("up\ndown\n")  # what a pgpool that lost backend 1 leaves behind
    start_access(layout, table, [], SUPERUSER)  # everything else still runs: only pgpool starts
    eps = endpoints(layout, SUPERUSER)
    assert port_of(eps["pgpool"]) == replica.port
    with psycopg.connect(eps["pgpool"], connect_timeout=3, autocommit=True) as conn:
        rows = conn.execute("SHOW pool_nodes").fetchall()
    assert [r[3] for r in rows] == ["up", "up"], rows


def test_reload_haproxy_after_scaling(
    access: tuple[Layout, ProcessTable], nodes: list[NodePorts], primary: PgServer,
    replica: PgServer,
) -> None:  # fmt: skip
    layout, table = access
    eps = endpoints(layout, SUPERUSER)
    before = table.get("haproxy")
    reload_haproxy(layout, table, nodes[:1])  # scaled down to one node: reads by the primary
    poll("reads to fall back to the only node", lambda: port_of(eps["read"]) == primary.port, 10)
    reload_haproxy(layout, table, nodes)  # scaled up again
    poll("reads to reach the replica again", lambda: port_of(eps["read"]) == replica.port, 10)
    assert table.get("haproxy") == before  # reloaded in place, not restarted
    assert port_of(eps["write"]) == primary.port


def test_reads_served_by_the_primary_when_no_replica_is_up(
    access: tuple[Layout, ProcessTable], primary: PgServer, replica: PgServer,
    controllers: list[FakeController],
) -> None:  # fmt: skip
    layout, _ = access
    eps = endpoints(layout, SUPERUSER)
    controllers[1].role = "down"
    replica.stop()
    try:
        poll(
            "the read endpoint to fall back to the primary",
            lambda: port_of(eps["read"]) == primary.port,
            10,
        )
        assert port_of(eps["pgpool"]) == primary.port
        poll("app_read to recover", lambda: http("GET", eps["app_read"])[0] == 200, 15)
        poll("app_pgpool to recover", lambda: http("GET", eps["app_pgpool"])[0] == 200, 15)
    finally:
        replica.start()
        controllers[1].role = "replica"
    poll(
        "the read endpoint to return to the replica",
        lambda: port_of(eps["read"]) == replica.port,
        10,
    )


def write_through_pgpool(dsn: str, attempts: int = 3) -> Any:
    """INSERT through pgpool; a dropped connection is retried, a read-only error is not."""
    for attempt in range(attempts):
        try:
            return one(dsn, "INSERT INTO routing VALUES (4) RETURNING inet_server_port()")
        except psycopg.errors.ReadOnlySqlTransaction:
            raise
        except psycopg.OperationalError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.3)
    return None


def test_no_session_keeps_writing_to_a_demoted_primary(
    access: tuple[Layout, ProcessTable], primary: PgServer, replica: PgServer,
    controllers: list[FakeController],
) -> None:  # fmt: skip
    """Failover by hand: the replica is promoted, the old primary restarts read-only.

    A session opened through pgpool before the failover is cut, and writes through
    pgpool and through the pgpool app land on the new primary without any
    "read-only transaction" error once it is up.
    """
    layout, _ = access
    eps = endpoints(layout, SUPERUSER)
    held = psycopg.connect(eps["pgpool"], connect_timeout=3, autocommit=True)
    held.execute("INSERT INTO routing VALUES (2)")
    poll(
        "a write through the pgpool app",
        lambda: http("POST", eps["app_pgpool"], {"name": "before"})[0] == 200,
        10,
    )

    one(primary.dsn, "ALTER SYSTEM SET default_transaction_read_only = on")
    # Demotion as the agent does it: postgres stops (every client connection with it)
    # and comes back read-only.
    primary.stop()
    primary.start()
    controllers[0].role = "replica"
    replica.promote()
    controllers[1].role = "primary"

    def held_is_cut() -> bool:
        try:
            held.execute("SELECT 1")
        except psycopg.OperationalError:
            return True
        return False

    try:
        poll("the session to the demoted primary to be cut", held_is_cut, 10)
    finally:
        held.close()
    poll(
        "the write endpoint to reach the new primary",
        lambda: port_of(eps["write"]) == replica.port,
        10,
    )
    poll(
        "the read endpoint to reach the demoted primary, now a 'replica'",
        lambda: port_of(eps["read"]) == primary.port,
        10,
    )
    # New sessions opened while HAProxy's checks settle may fail; after that, none does.
    poll(
        "a write through pgpool",
        lambda: one(eps["pgpool"], "INSERT INTO routing VALUES (3)") is None,
        10,
    )
    # HAProxy may still cut a pgpool session while its read-side checks settle (a lost
    # connection, retried); what must never happen is a write reaching the read-only server.
    for _ in range(10):
        assert write_through_pgpool(eps["pgpool"]) == replica.port
    poll(
        "writes through the pgpool app",
        lambda: http("POST", eps["app_pgpool"], {"name": "after"})[0] == 200,
        15,
    )
    ok = 0
    for _ in range(20):  # once the new primary is up, no write meets a read-only server
        status, body = http("POST", eps["app_pgpool"], {"name": f"after-{ok}"})
        assert "no writable primary" not in str(body), body
        assert status in (200, 503), body
        ok += status == 200
    assert ok >= 18, f"only {ok}/20 writes through the pgpool app succeeded"
    assert one(replica.dsn.replace("dbname=postgres", "dbname=puppies"),
               "SELECT count(*) FROM pups WHERE name LIKE 'after%%'") == ok + 1  # fmt: skip
