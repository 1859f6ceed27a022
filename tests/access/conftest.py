"""Fixtures of the access tier: real PostgreSQL servers started and stopped by PID.

Everything listens on 127.0.0.1 with ports from 27000-27999. Data directories live
under a 0755 directory in /tmp (postgres runs as the ``postgres`` OS user when the
tests run as root, and pytest's tmp_path is 0700). Every wait is bounded; on
failure the relevant log files are printed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.helpers import free_port, poll

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SUPERUSER = ("pgras", "access-test-pw")

pytestmark = pytest.mark.access


def _as_postgres() -> dict[str, str]:
    return {"user": "postgres"} if os.geteuid() == 0 else {}


def _chown(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


def print_logs(*paths: Path) -> None:
    for path in paths:
        print(f"----- {path} -----")
        try:
            print(path.read_text(errors="replace")[-6000:])
        except OSError as exc:
            print(f"(unreadable: {exc})")


class PgServer:
    """One PostgreSQL server in ``root/name``, controlled by its postmaster PID."""

    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        self.dir = root / name
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.port = free_port()

    @property
    def dsn(self) -> str:
        user, password = SUPERUSER
        return f"host=127.0.0.1 port={self.port} user={user} password={password} dbname=postgres"

    def _run(self, *argv: str) -> None:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, **_as_postgres())
        if result.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {result.stdout}\n{result.stderr}")

    def _prepare_dir(self) -> None:
        self.dir.mkdir(mode=0o755)
        _chown(self.dir)

    def init_primary(self) -> None:
        self._prepare_dir()
        pwfile = self.dir / "pw"
        pwfile.write_text(SUPERUSER[1] + "\n")
        _chown(pwfile)
        self._run(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-U", SUPERUSER[0],
            f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
        )  # fmt: skip
        with open(self.data / "pg_hba.conf", "a") as hba:
            hba.write("host replication all 127.0.0.1/32 scram-sha-256\n")

    def init_replica(self, primary: PgServer) -> None:
        self._prepare_dir()
        env_pw = dict(os.environ, PGPASSWORD=SUPERUSER[1])
        argv = [
            str(PG_BIN / "pg_basebackup"), "-D", str(self.data), "-R", "-X", "stream",
            "-h", "127.0.0.1", "-p", str(primary.port), "-U", SUPERUSER[0],
        ]  # fmt: skip
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=120, env=env_pw, **_as_postgres()
        )
        if result.returncode != 0:
            raise RuntimeError(f"pg_basebackup failed: {result.stderr}")

    def start(self, timeout: float = 30.0) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        self._run(
            str(PG_BIN / "pg_ctl"), "start", "-D", str(self.data), "-l", str(self.log),
            "-w", "-t", str(int(timeout)), "-o", opts,
        )  # fmt: skip
        poll(f"{self.name} to accept", lambda: self.query("SELECT 1") == 1, timeout)

    def promote(self) -> None:
        self._run(str(PG_BIN / "pg_ctl"), "promote", "-w", "-D", str(self.data))

    def pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def stop(self, sig: signal.Signals = signal.SIGINT, timeout: float = 20.0) -> None:
        """Fast shutdown by PID (SIGINT), SIGKILL if it does not end in ``timeout``."""
        pid = self.pid()
        if pid is None:
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        try:
            poll(f"{self.name} to stop", lambda: not _alive(pid), timeout)
        except pytest.fail.Exception:
            os.kill(pid, signal.SIGKILL)
            poll(f"{self.name} to die", lambda: not _alive(pid), 10)

    def query(self, sql: str, dbname: str = "postgres") -> object:
        dsn = self.dsn.replace("dbname=postgres", f"dbname={dbname}")
        with psycopg.connect(dsn, connect_timeout=2, autocommit=True) as conn:
            cur = conn.execute(sql)
            row = cur.fetchone() if cur.description else None
            return row[0] if row else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="session")
def scratch() -> Iterator[Path]:
    """A 0755 directory in /tmp for data directories and configs, removed at the end."""
    path = Path(tempfile.mkdtemp(prefix="pgras-access-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def primary(scratch: Path, request: pytest.FixtureRequest) -> Iterator[PgServer]:
    server = PgServer(scratch, f"primary-{request.module.__name__.rsplit('.', 1)[-1]}")
    try:
        server.init_primary()
        server.start()
    except (Exception, pytest.fail.Exception):  # a start that timed out fails the test
        print_logs(server.log)
        server.stop()
        raise
    yield server
    server.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On failure, attach the logs of the servers and processes the test used."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    funcargs = getattr(item, "funcargs", {})
    paths = [v.log for v in funcargs.values() if isinstance(v, PgServer)]
    log_files = funcargs.get("log_files")
    if callable(log_files):
        paths += log_files()
    for path in paths:
        try:
            text = path.read_text(errors="replace")[-6000:]
        except OSError as exc:
            text = f"(unreadable: {exc})"
        report.sections.append((f"log {path}", text))
