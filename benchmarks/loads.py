"""Write loads run during a measurement: what the write outage and lost writes are read from.

A load is chosen by name (``LOADS``), so the measurements in measure.py take it
as a parameter: the single writer, and pgbench through the writer DSN (issue
11), with the same four methods; the measurements are written once.
"""

from __future__ import annotations

import itertools
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Self

import psycopg
from clusters import BenchmarkError

from postgres_ras.local.workload import Writer, lost_writes


class Load(Protocol):
    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...

    def acked_since(self, t: float) -> bool:
        """Whether a write was acknowledged after monotonic time ``t`` (writes resumed)."""
        ...

    def outage_after(self, t: float) -> float:
        """The longest gap between acknowledged writes that ended after ``t``, seconds."""
        ...

    def lost_on(self, dsn: str) -> int:
        """How many acknowledged writes are missing on the server ``dsn`` points at."""
        ...


class SingleWriter:
    """One connection inserting increasing ids (postgres_ras.local.workload.Writer)."""

    def __init__(self, dsn: str) -> None:
        self.writer = Writer(dsn)
        self._marks: list[tuple[float, int]] = []  # (when asked, writes acknowledged then)

    def __enter__(self) -> Self:
        self.writer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.writer.stop()

    def acked_since(self, t: float) -> bool:
        result = self.writer.result
        if any(start + gap >= t for start, gap in result.gaps):
            return True  # writes resumed after a gap that spans t
        count, now = len(result.acked), time.monotonic()
        # No gap yet (a very short interruption): more acks than when we asked after t.
        resumed = any(at >= t and count > seen for at, seen in self._marks)
        self._marks.append((now, count))
        return resumed

    def outage_after(self, t: float) -> float:
        return self.writer.result.outage_after(t)

    def lost_on(self, dsn: str) -> int:
        return len(lost_writes(dsn, self.writer.result.acked))


# --- pgbench ---------------------------------------------------------------------------
PGBENCH_CANDIDATES = (Path("/usr/lib/postgresql/15/bin/pgbench"), Path("/usr/bin/pgbench"))
IDS_TABLE = "pgras_bench_ids"
CLIENTS, JOBS = 8, 2  # PgbenchLoad's defaults (LOADS["pgbench"])
# One row per transaction: (tag, attempt, client, seq) is unique because pgbench keeps a
# client's variables across its transactions (seq counts them, from -D seq=0), client_id
# is pgbench's own, attempt numbers the pgbench processes of one load and tag the load.
INSERT_SCRIPT = (
    "\\set seq :seq + 1\n"
    f"INSERT INTO {IDS_TABLE} (tag, attempt, client, seq) "
    "VALUES (:tag, :attempt, :client_id, :seq);\n"
)


def pgbench_path() -> Path:
    for path in PGBENCH_CANDIDATES:
        if path.exists():
            return path
    raise BenchmarkError(f"no pgbench at {' or '.join(map(str, PGBENCH_CANDIDATES))}")


@dataclass(frozen=True)
class LogLine:
    """One line of pgbench's per-transaction log (``-l``): a transaction that completed."""

    client: int
    seq: int  # the client's transaction number, from 1: equals the script's :seq
    latency_us: int
    done_epoch: float  # wall-clock time it completed


def parse_log_line(line: str) -> LogLine | None:
    """``client_id transaction_no time script_no time_epoch time_us [...]``; None for lines
    that are not a completed transaction (``skipped``/``failed`` in the time field)."""
    f = line.split()
    if len(f) < 6:
        return None
    try:
        return LogLine(int(f[0]), int(f[1]), int(f[2]), int(f[4]) + int(f[5]) / 1e6)
    except ValueError:
        return None


