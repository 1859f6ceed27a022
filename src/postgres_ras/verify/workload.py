"""The verify workload: writers, readers and member probes, each a bounded thread.

- Writers insert unique ids (one shared counter; an id is never retried)
  through an endpoint (HAProxy's write frontend, pgpool) and record every
  acknowledged commit with the member that served it
  (``RETURNING inet_server_port()``). A write whose outcome the client did
  not learn (the connection broke) is *indeterminate*, never "lost".
- Readers query the read endpoint and record success or failure.
- Probes write to a scratch table on every member directly, all through the
  run, so the checker can tell when two members accepted writes.

The table has no unique constraint on ``id`` on purpose: a duplicate made by
the system (a replayed statement, a diverged timeline) must be visible.

Guarantees: every thread stops within a bounded time after ``stop()`` once
the servers answer (a client blocked on a frozen server returns when it is
resumed); nothing here signals or restarts any process.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import psycopg

from postgres_ras.verify.events import Ack, Probe, ProbeOutcome, Read

log = logging.getLogger(__name__)

TABLE = "pgras_verify"
PROBE_TABLE = "pgras_verify_probe"
CONNECT = " connect_timeout=1 application_name=pgras-verify"
# A server error means the single autocommit statement did not commit; these classes
# say so for certain (read-only, constraint, syntax/undefined). Anything else, or a
# broken connection, leaves the outcome unknown.
DEFINITE_FAILURE_CLASSES = ("25", "23", "42")

Clock = Callable[[], float]


def prepare(dsn: str, timeout: float = 30.0) -> None:
    """(Re)create the tables through ``dsn`` (the write endpoint), retrying up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(dsn + CONNECT, autocommit=True) as conn:
                conn.execute(f"DROP TABLE IF EXISTS {TABLE}, {PROBE_TABLE}")
                conn.execute(
                    f"CREATE TABLE {TABLE} (id bigint NOT NULL, writer int NOT NULL, "
                    "at timestamptz NOT NULL DEFAULT clock_timestamp())"
                )
                conn.execute(f"CREATE INDEX ON {TABLE} (id)")
                conn.execute(
                    f"CREATE TABLE {PROBE_TABLE} (member text NOT NULL, "
                    "at timestamptz NOT NULL DEFAULT clock_timestamp())"
                )
                return
        except psycopg.Error as exc:
            if time.monotonic() > deadline:
                raise
            log.info("preparing the tables: %s; retrying", exc)
            time.sleep(0.5)


@dataclass
class Recorder:
    """Thread-safe enough for CPython: list.append and set.add are atomic."""

    acks: list[Ack] = field(default_factory=list)
    indeterminate: set[int] = field(default_factory=set)
    probes: list[Probe] = field(default_factory=list)
    reads: list[Read] = field(default_factory=list)
    write_errors: int = 0


class Workload:
    """Writers per endpoint, readers, and one probe per member, until ``stop()``."""

    def __init__(
        self,
        clock: Clock,
        writers: Mapping[str, tuple[str, int]],
        read_dsn: str | None,
        readers: int,
        members: Mapping[str, str],
        ports: Mapping[int, str],
        rate: float = 50.0,
        probe_interval: float = 0.1,
    ) -> None:
        """``writers``: endpoint -> (dsn, number of clients); ``members``: name -> direct
        dsn; ``ports``: postgres port -> member name; ``rate``: writes/s per client."""
        self.clock = clock
        self.rec = Recorder()
        self.ports = dict(ports)
        self.interval = 1.0 / rate
        self.probe_interval = probe_interval
        self._ids = itertools.count(1)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        n = 0
        for endpoint, (dsn, count) in writers.items():
            for _ in range(count):
                n += 1
                self._add(f"writer-{n}", self._write_loop, endpoint, dsn, n)
        for k in range(readers if read_dsn else 0):
            assert read_dsn is not None
            self._add(f"reader-{k + 1}", self._read_loop, "read", read_dsn)
        for name, dsn in members.items():
            self._add(f"probe-{name}", self._probe_loop, name, dsn)

    def _add(self, name: str, target: Callable[..., None], *args: object) -> None:
        self._threads.append(threading.Thread(target=target, args=args, name=name, daemon=True))

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 15.0) -> Recorder:
        self._stop.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            log.warning("threads still blocked after %.0fs: %s", timeout, ", ".join(stuck))
        return self.rec

    # --- loops ------------------------------------------------------------------------
    def _pace(self, next_at: float) -> float:
        delay = next_at - time.monotonic()
        if delay > 0:
            self._stop.wait(delay)
        return max(next_at, time.monotonic() - self.interval) + self.interval

    def _write_loop(self, endpoint: str, dsn: str, writer: int) -> None:
        conn: psycopg.Connection[tuple[int]] | None = None
        next_at = time.monotonic()
        while not self._stop.is_set():
            next_at = self._pace(next_at)
            try:
                if conn is None:
                    conn = psycopg.connect(dsn + CONNECT, autocommit=True)
            except psycopg.Error:
                self._stop.wait(0.05)
                continue
            ident = next(self._ids)
            sent = self.clock()
            try:
                row = conn.execute(
                    f"INSERT INTO {TABLE} (id, writer) VALUES (%s, %s) "
                    "RETURNING inet_server_port()",
                    (ident, writer),
                ).fetchone()
                acked = self.clock()
                member = self.ports.get(int(row[0])) if row and row[0] is not None else None
                self.rec.acks.append(Ack(ident, sent, acked, endpoint, member))
            except psycopg.Error as exc:
                self.rec.write_errors += 1
                state = exc.sqlstate or ""
                if not state.startswith(DEFINITE_FAILURE_CLASSES):
                    self.rec.indeterminate.add(ident)
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def _read_loop(self, endpoint: str, dsn: str) -> None:
        conn: psycopg.Connection[tuple[int]] | None = None
        next_at = time.monotonic()
        while not self._stop.is_set():
            next_at = self._pace(next_at)
            sent = self.clock()
            try:
                if conn is None:
                    conn = psycopg.connect(dsn + CONNECT, autocommit=True)
                conn.execute(f"SELECT max(id) FROM {TABLE}").fetchone()
                self.rec.reads.append(Read(sent, self.clock(), True, endpoint))
            except psycopg.Error:
                self.rec.reads.append(Read(sent, self.clock(), False, endpoint))
                if conn is not None:
                    conn.close()
                conn = None
                self._stop.wait(0.05)
        if conn is not None:
            conn.close()

    def _probe_loop(self, member: str, dsn: str) -> None:
        conn: psycopg.Connection[tuple[int]] | None = None
        while not self._stop.is_set():
            sent = self.clock()
            outcome = ProbeOutcome.DOWN
            try:
                if conn is None:
                    conn = psycopg.connect(dsn + CONNECT, autocommit=True)
                conn.execute(f"INSERT INTO {PROBE_TABLE} (member) VALUES (%s)", (member,))
                outcome = ProbeOutcome.WRITABLE
            except psycopg.Error as exc:
                if exc.sqlstate and exc.sqlstate.startswith(DEFINITE_FAILURE_CLASSES):
                    outcome = ProbeOutcome.READ_ONLY
                if conn is not None and (conn.broken or outcome is ProbeOutcome.DOWN):
                    conn.close()
                    conn = None
            self.rec.probes.append(Probe(member, sent, self.clock(), outcome))
            self._stop.wait(self.probe_interval)
        if conn is not None:
            conn.close()
