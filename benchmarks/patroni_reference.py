#!/usr/bin/env python3
"""The Patroni reference for benchmarks/failover.py: the same measurements, side by side.

Starts a 3-node Patroni 4.1.5 cluster with Patroni's DEFAULT HA settings
(ttl 30, loop_wait 10, retry_timeout 10; plus use_pg_rewind and use_slots)
on this machine, against its own Consul server, with PostgreSQL 15, and
measures exactly what benchmarks/failover.py measures, with the same writer
(a libpq multi-host connection, target_session_attrs=read-write):
- failover write outage: SIGKILL of the primary's Patroni process and its
  postmaster process group together; the longest gap between acknowledged
  writes around the fault;
- lost writes: acknowledged ids missing on the new primary afterwards;
- rejoin: from restarting the killed node's Patroni to its walreceiver
  streaming (pg_stat_wal_receiver, by SQL) on the primary's timeline; "rejoin
  (lax)" is failover.py's check (status 'streaming' only), which can catch a
  walreceiver the primary is about to refuse (see RejoinProbe);
- switchover outage: REST POST /switchover with leader and candidate.

With --ours, benchmarks/failover.py's own measurement functions then run in
the same process on a postgres-ras cluster and both are printed side by side,
with ratios ours/patroni (failover.py's streaming() swapped for the same RejoinProbe).

Patroni runs from a venv (default /var/tmp/pgras-patroni-venv, created with the
system python and `pip install 'patroni[consul]==4.1.5' psycopg2-binary` if
missing, and kept as a cache); as root, every Patroni (and so PostgreSQL)
runs as the OS user `postgres`. Patroni's ports: Consul 29740-29742,
PostgreSQL 29751-29753, REST API 29761-29763, all on 127.0.0.1. Everything
started is stopped by PID at the end and the temporary directory removed.

    python benchmarks/patroni_reference.py --runs 5 --ours
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
if (SRC / "postgres_ras").is_dir():  # measure this checkout, in this process and its children
    sys.path.insert(0, str(SRC))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p
    )

import psycopg  # noqa: E402
import requests  # noqa: E402
import yaml  # noqa: E402

from postgres_ras.local import consul_server  # noqa: E402
from postgres_ras.local.layout import Layout  # noqa: E402
from postgres_ras.local.procs import ProcessTable, free_port_check  # noqa: E402
from postgres_ras.local.workload import Writer, lost_writes, multi_host_dsn  # noqa: E402

sys.path.insert(0, str(HERE))
from failover import wait  # noqa: E402  (the same bounded poll as our own benchmark)

PATRONI_VERSION = "4.1.5"
DEFAULT_VENV = Path("/var/tmp/pgras-patroni-venv")
PG_BIN = Path("/usr/lib/postgresql/15/bin")
CA_FILE = Path("/etc/ssl/certs/ca-certificates.crt")
HOST = "127.0.0.1"
SCOPE = "bench"
NODES = 3
# Away from 29701-29703 and 29801-29803 (postgres-ras with failover.py's base port 29500).
CONSUL_BASE = 29740  # HTTP 29740, server 29741, serf 29742
PG_BASE = 29750  # node i: 29750 + i
API_BASE = 29760  # node i: 29760 + i
PATRONI_DEFAULTS = {"ttl": 30, "loop_wait": 10, "retry_timeout": 10}


def log(msg: str) -> None:
    print(msg, flush=True)


# --- the Patroni venv ------------------------------------------------------------------------
def ensure_venv(venv: Path) -> Path:
    """Patroni's executable in ``venv``; creates the venv and installs Patroni if needed."""
    patroni = venv / "bin" / "patroni"

    def ready() -> bool:
        try:
            out = subprocess.run(
                [str(patroni), "--version"], capture_output=True, text=True, timeout=60
            )
            probe = subprocess.run(
                [str(venv / "bin" / "python"), "-c", "import psycopg2, consul"],
                capture_output=True,
                timeout=60,
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        return PATRONI_VERSION in out.stdout and probe.returncode == 0

    if ready():
        return patroni
    log(f"installing Patroni {PATRONI_VERSION} into {venv} ...")
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True, timeout=120)
    env = dict(os.environ)
    if "PIP_CERT" not in env and CA_FILE.exists():
        env["PIP_CERT"] = str(CA_FILE)
    pip = [str(venv / "bin" / "pip"), "install", "-q"]
    subprocess.run(
        [*pip, f"patroni[consul]=={PATRONI_VERSION}", "psycopg2-binary"],
        check=True,
        timeout=600,
        env=env,
    )
    if not ready():
        raise SystemExit(f"Patroni {PATRONI_VERSION} not usable from {venv} after install")
    return patroni


