"""The four images as a cluster in Docker, the database pods made from the Helm chart:
bootstrap, the chart's probes, image metadata and HEALTHCHECKs, a clean stop.

Each test takes the state it needs from the ``healthy`` fixture, so any test runs
alone or in any order. Figures are printed (``-s`` shows them live) and summarised
at the end of ``make test-images``.
"""

from __future__ import annotations

import json
import time

import psycopg
import pytest

from tests.images.pods import IMAGES, DockerCluster, docker, http_get, wait_for
from tests.images.workload import (
    next_seq,
    post_json,
)

pytestmark = [pytest.mark.images, pytest.mark.timeout(600)]


# ---------------------------------------------------------------------------- bootstrap


def test_bootstrap_one_ready_primary_and_streaming_replicas(healthy: DockerCluster) -> None:
    """One primary and two streaming replicas; the chart's readiness and liveness probes
    pass on every pod; the demo app answers and writes through pgpool."""
    primary, replicas = healthy.wait_healthy()
    with psycopg.connect(healthy.pod_conninfo(primary), autocommit=True) as conn:
        rows = conn.execute("SELECT application_name, state FROM pg_stat_replication").fetchall()
    streaming = sorted(name for name, state in rows if state == "streaming")
    assert len(streaming) == len(replicas), f"{primary} streams to {rows}, wanted {replicas}"

    for pod in healthy.pods:
        assert healthy.probe(pod, "liveness"), f"{pod}: liveness probe fails"
    wait_for(
        "every pod to pass its readiness probe",
        lambda: all(healthy.probe(p, "readiness") for p in healthy.pods),
        10,
    )
    ready_primaries = [p for p in healthy.primaries() if healthy.probe(p, "readiness")]
    assert ready_primaries == [primary], ready_primaries

    def app_answers() -> bool:
        status, body = http_get(healthy.app_url("/api/puppies"))
        return status == 200 and isinstance(body, dict) and body.get("status") == "success"

    wait_for("the demo app to answer GET /api/puppies through pgpool", app_answers, 90, 1.0)
    wait_for(
        "the demo app's /healthz",
        lambda: http_get(healthy.app_url("/healthz"), timeout=5)[0] == 200,
        30,
    )
    name = f"Docker{next_seq()}"
    status, body = post_json(
        healthy.app_url("/api/puppies"), {"name": name, "breed": "Pod", "age": 1, "sex": "F"}
    )
    assert status == 200, body

    def app_reads_it() -> bool:
        status, body = http_get(healthy.app_url("/api/puppies"))
        return status == 200 and any(p["name"] == name for p in body["data"])

    wait_for("the puppy written through the app to be read back", app_reads_it, 10, 0.2)


@pytest.mark.parametrize("name", sorted(IMAGES))
@pytest.mark.usefixtures("docker_engine")
def test_image_metadata(name: str) -> None:
    """Every image: non-root user, exec-form entry point under tini, a stop signal,
    a HEALTHCHECK and the OCI labels."""
    config = json.loads(docker("image", "inspect", "-f", "{{json .Config}}", IMAGES[name]).stdout)
    assert config["User"] not in ("", "root", "0"), f"{name} runs as root"
    assert config["Entrypoint"][0] == "/usr/bin/tini", config["Entrypoint"]
    assert config["StopSignal"] in ("SIGTERM", "SIGINT"), config["StopSignal"]
    assert config["Healthcheck"]["Test"][0] == "CMD", config["Healthcheck"]
    labels = config["Labels"] or {}
    for key in ("title", "description", "source", "licenses", "version"):
        assert labels.get(f"org.opencontainers.image.{key}"), f"{name}: no {key} label"
    assert name in labels["org.opencontainers.image.title"], labels


def test_healthchecks_report_healthy(healthy: DockerCluster) -> None:
    """The images' HEALTHCHECKs pass on a working cluster."""
    names = [healthy.container(p, c) for p in healthy.pods for c in ("postgres", "controller")]
    names += [f"{healthy.run_id}-pgpool", f"{healthy.run_id}-app"]

    def unhealthy() -> list[str]:
        out = []
        for name in names:
            health = docker("inspect", "-f", "{{.State.Health.Status}}", name).stdout.strip()
            if health != "healthy":
                out.append(f"{name}={health}")
        return out

    wait_for(
        "every container to report healthy", lambda: not unhealthy(), 90, 1.0, detail=unhealthy
    )


# ---------------------------------------------------------------------------- stop


def test_every_container_stops_cleanly(healthy: DockerCluster) -> None:
    """Pods deleted as a kubelet does (replicas first), then pgpool and the app stopped:
    each container ends within its grace period without SIGKILL and each postgres is
    shut down cleanly (pg_controldata). The next test's fixture recreates the pods."""
    cluster = healthy
    primary, replicas = cluster.wait_healthy()
    report, failures = [], []
    for pod in [*replicas, primary]:
        grace = cluster.pod_runs[pod].grace_seconds
        for name, state in cluster.delete_pod(pod).items():
            report.append(f"{pod}/{name}: {state['took']:.1f}s exit {state['ExitCode']}")
            if state["ExitCode"] == 137 or state["OOMKilled"] or state["took"] >= grace - 1:
                failures.append(
                    f"{pod}/{name}: {state}\n{cluster.logs(cluster.container(pod, name))}"
                )
    for name in (f"{cluster.run_id}-app", f"{cluster.run_id}-pgpool"):
        t0 = time.monotonic()
        docker("stop", "-t", "20", name, timeout=60)
        state = cluster.state(name)
        report.append(f"{name}: {time.monotonic() - t0:.1f}s exit {state['ExitCode']}")
        if state["ExitCode"] == 137:
            failures.append(f"{name}: {state}\n{cluster.logs(name)}")
        docker("start", name)
    print("\n[images] stop: " + "; ".join(report))
    assert not failures, "\n".join(failures)

    for pod in cluster.pods:
        vol = cluster.pod_runs[pod].docker_volumes[0]
        proc = docker(
            "run", "--rm", *cluster.labels, "-v", f"{vol}:/var/lib/pgras",
            "--entrypoint", "sh", IMAGES["postgres"], "-c",
            "d=$(find /var/lib/pgras -maxdepth 3 -name PG_VERSION | awk '{print length, $0}'"
            " | sort -n | head -1 | cut -d' ' -f2); pg_controldata \"$(dirname \"$d\")\"",
            check=False, timeout=60,
        )  # fmt: skip
        state = [ln for ln in proc.stdout.splitlines() if ln.startswith("Database cluster state")]
        assert state and "shut down" in state[0], f"{pod}: {state or proc.stderr}"
