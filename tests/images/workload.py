"""SQL workload helpers of the images tier: numbered writes, who acknowledged them,
replay positions. Every connection is bounded (connect_timeout in the conninfo)."""

from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import psycopg

from tests.images.pods import DockerCluster, wait_for

TABLE = "pgras_test_writes"
_SEQ = itertools.count(1_000_000)
LAST_ERROR: list[str] = []


def create_table(cluster: DockerCluster, primary: str) -> None:
    with psycopg.connect(cluster.pod_conninfo(primary), autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} "
            "(seq bigint PRIMARY KEY, phase text NOT NULL, at timestamptz DEFAULT now())"
        )


def next_seqs(n: int) -> list[int]:
    return [next(_SEQ) for _ in range(n)]


def next_seq() -> int:
    return next(_SEQ)


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


def sql_value(conninfo: str, sql: str) -> Any:
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            row = conn.execute(sql).fetchone()
            return row[0] if row else None
    except psycopg.Error as exc:
        LAST_ERROR[:] = [str(exc).strip()]
        return None


def wait_replayed(cluster: DockerCluster, primary: str, replicas: list[str]) -> None:
    """Wait until every replica has replayed the primary's current WAL position."""
    lsn = sql_value(cluster.pod_conninfo(primary), "SELECT pg_current_wal_lsn()::text")
    assert lsn, f"cannot read the WAL position of {primary}: {LAST_ERROR}"
    for replica in replicas:
        wait_for(
            f"{replica} to replay {primary}'s WAL up to {lsn}",
            lambda r=replica: sql_value(
                cluster.pod_conninfo(r), f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"
            ),
            30,
            0.1,
        )


def writable_in_pod(cluster: DockerCluster, pod: str) -> bool:
    """True only if the pod's own postgres still accepts a write (rolled back)."""
    probe = cluster.psql_in_pod(
        pod, f"BEGIN; INSERT INTO {TABLE} (seq, phase) VALUES (-1, 'probe'); ROLLBACK;"
    )
    return probe.returncode == 0


def post_json(url: str, payload: dict[str, Any]) -> tuple[int, Any]:
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


@dataclass
class Writer:
    """Writes fresh seqs through ``conninfo`` in a thread; records who acknowledged when."""

    conninfo: str
    phase: str
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
        while not self._stop.is_set():
            seq = next(_SEQ)
            server = write(self.conninfo, seq, self.phase)
            if server is not None:
                self.acks.append((seq, server, time.monotonic()))
            time.sleep(0.05)

    def longest_gap(self, since: float) -> float:
        """The longest time without an acknowledged write after ``since``."""
        times = [since, *sorted(t for _, _, t in self.acks if t > since)]
        return max(b - a for a, b in itertools.pairwise(times)) if len(times) > 1 else 0.0


def first_write_through(conninfo: str, since: float, phase: str, timeout: float = 90) -> float:
    """Seconds from ``since`` to the first write acknowledged through ``conninfo``."""
    wait_for(
        f"a write through {conninfo.split()[0]} within {timeout}s",
        lambda: write(conninfo, next_seq(), phase) is not None,
        since + timeout - time.monotonic(),
        0.1,
        detail=lambda: f"last error: {LAST_ERROR}",
    )
    return time.monotonic() - since
