"""One node's PostgreSQL: the data directory and the postmaster, and nothing else.

Runs the PostgreSQL binaries as ``pg_user`` when the agent itself is root
(postgres refuses to run as root). Every wait is bounded; every failure is
a PostgresError that carries the tail of the relevant output.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from postgres_ras.agent import queries
from postgres_ras.agent.controldata import ControlData, parse_controldata
from postgres_ras.agent.pgconf import (
    Upstream,
    conninfo,
    quote,
    render_pg_hba,
    render_pgras_conf,
)
from postgres_ras.config import NodeConfig
from postgres_ras.errors import PostgresError

log = logging.getLogger(__name__)

# pg_rewind copies every file in the source's pg_wal, the recycled segments waiting for
# reuse included: small segments, few kept for reuse, make a rejoin copy megabytes where
# PostgreSQL's defaults (16 MB segments, min_wal_size 80 MB) made it copy ~100 MB.
WAL_SEGMENT_MB = 1
# In postgresql.conf, not pgras.conf: it goes with the data (clones and rewinds copy the
# file), and a data directory made elsewhere with 16 MB segments, which refuses a
# min_wal_size under two segments, keeps PostgreSQL's default.
INITDB_SETTINGS = "\n# pgras: WAL in 1 MB segments (initdb --wal-segsize)\nmin_wal_size = '8MB'\n"

STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}
INCLUDE_LINE = "include_if_exists = 'pgras.conf'"
# synchronous_standby_names lives in its own file, set only by the controller (through
# the agent API) on a primary and cleared when the node starts as a replica: it survives
# a restart of the primary (so a restarted primary keeps its promise) and never carries a
# former primary's standbys into a promotion.
SYNC_FILE = "pgras.sync.conf"
SYNC_INCLUDE_LINE = f"include_if_exists = '{SYNC_FILE}'"


def find_bin_dir(configured: Path | None) -> Path:
    if configured is not None:
        if not (configured / "postgres").exists():
            raise PostgresError(f"pg_bin_dir {configured} has no 'postgres' binary")
        return configured
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    for cand in reversed(candidates):
        if (cand / "postgres").exists():
            return cand
    found = shutil.which("postgres")
    if found:
        return Path(found).resolve().parent
    raise PostgresError(
        "no PostgreSQL binaries found: install postgresql-15 or set pg_bin_dir in the config"
    )


class Postgres:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.data_dir = config.data_dir
        self.bin_dir = find_bin_dir(config.pg_bin_dir)
        self.log_file = self.data_dir.parent / f"{self.data_dir.name}.postgres.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()
        self.configured_upstream = self._read_upstream()
        self._control_cache: tuple[tuple[int, int, int], ControlData] | None = None
        self.user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self.user = pwd.getpwnam(config.pg_user)
            except KeyError:
                raise PostgresError(
                    f"running as root but OS user {config.pg_user!r} does not exist: "
                    "create it or set pg_user"
                ) from None

    # --- helpers ---------------------------------------------------------------
    @property
    def local_host(self) -> str:
        listen = self.config.postgres.listen.split(",")[0].strip()
        return "127.0.0.1" if listen in ("*", "0.0.0.0", "", "localhost") else listen

    def _su_kwargs(self) -> dict[str, Any]:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def _env(self, password: str | None = None) -> dict[str, str]:
        env = {"PATH": f"{self.bin_dir}:/usr/bin:/bin", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        env["HOME"] = self.user.pw_dir if self.user else os.environ.get("HOME", "/tmp")
        if password is not None:
            env["PGPASSWORD"] = password
        return env

    def chown(self, path: Path) -> None:
        if self.user is not None:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)

    def run(
        self, args: Sequence[str], timeout: float, password: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        try:
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=self._env(password),
                cwd="/",
                check=False,
                **self._su_kwargs(),
            )
        except subprocess.TimeoutExpired:
            raise PostgresError(f"{args[0]} did not finish within {timeout:.0f}s") from None
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise PostgresError(f"{args[0]} failed (exit {proc.returncode}): {' | '.join(tail)}")
        return proc

    def log_tail(self, lines: int = 8) -> str:
        try:
            return " | ".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    @contextlib.contextmanager
    def connect(
        self, timeout: float = 3.0, dbname: str = "postgres"
    ) -> Iterator[psycopg.Connection[Any]]:
        su = self.config.postgres.superuser
        try:
            conn = psycopg.connect(
                host=self.local_host,
                port=self.config.postgres.port,
                user=su.username,
                password=su.password,
                dbname=dbname,
                connect_timeout=max(1, int(timeout)),
                autocommit=True,
                application_name="pgras-agent",
                # A hung server must not hang the agent's API threads.
                options=f"-c statement_timeout={int(max(timeout, 2) * 1000)}",
            )
        except psycopg.Error as exc:
            raise PostgresError(f"cannot connect to local postgres: {exc}".strip()) from None
        try:
            yield conn
        except psycopg.Error as exc:
            raise PostgresError(f"query failed: {exc}".strip()) from None
        finally:
            conn.close()

    # --- data directory --------------------------------------------------------
    def has_data(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def controldata(self) -> ControlData | None:
        """pg_controldata, re-run only when global/pg_control changed (status is polled often)."""
        if not self.has_data():
            return None
        try:
            st = (self.data_dir / "global" / "pg_control").stat()
        except OSError:
            st = None
        key = (st.st_ino, st.st_mtime_ns, st.st_size) if st else None
        if key is not None and self._control_cache is not None and self._control_cache[0] == key:
            return self._control_cache[1]
        proc = self.run(["pg_controldata", "-D", str(self.data_dir)], timeout=10)
        control = parse_controldata(proc.stdout)
        self._control_cache = (key, control) if key is not None else None
        return control

    def _prepare_empty_dir(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise PostgresError(f"data directory {self.data_dir} is not empty")
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        self.data_dir.chmod(0o700)
        self.chown(self.data_dir)

    def set_aside(self) -> Path | None:
        """Move a data directory that cannot be reused out of the way, never delete it."""
        if not self.data_dir.exists():
            return None
        target = self.data_dir.with_name(f"{self.data_dir.name}.old.{int(time.time())}")
        self.data_dir.rename(target)
        return target

    def _write(self, path: Path, text: str) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        self.chown(tmp)
        tmp.chmod(0o600)
        tmp.replace(path)

    def _read_upstream(self) -> str | None:
        """host:port of primary_conninfo in pgras.conf, as last written by an agent."""
        try:
            text = (self.data_dir / "pgras.conf").read_text()
        except OSError:
            return None
        host = re.search(r"^primary_conninfo = .*host=''([^']*)''", text, re.M)
        port = re.search(r"^primary_conninfo = .*port=''([0-9]+)''", text, re.M)
        return f"{host.group(1)}:{port.group(1)}" if host and port else None

    def write_config(
        self, upstream: Upstream | None, standby: bool, clear_sync: bool = True
    ) -> None:
        self.configured_upstream = f"{upstream.host}:{upstream.port}" if upstream else None
        self._write(self.data_dir / "pgras.conf", render_pgras_conf(self.config, upstream))
        self._write(self.data_dir / "pg_hba.conf", render_pg_hba(self.config))
        main_conf = self.data_dir / "postgresql.conf"
        text = main_conf.read_text() if main_conf.exists() else ""
        missing = [line for line in (INCLUDE_LINE, SYNC_INCLUDE_LINE) if line not in text]
        if missing:
            self._write(main_conf, text + "\n" + "\n".join(missing) + "\n")
        signal_file = self.data_dir / "standby.signal"
        if standby and clear_sync:
            self._write_sync("")
            self._write(signal_file, "")
        else:
            signal_file.unlink(missing_ok=True)
        for stale in ("recovery.signal", "postgresql.auto.conf.tmp"):
            (self.data_dir / stale).unlink(missing_ok=True)

    def initdb(self) -> None:
        self._prepare_empty_dir()
        su = self.config.postgres.superuser
        pwfile = self.data_dir.parent / f".{self.data_dir.name}.pw"
        self._write(pwfile, su.password)
        try:
            self.run(
                [
                    "initdb",
                    "-D",
                    str(self.data_dir),
                    "-U",
                    su.username,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    f"--wal-segsize={WAL_SEGMENT_MB}",
                ],
                timeout=120,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        conf = self.data_dir / "postgresql.conf"
        self._write(conf, conf.read_text() + INITDB_SETTINGS)

    def create_replication_user(self) -> None:
        rep = self.config.postgres.replication
        with self.connect() as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", (rep.username,)
            ).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(
                sql.SQL(verb + " ROLE {} WITH REPLICATION LOGIN PASSWORD {}").format(
                    sql.Identifier(rep.username), sql.Literal(rep.password)
                )
            )

    def basebackup(self, upstream: Upstream) -> None:
        self._prepare_empty_dir()
        rep = self.config.postgres.replication
        try:
            self.run(
                [
                    "pg_basebackup",
                    "-D",
                    str(self.data_dir),
                    "-h",
                    upstream.host,
                    "-p",
                    str(upstream.port),
                    "-U",
                    rep.username,
                    "-X",
                    "stream",
                    "-c",
                    "fast",
                    "--no-password",
                ],
                timeout=3600,
                password=rep.password,
            )
        except PostgresError:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise

    def _source(self, upstream: Upstream) -> str:
        return conninfo(
            host=upstream.host,
            port=upstream.port,
            user=self.config.postgres.superuser.username,
            dbname="postgres",
            connect_timeout=3,
            # pg_rewind lists the source's files with a recursive query the planner costs
            # at millions of rows: with JIT on, compiling it takes ~1 s, running it ~10 ms.
            options="-c jit=off",
        )

    def checkpoint_source(self, upstream: Upstream) -> None:
        """CHECKPOINT on the rewind source, unless its control file already records a
        checkpoint on its current timeline; PostgresError when it cannot be reached.

        pg_rewind reads the source's timeline from its control file, which a fresh
        promotion updates only at the next checkpoint (the promoting agent requests one
        at once, so it is usually there already). Failing here also tells the caller to
        keep its data: an unreachable leader is no reason to re-clone.

        Also creates this member's replication slot there if it is missing (best effort):
        a leader drops the slot of a member that died and recreates it only in its next
        cycle after the member is back, up to loop_wait later; a rewound replica that
        asks for the slot before then is refused, and retries after
        wal_retrieve_retry_interval. The leader's housekeeping still owns the slots.
        """
        su = self.config.postgres.superuser
        t0 = time.monotonic()
        try:
            with psycopg.connect(
                self._source(upstream), password=su.password, autocommit=True
            ) as conn:
                done = queries.checkpointed_on_current_timeline(conn)
                if not done:
                    conn.execute("CHECKPOINT")
                slot = self._create_own_slot(conn)
        except psycopg.Error as exc:
            raise PostgresError(f"cannot checkpoint the rewind source: {exc}".strip()) from None
        log.info(
            "rewind source %s:%d %s%s in %.2fs",
            upstream.host,
            upstream.port,
            "already checkpointed on its timeline" if done else "checkpointed",
            slot,
            time.monotonic() - t0,
        )

    def _create_own_slot(self, conn: psycopg.Connection[Any]) -> str:
        """Create this member's slot on the connected server if missing; what was done."""
        name = self.config.slot_name
        try:
            created = queries.create_slot_if_missing(conn, name)
        except psycopg.Error as exc:  # e.g. max_replication_slots: the leader's job then
            log.warning("could not create replication slot %s on the rewind source: %s", name, exc)
            return ""
        return f", created slot {name}" if created else ""

    def rewind(self, upstream: Upstream) -> str:
        su = self.config.postgres.superuser
        source = self._source(upstream)
        t0 = time.monotonic()
        proc = self.run(
            ["pg_rewind", "-D", str(self.data_dir), f"--source-server={source}"],
            timeout=600,
            password=su.password,
        )
        took = time.monotonic() - t0
        # pg_rewind's own verdict lines; the stand-alone backend's chatter is dropped.
        output = [ln for ln in proc.stderr.splitlines() if ln.startswith("pg_rewind:")]
        return " | ".join(output[-4:]) + f" ({took:.2f}s)"

    # --- the postmaster --------------------------------------------------------
    def postmaster_pid(self) -> int | None:
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None
        if self._proc is not None and self._proc.pid == pid and self._proc.poll() is not None:
            return None
        try:
            os.kill(pid, 0)
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (OSError, ProcessLookupError):
            return None
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return None
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        return pid if comm in ("postgres", "postmaster") else None

    def is_running(self) -> bool:
        return self.postmaster_pid() is not None

    def start(self, timeout: float = 60.0) -> None:
        with self._lock:
            if self.is_running():
                return
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_file, "ab") as out:
                self._proc = subprocess.Popen(
                    [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=self._env(),
                    cwd="/",
                    start_new_session=True,
                    **self._su_kwargs(),
                )
            t0 = time.monotonic()
            deadline = t0 + timeout
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    raise PostgresError(f"postgres exited while starting: {self.log_tail()}")
                if self._accepts_connections():
                    log.debug("postgres accepts connections after %.2fs", time.monotonic() - t0)
                    return
                time.sleep(0.05)
            raise PostgresError(f"postgres did not accept connections within {timeout:.0f}s")

    def _accepts_connections(self) -> bool:
        su = self.config.postgres.superuser
        try:
            with psycopg.connect(
                host=self.local_host,
                port=self.config.postgres.port,
                user=su.username,
                password=su.password,
                dbname="postgres",
                connect_timeout=1,
            ):
                return True
        except psycopg.Error:
            return False

    def stop(self, mode: str = "fast", timeout: float = 30.0) -> bool:
        """Stop the postmaster; escalate to immediate after ``timeout``. True if it was running."""
        with self._lock:
            pid = self.postmaster_pid()
            if pid is None:
                return False
            os.kill(pid, STOP_SIGNALS[mode])
            if not self._wait_stopped(pid, timeout) and mode != "immediate":
                log.warning(
                    "postgres did not stop within %.0fs (%s); forcing immediate", timeout, mode
                )
                os.kill(pid, signal.SIGQUIT)
                self._wait_stopped(pid, 10)
            if self.postmaster_pid() is not None:
                os.killpg(pid, signal.SIGKILL)
                self._wait_stopped(pid, 5)
            return True

    def _wait_stopped(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.pid == pid:
                self._proc.poll()
            if self.postmaster_pid() != pid:
                return True
            time.sleep(0.02)
        return False

    def reload(self) -> None:
        pid = self.postmaster_pid()
        if pid is not None:
            os.kill(pid, signal.SIGHUP)

    # --- synchronous replication -----------------------------------------------
    def _write_sync(self, names: str) -> None:
        self._write(
            self.data_dir / SYNC_FILE,
            "# Written by the pgras agent for its controller; changes are overwritten.\n"
            f"synchronous_standby_names = {quote(names)}\n",
        )

    def configured_sync(self) -> str:
        """synchronous_standby_names as written in our file ('' when absent)."""
        try:
            text = (self.data_dir / SYNC_FILE).read_text()
        except OSError:
            return ""
        found = re.search(r"^synchronous_standby_names = '((?:[^']|'')*)'", text, re.M)
        return found.group(1).replace("''", "'") if found else ""

    def set_sync(self, names: str) -> None:
        """Write synchronous_standby_names and reload (no restart: no write outage)."""
        self._write_sync(names)
        self.reload()

    def replication(self) -> dict[str, Any]:
        with self.connect(timeout=2) as conn:
            state = queries.replication(conn)
        state["configured"] = self.configured_sync()
        return state

    # --- SQL-level actions -----------------------------------------------------
    def promote(self, timeout: int = 30) -> None:
        with self.connect(timeout=timeout + 5) as conn:
            row = conn.execute("SELECT pg_promote(true, %s)", (timeout,)).fetchone()
        if not row or not row[0]:
            raise PostgresError(f"promotion did not finish within {timeout}s")
        # Record the new timeline in pg_control soon, so a former primary can pg_rewind.
        threading.Thread(target=self._checkpoint_quietly, daemon=True).start()

    def _checkpoint_quietly(self) -> None:
        try:
            with self.connect(timeout=120) as conn:
                conn.execute("CHECKPOINT")
        except PostgresError as exc:
            log.warning("post-promotion checkpoint failed: %s", exc)

    def create_slots(self, names: Sequence[str]) -> list[str]:
        """Create the physical slots named that are missing (none dropped); those created."""
        with self.connect(timeout=3) as conn:
            return [n for n in names if queries.create_slot_if_missing(conn, n)]

    def ensure_slots(self, names: Sequence[str]) -> dict[str, list[str]]:
        with self.connect() as conn:
            return queries.ensure_slots(conn, names)

    def in_recovery(self) -> bool:
        """Live: is the running server a standby? Raises PostgresError when it cannot tell."""
        with self.connect(timeout=1) as conn:
            return queries.in_recovery(conn)

    def query_state(self) -> dict[str, Any]:
        with self.connect(timeout=2) as conn:
            return queries.query_state(conn)
