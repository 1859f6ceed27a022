"""``pgras verify --target docker``: database pods running as Docker containers.

The target file (JSON) names what verify may touch and where to connect::

    {
      "members": [
        {"name": "pg-postgres-ras-0",
         "containers": ["run-pg-0", "run-pg-0-postgres", "run-pg-0-controller"],
         "dsn": "host=10.200.1.10 port=5432 dbname=postgres user=postgres",
         "api": "http://10.200.1.10:8008"},
        ...
      ],
      "write": "host=10.200.1.3 port=25010 dbname=postgres user=postgres",
      "read": "host=10.200.1.3 port=25011 dbname=postgres user=postgres",
      "pgpool": "host=10.200.1.4 port=5432 dbname=postgres user=postgres",
      "network": "pgras-test-1234",
      "consul_url": "http://10.200.1.2:8500",
      "cluster": "pg-postgres-ras",
      "password_file": "/run/secrets/pg-superuser"
    }

- ``members``: each member's name as its controller knows it (the leader key holds
  it), every container of its pod (killed, paused and started together; the one
  holding the network, a pod's pause container, is found from ``docker inspect``
  and started first), its postgres DSN and its controller's REST API. Addresses
  must be fixed (``docker run --ip``): a restarted container keeps them.
- ``write`` (required), ``read`` and ``pgpool`` (optional): the endpoints.
- ``network``: the network ``partition-primary`` disconnects the primary from
  (default: the only network of its network container).
- ``consul_url`` and ``cluster`` (optional): the cluster's dynamic config, read for
  the TTL and the failover lag bound, written by ``--synchronous``.
- the password is never in the file nor on the command line: ``password_file``
  (a file holding it), ``password_env`` (the name of an environment variable), or
  neither, and libpq's own ``PGPASSWORD`` / ``~/.pgpass`` apply.

Faults: ``kill-primary`` (``docker kill`` every container of the primary's pod;
``docker start`` again once another member leads or the failover window ended),
``stop-primary`` (``docker pause`` for ttl + 2 s, then ``unpause``),
``partition-primary`` (``docker network disconnect`` until another member leads,
plus 2 s, then ``connect`` with the same address and aliases), ``kill-replica``.
Who leads and whether the cluster is at full strength come from the controllers'
REST API (``/primary``, ``/replica``, ``/cluster``), as the routers see it.

Guarantees: only the containers the file names are killed, paused, started or
(dis)connected; a paused pod is always unpaused and a disconnected one always
reconnected (``finally``, and ``restore`` after every fault); every docker call
and HTTP request is bounded in time. A bad target (docker not running, a
container missing, a malformed file) is a ``FatalError`` naming what is wrong.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from postgres_ras.errors import FatalError, PgrasError
from postgres_ras.verify.faults import POLL, FaultError

log = logging.getLogger(__name__)

FAULTS = ("kill-primary", "stop-primary", "partition-primary", "kill-replica")
DOCKER_TIMEOUT = 60.0
HTTP_TIMEOUT = 1.0


class DockerError(PgrasError):
    """A docker command failed (or docker is missing)."""


# --- the target file ---------------------------------------------------------------------
@dataclass(frozen=True)
class Member:
    name: str
    containers: tuple[str, ...]
    dsn: str
    api: str


@dataclass(frozen=True)
class Spec:
    """A validated target file (the password already added to every DSN)."""

    members: tuple[Member, ...]
    endpoints: Mapping[str, str]
    network: str | None = None
    consul_url: str | None = None
    cluster: str | None = None
    source: str = "target file"


def _text(data: Mapping[str, Any], key: str, where: str, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise FatalError(f"{where}: {key!r} must be a non-empty string")
    return value.strip()


def _dsn(value: str, where: str, password: str | None) -> str:
    try:
        params = conninfo_to_dict(value)
    except Exception as exc:  # psycopg.ProgrammingError on a malformed conninfo
        raise FatalError(f"{where}: not a postgres conninfo: {exc}") from None
    if "password" in params:
        raise FatalError(
            f"{where}: the password does not belong in the target file; give "
            "password_file or password_env (or PGPASSWORD)"
        )
    # Always key=value form: verify appends options (connect_timeout) to every DSN.
    return make_conninfo("", **{**params, **({"password": password} if password else {})})


def read_password(data: Mapping[str, Any], base: Path, env: Mapping[str, str]) -> str | None:
    """From ``password_file`` (relative to the target file) or ``password_env``; None:
    neither given (libpq's PGPASSWORD / .pgpass then apply)."""
    if data.get("password_file") is not None and data.get("password_env") is not None:
        raise FatalError("target file: give password_file or password_env, not both")
    if data.get("password_file") is not None:
        path = base / str(_text(data, "password_file", "target file"))
        try:
            return path.read_text().rstrip("\r\n")
        except OSError as exc:
            raise FatalError(f"target file: password_file {path}: {exc.strerror}") from None
    if data.get("password_env") is not None:
        name = str(_text(data, "password_env", "target file"))
        if name not in env:
            raise FatalError(f"target file: environment variable {name} (password_env) is not set")
        return env[name]
    return None


def parse_spec(
    data: Any, base: Path = Path("."), env: Mapping[str, str] | None = None, source: str = ""
) -> Spec:
    """The target file's JSON -> Spec; ``FatalError`` naming the first thing wrong."""
    where = source or "target file"
    if not isinstance(data, Mapping):
        raise FatalError(f"{where}: expected a JSON object")
    password = read_password(data, base, os.environ if env is None else env)
    raw = data.get("members")
    if not isinstance(raw, list) or len(raw) < 2:
        raise FatalError(f"{where}: 'members' must list at least two members")
    members: list[Member] = []
    for k, m in enumerate(raw):
        at = f"{where}: members[{k}]"
        if not isinstance(m, Mapping):
            raise FatalError(f"{at}: expected an object")
        containers = m.get("containers")
        if (
            not isinstance(containers, list)
            or not containers
            or not all(isinstance(c, str) and c for c in containers)
        ):
            raise FatalError(f"{at}: 'containers' must be a non-empty list of container names")
        api = str(_text(m, "api", at))
        if not api.startswith(("http://", "https://")):
            raise FatalError(f"{at}: 'api' must be the controller's URL (http://host:port)")
        members.append(
            Member(
                name=str(_text(m, "name", at)),
                containers=tuple(containers),
                dsn=_dsn(str(_text(m, "dsn", at)), f"{at}.dsn", password),
                api=api.rstrip("/"),
            )
        )
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise FatalError(f"{where}: member names repeat: {', '.join(names)}")
    every = [c for m in members for c in m.containers]
    if len(set(every)) != len(every):
        raise FatalError(f"{where}: a container is named by more than one member")
    endpoints = {}
    for key in ("write", "read", "pgpool"):
        value = _text(data, key, where, required=key == "write")
        if value is not None:
            endpoints[key] = _dsn(value, f"{where}: {key}", password)
    consul_url = _text(data, "consul_url", where, required=False)
    cluster = _text(data, "cluster", where, required=False)
    if (consul_url is None) != (cluster is None):
        raise FatalError(f"{where}: give consul_url and cluster together (or neither)")
    return Spec(
        members=tuple(members),
        endpoints=endpoints,
        network=_text(data, "network", where, required=False),
        consul_url=consul_url.rstrip("/") if consul_url else None,
        cluster=cluster,
        source=where,
    )


def load_spec(path: Path, env: Mapping[str, str] | None = None) -> Spec:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise FatalError(f"target file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise FatalError(f"target file {path}: not JSON: {exc}") from None
    return parse_spec(data, path.parent, env, f"target file {path}")


# --- container state, pure ---------------------------------------------------------------
@dataclass(frozen=True)
class Attachment:
    """How a network container is attached to the network (to reconnect it the same)."""

    ip: str | None
    aliases: tuple[str, ...]


@dataclass
class ContainerInfo:
    name: str
    network_mode: str
    networks: dict[str, Attachment] = field(default_factory=dict)
    running: bool = False
    paused: bool = False

    @property
    def holds_network(self) -> bool:
        """False for a container joined to another's network (a pod's app containers)."""
        return not self.network_mode.startswith("container:")


def container_info(inspected: Mapping[str, Any]) -> ContainerInfo:
    """One element of ``docker inspect``'s JSON -> ContainerInfo."""
    name = str(inspected.get("Name", "")).lstrip("/")
    cid = str(inspected.get("Id", ""))
    state = inspected.get("State") or {}
    mode = str((inspected.get("HostConfig") or {}).get("NetworkMode") or "")
    networks: dict[str, Attachment] = {}
    for net, settings in ((inspected.get("NetworkSettings") or {}).get("Networks") or {}).items():
        settings = settings or {}
        ipam = settings.get("IPAMConfig") or {}
        ip = ipam.get("IPv4Address") or None
        aliases = tuple(
            a
            for a in settings.get("Aliases") or ()
            if a and a != name and not (len(a) >= 12 and cid.startswith(a))
        )
        networks[str(net)] = Attachment(ip, aliases)
    return ContainerInfo(
        name=name,
        network_mode=mode,
        networks=networks,
        running=bool(state.get("Running")),
        paused=bool(state.get("Paused")),
    )


def restore_plan(
    members: Sequence[Member],
    infos: Mapping[str, ContainerInfo],
    network: str,
    attachments: Mapping[str, Attachment],
) -> list[list[str]]:
    """The docker commands that bring every member back: unpause the paused, start the
    stopped (network containers first: the others join their network), reconnect the
    disconnected with the address and aliases they had."""
    cmds: list[list[str]] = []
    for m in members:
        own = [infos[c] for c in m.containers if c in infos]
        holders = [i for i in own if i.holds_network]
        joined = [i for i in own if not i.holds_network]
        paused = [i.name for i in own if i.running and i.paused]
        if paused:
            cmds.append(["unpause", *paused])
        for group in (holders, joined):
            stopped = [i.name for i in group if not i.running]
            if stopped:
                cmds.append(["start", *stopped])
        for i in holders:
            if network not in i.networks and i.name in attachments:
                cmds.append(connect_args(network, i.name, attachments[i.name]))
    return cmds


def connect_args(network: str, container: str, at: Attachment) -> list[str]:
    args = ["network", "connect"]
    if at.ip:
        args += ["--ip", at.ip]
    for alias in at.aliases:
        args += ["--alias", alias]
    return [*args, network, container]


def is_full_strength(
    roles: Mapping[str, tuple[bool, bool]], cluster_view: Mapping[str, Any] | None
) -> bool:
    """``roles``: member -> (answers /primary 200, answers /replica 200); full strength
    is one primary and every other member a streaming replica, and in synchronous mode
    (the primary's ``/cluster`` says so) a synchronous standby other than the leader."""
    primaries = [m for m, (p, _) in roles.items() if p]
    if len(primaries) != 1:
        return False
    if not all(r for m, (p, r) in roles.items() if m != primaries[0]):
        return False
    if cluster_view is not None and cluster_view.get("synchronous_mode") is True:
        leader = cluster_view.get("leader")
        return any(n != leader for n in cluster_view.get("sync") or ())
    return True


def most_common(views: Sequence[str | None]) -> str | None:
    """The value most views give (the earliest of equals); None for no views."""
    return max(views, key=views.count) if views else None


# --- I/O ---------------------------------------------------------------------------------
def docker(*args: str, timeout: float = DOCKER_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """The docker CLI; DockerError with its stderr when it fails or is missing."""
    try:
        proc = subprocess.run(
            ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise DockerError("the docker command is not installed") from None
    except subprocess.TimeoutExpired:
        raise DockerError(f"docker {' '.join(args[:2])} took more than {timeout:.0f}s") from None
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise DockerError(f"docker {' '.join(args)}: {detail[-1] if detail else 'failed'}")
    return proc


def http_get(url: str, timeout: float = HTTP_TIMEOUT) -> tuple[int, Any]:
    """(status, parsed JSON or None); status 0 when nothing answered in time."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except (OSError, ValueError):
        return 0, None
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


class DockerTarget:
    """verify's ``Target`` for pods running as Docker containers (see the module doc)."""

    kind = "docker"
    faults: tuple[str, ...] = FAULTS

    def __init__(self, spec: Spec, get: Callable[[str], tuple[int, Any]] = http_get) -> None:
        self.spec = spec
        self.members = {m.name: m for m in spec.members}
        self.get = get
        self.network = spec.network or ""
        self.attachments: dict[str, Attachment] = {}
        self.ttl = 4.0  # the cluster's, from start()

    # --- checking the target ----------------------------------------------------------
    def inspect(self, names: Sequence[str] | None = None) -> dict[str, ContainerInfo]:
        """Every named container's state; DockerError naming those that do not exist."""
        names = list(names or [c for m in self.spec.members for c in m.containers])
        try:
            proc = subprocess.run(
                ["docker", "inspect", "--type", "container", *names],
                capture_output=True, text=True, timeout=DOCKER_TIMEOUT, check=False,
            )  # fmt: skip
        except FileNotFoundError:
            raise DockerError("the docker command is not installed") from None
        except subprocess.TimeoutExpired:
            raise DockerError(f"docker inspect took more than {DOCKER_TIMEOUT:.0f}s") from None
        try:
            found = {i.name: i for i in map(container_info, json.loads(proc.stdout or "[]"))}
        except (ValueError, TypeError, AttributeError):
            found = {}
        missing = [n for n in names if n not in found]
        if missing:
            err = proc.stderr.strip().splitlines()
            if not found and err and "no such" not in err[-1].lower():
                raise DockerError(f"docker inspect: {err[-1]}")
            raise DockerError(f"no such container: {', '.join(missing)}")
        return found

    def check(self) -> None:
        """Docker answers, every container exists, each member's pod is attached to the
        network; remembers how (to reconnect after a partition). FatalError otherwise."""
        try:
            docker("version", timeout=30)
        except DockerError as exc:
            raise FatalError(f"docker target: cannot use Docker: {exc}") from None
        try:
            infos = self.inspect()
        except DockerError as exc:
            raise FatalError(f"docker target ({self.spec.source}): {exc}") from None
        for m in self.spec.members:
            holders = [infos[c] for c in m.containers if infos[c].holds_network]
            if not holders:
                raise FatalError(
                    f"docker target: member {m.name}: none of its containers holds a network "
                    "(each joins another container's); name the pod's network container too"
                )
            for h in holders:
                if not self.network:
                    if len(h.networks) != 1:
                        raise FatalError(
                            f"docker target: container {h.name} is on networks "
                            f"{sorted(h.networks) or 'none'}: name the cluster's in 'network'"
                        )
                    self.network = next(iter(h.networks))
                if self.network not in h.networks:
                    raise FatalError(
                        f"docker target: container {h.name} is not on network {self.network} "
                        f"(it is on {sorted(h.networks) or 'none'})"
                    )
                self.attachments[h.name] = h.networks[self.network]

    # --- Target -----------------------------------------------------------------------
    def describe(self) -> str:
        return f"the docker target of {self.spec.source} ({', '.join(self.members)})"

    def start(self, clock: Callable[[], float], ttl: float, fault_timeout: float) -> None:
        self.ttl = ttl
        if not self.attachments:
            self.check()

    def dsns(self) -> dict[str, str]:
        return {m.name: m.dsn for m in self.spec.members}

    def ack_ports(self) -> dict[int, str]:
        # Every pod's postgres listens on the same port: a port names no member.
        return {}

    def endpoints(self) -> dict[str, str]:
        return dict(self.spec.endpoints)

    def check_faults(self, faults: tuple[tuple[str, str], ...]) -> None:
        for name in dict.fromkeys(n for n, _ in faults):
            if name not in FAULTS:
                raise FatalError(
                    f"fault {name} is not available on a docker target; choose from "
                    f"{', '.join(FAULTS)}"
                )

    def dynamic_config(self) -> Any:
        if self.spec.consul_url is None or self.spec.cluster is None:
            return None
        from postgres_ras.verify.run import DynamicConfig

        return DynamicConfig(self.spec.consul_url, self.spec.cluster)

    def sync_refusal_watch(self) -> Callable[[], str]:
        """The containers' logs from now on (``docker logs --since``)."""
        from postgres_ras.verify.run import ControllerLogs

        since = f"{time.time() - 1:.3f}"
        words = ControllerLogs.REFUSAL_WORDS

        def refusal() -> str:
            for m in self.spec.members:
                for c in m.containers:
                    try:
                        proc = docker("logs", "--since", since, c, timeout=15)
                    except DockerError:
                        continue
                    for line in (proc.stdout + proc.stderr).splitlines():
                        low = line.lower()
                        if "synchronous" in low and any(w in low for w in words):
                            return f"{c}: {line.strip()[-300:]}"
            return ""

        return refusal

    def _answers(self, member: str, path: str) -> bool:
        return self.get(self.members[member].api + path)[0] == 200

    def leader(self) -> str | None:
        """The leader key's holder as most answering controllers see it (a pod just
        thawed still shows its view from before it froze until its next cycle)."""
        views: list[str | None] = []
        for m in self.spec.members:
            status, body = self.get(m.api + "/cluster")
            if status == 200 and isinstance(body, Mapping):
                views.append(str(body["leader"]) if body.get("leader") else None)
        return most_common(views)

    def full_strength(self) -> bool:
        roles: dict[str, tuple[bool, bool]] = {}
        for name in self.members:
            primary = self._answers(name, "/primary")
            roles[name] = (primary, False if primary else self._answers(name, "/replica"))
        primaries = [n for n, (p, _) in roles.items() if p]
        view = None
        if len(primaries) == 1:
            status, body = self.get(self.members[primaries[0]].api + "/cluster")
            if status != 200 or not isinstance(body, Mapping):
                return False
            view = body
        return is_full_strength(roles, view)

    def wait_leader(self, not_in: set[str], timeout: float) -> str | None:
        """A member outside ``not_in`` that holds the leader key and answers /primary, or
        None after ``timeout``. (A pod just thawed answers /primary from its last cycle
        before it looks again: the leader key decides, as the DCS row does locally.)"""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.leader()
            if (
                leader is not None
                and leader in self.members
                and leader not in not_in
                and self._answers(leader, "/primary")
            ):
                return leader
            time.sleep(POLL)
        return None

    def restore(self) -> None:
        infos = self.inspect()
        for cmd in restore_plan(self.spec.members, infos, self.network, self.attachments):
            log.info("restore: docker %s", " ".join(cmd))
            docker(*cmd)

    # --- faults -----------------------------------------------------------------------
    def inject(self, name: str, leader: str | None) -> tuple[str | None, str]:
        actions: dict[str, Callable[[str | None], tuple[str | None, str]]] = {
            "kill-primary": self._kill_primary,
            "stop-primary": self._stop_primary,
            "partition-primary": self._partition_primary,
            "kill-replica": self._kill_replica,
        }
        if name not in actions:
            raise FaultError(f"fault {name} is not available on a docker target")
        return actions[name](leader)

    def _need_leader(self, leader: str | None) -> str:
        if leader is None or leader not in self.members:
            raise FaultError(f"no primary to hit (leader key: {leader})")
        return leader

    def _failover_window(self) -> float:
        return self.ttl * 3 + 10

    def _kill_primary(self, leader: str | None) -> tuple[str | None, str]:
        name = self._need_leader(leader)
        docker("kill", *self.members[name].containers)
        new = self.wait_leader({name}, self._failover_window())
        return name, f"{new} took over" if new else "no new primary in time"

    def _stop_primary(self, leader: str | None) -> tuple[str | None, str]:
        """Freeze the whole pod (cgroup freezer) past the TTL, then thaw it."""
        name = self._need_leader(leader)
        containers = self.members[name].containers
        docker("pause", *containers)
        try:
            time.sleep(self.ttl + 2)
        finally:
            docker("unpause", *containers)
        new = self.wait_leader(set(), 5)
        return name, f"{len(containers)} containers paused {self.ttl + 2:.0f}s; leader now {new}"

    def _partition_primary(self, leader: str | None) -> tuple[str | None, str]:
        """Disconnect the primary's pod from the network (Consul, the other members and
        the clients all lose it) until another member leads, plus two seconds."""
        name = self._need_leader(leader)
        holders = [c for c in self.members[name].containers if c in self.attachments]
        cut: list[str] = []
        try:
            for c in holders:
                docker("network", "disconnect", self.network, c)
                cut.append(c)
            new = self.wait_leader({name}, self._failover_window())
            time.sleep(2)
        finally:
            for c in cut:
                docker(*connect_args(self.network, c, self.attachments[c]))
        return name, f"{new} took over" if new else "no new primary while cut off"

    def _kill_replica(self, leader: str | None) -> tuple[str | None, str]:
        replicas = [n for n in self.members if n != leader and self._answers(n, "/replica")]
        if not replicas:
            raise FaultError("no streaming replica to kill")
        name = replicas[0]
        docker("kill", *self.members[name].containers)
        # Let its member key lapse, as a lost pod's would, before it comes back.
        deadline = time.monotonic() + self.ttl + 5
        while time.monotonic() < deadline:
            if not self._listed_running(name):
                break
            time.sleep(POLL)
        return name, ""

    def _listed_running(self, name: str) -> bool:
        """Whether some answering controller's cluster view lists ``name`` running."""
        for m in self.spec.members:
            if m.name == name:
                continue
            status, body = self.get(m.api + "/cluster")
            if status == 200 and isinstance(body, Mapping):
                rows = [r for r in body.get("members") or () if isinstance(r, Mapping)]
                return any(r.get("name") == name and r.get("state") == "running" for r in rows)
        return False


def from_file(path: Path, env: Mapping[str, str] | None = None) -> DockerTarget:
    """Load and check a target file: FatalError naming what is wrong."""
    target = DockerTarget(load_spec(path, env))
    target.check()
    return target
