"""Fixtures of the images tier: the four images run as a three-pod cluster in Docker.

What it builds, once per session, on a dedicated network ``pgras-test-<random>``:
- Consul (a dev agent; the host's ``consul`` binary bind-mounted into the base image);
- three pods ``node1..node3``: an agent container (``postgres-ras/postgres:dev``,
  a named volume at /var/lib/pgras) and a controller container
  (``postgres-ras/pg-controller:dev``) sharing the agent's network namespace;
- the write and read endpoints: HAProxy in a small test image, health-checking
  each pod's ``/primary`` and ``/replica`` (the role of the Kubernetes Services);
- pgpool (``postgres-ras/pgpool:dev``) in front of those endpoints and the demo app
  (``postgres-ras/demo-app:dev``) behind pgpool.

Guarantees: every container, volume and network created here carries the label
``pgras-test=<run id>`` and is removed at the end, whatever happened. Test traffic
goes only to addresses on that network. The tier skips only when no Docker engine
can be made to work (scripts/docker-engine.sh); anything else is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TAG = os.environ.get("TAG", "dev")
IMAGES = {
    name: f"postgres-ras/{name}:{TAG}"
    for name in ("postgres", "pg-controller", "pgpool", "demo-app")
}
BASE_IMAGE = os.environ.get("BASE_IMAGE", "debian:bookworm-slim")
HAPROXY_IMAGE = "pgras-test/haproxy:dev"
NODES = ("node1", "node2", "node3")
SUPERUSER = {"username": "postgres", "password": "pgras-test-secret"}
PG_PORT = 5432
API_PORT = 8008
WRITE_PORT = 5000
READ_PORT = 5001
PGPOOL_PORT = 5432
APP_PORT = 8080
# Grace period given to `docker stop`; a container still running after it is SIGKILLed.
STOP_GRACE = 20

HAPROXY_DOCKERFILE = f"""\
ARG BASE_IMAGE={BASE_IMAGE}
FROM ${{BASE_IMAGE}}
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends haproxy \\
 && apt-get clean && rm -rf /var/lib/apt/lists/*
STOPSIGNAL SIGTERM
ENTRYPOINT ["haproxy", "-db", "-f", "/etc/haproxy/haproxy.cfg"]
"""


def docker(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI; raise with its stderr when ``check`` and it fails."""
    proc = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"docker {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}"
        )
    return proc


def http_get(url: str, timeout: float = 2.0) -> tuple[int, Any]:
    """(status, parsed JSON or text); status 0 when nothing answered."""
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
        return status, body.decode(errors="replace")


def wait_for(what: str, predicate: Any, timeout: float, interval: float = 0.5) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def haproxy_cfg(nodes: tuple[str, ...]) -> str:
    """Write/read endpoints like postgres_ras.local.haproxy, but by DNS name on the
    test network: pod addresses change when a pod restarts or reconnects."""
    servers = [
        f"    server {n} {n}:{PG_PORT} check port {API_PORT}"
        " resolvers docker init-addr last,libc,none"
        for n in nodes
    ]
    return "\n".join(
        [
            "global",
            "    maxconn 500",
            "    hard-stop-after 5s",
            "resolvers docker",
            "    nameserver dns 127.0.0.11:53",
            "    timeout resolve 1s",
            "    timeout retry 1s",
            "    hold valid 1s",
            "    hold other 1s",
            "    hold refused 1s",
            "    hold nx 1s",
            "    hold timeout 1s",
            "    hold obsolete 1s",
            "defaults",
            "    mode tcp",
            "    retries 2",
            "    timeout connect 2s",
            "    timeout client 30m",
            "    timeout server 30m",
            "    timeout check 1s",
            "    default-server inter 300ms fastinter 300ms downinter 300ms fall 2 rise 1"
            " on-marked-down shutdown-sessions",
            "frontend write",
            f"    bind :{WRITE_PORT}",
            "    default_backend write",
            "frontend read",
            f"    bind :{READ_PORT}",
            "    use_backend read if { nbsrv(read) gt 0 }",
            "    default_backend write",
            "backend write",
            "    option httpchk",
            "    http-check send meth GET uri /primary",
            "    http-check expect status 200",
            *servers,
            "backend read",
            "    balance roundrobin",
            "    option httpchk",
            "    http-check send meth GET uri /replica",
            "    http-check expect status 200",
            *servers,
            "",
        ]
    )


@dataclass
class DockerCluster:
    """Names and handles of one test run; the methods act on pods by node name."""

    run_id: str
    network: str
    workdir: Path
    containers: list[str] = field(default_factory=list)

    # -- naming -------------------------------------------------------------
    def agent(self, node: str) -> str:
        return f"{self.run_id}-{node}"

    def controller(self, node: str) -> str:
        return f"{self.run_id}-{node}-ctl"

    def volume(self, node: str) -> str:
        return f"{self.run_id}-{node}-data"

    @property
    def labels(self) -> list[str]:
        return ["--label", f"pgras-test={self.run_id}"]

    def run(self, name: str, *args: str) -> None:
        docker("run", "-d", "--name", name, *self.labels, *args)
        if name not in self.containers:
            self.containers.append(name)

    def ip(self, container: str) -> str | None:
        proc = docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", container, check=False)
        if proc.returncode != 0:
            return None
        nets = json.loads(proc.stdout or "null") or {}
        addr = (nets.get(self.network) or {}).get("IPAddress")
        return addr or None

    # -- pods ---------------------------------------------------------------
    def node_env(self, node: str) -> list[str]:
        env = {
            "PGRAS_NAME": node,
            "PGRAS_CLUSTER": "docker",
            "PGRAS_CONSUL__URL": "http://consul:8500",
            "PGRAS_POSTGRES__LISTEN": "0.0.0.0",
            "PGRAS_POSTGRES__HOST": node,
            "PGRAS_POSTGRES__PORT": str(PG_PORT),
            "PGRAS_POSTGRES__ALLOW_NETWORKS": '["0.0.0.0/0"]',
            "PGRAS_POSTGRES__SUPERUSER": json.dumps(SUPERUSER),
            "PGRAS_CONTROLLER__LISTEN": "0.0.0.0",
            "PGRAS_CONTROLLER__HOST": node,
            "PGRAS_CONTROLLER__PORT": str(API_PORT),
            "PGRAS_CONTROLLER__AGENT_URL": "http://127.0.0.1:8010",
        }
        out: list[str] = []
        for key, value in env.items():
            out += ["-e", f"{key}={value}"]
        return out

    def create_pod(self, node: str) -> None:
        docker("volume", "create", *self.labels, self.volume(node))
        self.run(
            self.agent(node),
            "--hostname", node,
            "--network", self.network,
            "--network-alias", node,
            "--stop-timeout", str(STOP_GRACE),
            "-v", f"{self.volume(node)}:/var/lib/pgras",
            *self.node_env(node),
            IMAGES["postgres"],
        )  # fmt: skip
        self.run(
            self.controller(node),
            "--network", f"container:{self.agent(node)}",
            "--stop-timeout", str(STOP_GRACE),
            *self.node_env(node),
            IMAGES["pg-controller"],
        )  # fmt: skip

    def kill_pod(self, node: str) -> None:
        docker("kill", self.controller(node), self.agent(node))

    def start_pod(self, node: str) -> None:
        """Start a stopped pod again on the same volume (agent first: the
        controller joins the agent's network namespace)."""
        docker("start", self.agent(node))
        docker("start", self.controller(node))

    def disconnect(self, node: str) -> None:
        docker("network", "disconnect", self.network, self.agent(node))

    def connect(self, node: str) -> None:
        docker("network", "connect", "--alias", node, self.network, self.agent(node))

    # -- roles through the controllers' REST API ------------------------------
    def api(self, node: str, path: str) -> tuple[int, Any]:
        addr = self.ip(self.agent(node))
        if addr is None:
            return 0, None
        return http_get(f"http://{addr}:{API_PORT}{path}")

    def primaries(self, nodes: tuple[str, ...] = NODES) -> list[str]:
        return [n for n in nodes if self.api(n, "/primary")[0] == 200]

    def replicas(self, nodes: tuple[str, ...] = NODES) -> list[str]:
        return [n for n in nodes if self.api(n, "/replica")[0] == 200]

    def wait_primary(self, nodes: tuple[str, ...] = NODES, timeout: float = 60) -> str:
        def one() -> str | None:
            found = self.primaries(nodes)
            return found[0] if len(found) == 1 else None

        return str(wait_for(f"exactly one primary among {nodes}", one, timeout, 0.2))

    def describe(self) -> str:
        """The cluster as the first answering controller sees it (for failure messages)."""
        for node in NODES:
            status, body = self.api(node, "/cluster")
            if status == 200:
                return json.dumps(body, indent=1, default=str)
        return "(no controller answered /cluster)"

    # -- SQL ----------------------------------------------------------------
    def conninfo(self, container: str, port: int, dbname: str = "postgres") -> str:
        addr = self.ip(container)
        assert addr, f"{container} has no address on {self.network}"
        return (
            f"host={addr} port={port} dbname={dbname} user={SUPERUSER['username']} "
            f"password={SUPERUSER['password']} connect_timeout=2"
        )

    def node_conninfo(self, node: str) -> str:
        return self.conninfo(self.agent(node), PG_PORT)

    def pgpool_conninfo(self) -> str:
        return self.conninfo(f"{self.run_id}-pgpool", PGPOOL_PORT)

    def app_url(self, path: str) -> str:
        return f"http://{self.ip(f'{self.run_id}-app')}:{APP_PORT}{path}"

    def psql_in_pod(self, node: str, sql: str) -> subprocess.CompletedProcess[str]:
        """psql over the pod's loopback: works while the pod is cut off."""
        return docker(
            "exec", "-e", f"PGPASSWORD={SUPERUSER['password']}", self.agent(node),
            "psql", "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", SUPERUSER["username"],
            "-d", "postgres", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql,
            check=False, timeout=15,
        )  # fmt: skip

    def logs(self, container: str, tail: int = 60) -> str:
        proc = docker("logs", "--tail", str(tail), container, check=False)
        return proc.stdout + proc.stderr

    def postgres_log(self, node: str, tail: int = 60) -> str:
        """The end of the postgres log the agent keeps beside PGDATA on the volume."""
        proc = docker(
            "run", "--rm", *self.labels, "-v", f"{self.volume(node)}:/var/lib/pgras:ro",
            "--entrypoint", "sh", IMAGES["postgres"], "-c",
            f"tail -n {tail} /var/lib/pgras/*.log",
            check=False, timeout=60,
        )  # fmt: skip
        return proc.stdout + proc.stderr

    def dump_logs(self) -> None:
        for name in self.containers:
            print(f"\n===== docker logs {name} (last lines) =====\n{self.logs(name)}")
        for node in NODES:
            print(f"\n===== postgres log of {node} (last lines) =====\n{self.postgres_log(node)}")

    # -- cleanup ------------------------------------------------------------
    def remove_all(self) -> None:
        label = f"label=pgras-test={self.run_id}"
        ids = docker("ps", "-aq", "--filter", label, check=False).stdout.split()
        if ids:
            docker("rm", "-f", "-v", *ids, check=False, timeout=120)
        vols = docker("volume", "ls", "-q", "--filter", label, check=False).stdout.split()
        if vols:
            docker("volume", "rm", "-f", *vols, check=False)
        docker("network", "rm", self.network, check=False)


def ensure_docker() -> None:
    """Make the engine work (install/start), or skip the tier saying why."""
    if shutil.which("docker") and docker("info", check=False, timeout=30).returncode == 0:
        return
    script = ROOT / "scripts" / "docker-engine.sh"
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 or docker("info", check=False, timeout=30).returncode != 0:
        pytest.skip(
            "images tier skipped: no working Docker engine and scripts/docker-engine.sh "
            f"could not start one: {(proc.stderr or proc.stdout).strip()[-500:]}"
        )


def ensure_images() -> None:
    missing = [
        img for img in IMAGES.values() if docker("image", "inspect", img, check=False).returncode
    ]
    if missing:
        subprocess.run(
            ["bash", str(ROOT / "scripts" / "build-images.sh")], check=True, timeout=1200
        )
    if docker("image", "inspect", HAPROXY_IMAGE, check=False).returncode:
        subprocess.run(["bash", str(ROOT / "scripts" / "base-image.sh")], check=True, timeout=600)
        # The context is only this Dockerfile, given on stdin.
        subprocess.run(
            ["docker", "build", "-q", "-t", HAPROXY_IMAGE, "-"],
            input=HAPROXY_DOCKERFILE,
            text=True,
            check=True,
            timeout=600,
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
            capture_output=True,
        )


def consul_binary() -> str:
    path = shutil.which("consul")
    if path is None:
        pytest.fail(
            "the images tier runs Consul from the host's consul binary, which is missing: "
            "install it (Debian bullseye's consul package, see shared ENVIRONMENT.md)"
        )
    return os.path.realpath(path)


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """A working engine and the four images (built when missing), or a skip."""
    ensure_docker()
    ensure_images()


@pytest.fixture(scope="session")
def cluster(
    docker_engine: None, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DockerCluster]:
    consul = consul_binary()
    run_id = f"pgras-test-{uuid.uuid4().hex[:8]}"
    c = DockerCluster(run_id=run_id, network=run_id, workdir=tmp_path_factory.mktemp("images"))
    started = time.monotonic()
    try:
        docker("network", "create", *c.labels, c.network)
        c.run(
            f"{run_id}-consul",
            "--network", c.network, "--network-alias", "consul",
            "-v", f"{consul}:/usr/local/bin/consul:ro",
            BASE_IMAGE,
            "consul", "agent", "-dev", "-client", "0.0.0.0", "-log-level", "warn",
        )  # fmt: skip
        consul_ip = c.ip(f"{run_id}-consul")
        wait_for(
            "Consul to elect itself",
            lambda: http_get(f"http://{consul_ip}:8500/v1/status/leader")[1] not in (None, ""),
            30,
        )
        for node in NODES:
            c.create_pod(node)
        cfg = c.workdir / "haproxy.cfg"
        cfg.write_text(haproxy_cfg(NODES))
        cfg.chmod(0o644)
        c.run(
            f"{run_id}-haproxy",
            "--network", c.network, "--network-alias", "haproxy",
            "-v", f"{cfg}:/etc/haproxy/haproxy.cfg:ro",
            HAPROXY_IMAGE,
        )  # fmt: skip
        c.run(
            f"{run_id}-pgpool",
            "--network", c.network, "--network-alias", "pgpool",
            "--stop-timeout", str(STOP_GRACE),
            "-e", "PGPOOL_WRITE_HOST=haproxy", "-e", f"PGPOOL_WRITE_PORT={WRITE_PORT}",
            "-e", "PGPOOL_READ_HOST=haproxy", "-e", f"PGPOOL_READ_PORT={READ_PORT}",
            "-e", f"PGPOOL_PORT={PGPOOL_PORT}",
            "-e", f"PGPOOL_USER={SUPERUSER['username']}",
            "-e", f"PGPOOL_PASSWORD={SUPERUSER['password']}",
            IMAGES["pgpool"],
        )  # fmt: skip
        c.run(
            f"{run_id}-app",
            "--network", c.network, "--network-alias", "app",
            "--stop-timeout", str(STOP_GRACE),
            "-e", (
                f"PUPPIES_DSN=host=pgpool port={PGPOOL_PORT} dbname=postgres "
                f"user={SUPERUSER['username']} password={SUPERUSER['password']}"
            ),
            IMAGES["demo-app"],
        )  # fmt: skip
        print(f"\n[images] {run_id}: containers started in {time.monotonic() - started:.1f}s")
        yield c
    finally:
        if request.session.testsfailed or os.environ.get("PGRAS_TEST_DUMP_LOGS"):
            c.dump_logs()
        c.remove_all()


# Figures the container tests measured (outages, rejoin times), printed once at the end.
FIGURES: dict[str, float] = {}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.write_line("[images] figures:")
        for key, value in FIGURES.items():
            terminalreporter.write_line(f"  {key}: {value:.1f}s")