def read_log_lines(path: Path, offset: int) -> tuple[list[LogLine], int]:
    """The complete lines of ``path`` from byte ``offset`` on, and the offset after them
    (a line pgbench has half written is read next time)."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return [], offset
    end = data.rfind(b"\n") + 1
    lines = [
        p for raw in data[:end].decode(errors="replace").splitlines() if (p := parse_log_line(raw))
    ]
    return lines, offset + end


def longest_gap_after(times: list[float], t: float, threshold: float = 0.05) -> float:
    """The longest gap between consecutive sorted ``times`` that ends after ``t`` (as
    workload.WriteResult.outage_after: gaps under ``threshold`` do not count)."""
    gaps = [b - a for a, b in itertools.pairwise(times) if b >= t and b - a > threshold]
    return max(gaps, default=0.0)


def end_pgbench(proc: subprocess.Popen[bytes], started: float) -> None:
    """End a pgbench run early the way ``-T`` ends it: SIGALRM, so it finishes its clients
    and flushes the per-transaction log; SIGKILL (by PID) if it has not exited in 10 s."""
    if proc.poll() is not None:
        return
    time.sleep(max(0.0, started + 0.5 - time.monotonic()))  # its handler is set at start
    if proc.poll() is None:
        proc.send_signal(signal.SIGALRM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


class PgbenchLoad:
    """pgbench with several clients through the writer DSN, each transaction one INSERT of a
    unique (tag, attempt, client, seq), so acknowledged writes can be counted on the new
    primary like the single writer's.

    pgbench ends when its connections are lost (a client aborts; all aborted: exit 2), so
    a supervisor thread starts it again, after ``retry_pause``, until stopped; a start that
    finds no read-write server fails at once and is retried the same way. Bounded: each
    pgbench gets ``-T`` the time left of ``max_seconds``, at most ``max_attempts`` starts.
    Acknowledged = logged in pgbench's per-transaction log (``-l``), which also gives when
    each completed: the outage is the longest gap between completions across all clients,
    and includes the restart of pgbench (a process start and its connections, milliseconds).
    """

    def __init__(
        self,
        dsn: str,
        clients: int = CLIENTS,
        jobs: int = JOBS,
        max_seconds: float = 180.0,
        max_attempts: int = 3000,
        retry_pause: float = 0.05,
        gap_threshold: float = 0.05,
    ) -> None:
        self.dsn = dsn
        self.clients = clients
        self.jobs = jobs
        self.max_seconds = max_seconds
        self.max_attempts = max_attempts
        self.retry_pause = retry_pause
        self.gap_threshold = gap_threshold
        self.pgbench = pgbench_path()
        self.tag = secrets.randbits(62)
        self.attempts = 0
        self.last_error = ""
        self._offset = time.time() - time.monotonic()  # wall clock -> monotonic
        self._dir: Path | None = None
        self._read: dict[Path, int] = {}
        self._times: list[float] = []  # monotonic completion times, as read
        self._ids: set[tuple[int, int, int]] = set()  # (attempt, client, seq) acknowledged
        self._latest = float("-inf")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pgbench-load", daemon=True)

    @property
    def acked(self) -> int:
        return len(self._ids)

    def __enter__(self) -> Self:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {IDS_TABLE} (tag bigint, attempt int, client int, "
                "seq bigint, at timestamptz DEFAULT now(), PRIMARY KEY (tag, attempt, client, seq))"
            )
        self._dir = Path(tempfile.mkdtemp(prefix="pgras-pgbench-"))
        (self._dir / "insert.sql").write_text(INSERT_SCRIPT)
        self._thread.start()
        try:
            deadline = time.monotonic() + 15
            while not self.acked_since(float("-inf")):
                if time.monotonic() > deadline or not self._thread.is_alive():
                    raise BenchmarkError(f"pgbench acknowledged no write in 15s: {self.last_error}")
                time.sleep(0.05)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._poll()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _argv(self, attempt: int, seconds: int) -> list[str]:
        assert self._dir is not None
        return [
            str(self.pgbench),
            "--no-vacuum",
            f"--file={self._dir / 'insert.sql'}",
            f"--define=tag={self.tag}",
            f"--define=attempt={attempt}",
            "--define=seq=0",
            f"--client={self.clients}",
            f"--jobs={self.jobs}",
            f"--time={seconds}",
            "--log",
            f"--log-prefix={self._dir / f'a{attempt}'}",
            self.dsn,
        ]

    def _run(self) -> None:
        assert self._dir is not None
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and self.attempts < self.max_attempts:
            left = int(deadline - time.monotonic())
            if left < 1:
                break
            self.attempts += 1
            err = self._dir / f"a{self.attempts}.err"
            with err.open("wb") as out:
                proc = subprocess.Popen(
                    self._argv(self.attempts, left),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=out,
                    cwd=self._dir,
                    start_new_session=True,  # stopped here, by PID, not by the terminal's ^C
                )
            started = time.monotonic()
            try:
                while proc.poll() is None and not self._stop.wait(0.05):
                    pass
            finally:
                end_pgbench(proc, started)
            if proc.returncode != 0:
                lines = err.read_text(errors="replace").strip().splitlines()
                self.last_error = f"pgbench exit {proc.returncode}: " + " | ".join(lines[-2:])
            self._stop.wait(self.retry_pause)

    def _poll(self) -> None:
        """Read what pgbench logged since the last call (files ``a<attempt>.<pid>[.<n>]``)."""
        with self._lock:
            if self._dir is None:
                return
            for path in self._dir.glob("a*.*"):
                name = path.name
                if name.endswith(".err"):
                    continue
                attempt = int(name[1:].split(".", 1)[0])
                lines, self._read[path] = read_log_lines(path, self._read.get(path, 0))
                for line in lines:
                    at = line.done_epoch - self._offset
                    self._times.append(at)
                    self._ids.add((attempt, line.client, line.seq))
                    self._latest = max(self._latest, at)

    def acked_since(self, t: float) -> bool:
        self._poll()
        return self._latest >= t

    def outage_after(self, t: float) -> float:
        self._poll()
        with self._lock:
            self._times.sort()  # each file is in order: a merge of sorted runs
            return longest_gap_after(self._times, t, self.gap_threshold)

    def lost_on(self, dsn: str) -> int:
        with psycopg.connect(dsn, autocommit=True) as conn:
            rows = conn.execute(
                f"SELECT attempt, client, seq FROM {IDS_TABLE} WHERE tag = %s", (self.tag,)
            ).fetchall()
        present = {(int(a), int(c), int(s)) for a, c, s in rows}
        return len(self._ids - present)


LOADS: dict[str, Callable[[str], Load]] = {"writer": SingleWriter, "pgbench": PgbenchLoad}
