"""Cut one local node off from Consul and the other nodes, on loopback (root only).

Every local node listens on 127.0.0.1, so addresses cannot tell nodes apart;
processes can. The cut node's processes (controller, agent, postmaster and
its children, which its later children inherit) go into one cgroup v2 group,
the other nodes' into another, and iptables OUTPUT rules matched on those
groups (``-m cgroup --path``) drop

- the cut node's packets to Consul and to the other nodes' ports,
- the other nodes' packets to the cut node's ports.

Open connections across the cut are reset (``ss -K``): a socket keeps the
cgroup it was made in, so the rules would not see them.

HAProxy, pgpool and the verify clients stay outside both groups, so clients
still reach the cut node: exactly the case in which a partitioned primary
must stop accepting writes by itself.

Guarantees: ``heal()`` removes every rule this cluster added (tagged with a
comment naming its base port, so a crashed run's leftovers go too), moves
the processes back to the root group and removes the groups. Needs root,
a cgroup2 mount and iptables with the cgroup match; ``unavailable()`` says
what is missing.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)


def cgroup2_root() -> Path | None:
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    for line in mounts:
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "cgroup2":
            return Path(fields[1])
    return None


def unavailable() -> str:
    """Why a partition cannot be made here, or '' when it can."""
    if os.geteuid() != 0:
        return "partition-primary needs root (iptables rules and cgroup moves)"
    if shutil.which("iptables") is None and not Path("/usr/sbin/iptables").exists():
        return "partition-primary needs iptables (apt-get install iptables)"
    root = cgroup2_root()
    if root is None or not os.access(root, os.W_OK):
        return "partition-primary needs a writable cgroup2 mount (for iptables -m cgroup)"
    return ""


def _iptables() -> str:
    return shutil.which("iptables") or "/usr/sbin/iptables"


class Partition:
    def __init__(self, tag: str) -> None:
        root = cgroup2_root()
        if root is None:
            raise OSError("no cgroup2 mount")
        self.root = root
        self.tag = tag
        self.groups = {side: f"{tag}-{side}" for side in ("cut", "rest")}
        self.rules: list[list[str]] = []

    def cut(
        self,
        cut_pids: Iterable[int],
        rest_pids: Iterable[int],
        cut_ports: Iterable[int],
        rest_ports: Iterable[int],
        consul_ports: Iterable[int],
    ) -> None:
        for side, pids in (("cut", cut_pids), ("rest", rest_pids)):
            group = self.root / self.groups[side]
            group.mkdir(exist_ok=True)
            for pid in pids:
                _move(pid, group)
        rest_ports, cut_ports, consul_ports = list(rest_ports), list(cut_ports), list(consul_ports)
        for port in [*consul_ports, *rest_ports]:
            self._drop(self.groups["cut"], port)
        for port in cut_ports:
            self._drop(self.groups["rest"], port)
        # A socket keeps the cgroup it was made in: open connections across the cut would
        # go on. Reset them (as a long partition would end them); new ones are dropped.
        cut_pids, rest_pids = (
            _pids_in(self.root / self.groups["cut"]),
            _pids_in(self.root / self.groups["rest"]),
        )
        doomed = _connections(cut_pids, set(consul_ports) | set(rest_ports))
        doomed += _connections(rest_pids, set(cut_ports))
        for local, remote in doomed:
            subprocess.run(
                ["ss", "-K", "src", f"127.0.0.1:{local}", "dst", f"127.0.0.1:{remote}"],
                capture_output=True,
                timeout=10,
                check=False,
            )
        log.info("partition: reset %d open connections across the cut", len(doomed))

    def _drop(self, group: str, port: int) -> None:
        spec = ["-p", "tcp", "-d", "127.0.0.1", "--dport", str(port)]
        spec += ["-m", "cgroup", "--path", group, "-m", "comment", "--comment", self.tag]
        spec += ["-j", "DROP"]
        subprocess.run([_iptables(), "-I", "OUTPUT", *spec], check=True, timeout=10)
        self.rules.append(spec)

    def heal(self) -> None:
        for line in _rules_tagged(self.tag):
            # "-A OUTPUT <spec>" as printed by iptables -S: delete by the same spec.
            spec = line.split()[2:]
            subprocess.run([_iptables(), "-D", "OUTPUT", *spec], timeout=10, check=False)
        self.rules.clear()
        for group in self.groups.values():
            path = self.root / group
            if not path.exists():
                continue
            for _ in range(3):  # a process may fork while we move its siblings
                pids = _pids_in(path)
                if not pids:
                    break
                for pid in pids:
                    _move(pid, self.root)
            try:
                path.rmdir()
            except OSError as exc:
                log.warning("could not remove cgroup %s: %s", path, exc)


def _rules_tagged(tag: str) -> list[str]:
    out = subprocess.run(
        [_iptables(), "-S", "OUTPUT"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    return [line for line in out.splitlines() if f'--comment "{tag}"' in line or tag in line]


def _connections(pids: Iterable[int], remote_ports: set[int]) -> list[tuple[int, int]]:
    """(local port, remote port) of the established loopback TCP connections that
    ``pids`` hold towards ``remote_ports`` (from /proc: fd inodes and /proc/net/tcp)."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    out = []
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return []
    for line in lines:
        f = line.split()
        if len(f) < 10 or f[3] != "01" or f[9] not in inodes:  # 01: ESTABLISHED
            continue
        local, remote = int(f[1].split(":")[1], 16), int(f[2].split(":")[1], 16)
        if remote in remote_ports:
            out.append((local, remote))
    return out


def _pids_in(group: Path) -> list[int]:
    try:
        return [int(p) for p in (group / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def _move(pid: int, group: Path) -> None:
    try:
        (group / "cgroup.procs").write_text(str(pid))
    except ProcessLookupError:
        pass  # it exited
    except OSError as exc:
        log.warning("could not move pid %d to %s: %s", pid, group, exc)
