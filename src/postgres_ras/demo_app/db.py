"""Database side of the puppies app: the pool and the idempotent schema bootstrap.

Guarantees: the app never crashes because the database is unreachable, read-only
or not created yet; a background thread retries the bootstrap until the schema
exists. Connections that fail, or that landed on a read-only server, are closed so
the pool replaces them: the app recovers by itself when a primary returns.
Does not guarantee: that a write answered 503 was not applied (the usual
ambiguity of a connection lost during COMMIT).
"""

from __future__ import annotations

import logging
import threading
import time

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)

DATABASE = "puppies"
CONNECT_TIMEOUT = 2
SEED = ("Tyler", "Retrieved", 3, "M")

CREATE_TABLE = """
CREATE TABLE pups (
    id serial PRIMARY KEY,
    name text NOT NULL,
    breed text,
    age integer,
    sex text
)
"""


def app_conninfo(server_dsn: str, dbname: str = DATABASE) -> str:
    """The server conninfo pointed at ``dbname`` with a short connect timeout."""
    params = conninfo_to_dict(server_dsn)
    params["dbname"] = dbname
    params.setdefault("connect_timeout", str(CONNECT_TIMEOUT))
    params.setdefault("application_name", "puppies")
    return make_conninfo(**params)  # type: ignore[arg-type]


def make_pool(server_dsn: str, max_size: int = 4) -> ConnectionPool:
    """A pool that checks connections on checkout and gives up reconnecting quickly.

    ``reconnect_timeout`` is short so that after an outage the next request starts
    a fresh connection attempt instead of waiting out a long exponential backoff.
    """
    pool = ConnectionPool(
        app_conninfo(server_dsn),
        min_size=1,
        max_size=max_size,
        timeout=CONNECT_TIMEOUT + 1,
        reconnect_timeout=3,
        max_idle=60,
        kwargs={"autocommit": True},
        check=ConnectionPool.check_connection,
        open=False,
        name="puppies",
    )
    pool.open(wait=False)
    return pool


def bootstrap_once(server_dsn: str) -> bool:
    """Create the database, the table and the seed row if absent.

    Returns True once the schema exists (created here or by someone else). On a
    read-only server it creates nothing and returns whether the schema exists yet.
    Raises psycopg.Error when the server is unreachable. No function-based check
    (pg_is_in_recovery, advisory locks) is used: behind pgpool those SELECTs may be
    load-balanced to a replica; the DDL itself goes to the primary, and a race
    between app instances ends in a duplicate error that means "already created".
    """
    with psycopg.connect(app_conninfo(server_dsn, "postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
        if exists.fetchone() is None:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
            except psycopg.errors.ReadOnlySqlTransaction:
                return False
            except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                pass  # another app instance won the race
    with psycopg.connect(app_conninfo(server_dsn), autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('public.pups')").fetchone() != (None,):
            return True
        try:
            with conn.transaction():
                conn.execute(CREATE_TABLE)
                conn.execute(
                    "INSERT INTO pups (name, breed, age, sex) VALUES (%s, %s, %s, %s)", SEED
                )
        except psycopg.errors.ReadOnlySqlTransaction:
            return False
        except (psycopg.errors.DuplicateTable, psycopg.errors.UniqueViolation):
            return True
        log.info("created table pups with its seed row")
    return True


class Bootstrapper:
    """Retries :func:`bootstrap_once` in a daemon thread until the schema exists."""

    def __init__(self, server_dsn: str, interval: float = 1.0) -> None:
        self.server_dsn = server_dsn
        self.interval = interval
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="puppies-bootstrap", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        last_error = ""
        while not self.ready.is_set():
            try:
                if bootstrap_once(self.server_dsn):
                    self.ready.set()
                    log.info("database %s ready", DATABASE)
                    return
                message = "waiting for the database to be created through a writable endpoint"
            except psycopg.Error as exc:
                message = f"database not reachable yet: {str(exc).strip()}"
            if message != last_error:
                log.warning("%s", message)
                last_error = message
            time.sleep(self.interval)