# --- the Patroni cluster ---------------------------------------------------------------------
class Node:
    def __init__(self, work: Path, index: int) -> None:
        self.index = index
        self.name = f"node{index}"
        self.pg_port = PG_BASE + index
        self.api_port = API_BASE + index
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
    def __init__(self, work: Path, patroni: Path) -> None:
        self.work = work
        self.patroni = patroni
        self.nodes = [Node(work, i) for i in range(1, NODES + 1)]
        self.superuser_password = secrets.token_urlsafe(12)
        self.replication_password = secrets.token_urlsafe(12)
        self.layout = Layout(work, CONSUL_BASE, cluster="patroni")
        self.table = ProcessTable(work / "run", work / "logs")
        self.as_postgres = os.geteuid() == 0

    # configuration
    def node_config(self, node: Node) -> dict[str, Any]:
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

    def prepare(self) -> None:
        ports = [self.layout.consul_http, self.layout.consul_server, self.layout.consul_serf]
        ports += [p for n in self.nodes for p in (n.pg_port, n.api_port)]
        taken = [p for p in ports if not free_port_check(p, HOST)]
        if taken:
            raise SystemExit(f"ports already in use on {HOST}: {taken}")
        (self.work / "logs").mkdir(parents=True, exist_ok=True)
        for node in self.nodes:
            node.dir.mkdir(parents=True)
            node.config.write_text(yaml.safe_dump(self.node_config(node), sort_keys=False))
            node.config.chmod(0o600)
            if self.as_postgres:
                for path in (node.dir, node.config):
                    shutil.chown(path, "postgres", "postgres")

    # processes
    def start_consul(self) -> None:
        consul_server.start(self.layout, self.table)

    def start(self, node: Node) -> None:
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

    def postmaster_pid(self, node: Node) -> int | None:
        """The live postmaster of ``node`` (checked by its command line, never a recycled PID)."""
        try:
            pid = int((node.data_dir / "postmaster.pid").read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, ValueError, IndexError):
            return None
        if state == "Z" or str(node.data_dir).encode() not in cmdline:
            return None
        return pid

    def kill(self, node: Node) -> None:
        """SIGKILL the node's Patroni and its postmaster's process group, together."""
        groups: set[int] = set()
        pg = self.postmaster_pid(node)
        for pid in (node.proc.pid if node.alive() and node.proc else None, pg):
            if pid is not None:
                try:
                    groups.add(os.getpgid(pid))
                except ProcessLookupError:
                    pass
        for group in groups:
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if node.proc is not None:
            node.proc.wait(timeout=10)
            node.proc = None

    def stop(self) -> None:
        """Stop every process started here, by PID, bounded; Consul last."""
        running = [n for n in self.nodes if n.alive()]
        for node in running:
            assert node.proc is not None
            node.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 40
        for node in running:
            assert node.proc is not None
            try:
                node.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(node.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                node.proc.wait(timeout=10)
            node.proc = None
        for node in self.nodes:  # a postmaster whose Patroni was killed
            pid = self.postmaster_pid(node)
            if pid is None:
                continue
            os.kill(pid, signal.SIGINT)
            end = time.monotonic() + 20
            while time.monotonic() < end and self.postmaster_pid(node) == pid:
                time.sleep(0.1)
            if self.postmaster_pid(node) == pid:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.table.stop(consul_server.NAME, timeout=10)

    # observation
    def node_dsn(self, node: Node) -> str:
        return (
            f"host={HOST} port={node.pg_port} user=postgres password={self.superuser_password} "
            "dbname=postgres connect_timeout=1"
        )

    def writer_dsn(self) -> str:
        return multi_host_dsn(
            [(HOST, n.pg_port) for n in self.nodes], "postgres", self.superuser_password
        )

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def leader(self) -> Node | None:
        """The node holding the leader key in Consul whose Patroni says it runs as primary."""
        try:
            resp = requests.get(
                f"{self.layout.consul_url}/v1/kv/service/{SCOPE}/leader?raw", timeout=2
            )
        except requests.RequestException:
            return None
        if resp.status_code != 200 or not resp.text:
            return None
        try:
            node = self.node(resp.text.strip())
            ok = requests.get(f"{node.api}/primary", timeout=2).status_code == 200
        except (StopIteration, requests.RequestException):
            return None
        return node if ok else None

    def members(self, via: Node) -> list[dict[str, Any]]:
        try:
            resp = requests.get(f"{via.api}/cluster", timeout=2)
            members: list[dict[str, Any]] = resp.json().get("members", [])
            return members
        except (requests.RequestException, ValueError):
            return []

    def is_healthy(self) -> bool:
        leader = self.leader()
        if leader is None:
            return False
        rows = self.members(leader)
        primaries = [r for r in rows if r.get("role") == "leader" and r.get("state") == "running"]
        replicas = [r for r in rows if r.get("role") == "replica" and r.get("state") == "streaming"]
        return len(primaries) == 1 and len(replicas) == NODES - 1

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_healthy():
                return
            for node in self.nodes:
                if node.proc is not None and node.proc.poll() is not None:
                    tail = node.log.read_text(errors="replace").splitlines()[-5:]
                    raise SystemExit(f"Patroni {node.name} exited: " + " | ".join(tail))
            time.sleep(0.2)
        raise SystemExit(
            f"Patroni cluster not healthy after {timeout:.0f}s; logs in {self.work / 'logs'}"
        )

    def candidate(self, leader: Node) -> Node:
        rows = self.members(leader)
        names = sorted(
            r["name"] for r in rows if r.get("role") == "replica" and r.get("state") == "streaming"
        )
        if not names:
            raise SystemExit("no streaming replica to switch over to")
        return self.node(names[0])

    def switchover(self, leader: Node, candidate: Node) -> None:
        resp = requests.post(
            f"{leader.api}/switchover",
            json={"leader": leader.name, "candidate": candidate.name},
            timeout=60,
        )
        if resp.status_code != 200:
            raise SystemExit(f"Patroni switchover refused: {resp.status_code} {resp.text}")


# --- the rejoin probe -------------------------------------------------------------------------
# pg_stat_wal_receiver says status 'streaming' as soon as a walreceiver has connected, before
# the primary has checked its start point: a walreceiver that the primary then refuses ("requested
# starting point ... is not in this server's history", i.e. before pg_rewind) shows 'streaming'
# for a few milliseconds, every wal_retrieve_retry_interval (5 s). failover.py's check (status
# only, "lax") catches such a walreceiver by chance; the strict check also wants it on the
# primary's timeline (received_tli), which a refused walreceiver never is.
PRIMARY_TLI_SQL = (
    "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"
)


def primary_timeline(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(PRIMARY_TLI_SQL).fetchone()
    assert row is not None
    return int(row[0])


class RejoinProbe:
    """Polls a node's pg_stat_wal_receiver: true once streaming on the primary's timeline.

    Also records when the lax condition (status 'streaming', as failover.py) first held.
    """

    def __init__(self, dsn: str, primary_tli: int) -> None:
        self.dsn = dsn
        self.primary_tli = primary_tli
        self.start = time.monotonic()
        self.lax: float | None = None

    def __call__(self) -> bool:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT status, received_tli FROM pg_stat_wal_receiver"
                ).fetchone()
        except psycopg.Error:
            return False
        if row is None or row[0] != "streaming":
            return False
        if self.lax is None:
            self.lax = time.monotonic() - self.start
        return bool(row[1] == self.primary_tli)


# --- the measurements (mirroring benchmarks/failover.py) ------------------------------------
def failover_run(cluster: PatroniCluster) -> dict[str, float]:
    old = cluster.leader()
    assert old is not None
    with Writer(cluster.writer_dsn()) as writer:
        time.sleep(1.0)
        t_kill = time.monotonic()
        cluster.kill(old)
        wait(
            "new leader",
            lambda: (r := cluster.leader()) is not None and r.name != old.name,
            120,
        )
        wait(
            "writes after failover", lambda: any(s + g >= t_kill for s, g in writer.result.gaps), 60
        )
        time.sleep(0.3)
    new = cluster.leader()
    assert new is not None
    lost = len(lost_writes(cluster.node_dsn(new), writer.result.acked))
    probe = RejoinProbe(cluster.node_dsn(old), primary_timeline(cluster.node_dsn(new)))
    cluster.start(old)
    probe.start = time.monotonic()
    rejoin = wait("rejoin", probe, 120)
    cluster.wait_healthy(120)
    return {
        "outage": writer.result.outage_after(t_kill),
        "lost": lost,
        "rejoin": rejoin,
        "rejoin_lax": probe.lax if probe.lax is not None else rejoin,
    }


def switchover_run(cluster: PatroniCluster) -> dict[str, float]:
    old = cluster.leader()
    assert old is not None
    candidate = cluster.candidate(old)
    with Writer(cluster.writer_dsn()) as writer:
        time.sleep(1.0)
        t0 = time.monotonic()
        cluster.switchover(old, candidate)  # Patroni answers once the candidate leads
        wait("new leader", lambda: (r := cluster.leader()) is not None and r.name != old.name, 60)
        acked = len(writer.result.acked)
        wait("writes after switchover", lambda: len(writer.result.acked) > acked, 30)
        time.sleep(1.0)
    new = cluster.leader()
    assert new is not None
    lost = len(lost_writes(cluster.node_dsn(new), writer.result.acked))
    cluster.wait_healthy(120)
    return {"outage": writer.result.outage_after(t0), "lost": lost}


def run_patroni(runs: int, venv: Path, keep: bool = False) -> dict[str, list[dict[str, float]]]:
    patroni = ensure_venv(venv)
    work = Path(tempfile.mkdtemp(prefix="pgras-patroni-", dir="/tmp"))
    work.chmod(0o755)
    cluster = PatroniCluster(work, patroni)
    failovers: list[dict[str, float]] = []
    switchovers: list[dict[str, float]] = []
    try:
        cluster.prepare()
        t = time.monotonic()
        cluster.start_consul()
        for node in cluster.nodes:
            cluster.start(node)
        cluster.wait_healthy(180)
        log(f"patroni bootstrap: {NODES} nodes healthy in {time.monotonic() - t:.2f}s")
        for i in range(runs):
            failovers.append(failover_run(cluster))
            log(f"patroni failover run {i + 1}: {failovers[-1]}")
        for i in range(runs):
            switchovers.append(switchover_run(cluster))
            log(f"patroni switchover run {i + 1}: {switchovers[-1]}")
    finally:
        cluster.stop()
        if keep:
            log(f"kept {work} (Patroni logs in {work / 'logs'})")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return {"failover": failovers, "switchover": switchovers}


# --- ours, with benchmarks/failover.py's own functions ---------------------------------------
def load_failover_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pgras_bench_failover", HERE / "failover.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_ours(runs: int, base_port: int) -> dict[str, list[dict[str, float]]]:
    fo: Any = load_failover_module()  # its functions are looked up (and one swapped) by name
    work = Path(tempfile.mkdtemp(prefix="pgras-bench-", dir="/tmp"))
    work.chmod(0o755)
    cluster = fo.LocalCluster(fo.Layout(work, base_port))
    failovers: list[dict[str, float]] = []
    switchovers: list[dict[str, float]] = []
    # The same rejoin probe as for Patroni, in place of failover.py's streaming(): the
    # primary's timeline is read in cluster.up() (called just before the timed wait), the probe
    # starts at the first poll, i.e. where failover.py's wait("rejoin") starts its clock.
    probe: dict[str, Any] = {}
    real_up = cluster.up

    def up(*args: Any, **kwargs: Any) -> None:
        leader = cluster.leader()
        assert leader is not None
        probe["tli"] = primary_timeline(fo.node_dsn(cluster, leader.name))
        real_up(*args, **kwargs)

    def streaming(cl: Any, name: str, *_: Any) -> bool:
        if "probe" not in probe:
            probe["probe"] = RejoinProbe(fo.node_dsn(cl, name), probe["tli"])
        result: bool = probe["probe"]()
        return result

    try:
        t = time.monotonic()
        cluster.up(nodes=NODES, access=False, wait=120)
        log(f"postgres-ras bootstrap: {NODES} nodes healthy in {time.monotonic() - t:.2f}s")
        cluster.up = up
        fo.streaming = streaming
        for i in range(runs):
            probe.clear()
            result = fo.failover_run(cluster)
            lax = probe["probe"].lax if "probe" in probe else None
            result["rejoin_lax"] = lax if lax is not None else result["rejoin"]
            failovers.append(result)
            log(f"postgres-ras failover run {i + 1}: {failovers[-1]}")
        for i in range(runs):
            switchovers.append(fo.switchover_run(cluster))
            log(f"postgres-ras switchover run {i + 1}: {switchovers[-1]}")
    finally:
        cluster.down()
        shutil.rmtree(work, ignore_errors=True)
    return {"failover": failovers, "switchover": switchovers}


# --- output ----------------------------------------------------------------------------------
METRICS = (
    ("failover outage", "failover", "outage"),
    ("rejoin", "failover", "rejoin"),
    ("rejoin (lax)", "failover", "rejoin_lax"),
    ("switchover outage", "switchover", "outage"),
)


def stats(values: list[float]) -> tuple[float, float, float]:
    return min(values), statistics.median(values), max(values)


def summary(name: str, values: list[float], unit: str = "s") -> str:
    lo, med, hi = stats(values)
    return f"{name:<20} min {lo:6.2f}{unit}  median {med:6.2f}{unit}  max {hi:6.2f}{unit}"


def print_summary(title: str, res: dict[str, list[dict[str, float]]]) -> None:
    print(title)
    for name, kind, key in METRICS:
        print(summary(name, [r[key] for r in res[kind]]))
    print(
        f"{'lost writes':<20} failover (async) {sum(int(r['lost']) for r in res['failover'])} "
        f"total, switchover {sum(int(r['lost']) for r in res['switchover'])} total"
    )


def print_side_by_side(patroni: dict[str, Any], ours: dict[str, Any]) -> None:
    print(f"{'':<20} {'Patroni min/median/max':>24}  {'ours min/median/max':>24}  ours/patroni")
    for name, kind, key in METRICS:
        p = stats([r[key] for r in patroni[kind]])
        o = stats([r[key] for r in ours[kind]])
        ratio = f"{o[1] / p[1]:.2f}x" if p[1] > 0 else "n/a"
        print(
            f"{name:<20} {p[0]:6.2f} /{p[1]:6.2f} /{p[2]:6.2f}s  "
            f"{o[0]:6.2f} /{o[1]:6.2f} /{o[2]:6.2f}s  {ratio} (median)"
        )
    for kind in ("failover", "switchover"):
        pl = sum(int(r["lost"]) for r in patroni[kind])
        ol = sum(int(r["lost"]) for r in ours[kind])
        print(f"{'lost (' + kind + ')':<20} {pl:>24}  {ol:>24}  (totals)")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print raw figures as JSON too")
    ap.add_argument(
        "--ours",
        action="store_true",
        help="then run benchmarks/failover.py's measurements on postgres-ras, side by side",
    )
    ap.add_argument(
        "--ours-base-port", type=int, default=29500, help="postgres-ras base port (as failover.py)"
    )
    ap.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="Patroni venv (cached)")
    ap.add_argument("--keep", action="store_true", help="keep Patroni's work dir and logs")
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    t0 = time.monotonic()
    patroni = run_patroni(args.runs, args.venv, args.keep)
    patroni_title = (
        f"Patroni {PATRONI_VERSION}, {NODES} nodes, {args.runs} runs each, default settings "
        "(ttl 30s, retry_timeout 10s, loop_wait 10s), async replication"
    )
    print()
    print_summary(patroni_title, patroni)  # now, so a failure below does not lose it
    print(flush=True)
    ours: dict[str, list[dict[str, float]]] | None = None
    failed = ""
    if args.ours:
        try:
            ours = run_ours(args.runs, args.ours_base_port)
        except (Exception, SystemExit) as exc:
            failed = f"postgres-ras part failed: {type(exc).__name__}: {exc}"
            print(failed, flush=True)
    if ours is not None:
        print()
        print_summary(patroni_title, patroni)
        print()
        print_summary(
            f"postgres-ras, {NODES} nodes, {args.runs} runs each, default settings "
            "(ttl 4s, retry_timeout 3s, loop_wait 1s), async replication",
            ours,
        )
        print()
        print_side_by_side(patroni, ours)
    print(f"\ntotal wall time {time.monotonic() - t0:.0f}s")
    if args.json:
        print(json.dumps({"patroni": patroni, "ours": ours}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
