"""Chart-made pods in Docker: create, kill, delete (as a kubelet), cut off, freeze;
ask their controllers and probes; SQL helpers. Used by the images tier's fixtures
and tests; every docker call is bounded in time.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from tests.helpers import poll_value
from tests.images import k8s_pod

TAG = os.environ.get("TAG", "dev")
IMAGES = {
    name: f"postgres-ras/{name}:{TAG}"
    for name in ("postgres", "pg-controller", "pgpool", "demo-app")
}
BASE_IMAGE = os.environ.get("BASE_IMAGE", "debian:bookworm-slim")
# The pause container of a pod: our smallest image, tini running `sleep infinity`.
PAUSE = (
    "--no-healthcheck",
    "--entrypoint",
    "/usr/bin/tini",
    IMAGES["pg-controller"],
    "--",
    "sleep",
    "infinity",
)
PG_PORT = 5432
API_PORT = 8008

# Figures the container tests measured (outages, handover, rejoin), printed at the end.
FIGURES: dict[str, float] = {}

T = TypeVar("T")


def figure(name: str, seconds: float) -> None:
    FIGURES[name] = seconds
    print(f"\n[images] {name}: {seconds:.1f}s")


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


def wait_for(
    what: str,
    predicate: Callable[[], T | None],
    timeout: float,
    interval: float = 0.5,
    detail: Callable[[], object] | None = None,
) -> T:
    """``poll_value`` as this tier polls: every ``interval`` s, and an exception in
    ``predicate`` (an exited container, a docker error) fails at once."""
    return poll_value(what, predicate, timeout, interval, retry_on=(), detail=detail)


def run_probe(probe: k8s_pod.Probe, ip: str, container: str) -> bool:
    """One probe as the kubelet runs it: HTTP 200-399, a TCP connect, or exit 0."""
    if probe.kind == "httpGet":
        scheme = probe.scheme.lower()
        status, _ = http_get(f"{scheme}://{ip}:{probe.port}{probe.path}", timeout=probe.timeout)
        return 200 <= status < 400
    if probe.kind == "tcpSocket":
        import socket

        try:
            socket.create_connection((ip, probe.port), probe.timeout).close()
            return True
        except OSError:
            return False
    proc = docker("exec", container, *probe.command, check=False, timeout=probe.timeout + 30)
    return proc.returncode == 0


@dataclass
class DockerCluster:
    """One test run: the network, the chart-made pods and the access containers."""

    run_id: str
    network: str
    workdir: Path
    statefulset: Mapping[str, Any]
    objects: k8s_pod.Objects
    env_overrides: Mapping[str, str]
    subnet_prefix: str = ""
    containers: list[str] = field(default_factory=list)
    pod_runs: dict[str, k8s_pod.PodRun] = field(default_factory=dict)

    # -- naming and addresses ----------------------------------------------------
    @property
    def labels(self) -> list[str]:
        return ["--label", f"pgras-test={self.run_id}"]

    def address(self, host: int) -> str:
        return f"{self.subnet_prefix}.{host}"

    @property
    def pods(self) -> list[str]:
        return list(self.pod_runs)

    def pod_ip(self, pod: str) -> str:
        return self.pod_runs[pod].identity.ip

    def pause(self, pod: str) -> str:
        return f"{self.run_id}-{pod}"

    def container(self, pod: str, name: str) -> str:
        return f"{self.run_id}-{pod}-{name}"

    def pod_containers(self, pod: str) -> list[str]:
        """Every docker container of the pod, the pause container last."""
        return [self.container(pod, c.name) for c in self.pod_runs[pod].containers] + [
            self.pause(pod)
        ]

    def consul_host(self) -> str:
        """The host of the Consul URL the chart gives the pods (an alias on our Consul)."""
        env = k8s_pod.container_env(
            self.statefulset["spec"]["template"]["spec"]["containers"][-1],
            k8s_pod.PodIdentity("probe", "probe", "0.0.0.0"),
            self.objects,
            {},
        )
        return urlparse(env["PGRAS_CONSUL__URL"]).hostname or "consul"

    @property
    def superuser(self) -> tuple[str, str]:
        env = self.pod_runs[self.pods[0]].containers[0].env
        user = env.get("PGRAS_POSTGRES__SUPERUSER__USERNAME", "postgres")
        return user, env["PGRAS_POSTGRES__SUPERUSER__PASSWORD"]

    def run(self, name: str, *args: str) -> None:
        docker("run", "-d", "--name", name, *self.labels, *args)
        if name not in self.containers:
            self.containers.append(name)

    # -- pods ----------------------------------------------------------------------
    def create_pod(self, ordinal: int, ingress_rate: str | None = None) -> str:
        """Start pod ``<statefulset>-<ordinal>`` from the chart's template; its claim
        volumes are created when missing and reused otherwise (a StatefulSet's PVCs).
        ``ingress_rate`` (tc syntax, e.g. ``120mbit``) slows what the pod receives,
        from before its containers start."""
        name = f"{self.statefulset['metadata']['name']}-{ordinal}"
        pod = k8s_pod.translate_pod(
            self.statefulset,
            ordinal,
            self.objects,
            ip=self.address(10 + ordinal),
            names=lambda suffix: f"{self.run_id}-{name}-{suffix}",
            files_dir=self.workdir / name,
            env_overrides=self.env_overrides,
        )
        self.pod_runs[name] = pod
        for vol in pod.docker_volumes:
            if docker("volume", "inspect", vol, check=False).returncode:
                docker("volume", "create", *self.labels, vol)
        self.run(
            self.pause(name),
            "--network", self.network, "--ip", pod.identity.ip,
            "--hostname", name, "--network-alias", name, "--network-alias", pod.fqdn,
            "--ipc", "shareable", "--stop-timeout", "5",
            *PAUSE,
        )  # fmt: skip
        if ingress_rate:
            self.limit_ingress(name, ingress_rate)
        for c in pod.containers:
            for path, text in c.files.items():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
            self.run(
                self.container(name, c.name),
                "--network", f"container:{self.pause(name)}",
                "--ipc", f"container:{self.pause(name)}",
                *c.options, c.image, *c.argv,
            )  # fmt: skip
        return name

    def remove_pod(self, pod: str, volumes: bool = False) -> None:
        """Remove the pod's containers (and its volumes: a deleted PVC)."""
        docker("rm", "-f", *self.pod_containers(pod), check=False, timeout=60)
        if volumes:
            docker("volume", "rm", "-f", *self.pod_runs[pod].docker_volumes, check=False)

    def recreate_pod(self, pod: str) -> None:
        """What the StatefulSet controller does for a missing pod: the same name, the
        same claims (volumes), a fresh set of containers."""
        self.remove_pod(pod)
        self.create_pod(int(pod.rsplit("-", 1)[1]))

    def kill_pod(self, pod: str) -> None:
        """Node loss: SIGKILL every container of the pod at once."""
        docker("kill", *self.pod_containers(pod))

    def delete_pod(self, pod: str) -> dict[str, dict[str, Any]]:
        """Graceful pod deletion as the kubelet does it: every container's preStop
        hook runs, each container gets its stop signal as soon as its own hook has
        finished, all within the pod's grace period; then SIGKILL. Returns each
        container's final State with the seconds it took ('took')."""
        run = self.pod_runs[pod]
        deadline = time.monotonic() + run.grace_seconds
        states: dict[str, dict[str, Any]] = {}

        def stop(c: k8s_pod.ContainerRun) -> None:
            name = self.container(pod, c.name)
            t0 = time.monotonic()
            if c.pre_stop is not None:
                left = max(1.0, deadline - time.monotonic())
                if c.pre_stop.kind == "exec":
                    docker("exec", name, *c.pre_stop.command, check=False, timeout=left)
                else:
                    run_probe(c.pre_stop, run.identity.ip, name)
            left = max(0, int(deadline - time.monotonic()))
            docker("stop", "-t", str(left), name, check=False, timeout=left + 30)
            state = json.loads(docker("inspect", "-f", "{{json .State}}", name).stdout)
            states[c.name] = {**state, "took": time.monotonic() - t0}

        threads = [threading.Thread(target=stop, args=(c,)) for c in run.containers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(run.grace_seconds + 60)
        docker("stop", "-t", "5", self.pause(pod), check=False, timeout=40)
        return states

    def host_veth(self, pod: str) -> str:
        """The host end of the pod's veth pair (its egress is the pod's ingress)."""
        pid = docker("inspect", "-f", "{{.State.Pid}}", self.pause(pod)).stdout.strip()
        inner = subprocess.run(
            ["nsenter", "-t", pid, "-n", "ip", "-o", "link", "show", "eth0"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
        peer = inner.split(":")[1].strip().split("@if")[1]
        for line in subprocess.run(
            ["ip", "-o", "link"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.splitlines():
            if line.split(":")[0] == peer:
                return line.split(":")[1].strip().split("@")[0]
        raise RuntimeError(f"no host interface with index {peer} for {pod}")

    def limit_ingress(self, pod: str, rate: str | None) -> None:
        """Shape (or, with None, stop shaping) the traffic into the pod."""
        veth = self.host_veth(pod)
        if rate is None:
            cmd = ["tc", "qdisc", "del", "dev", veth, "root"]
        else:
            cmd = ["tc", "qdisc", "replace", "dev", veth, "root", "tbf", "rate", rate]
            cmd += ["burst", "64kb", "latency", "200ms"]
        subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=rate is not None)

    def disconnect(self, pod: str) -> None:
        docker("network", "disconnect", self.network, self.pause(pod))

    def connect(self, pod: str) -> None:
        run = self.pod_runs[pod]
        docker(
            "network", "connect", "--ip", run.identity.ip, "--alias", pod,
            "--alias", run.fqdn, self.network, self.pause(pod),
        )  # fmt: skip

    def signal_processes(self, pod: str, container: str, signal: str) -> None:
        """Send ``signal`` to every process of a container but its init (tini):
        SIGSTOP freezes the program itself, not only the PID 1 that would pass it on."""
        docker(
            "exec", self.container(pod, container), "bash", "-c", f"kill -{signal} -1 || true",
            timeout=30,
        )  # fmt: skip

    def state(self, container: str) -> dict[str, Any]:
        proc = docker("inspect", "-f", "{{json .State}}", container, check=False)
        return json.loads(proc.stdout) if proc.returncode == 0 else {}

    def connected(self, pod: str) -> bool:
        proc = docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", self.pause(pod))
        return self.network in (json.loads(proc.stdout or "null") or {})

    def repair(self) -> None:
        """Undo what a test may have left: recreate pods with a container not running,
        reconnect cut-off pods, resume stopped processes."""
        for pod in self.pods:
            if not all(self.state(c).get("Running") for c in self.pod_containers(pod)):
                self.recreate_pod(pod)
                continue
            if not self.connected(pod):
                self.connect(pod)
            for c in self.pod_runs[pod].containers:
                self.signal_processes(pod, c.name, "CONT")

    # -- the controllers' REST API and the chart's probes --------------------------
    def api(self, pod: str, path: str) -> tuple[int, Any]:
        return http_get(f"http://{self.pod_ip(pod)}:{API_PORT}{path}")

    def primaries(self, pods: list[str] | None = None) -> list[str]:
        return [p for p in pods or self.pods if self.api(p, "/primary")[0] == 200]

    def replicas(self, pods: list[str] | None = None) -> list[str]:
        return [p for p in pods or self.pods if self.api(p, "/replica")[0] == 200]

    def probe(self, pod: str, kind: str) -> bool | None:
        """The pod's ``kind`` probe (startup / liveness / readiness) once, or None when
        no container has one. Several containers' probes must all pass."""
        results = [
            run_probe(c.probes[kind], self.pod_ip(pod), self.container(pod, c.name))
            for c in self.pod_runs[pod].containers
            if kind in c.probes
        ]
        return all(results) if results else None

    def probe_period(self, kind: str) -> float:
        periods = [
            c.probes[kind].period
            for run in self.pod_runs.values()
            for c in run.containers
            if kind in c.probes
        ]
        return min(periods) if periods else 1.0

    def wait_primary(self, pods: list[str], timeout: float = 60) -> str:
        def one() -> str | None:
            found = self.primaries(pods)
            return found[0] if len(found) == 1 else None

        return wait_for(f"exactly one primary among {pods}", one, timeout, 0.2)

    def wait_healthy(self, timeout: float = 120) -> tuple[str, list[str]]:
        """One primary, every other pod a streaming replica; (primary, replicas)."""

        def state() -> tuple[str, list[str]] | None:
            self.fail_if_exited()
            primaries, replicas = self.primaries(), self.replicas()
            if len(primaries) == 1 and len(replicas) == len(self.pods) - 1:
                return primaries[0], replicas
            return None

        try:
            return wait_for(
                "one primary and streaming replicas", state, timeout, 1.0, detail=self.describe
            )
        except AssertionError as exc:  # a container exited
            raise AssertionError(f"{exc}\n{self.describe()}") from None

    def wait_replica(self, pod: str, what: str, timeout: float) -> None:
        """Until ``pod``'s controller answers /replica (a streaming replica); on timeout
        the failure shows the cluster view."""
        wait_for(what, lambda: self.api(pod, "/replica")[0] == 200, timeout, detail=self.describe)

    def fail_if_exited(self) -> None:
        """Fail at once, with its log, when a pod's container has exited by itself."""
        for pod in self.pods:
            for c in self.pod_runs[pod].containers:
                name = self.container(pod, c.name)
                state = self.state(name)
                if state.get("Status") == "exited":
                    raise AssertionError(
                        f"{name} exited ({state.get('ExitCode')}):\n{self.logs(name, tail=40)}"
                    )

    def describe(self) -> str:
        """The cluster as the first answering controller sees it (for failure messages)."""
        for pod in self.pods:
            status, body = self.api(pod, "/cluster")
            if status == 200:
                return "cluster view:\n" + json.dumps(body, indent=1, default=str)
        return "cluster view:\n(no controller answered /cluster)"

    # -- SQL -------------------------------------------------------------------------
    def conninfo(self, host: str, port: int = PG_PORT) -> str:
        user, password = self.superuser
        return (
            f"host={host} port={port} dbname=postgres user={user} password={password} "
            "connect_timeout=2"
        )

    def pod_conninfo(self, pod: str) -> str:
        return self.conninfo(self.pod_ip(pod))

    def pgpool_conninfo(self) -> str:
        return self.conninfo(self.address(4))

    def app_url(self, path: str) -> str:
        return f"http://{self.address(5)}:8080{path}"

    def psql_in_pod(self, pod: str, sql: str) -> subprocess.CompletedProcess[str]:
        """psql over the pod's loopback: works while the pod is cut off."""
        user, password = self.superuser
        return docker(
            "exec", "-e", f"PGPASSWORD={password}", self.container(pod, "postgres"),
            "psql", "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", user,
            "-d", "postgres", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql,
            check=False, timeout=15,
        )  # fmt: skip

    # -- logs and cleanup -----------------------------------------------------------
    def logs(self, container: str, tail: int = 80) -> str:
        proc = docker("logs", "--tail", str(tail), container, check=False)
        return proc.stdout + proc.stderr

    def postgres_log(self, pod: str, tail: int = 60) -> str:
        """The end of the postgres log the agent keeps beside PGDATA on the volume."""
        vol = self.pod_runs[pod].docker_volumes[0]
        proc = docker(
            "run", "--rm", *self.labels, "-v", f"{vol}:/var/lib/pgras:ro",
            "--entrypoint", "sh", IMAGES["postgres"], "-c",
            f"tail -n {tail} /var/lib/pgras/*.log",
            check=False, timeout=60,
        )  # fmt: skip
        return proc.stdout + proc.stderr

    def dump_logs(self) -> None:
        for name in self.containers:
            print(f"\n===== docker logs {name} (last lines) =====\n{self.logs(name)}")
        for pod in self.pods:
            print(f"\n===== postgres log of {pod} (last lines) =====\n{self.postgres_log(pod)}")

    def remove_all(self) -> None:
        label = f"label=pgras-test={self.run_id}"
        ids = docker("ps", "-aq", "--filter", label, check=False).stdout.split()
        if ids:
            docker("rm", "-f", "-v", *ids, check=False, timeout=120)
        vols = docker("volume", "ls", "-q", "--filter", label, check=False).stdout.split()
        if vols:
            docker("volume", "rm", "-f", *vols, check=False)
        docker("network", "rm", self.network, check=False)
