"""Fixtures of the images tier: the four images as a cluster in Docker, its database
pods made from the Helm chart's rendered StatefulSet.

What the session builds on a dedicated network ``pgras-test-<random>`` (its own subnet,
so a pod keeps its address when it is recreated or reconnected, as the HAProxy
config names addresses):
- Consul (a dev agent; the host's ``consul`` binary bind-mounted into the base image),
  reachable at the address the chart gives the controllers;
- ``instances`` database pods translated from ``helm template charts/postgres-ras``
  by :mod:`tests.images.k8s_pod` (a pause container holding the pod's network, the
  ``postgres`` and ``controller`` containers of the chart joining it);
- the write and read endpoints: HAProxy configured by ``postgres_ras.local.haproxy``
  (the renderer the local cluster runs), checking each pod's ``/primary`` and
  ``/replica`` (what the Kubernetes Services do through the role label);
- pgpool (``postgres-ras/pgpool``) in front of those endpoints and the demo app
  (``postgres-ras/demo-app``) behind pgpool.

Tests do not depend on their order: the ``healthy`` fixture first repairs whatever an
earlier test left (recreates deleted pods on their volumes, reconnects, resumes
stopped processes) and waits for one primary and two streaming replicas.

Guarantees: every container, volume and network created here carries the label
``pgras-test=<run id>`` and is removed at the end, whatever happened; a failed test
prints the logs of every container and postgres. Test traffic goes only to that
network. The tier skips only when no Docker engine can be made to work
(scripts/docker-engine.sh); anything else is a failure.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from postgres_ras.local.haproxy import render_haproxy_cfg
from postgres_ras.local.layout import Layout, NodePorts
from tests.helpers import helm_binary, write_figures
from tests.images import k8s_pod
from tests.images.pods import (
    BASE_IMAGE,
    FIGURES,
    IMAGES,
    TAG,
    DockerCluster,
    docker,
    http_get,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "postgres-ras"
HAPROXY_IMAGE = "pgras-test/haproxy:dev"
RELEASE, NAMESPACE = "pg", "pgras"
INSTANCES = 3
# The access layer's ports: HAProxy write/read from the local layout, pgpool and the app.
LAYOUT = Layout(work_dir=Path("/nonexistent"), base_port=25000, host="0.0.0.0")
# Values for this tier: our locally built images; a short grace period keeps the
# stop test quick while leaving the handover (a few seconds) room.
CHART_VALUES = {
    "instances": INSTANCES,
    "image": {"tag": TAG, "pullPolicy": "Never"},
    "terminationGracePeriodSeconds": 20,
}
# The controller's Kubernetes publisher patches its pod's role label through the API
# server; there is none here. The chart offers no publisher switch (users of the chart
# always have an API server, and a value only tests need is chart sprawl), so the test
# overrides the one variable in the translated environment. Routing uses the
# controllers' /primary and /replica, as the local cluster's HAProxy does.
ENV_OVERRIDES = {"PGRAS_PUBLISHER__KIND": "none"}

HAPROXY_DOCKERFILE = f"""\
ARG BASE_IMAGE={BASE_IMAGE}
FROM ${{BASE_IMAGE}}
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends haproxy \\
 && apt-get clean && rm -rf /var/lib/apt/lists/*
STOPSIGNAL SIGTERM
ENTRYPOINT ["haproxy", "-db", "-f", "/etc/haproxy/haproxy.cfg"]
"""


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


def create_network(c: DockerCluster) -> None:
    """The run's network on a subnet of its own (chosen at random until one is free)."""
    last = ""
    for _ in range(20):
        subnet = f"10.{random.randint(200, 250)}.{random.randint(0, 255)}.0/24"
        proc = docker("network", "create", *c.labels, "--subnet", subnet, c.network, check=False)
        if proc.returncode == 0:
            c.subnet_prefix = subnet.rsplit(".", 1)[0]
            return
        last = proc.stderr.strip()
    raise RuntimeError(f"no free subnet for the test network: {last}")


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """A working engine and the four images (built when missing), or a skip."""
    ensure_docker()
    ensure_images()


@pytest.fixture(scope="session")
def chart_manifests(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """``helm template`` of the chart with this tier's values."""
    return k8s_pod.helm_template(
        helm_binary("the images tests"),
        CHART,
        RELEASE,
        NAMESPACE,
        CHART_VALUES,
        tmp_path_factory.mktemp("helm"),
    )


@pytest.fixture(scope="session")
def cluster(
    docker_engine: None,
    chart_manifests: list[dict],
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DockerCluster]:
    consul = consul_binary()
    run_id = f"pgras-test-{uuid.uuid4().hex[:8]}"
    c = DockerCluster(
        run_id=run_id,
        network=run_id,
        workdir=tmp_path_factory.mktemp("images"),
        statefulset=k8s_pod.find(chart_manifests, "StatefulSet", "database"),
        objects=k8s_pod.Objects.from_manifests(chart_manifests),
        env_overrides=ENV_OVERRIDES,
    )
    started = time.monotonic()
    try:
        create_network(c)
        consul_host = c.consul_host()
        c.run(
            f"{run_id}-consul",
            "--network", c.network, "--ip", c.address(2),
            "--network-alias", "consul", "--network-alias", consul_host,
            "-v", f"{consul}:/usr/local/bin/consul:ro",
            BASE_IMAGE,
            "consul", "agent", "-dev", "-client", "0.0.0.0", "-log-level", "warn",
        )  # fmt: skip
        wait_for(
            "Consul to elect itself",
            lambda: http_get(f"http://{c.address(2)}:8500/v1/status/leader")[1] not in (None, ""),
            30,
        )
        for ordinal in range(INSTANCES):
            c.create_pod(ordinal)
        nodes = [
            NodePorts(name=pod, index=i, postgres=5432, agent=8010, api=8008, host=c.pod_ip(pod))
            for i, pod in enumerate(c.pods)
        ]
        cfg = c.workdir / "haproxy.cfg"
        cfg.write_text(render_haproxy_cfg(LAYOUT, nodes))
        cfg.chmod(0o644)
        c.run(
            f"{run_id}-haproxy",
            "--network", c.network, "--ip", c.address(3), "--network-alias", "haproxy",
            "-v", f"{cfg}:/etc/haproxy/haproxy.cfg:ro",
            HAPROXY_IMAGE,
        )  # fmt: skip
        user, password = c.superuser
        c.run(
            f"{run_id}-pgpool",
            "--network", c.network, "--ip", c.address(4), "--network-alias", "pgpool",
            "--stop-timeout", "20",
            "-e", "PGPOOL_WRITE_HOST=haproxy", "-e", f"PGPOOL_WRITE_PORT={LAYOUT.haproxy_write}",
            "-e", "PGPOOL_READ_HOST=haproxy", "-e", f"PGPOOL_READ_PORT={LAYOUT.haproxy_read}",
            "-e", "PGPOOL_PORT=5432", "-e", f"PGPOOL_USER={user}",
            "-e", f"PGPOOL_PASSWORD={password}",
            IMAGES["pgpool"],
        )  # fmt: skip
        c.run(
            f"{run_id}-app",
            "--network", c.network, "--ip", c.address(5), "--network-alias", "app",
            "--stop-timeout", "20",
            "-e", f"PUPPIES_DSN=host=pgpool port=5432 dbname=postgres user={user} "
            f"password={password}",
            IMAGES["demo-app"],
        )  # fmt: skip
        print(f"\n[images] {run_id}: containers started in {time.monotonic() - started:.1f}s")
        yield c
    finally:
        if request.session.testsfailed or os.environ.get("PGRAS_TEST_DUMP_LOGS"):
            c.dump_logs()
        c.remove_all()


@pytest.fixture
def healthy(cluster: DockerCluster) -> DockerCluster:
    """The cluster repaired from whatever an earlier test did, with one primary and
    every other pod a streaming replica."""
    cluster.repair()
    cluster.wait_healthy(timeout=180)
    return cluster


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    write_figures(terminalreporter, "images", FIGURES)
