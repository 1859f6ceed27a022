"""The local cluster: Consul (1, 3 or 5 servers), N nodes (agent, controller, postgres), access.

``up`` is idempotent: it starts whatever is missing, so a killed node comes
back with ``pgras up``. Every process is tracked by a PID file under the
work directory and stopped by PID. Nothing here decides roles: that is the
controllers' job; this module only starts, stops and reports.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import stat
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml
from pydantic import SecretStr

from postgres_ras.config import NodeConfig
from postgres_ras.dcs.base import REMOVED_PREFIX, Cluster
from postgres_ras.dcs.consul import client as consul_client
from postgres_ras.dcs.consul import cluster_prefix, parse_cluster
from postgres_ras.errors import DCSError, FatalError
from postgres_ras.local import access as access_layer
from postgres_ras.local import consul_server
from postgres_ras.local.layout import Layout, NodePorts, check_consul_servers
from postgres_ras.local.procs import ProcessTable


@dataclass(frozen=True)
class MemberRow:
    name: str
    host: str
    port: int
    role: str
    state: str
    timeline: int | None
    lag: int | None
    leader: bool
    streaming: bool
    api_url: str
    conninfo: str
    sync_standby: bool = False

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def healthy(rows: list[MemberRow], nodes: int) -> bool:
    """One running primary holding the lock and ``nodes - 1`` streaming replicas."""
    primaries = [r for r in rows if r.leader and r.role == "primary" and r.state == "running"]
    replicas = [r for r in rows if r.role == "replica" and r.state == "running" and r.streaming]
    return len(primaries) == 1 and len(replicas) == nodes - 1


class LocalCluster:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.table = ProcessTable(layout.run, layout.logs)

    # --- persistent state --------------------------------------------------------
    def state(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.layout.state_file.read_text())
            return data
        except (OSError, ValueError):
            return {}

    def _save_state(self, data: dict[str, Any]) -> None:
        self.layout.work_dir.mkdir(parents=True, exist_ok=True)
        path = self.layout.state_file
        path.write_text(json.dumps(data, indent=2))
        path.chmod(0o600)

    def _ensure_state(self, nodes: int | None, consul_servers: int | None = None) -> dict[str, Any]:
        if consul_servers is not None:
            try:
                check_consul_servers(consul_servers)
            except ValueError as exc:
                raise FatalError(str(exc)) from None
        data = self.state()
        if not data:
            data = {
                "cluster": self.layout.cluster,
                "base_port": self.layout.base_port,
                "nodes": nodes or 3,
                "consul_servers": consul_servers or 1,
                "superuser_password": secrets.token_urlsafe(12),
                "replication_password": secrets.token_urlsafe(12),
            }
        else:
            if consul_servers is not None and consul_servers != self.consul_servers:
                # Raft keeps its membership in the servers' data: a grown or shrunk set of
                # servers would not agree on a quorum with the one it was made with.
                raise FatalError(
                    f"the cluster in {self.layout.work_dir} was made with --consul-servers "
                    f"{self.consul_servers}; the count cannot change (start it without "
                    f"--consul-servers, or delete it with `pgras down --destroy` first)"
                )
            if nodes is not None:
                data["nodes"] = nodes
        self._save_state(data)
        return data

    @property
    def consul_servers(self) -> int:
        """How many Consul servers this cluster runs (1 for clusters made before the option)."""
        try:
            return check_consul_servers(int(self.state().get("consul_servers", 1)))
        except (TypeError, ValueError):
            return 1

    def consul_names(self) -> list[str]:
        """The ProcessTable names of this cluster's Consul servers."""
        return consul_server.names(self.layout, self.consul_servers)

    @property
    def superuser(self) -> tuple[str, str]:
        return ("postgres", str(self.state().get("superuser_password", "")))

    def node_names(self) -> list[str]:
        return [self.layout.node(i).name for i in range(1, int(self.state().get("nodes", 0)) + 1)]

    # --- nodes ---------------------------------------------------------------------
    def node_config(self, ports: NodePorts) -> NodeConfig:
        st = self.state()
        node_dir = self.layout.node_dir(ports.name)
        servers = self.consul_servers
        return NodeConfig.model_validate(
            {
                "name": ports.name,
                "cluster": self.layout.cluster,
                "data_dir": str(node_dir / "data"),
                "postgres": {
                    "listen": self.layout.host,
                    "host": self.layout.host,
                    "port": ports.postgres,
                    "superuser": {"username": "postgres", "password": st["superuser_password"]},
                    "replication": {
                        "username": "replicator",
                        "password": st["replication_password"],
                    },
                },
                "agent": {"listen": "127.0.0.1", "port": ports.agent},
                "controller": {
                    "listen": self.layout.host,
                    "host": self.layout.host,
                    "port": ports.api,
                    "agent_url": f"http://127.0.0.1:{ports.agent}",
                    "auth_token": self.controller_token(),
                },
                "consul": {
                    "url": self.layout.node_consul(ports.index, servers).url,
                    "fallback_urls": [
                        s.url for s in self.layout.node_consul_fallbacks(ports.index, servers)
                    ],
                },
            }
        )

    def _write_node_config(self, ports: NodePorts) -> Path:
        node_dir = self.layout.node_dir(ports.name)
        node_dir.mkdir(parents=True, exist_ok=True)
        path = node_dir / "node.yaml"
        # The file holds the secrets in clear (mode 0600): the processes read them from it,
        # never from argv or the environment, which other users could see.
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
        path.write_text(yaml.safe_dump(_plain(self.node_config(ports)), sort_keys=False))
        return path

    def controller_token(self) -> str:
        """The bearer token of every controller's state-changing endpoints (kept in the state
        file, 0600, like the passwords; made once, also for clusters made before it existed)."""
        st = self.state()
        token = st.get("controller_token")
        if not isinstance(token, str) or not token:
            token = secrets.token_urlsafe(24)
            st["controller_token"] = token
            self._save_state(st)
        return token

    def start_node(self, ports: NodePorts) -> None:
        path = self._write_node_config(ports)
        for component in ("agent", "controller"):
            name = f"{ports.name}-{component}"
            if self.table.get(name) is None:
                self.table.start(
                    name, [sys.executable, "-m", "postgres_ras", component, "--config", str(path)]
                )

    def stop_node(self, name: str, timeout: float = 30.0) -> None:
        self.table.stop(f"{name}-controller", timeout=10)
        self.table.stop(f"{name}-agent", timeout=timeout)
        pid = self.postmaster_pid(name)
        if pid is not None:  # the agent died before it could stop postgres
            os.kill(pid, signal.SIGINT)
            _wait_pid(pid, 20)

    def postmaster_pid(self, name: str) -> int | None:
        try:
            pid = int(
                (self.layout.node_dir(name) / "data" / "postmaster.pid").read_text().split()[0]
            )
            os.kill(pid, 0)
            return pid if Path(f"/proc/{pid}/comm").read_text().strip() == "postgres" else None
        except (OSError, ValueError, IndexError):
            return None

    def _check_reachable_by_pg_user(self) -> None:
        if os.geteuid() != 0:
            return
        for parent in [self.layout.work_dir.resolve(), *self.layout.work_dir.resolve().parents]:
            if parent.exists() and not parent.stat().st_mode & stat.S_IXOTH:
                raise FatalError(
                    f"running as root, postgres runs as OS user 'postgres', which cannot enter "
                    f"{parent} (mode {oct(parent.stat().st_mode & 0o777)}): choose a work "
                    f"directory it can reach, e.g. --work-dir /var/tmp/pgras"
                )

    # --- the whole cluster -----------------------------------------------------------
    def up(
        self,
        nodes: int | None = None,
        access: bool = True,
        wait: float = 120.0,
        synchronous: bool = False,
        consul_servers: int | None = None,
    ) -> None:
        """``consul_servers``: 1, 3 or 5 for a new cluster; an existing one keeps its count."""
        self._check_reachable_by_pg_user()
        self.layout.work_dir.mkdir(parents=True, exist_ok=True)
        self.layout.work_dir.chmod(0o755)
        st = self._ensure_state(nodes, consul_servers)
        consul_server.start(self.layout, self.table, servers=self.consul_servers)
        if synchronous:
            self.set_dynamic({"synchronous_mode": True})
        for i in range(1, int(st["nodes"]) + 1):
            self.start_node(self.layout.node(i))
        if access:
            access_layer.start_access(self.layout, self.table, self.node_ports(), self.superuser)
        if wait:
            self.wait_healthy(int(st["nodes"]), wait)

    def node_ports(self) -> list[NodePorts]:
        return [self.layout.node(i) for i in range(1, int(self.state().get("nodes", 0)) + 1)]

    def down(self) -> None:
        access_layer.stop_access(self.layout, self.table)
        names = [n for n in self.table.names() if n.endswith("-controller")]
        for name in names:  # all at once, so no replica races while the leader leaves
            self.table.send_signal(name, signal.SIGTERM)
        for name in names:
            self.table.stop(name, timeout=10)
        for name in [n for n in self.table.names() if n.endswith("-agent")]:
            self.table.stop(name, timeout=30)
        for node in self.layout.work_dir.joinpath("nodes").glob("*"):
            pid = self.postmaster_pid(node.name)
            if pid is not None:
                os.kill(pid, signal.SIGINT)
                _wait_pid(pid, 20)
        for name in self.table.names():
            self.table.stop(name, timeout=10)

    def destroy(self) -> None:
        """Stop everything and delete the work directory (data included)."""
        self.down()
        shutil.rmtree(self.layout.work_dir, ignore_errors=True)

    def set_dynamic(self, values: dict[str, Any], timeout: float = 10.0) -> None:
        """Merge ``values`` into the dynamic ``config`` key (check-and-set, bounded)."""
        key = cluster_prefix(self.layout.cluster) + "config"
        c = consul_client(self.layout.consul_url, timeout=2)
        deadline = time.monotonic() + timeout
        while True:
            try:
                _, item = c.kv.get(key)
                current = json.loads(item["Value"]) if item and item.get("Value") else {}
                index = int(item["ModifyIndex"]) if item else 0  # 0: create only if absent
                if c.kv.put(key, json.dumps({**current, **values}), cas=index):
                    return
            except Exception as exc:  # any client failure: retry until the deadline
                if time.monotonic() > deadline:
                    raise DCSError(f"cannot write the dynamic config: {exc}") from None
            if time.monotonic() > deadline:
                raise DCSError("cannot write the dynamic config: it kept changing")
            time.sleep(0.2)

    # --- observation ------------------------------------------------------------------
    def raw_cluster(self) -> Cluster:
        """The cluster prefix as the controllers read it (the same parser, ``parse_cluster``)."""
        prefix = cluster_prefix(self.layout.cluster)
        failures = []
        # Any server answers for the cluster: with --consul-servers 3 the first may be down.
        for server in self.layout.consul_servers(self.consul_servers):
            try:
                index, items = consul_client(server.url, timeout=2).kv.get(prefix, recurse=True)
            except Exception as exc:  # translated for the CLI: any failure means "unreachable"
                failures.append(f"{server.url} ({type(exc).__name__})")
                continue
            return parse_cluster(prefix, int(index or 0), items)
        raise DCSError(
            f"Consul at {', '.join(failures)} unreachable: is the cluster in "
            f"{self.layout.work_dir} running? start it with `pgras up`"
        )

    def members(self, probe: bool = False, cluster: Cluster | None = None) -> list[MemberRow]:
        """Members from Consul (or from ``cluster``, already read), plus every node of this
        local cluster whose key lapsed.

        A node whose member key is gone is shown ``down`` rather than dropped; with
        ``probe`` a member whose REST API does not answer is shown ``unreachable``, so a
        killed leader is not reported as running while its key waits out the TTL.
        """
        if cluster is None:
            cluster = self.raw_cluster()
        leader = cluster.leader.name if cluster.leader else None
        leader_member = cluster.leader_member
        leader_lsn = leader_member.lsn if leader_member else None
        parsed = {m.name: m for m in cluster.members}
        invalid = set(cluster.invalid_members)
        urls = {n: m.api_url for n, m in parsed.items()}
        reachable = _answers(urls) if probe else {}
        rows = []
        user, password = self.superuser

        def without_member(name: str, host: str, port: int, state: str, conninfo: str) -> None:
            """A row with no member key to read: ``invalid`` or ``down``."""
            role = "invalid" if state == "invalid" else "unknown"
            rows.append(
                MemberRow(
                    name=name,
                    host=host,
                    port=port,
                    role=role,
                    state=state,
                    timeline=None,
                    lag=None,
                    leader=name == leader,
                    streaming=False,
                    api_url="",
                    conninfo=conninfo,
                )
            )

        for name in sorted(set(parsed) | invalid | set(self.node_names()), key=_natural):
            if name in invalid:  # its key is there but does not parse: shown, never trusted
                conninfo = f"host=? port=0 user={user} password={password} dbname=postgres"
                without_member(name, "?", 0, "invalid", conninfo)
                continue
            m = parsed.get(name)
            if m is None:
                ports = self.layout.node(int(name[4:])) if name[4:].isdigit() else None
                without_member(name, self.layout.host, ports.postgres if ports else 0, "down", "")
                continue
            lag = (
                None
                if name == leader or m.lsn is None or leader_lsn is None
                else max(0, leader_lsn - m.lsn)
            )
            host, port = m.conn_host, m.conn_port
            answers = reachable.get(name, True)
            rows.append(
                MemberRow(
                    name=name,
                    host=host,
                    port=port,
                    role=m.role,
                    state=m.state if answers else "unreachable",
                    timeline=m.timeline,
                    lag=lag,
                    leader=name == leader,
                    streaming=m.streaming and answers,
                    api_url=m.api_url,
                    sync_standby=m.sync_standby and name != leader,
                    conninfo=(
                        f"host={host} port={port} user={user} password={password} dbname=postgres"
                    ),
                )
            )
        return rows

    def leader(self) -> MemberRow | None:
        for row in self.members():
            if row.leader:
                return row
        return None

    def is_healthy(self, nodes: int) -> bool:
        try:
            return healthy(self.members(), nodes)
        except DCSError:
            return False

    def wait_healthy(self, nodes: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_healthy(nodes):
                return
            self._fail_if_dead()
            time.sleep(0.2)
        raise FatalError(
            f"cluster not healthy after {timeout:.0f}s (want 1 primary + {nodes - 1} streaming "
            f"replicas); see the logs in {self.layout.logs}"
        )

    def _fail_if_dead(self) -> None:
        """Fail at once, with the reason, when a node process exited (bad config, port taken)."""
        for name in self.node_names():
            for component in ("agent", "controller"):
                proc = f"{name}-{component}"
                if self.table.pid_file(proc).exists() and self.table.get(proc) is None:
                    log = self.table.log_file(proc)
                    tail = log.read_text(errors="replace").splitlines()[-5:] if log.exists() else []
                    raise FatalError(f"{proc} exited: " + " | ".join(tail) + f" (log: {log})")

    # --- operations ------------------------------------------------------------------
    def node_pids(self, name: str) -> list[int]:
        """A node's controller, agent, postmaster and every postgres child, by PID.

        Children are listed by PID, not reached by process group: each backend calls
        setsid(), so a group signal would leave open sessions running (and, with
        SIGSTOP, committing) on a node that is meant to be frozen whole.
        """
        pids = [
            proc.pid
            for component in ("controller", "agent")
            if (proc := self.table.get(f"{name}-{component}")) is not None
        ]
        pg = self.postmaster_pid(name)
        if pg is not None:
            pids += [pg, *_children(pg)]
        return pids

    def kill(self, name: str, sig: signal.Signals) -> list[int]:
        """Signal every process of a node (``node_pids``); returns the PIDs signalled.

        The children are listed before the postmaster is signalled (a SIGKILLed
        postmaster's children are re-parented at once), and looked for again after
        it, so a child forked in between (before a SIGSTOP took hold) is not missed.
        """
        signalled = [pid for pid in self.node_pids(name) if _send(pid, sig)]
        pg = self.postmaster_pid(name)
        if pg is not None:
            signalled += [c for c in _children(pg) if c not in signalled and _send(c, sig)]
        return signalled

    def switchover(self, to: str | None, timeout: float = 30.0) -> tuple[str, str]:
        before = self.leader()
        if before is None:
            raise FatalError("no leader right now: nothing to switch over")
        try:
            resp = requests.post(
                f"{before.api_url}/switchover",
                json={"to": to},
                headers={"Authorization": f"Bearer {self.controller_token()}"},
                timeout=5,
            )
        except requests.RequestException as exc:
            raise FatalError(
                f"leader {before.name} API unreachable: {type(exc).__name__}"
            ) from None
        if resp.status_code != 202:
            raise FatalError(f"switchover refused: {resp.json().get('error', resp.status_code)}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = self.leader()
            if now is not None and now.name != before.name and now.role == "primary":
                return before.name, now.name
            time.sleep(0.1)
        raise FatalError(f"no new leader within {timeout:.0f}s; see `pgras list` and the logs")

    def _staying_replica(self, leaving: list[str], timeout: float) -> str:
        """A streaming replica that stays, to hand leadership to (waits for one, bounded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for row in self.members():
                if row.name not in leaving and row.role == "replica" and row.streaming:
                    return row.name
            time.sleep(0.2)
        raise FatalError(
            f"no streaming replica outside {', '.join(leaving)} to hand leadership to "
            f"within {timeout:.0f}s; see `pgras list`"
        )

    def _forget(self, name: str) -> None:
        """A member removed for good: its key goes, and the removal marker tells the leader
        to drop its slot now rather than keep it for member_slots_ttl."""
        prefix = cluster_prefix(self.layout.cluster)
        kv = consul_client(self.layout.consul_url, timeout=2).kv
        try:
            kv.delete(f"{prefix}members/{name}")
            kv.put(f"{prefix}{REMOVED_PREFIX}{name}", str(time.time()))
        except Exception as exc:  # any client failure: the slot then goes after the ttl
            print(
                f"warning: could not mark {name} as removed in Consul ({type(exc).__name__}): "
                "its replication slot stays until member_slots_ttl",
                file=sys.stderr,
            )

    def scale(self, nodes: int, wait: float = 180.0) -> None:
        from postgres_ras.local.layout import MAX_NODES

        if not 1 <= nodes <= MAX_NODES:
            raise FatalError(f"node count must be between 1 and {MAX_NODES}, not {nodes}")
        current = int(self.state().get("nodes", 0))
        if nodes < current:
            removed = [self.layout.node(i).name for i in range(nodes + 1, current + 1)]
            leader = self.leader()
            if leader is not None and leader.name in removed:
                self.switchover(self._staying_replica(removed, timeout=60))
            for name in reversed(removed):
                self.stop_node(name)
                self._forget(name)
                shutil.rmtree(self.layout.node_dir(name), ignore_errors=True)
        self._ensure_state(nodes)
        for i in range(1, nodes + 1):
            self.start_node(self.layout.node(i))
        if self.table.get("haproxy") is not None:
            access_layer.reload_haproxy(self.layout, self.table, self.node_ports())
        if wait:
            self.wait_healthy(nodes, wait)


def _answers(urls: dict[str, str], timeout: float = 0.5) -> dict[str, bool]:
    """Whether each member's REST API answers at all (any HTTP status), probed in parallel."""

    def one(url: str) -> bool:
        try:
            requests.get(url.rstrip("/") + "/health", timeout=timeout)
            return True
        except requests.RequestException:
            return False

    with ThreadPoolExecutor(max_workers=max(1, len(urls))) as pool:
        futures = {name: pool.submit(one, url) for name, url in urls.items() if url}
        return {name: f.result() for name, f in futures.items()}


def _plain(config: NodeConfig) -> Any:
    """The config as YAML-ready data with secrets revealed (model_dump masks SecretStr)."""

    def reveal(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return value.get_secret_value()
        if isinstance(value, dict):
            return {k: reveal(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [reveal(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        return value

    return reveal(config.model_dump(mode="python"))


def _send(pid: int, sig: signal.Signals) -> bool:
    """Signal ``pid``; False when it is already gone (or not ours)."""
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _children(parent: int) -> list[int]:
    """PIDs whose parent is ``parent`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_line = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command: state, ppid, ...
        fields = stat_line.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(parent):
            found.append(int(entry.name))
    return found


def _natural(name: str) -> tuple[str, int]:
    head = name.rstrip("0123456789")
    tail = name[len(head) :]
    return (head, int(tail) if tail else 0)


def _wait_pid(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
