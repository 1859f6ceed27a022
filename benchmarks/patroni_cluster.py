"""Patroni as a cluster under test: N Patroni members on this machine, with their own Consul.

Implements clusters.ClusterUnderTest with Patroni's DEFAULT HA settings (ttl 30,
loop_wait 10, retry_timeout 10; plus use_pg_rewind and use_slots), PostgreSQL
from /usr/lib/postgresql/15/bin, and a Consul server started exactly as the
local postgres-ras cluster starts its own. As root, every Patroni (and so
PostgreSQL) runs as the OS user ``postgres``.

Ports, from ``base_port`` (default 29900), all on 127.0.0.1: Consul base..base+2,
PostgreSQL base+10+i, REST API base+50+i for member i (1..39). Everything started
is stopped by PID in ``stop`` and the temporary directory removed.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import requests
import supervised
import yaml
from clusters import BenchmarkError, wait
from patroni_install import PATRONI_VERSION, ensure_venv

from postgres_ras.errors import FatalError
from postgres_ras.local import consul_server
from postgres_ras.local.layout import Layout
from postgres_ras.local.procs import ProcessTable, free_port_check
from postgres_ras.local.workload import multi_host_dsn

PG_BIN = Path("/usr/lib/postgresql/15/bin")
HOST = "127.0.0.1"
SCOPE = "bench"
MAX_NODES = 39
PATRONI_DEFAULTS = {"ttl": 30, "loop_wait": 10, "retry_timeout": 10}


class Member:
    def __init__(self, work: Path, index: int, base_port: int) -> None:
        self.name = f"node{index}"
        self.pg_port = base_port + 10 + index
        self.api_port = base_port + 50 + index
        self.dir = work / self.name
        self.data_dir = self.dir / "data"
        self.config = self.dir / "patroni.yml"
        self.log = work / "logs" / f"patroni-{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def api(self) -> str:
        return f"http://{HOST}:{self.api_port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class PatroniCluster:
    name = f"Patroni {PATRONI_VERSION}"
    slug = "patroni"

    def __init__(self, venv: Path, base_port: int = 29900, keep: bool = False) -> None:
        self.venv = venv
        self.base_port = base_port
        self.keep = keep
        self.superuser_password = secrets.token_urlsafe(12)
        self.replication_password = secrets.token_urlsafe(12)
        self.as_postgres = os.geteuid() == 0
        self.work: Path | None = None
        self.nodes: list[Member] = []
        self.synchronous = False

    def settings(self) -> dict[str, Any]:
        return {
            **PATRONI_DEFAULTS,
            "maximum_lag_on_failover": 1048576,
            "use_pg_rewind": True,
            "use_slots": True,
        }

    # --- configuration -----------------------------------------------------------------
    def _config(self, node: Member, synchronous: bool) -> dict[str, Any]:
        return {
            "scope": SCOPE,
            "namespace": "/service/",
            "name": node.name,
            "log": {"level": "INFO"},
            "restapi": {
                "listen": f"{HOST}:{node.api_port}",
                "connect_address": f"{HOST}:{node.api_port}",
            },
            "consul": {"host": f"{HOST}:{self.layout.consul_http}"},
            "bootstrap": {
                "dcs": {
                    **PATRONI_DEFAULTS,
                    "maximum_lag_on_failover": 1048576,
                    "synchronous_mode": synchronous,
                    "postgresql": {"use_pg_rewind": True, "use_slots": True},
                },
                "initdb": [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}],
            },
            "postgresql": {
                "listen": f"{HOST}:{node.pg_port}",
                "connect_address": f"{HOST}:{node.pg_port}",
                "data_dir": str(node.data_dir),
                "bin_dir": str(PG_BIN),
                "pgpass": str(node.dir / "pgpass"),
                "authentication": {
                    "superuser": {"username": "postgres", "password": self.superuser_password},
                    "replication": {
                        "username": "replicator",
                        "password": self.replication_password,
                    },
                },
                "parameters": {"unix_socket_directories": str(node.dir)},
                "pg_hba": [
                    "local all all trust",
                    f"host replication replicator {HOST}/32 scram-sha-256",
                    f"host all all {HOST}/32 scram-sha-256",
                ],
            },
        }

    def _prepare(self, nodes: int, synchronous: bool) -> None:
        if not 1 <= nodes <= MAX_NODES:
            raise BenchmarkError(f"Patroni: 1..{MAX_NODES} members, not {nodes}")
        self.work = Path(tempfile.mkdtemp(prefix="pgras-patroni-", dir="/tmp"))
        self.work.chmod(0o755)
        self.layout = Layout(self.work, self.base_port, cluster="patroni")
        self.table = ProcessTable(self.work / "run", self.work / "logs")
        self.nodes = [Member(self.work, i, self.base_port) for i in range(1, nodes + 1)]
        ports = [self.layout.consul_http, self.layout.consul_server, self.layout.consul_serf]
        ports += [p for n in self.nodes for p in (n.pg_port, n.api_port)]
        taken = [p for p in ports if not free_port_check(p, HOST)]
        if taken:
            raise BenchmarkError(f"ports already in use on {HOST}: {taken}")
        (self.work / "logs").mkdir(parents=True, exist_ok=True)
        for node in self.nodes:
            node.dir.mkdir(parents=True)
            node.config.write_text(yaml.safe_dump(self._config(node, synchronous), sort_keys=False))
            node.config.chmod(0o600)
            if self.as_postgres:
                for path in (node.dir, node.config):
                    shutil.chown(path, "postgres", "postgres")

    # --- processes ---------------------------------------------------------------------
    def start(self, nodes: int, synchronous: bool = False) -> None:
        patroni = ensure_venv(self.venv)
        self.synchronous = synchronous
        self._prepare(nodes, synchronous)
        try:
            consul_server.start(self.layout, self.table)
        except FatalError as exc:
            raise BenchmarkError(str(exc)) from None
        self.patroni = patroni
        for node in self.nodes:
            self._spawn(node)
        self.wait_healthy(180)

    def _spawn(self, node: Member) -> None:
        env = {
            "PATH": f"{self.patroni.parent}:/usr/bin:/bin",
            "HOME": str(node.dir),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
        }
        extra: dict[str, Any] = {}
        if self.as_postgres:
            extra = {"user": "postgres", "group": "postgres", "extra_groups": []}
        with open(node.log, "ab") as out:
            node.proc = subprocess.Popen(
                [str(self.patroni), str(node.config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=node.dir,
                start_new_session=True,
                **extra,
            )

    def restart(self, name: str) -> None:
        self._spawn(self._node(name))

    def kill(self, name: str) -> None:
        """SIGKILL the member's Patroni and its postmaster's process group, together."""
        supervised.kill(self._node(name))

    def stop(self) -> None:
        """Stop every process started here, by PID, bounded; Consul last."""
        if self.work is None:
            return
        supervised.stop(self.nodes)
        self.table.stop(consul_server.NAME, timeout=10)
        if self.keep:
            print(f"kept {self.work} (Patroni logs in {self.work / 'logs'})", flush=True)
        else:
            shutil.rmtree(self.work, ignore_errors=True)
        self.work = None

    # --- observation -------------------------------------------------------------------
    def members(self) -> list[str]:
        return [n.name for n in self.nodes]

    def _node(self, name: str) -> Member:
        found = [n for n in self.nodes if n.name == name]
        if not found:
            raise BenchmarkError(f"Patroni has no member {name!r}")
        return found[0]

    def data_dir(self, name: str) -> Path:
        return self._node(name).data_dir

    def node_dsn(self, name: str) -> str:
        node = self._node(name)
        return (
            f"host={HOST} port={node.pg_port} user=postgres password={self.superuser_password} "
            "dbname=postgres connect_timeout=1"
        )

    def writer_dsn(self) -> str:
        return multi_host_dsn(
            [(HOST, n.pg_port) for n in self.nodes], "postgres", self.superuser_password
        )

    def leader(self) -> str | None:
        """The holder of the leader key in Consul, if its Patroni answers 200 on /primary."""
        try:
            resp = requests.get(
                f"{self.layout.consul_url}/v1/kv/service/{SCOPE}/leader?raw", timeout=2
            )
            if resp.status_code != 200 or not resp.text:
                return None
            node = self._node(resp.text.strip())
            ok = requests.get(f"{node.api}/primary", timeout=2).status_code == 200
        except (BenchmarkError, requests.RequestException):
            return None
        return node.name if ok else None

    def _rows(self, via: Member) -> list[dict[str, Any]]:
        try:
            resp = requests.get(f"{via.api}/cluster", timeout=2)
            rows: list[dict[str, Any]] = resp.json().get("members", [])
            return rows
        except (requests.RequestException, ValueError):
            return []

    def _healthy(self) -> bool:
        leader = self.leader()
        if leader is None:
            return False
        rows = self._rows(self._node(leader))
        primaries = [r for r in rows if r.get("role") == "leader" and r.get("state") == "running"]
        # In synchronous mode the synchronous standby says "sync_standby", not "replica".
        replicas = [
            r
            for r in rows
            if r.get("role") in ("replica", "sync_standby") and r.get("state") == "streaming"
        ]
        # In synchronous mode a failover is possible only once the /sync key names a standby
        # (Patroni writes it a cycle after synchronous_standby_names): healthy waits for it.
        synced = not self.synchronous or any(r.get("role") == "sync_standby" for r in replicas)
        return len(primaries) == 1 and len(replicas) == len(self.nodes) - 1 and synced

    def wait_healthy(self, timeout: float) -> None:
        def check() -> bool:
            for node in self.nodes:
                if node.proc is not None and node.proc.poll() is not None:
                    tail = node.log.read_text(errors="replace").splitlines()[-5:]
                    raise BenchmarkError(f"Patroni {node.name} exited: " + " | ".join(tail))
            return self._healthy()

        wait(f"healthy Patroni cluster (logs in {self.work}/logs)", check, timeout, step=0.2)

    # --- operations --------------------------------------------------------------------
    def switchover(self) -> str:
        old = self.leader()
        if old is None:
            raise BenchmarkError("Patroni: no leader to switch over from")
        rows = self._rows(self._node(old))
        # In synchronous mode Patroni only accepts the synchronous standby as candidate.
        names = [
            r["name"]
            for r in sorted(rows, key=lambda r: (r.get("role") != "sync_standby", r["name"]))
            if r.get("role") in ("replica", "sync_standby") and r.get("state") == "streaming"
        ]
        if not names:
            raise BenchmarkError("Patroni: no streaming replica to switch over to")
        try:
            resp = requests.post(
                f"{self._node(old).api}/switchover",
                json={"leader": old, "candidate": names[0]},
                timeout=60,
            )
        except requests.RequestException as exc:
            raise BenchmarkError(f"Patroni switchover: {type(exc).__name__}") from None
        if resp.status_code != 200:
            raise BenchmarkError(f"Patroni switchover refused: {resp.status_code} {resp.text}")
        wait("new Patroni leader", lambda: self.leader() not in (None, old), 60)
        new = self.leader()
        assert new is not None
        return new
