"""A write workload that remembers every acknowledged write, for tests and benchmarks.

It writes through a libpq multi-host connection string with
``target_session_attrs=read-write``, so it always finds the current primary
without any router, and measures the longest gap between acknowledged
writes (the write outage) and, afterwards, which acknowledged writes are
missing on the primary (lost writes).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg

TABLE = "pgras_probe"


def multi_host_dsn(
    hosts: Sequence[tuple[str, int]],
    user: str,
    password: str,
    dbname: str = "postgres",
    read_write: bool = True,
) -> str:
    hs = ",".join(h for h, _ in hosts)
    ps = ",".join(str(p) for _, p in hosts)
    attrs = "read-write" if read_write else "any"
    return (
        f"host={hs} port={ps} user={user} password={password} dbname={dbname} "
        f"target_session_attrs={attrs} connect_timeout=1"
    )


@dataclass
class WriteResult:
    acked: list[int] = field(default_factory=list)
    errors: int = 0
    gaps: list[tuple[float, float]] = field(default_factory=list)  # (start, seconds)

    @property
    def max_gap(self) -> float:
        return max((g for _, g in self.gaps), default=0.0)

    def outage_after(self, t: float) -> float:
        """The longest write gap that ended after monotonic time ``t``."""
        return max((g for s, g in self.gaps if s + g >= t), default=0.0)


class Writer:
    """Background inserts of increasing ids until stopped; bounded by ``max_seconds``."""

    def __init__(self, dsn: str, max_seconds: float = 120.0, gap_threshold: float = 0.05) -> None:
        self.dsn = dsn
        self.max_seconds = max_seconds
        self.gap_threshold = gap_threshold
        self.result = WriteResult()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)

    def __enter__(self) -> Writer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} "
                "(id bigint PRIMARY KEY, at timestamptz DEFAULT now())"
            )
            row = conn.execute(f"SELECT coalesce(max(id), 0) FROM {TABLE}").fetchone()
        self._next = int(row[0]) + 1 if row else 1
        self._thread.start()

    def stop(self) -> WriteResult:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.result

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        conn: psycopg.Connection[tuple[int]] | None = None
        last_ok = time.monotonic()
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                if conn is None:
                    conn = psycopg.connect(self.dsn, autocommit=True)
                conn.execute(f"INSERT INTO {TABLE} (id) VALUES (%s)", (self._next,))
                now = time.monotonic()
                self.result.acked.append(self._next)
                self._next += 1
                if now - last_ok > self.gap_threshold:
                    self.result.gaps.append((last_ok, now - last_ok))
                last_ok = now
                time.sleep(0.005)
            except psycopg.errors.UniqueViolation:
                # An INSERT reported as failed had committed after all (a primary stopped
                # while the commit waited for its standby): never acknowledged, so not
                # counted, and not retried forever.
                self.result.errors += 1
                self._next += 1
            except psycopg.Error:
                self.result.errors += 1
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.02)
        if conn is not None:
            conn.close()


def lost_writes(dsn: str, acked: Sequence[int]) -> list[int]:
    """Acknowledged ids missing on the server ``dsn`` points at."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        present = {r[0] for r in conn.execute(f"SELECT id FROM {TABLE}").fetchall()}
    return [i for i in acked if i not in present]
