"""pg_auto_failover 2.0 as a cluster under test: a monitor and N keepers on this machine.

Implements clusters.ClusterUnderTest with Debian's postgresql-15-auto-failover
and pg-auto-failover-cli (installed with apt-get when pg_autoctl is missing),
PostgreSQL from /usr/lib/postgresql/15/bin. As root, every pg_autoctl (and so
PostgreSQL) runs as the OS user ``postgres``. Two settings profiles:

- ``defaults``: pg_auto_failover's own settings, untouched;
- ``tuned``: the monitor's timeouts lowered to their floor (``TUNED``, below).

pg_auto_failover is synchronous by default: with two or more standbys of
replication quorum true (its default) and number_sync_standbys 0, the primary
runs ``synchronous_standby_names = 'ANY 1 (...)'``, whatever the scenario says;
``settings()`` records what the primary actually ran.

Ports, from ``base_port`` (default 29700), all on 127.0.0.1: monitor base,
PostgreSQL base+10+i for node i (1..39). Authentication is ``trust`` on
loopback (the benchmark measures failover, not TLS or passwords). Everything
started is stopped by PID in ``stop`` and the temporary directory removed.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import psycopg
import supervised
from clusters import BenchmarkError, wait

from postgres_ras.local.procs import free_port_check
from postgres_ras.local.workload import multi_host_dsn

PGAF_VERSION = "2.0"
PACKAGES = ("postgresql-15-auto-failover", "pg-auto-failover-cli")
EXTENSION = Path("/usr/share/postgresql/15/extension/pgautofailover.control")
PG_BIN = Path("/usr/lib/postgresql/15/bin")
HOST = "127.0.0.1"
MAX_NODES = 39
# The monitor's failover timeouts (pgautofailover.*) and pg_auto_failover 2.0's defaults.
DEFAULTS: dict[str, int] = {
    "health_check_period": 5000,
    "health_check_timeout": 5000,
    "health_check_max_retries": 2,
    "health_check_retry_delay": 2000,
    "node_considered_unhealthy_timeout": 20000,
    "primary_demote_timeout": 30000,
}
# Their floor. The GUCs accept 1 ms, but a failover needs both a failed health check and
# no keeper report for node_considered_unhealthy_timeout, and keepers report once a second
# (PG_AUTOCTL_KEEPER_SLEEP_TIME): 2 s is two missed reports, the least that does not
# flap. Health checks every second, one retry 1 s later, give up a connect after 1 s
# (loopback refuses a dead port at once). primary_demote_timeout is how long a standby
# waits for a primary that does not answer to demote itself; that primary's keeper
# demotes after network_partition_timeout (lowered to 2 s, KEEPER_TUNED) plus its 2 s
# monitor connect timeout, so 4 s is the least that keeps a partitioned primary from
# still accepting writes when the standby is promoted.
TUNED: dict[str, int] = {
    "health_check_period": 1000,
    "health_check_timeout": 1000,
    "health_check_max_retries": 1,
    "health_check_retry_delay": 1000,
    "node_considered_unhealthy_timeout": 2000,
    "primary_demote_timeout": 4000,
}
KEEPER_TUNED = {"timeout.network_partition_timeout": "2"}  # default 20 s
PRIMARY_STATES = ("primary", "wait_primary", "single")


def ensure_pg_autoctl() -> Path:
    """pg_autoctl and the monitor extension, installed from Debian's archive when missing."""
    found = shutil.which("pg_autoctl")
    if found and EXTENSION.exists():
        return Path(found)
    if os.geteuid() != 0:
        raise BenchmarkError(
            "pg_auto_failover is not installed: as root, run "
            f"apt-get install -y {' '.join(PACKAGES)}"
        )
    print(f"installing {' '.join(PACKAGES)} with apt-get ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "install", "-y", *PACKAGES], check=True, timeout=600, env=env)
    except (OSError, subprocess.SubprocessError) as exc:
        raise BenchmarkError(f"apt-get install {' '.join(PACKAGES)} failed: {exc}") from None
    found = shutil.which("pg_autoctl")
    if not found or not EXTENSION.exists():
        raise BenchmarkError("pg_auto_failover still missing after apt-get install")
    return Path(found)


class Node:
    """The monitor (index 0) or a Postgres node, each with its own pg_autoctl home."""

    def __init__(self, work: Path, index: int, base_port: int) -> None:
        self.name = f"node{index}" if index else "monitor"
        self.port = base_port + 10 + index if index else base_port
        self.dir = work / self.name
        self.data_dir = self.dir / "data"
        self.log = work / "logs" / f"pg_autoctl-{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        # pg_autoctl keeps its config, state and pid files under the XDG dirs: one set per
        # node, so that several nodes share neither a config nor a pid file.
        return {
            "PATH": f"{PG_BIN}:/usr/bin:/bin",
            "HOME": str(self.dir),
            "XDG_CONFIG_HOME": str(self.dir / "config"),
            "XDG_DATA_HOME": str(self.dir / "share"),
            "XDG_RUNTIME_DIR": str(self.dir / "run"),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
        }

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class PgafCluster:
    slug = "pgaf"

    def __init__(self, base_port: int = 29700, tuned: bool = False, keep: bool = False) -> None:
        self.base_port = base_port
        self.tuned = tuned
        self.keep = keep
        self.name = f"pg_auto_failover {PGAF_VERSION}" + (" tuned" if tuned else "")
        self.superuser_password = secrets.token_urlsafe(12)
        self.as_postgres = os.geteuid() == 0
        self.work: Path | None = None
        self.monitor: Node | None = None
        self.nodes: list[Node] = []
        self.observed: dict[str, Any] = {}
        self.restarts = 0

    def settings(self) -> dict[str, Any]:
        profile = TUNED if self.tuned else DEFAULTS
        keeper = KEEPER_TUNED if self.tuned else {"timeout.network_partition_timeout": "20"}
        return {
            "profile": "tuned" if self.tuned else "defaults",
            **{
                f"{k} (ms)" if k != "health_check_max_retries" else k: v for k, v in profile.items()
            },
            **keeper,
            **self.observed,
        }

    # --- processes ---------------------------------------------------------------------
    def _prepare(self, nodes: int) -> None:
        if not 1 <= nodes <= MAX_NODES:
            raise BenchmarkError(f"pg_auto_failover: 1..{MAX_NODES} nodes, not {nodes}")
        self.work = Path(tempfile.mkdtemp(prefix="pgras-pgaf-", dir="/tmp"))
        self.work.chmod(0o755)  # postgres (the OS user) must reach its node dirs
        self.monitor = Node(self.work, 0, self.base_port)
        self.nodes = [Node(self.work, i, self.base_port) for i in range(1, nodes + 1)]
        taken = [n.port for n in self.all() if not free_port_check(n.port, HOST)]
        if taken:
            raise BenchmarkError(f"ports already in use on {HOST}: {taken}")
        (self.work / "logs").mkdir()
        for node in self.all():
            for path in (node.dir, node.dir / "run"):
                path.mkdir(mode=0o700)
                if self.as_postgres:
                    shutil.chown(path, "postgres", "postgres")

    def all(self) -> list[Node]:
        return ([self.monitor] if self.monitor else []) + self.nodes

    def _spawn(self, node: Node, *args: str) -> None:
        extra: dict[str, Any] = {}
        if self.as_postgres:  # PostgreSQL refuses to run as root
            extra = {"user": "postgres", "group": "postgres", "extra_groups": []}
        with open(node.log, "ab") as out:
            node.proc = subprocess.Popen(
                [str(self.pg_autoctl), *args, "--pgdata", str(node.data_dir)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=node.env(),
                cwd=node.dir,
                start_new_session=True,  # its own process group, killed as one
                **extra,
            )

    def _ctl(self, node: Node, *args: str, timeout: float = 30) -> str:
        """A one-shot pg_autoctl command for ``node`` (config set, perform switchover)."""
        extra: dict[str, Any] = {}
        if self.as_postgres:
            extra = {"user": "postgres", "group": "postgres", "extra_groups": []}
        argv = [str(self.pg_autoctl), *args, "--pgdata", str(node.data_dir)]
        try:
            out = subprocess.run(
                argv, capture_output=True, text=True, env=node.env(), timeout=timeout, **extra
            )
        except subprocess.TimeoutExpired:
            raise BenchmarkError(f"pg_autoctl {' '.join(args)}: no answer in {timeout}s") from None
        if out.returncode != 0:
            tail = " | ".join(out.stderr.splitlines()[-3:])
            raise BenchmarkError(f"pg_autoctl {' '.join(args)} failed: {tail}")
        return str(out.stdout)

    def start(self, nodes: int, synchronous: bool = False) -> None:
        # pg_auto_failover is synchronous either way (see the module docstring).
        self.pg_autoctl = ensure_pg_autoctl()
        self._prepare(nodes)
        assert self.monitor is not None
        common = ("--pgctl", str(PG_BIN / "pg_ctl"), "--hostname", HOST, "--auth", "trust")
        self._spawn(
            self.monitor,
            *("create", "monitor", *common, "--no-ssl", "--run"),
            *("--pgport", str(self.monitor.port)),
        )
        wait(f"pg_auto_failover monitor (logs in {self.work}/logs)", self._monitor_up, 90, 0.2)
        self._configure_monitor()
        uri = f"postgres://autoctl_node@{HOST}:{self.monitor.port}/pg_auto_failover?sslmode=disable"
        for i, node in enumerate(self.nodes):
            self._spawn(
                node,
                *("create", "postgres", *common, "--no-ssl", "--run"),
                *("--name", node.name, "--pgport", str(node.port), "--listen", HOST),
                *("--monitor", uri),
            )
            if i == 0:  # the first node becomes the primary; the others clone from it
                wait(
                    "first pg_auto_failover node",
                    lambda: self._states() == {"node1": "single"},
                    120,
                    0.2,
                )
                self._sql(node, f"ALTER ROLE postgres PASSWORD '{self.superuser_password}'")
        self.wait_healthy(240)
        if self.tuned:
            for node in self.nodes:
                for key, value in KEEPER_TUNED.items():
                    self._ctl(node, "config", "set", key, value)
        self._observe()

    def restart(self, name: str) -> None:
        self.restarts += 1
        self._spawn(self._node(name), "run")

    def kill(self, name: str) -> None:
        """SIGKILL the node's pg_autoctl (supervisor and services) and postmaster, together."""
        supervised.kill(self._node(name))

    def stop(self) -> None:
        """Stop every process started here, by PID, bounded; the monitor last."""
        if self.work is None:
            return
        supervised.stop(self.nodes)  # pg_autoctl stops its Postgres on SIGTERM
        supervised.stop([self.monitor] if self.monitor else [])
        self._count_basebackups()
        if self.keep:
            print(f"kept {self.work} (pg_autoctl logs in {self.work / 'logs'})", flush=True)
        else:
            shutil.rmtree(self.work, ignore_errors=True)
        self.work = None

    # --- observation -------------------------------------------------------------------
    def members(self) -> list[str]:
        return [n.name for n in self.nodes]

    def _node(self, name: str) -> Node:
        found = [n for n in self.nodes if n.name == name]
        if not found:
            raise BenchmarkError(f"pg_auto_failover has no node {name!r}")
        return found[0]

    def _dsn(self, node: Node, dbname: str = "postgres") -> str:
        return (
            f"host={HOST} port={node.port} user=postgres password={self.superuser_password} "
            f"dbname={dbname} connect_timeout=1"
        )

    def node_dsn(self, name: str) -> str:
        return self._dsn(self._node(name))

    def writer_dsn(self) -> str:
        return multi_host_dsn(
            [(HOST, n.port) for n in self.nodes], "postgres", self.superuser_password
        )

    def _sql(self, node: Node, sql: str, dbname: str = "postgres") -> list[tuple[Any, ...]]:
        with psycopg.connect(self._dsn(node, dbname), autocommit=True) as conn:
            cur = conn.execute(sql)
            return cur.fetchall() if cur.description else []

    def _monitor_up(self) -> bool:
        assert self.monitor is not None
        self._check_alive()
        try:
            self._sql(self.monitor, "SELECT 1 FROM pgautofailover.formation", "pg_auto_failover")
        except psycopg.Error:
            return False
        return True

    def _configure_monitor(self) -> None:
        """The profile's pgautofailover.* settings on the monitor (all reloadable)."""
        assert self.monitor is not None
        if not self.tuned:
            return
        for key, value in TUNED.items():
            self._sql(self.monitor, f"ALTER SYSTEM SET pgautofailover.{key} = {value}")
        self._sql(self.monitor, "SELECT pg_reload_conf()")

    def _rows(self) -> list[tuple[str, str, str]]:
        """(node name, reported state, goal state) of every node, from the monitor."""
        assert self.monitor is not None
        try:
            rows = self._sql(
                self.monitor,
                "SELECT nodename, reportedstate, goalstate FROM pgautofailover.node",
                "pg_auto_failover",
            )
        except psycopg.Error:
            return []
        return [(str(a), str(b), str(c)) for a, b, c in rows]

    def _states(self) -> dict[str, str]:
        """Node name -> state, for nodes whose reported state is their goal (converged)."""
        return {name: rep for name, rep, goal in self._rows() if rep == goal}

    def leader(self) -> str | None:
        """The node the monitor lists as primary, if its Postgres accepts writes right now."""
        names = [name for name, rep, _ in self._rows() if rep in PRIMARY_STATES]
        for name in names:
            try:
                rows = self._sql(self._node(name), "SELECT pg_is_in_recovery()")
            except (psycopg.Error, BenchmarkError):
                continue
            if rows and rows[0][0] is False:
                return name
        return None

    def _check_alive(self) -> None:
        for node in self.all():
            if node.proc is not None and node.proc.poll() is not None:
                tail = node.log.read_text(errors="replace").splitlines()[-5:]
                raise BenchmarkError(f"pg_autoctl {node.name} exited: " + " | ".join(tail))

    def _healthy(self) -> bool:
        self._check_alive()
        states = self._states()
        roles = sorted(states.get(n.name, "") for n in self.nodes)
        return roles == ["primary"] + ["secondary"] * (len(self.nodes) - 1)

    def wait_healthy(self, timeout: float) -> None:
        wait(
            f"healthy pg_auto_failover cluster (logs in {self.work}/logs)",
            self._healthy,
            timeout,
            0.2,
        )

    def _observe(self) -> None:
        """What replication the primary actually runs, for the record."""
        assert self.monitor is not None
        leader = self.leader()
        if leader is None:
            return
        names = self._sql(self._node(leader), "SHOW synchronous_standby_names")[0][0]
        sync = self._sql(
            self.monitor,
            "SELECT number_sync_standbys FROM pgautofailover.formation WHERE formationid='default'",
            "pg_auto_failover",
        )
        self.observed = {
            "synchronous_standby_names": names,
            "number_sync_standbys": sync[0][0] if sync else None,
        }

    def _count_basebackups(self) -> None:
        """How many rejoins copied the whole primary. After a SIGKILL, pg_auto_failover 2.0
        runs crash recovery with standby.signal already written; when the data directory is
        left "shut down in recovery", pg_rewind runs its own single-user recovery, which
        refuses standby mode, fails, and the keeper falls back to pg_basebackup (seen
        sometimes, not always): fast here (a small database), proportional to its size in
        general. Usually pg_rewind finds nothing to rewind (synchronous replication)."""
        logs = [n.log.read_text(errors="replace") for n in self.nodes if n.log.exists()]
        fallbacks = sum(text.count("trying pg_basebackup instead") for text in logs)
        self.observed["rejoins"] = self.restarts
        self.observed["rejoins by pg_basebackup (pg_rewind failed)"] = fallbacks

    # --- operations --------------------------------------------------------------------
    def switchover(self) -> str:
        old = self.leader()
        if old is None or self.monitor is None:
            raise BenchmarkError("pg_auto_failover: no primary to switch over from")
        # Returns once the monitor reports a new primary (or fails after --wait seconds).
        self._ctl(self.monitor, "perform", "switchover", "--wait", "60", timeout=90)
        wait("new pg_auto_failover primary", lambda: self.leader() not in (None, old), 60)
        new = self.leader()
        assert new is not None
        return new
