"""Fixtures of the e2e tier: the chart installed on a kind cluster by scripts/e2e-kind.sh.

Runs only under ``make e2e`` (the script sets PGRAS_E2E=1 after creating the cluster,
loading the images and installing the release); elsewhere this directory is not
collected, and the report header says so. The cluster comes from pytest-helm-charts'
``kube_cluster`` fixture (KUBECONFIG); helm is called directly (the plugin does not
install charts).

Traffic to the database goes from inside the cluster: a client pod (the demo-app
image: Python, psycopg) in the release's namespace runs the probes with
``kubectl exec``, so writes follow the Services exactly as an application's would.
Every wait is bounded; figures are printed at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.helpers import poll_value, write_figures

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "postgres-ras"
ENABLED = os.environ.get("PGRAS_E2E") == "1"
T = TypeVar("T")

if not ENABLED:
    collect_ignore_glob = ["test_*.py"]

# Figures measured by the tests, printed once at the end.
FIGURES: dict[str, float] = {}


def pytest_report_header() -> str | None:
    if not ENABLED:
        return "tests/e2e: not collected (needs a kind cluster: run `make e2e`)"
    return None


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    write_figures(terminalreporter, "e2e", FIGURES)


def wait_for(what: str, predicate: Callable[[], T | None], timeout: float, every: float = 1) -> T:
    """``poll_value`` as this tier polls: every ``every`` s; a failed or slow kubectl
    or unparsable output counts as not yet, any other exception fails at once."""
    retry_on = (subprocess.CalledProcessError, subprocess.TimeoutExpired, ValueError)
    return poll_value(what, predicate, timeout, every, retry_on=retry_on)


CLIENT_POD = "e2e-client"

# Writes through a Service once per `interval` for `duration` seconds (a fresh connection
# each time, as a pooled app reconnecting would); prints what was acknowledged.
WRITER = """
import json, sys, time
import psycopg
dsn, duration, interval = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as c:
    c.execute("CREATE TABLE IF NOT EXISTS e2e_writes (id bigserial PRIMARY KEY, at float8)")
acked, fails, gap, last_ok = [], 0, 0.0, time.monotonic()
end = time.monotonic() + duration
while time.monotonic() < end:
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=1) as c:
            (i,) = c.execute(
                "INSERT INTO e2e_writes (at) VALUES (%s) RETURNING id", (time.time(),)
            ).fetchone()
        now = time.monotonic()
        gap, last_ok = max(gap, now - last_ok), now
        acked.append(i)
    except psycopg.Error:
        fails += 1
    time.sleep(interval)
print(json.dumps({"acked": acked, "fails": fails, "max_gap": gap}))
"""

SQL = """
import json, sys
import psycopg
with psycopg.connect(sys.argv[1], autocommit=True, connect_timeout=3) as c:
    cur = c.execute(sys.argv[2])
    rows = cur.fetchall() if cur.description else []
print(json.dumps(rows, default=str))
"""

HTTP = """
import json, sys, urllib.request, urllib.error
method, url = sys.argv[1], sys.argv[2]
body = sys.argv[3].encode() if len(sys.argv) > 3 else None
req = urllib.request.Request(url, data=body, method=method,
                             headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=5) as r:
        print(json.dumps([r.status, json.loads(r.read())]))
except urllib.error.HTTPError as e:
    print(json.dumps([e.code, e.read().decode(errors="replace")]))
"""


@dataclass
class Release:
    """The installed release: kubectl through the kube_cluster fixture, helm directly."""

    cluster: Any  # pytest_helm_charts.clusters.Cluster
    namespace: str
    name: str
    helm_path: str
    helm_wait: list[str]
    values: str

    # -- kubectl / helm -------------------------------------------------------------
    def kubectl(self, cmd: str, output: str = "json", **kwargs: str) -> Any:
        return self.cluster.kubectl(cmd, output_format=output, namespace=self.namespace, **kwargs)

    def helm(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.helm_path, *args, "--namespace", self.namespace],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "KUBECONFIG": self.cluster.kube_config_path},
        )
        if proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def upgrade(self, *sets: str) -> float:
        """helm upgrade --reuse-values --wait with ``sets``; returns the seconds it took."""
        start = time.monotonic()
        self.helm(
            "upgrade", self.name, str(CHART), "--reuse-values", *self.helm_wait,
            "--timeout", "10m", *[a for s in sets for a in ("--set", s)],
        )  # fmt: skip
        return time.monotonic() - start

    # -- the database pods ------------------------------------------------------------
    @property
    def selector(self) -> str:
        return f"app.kubernetes.io/instance={self.name},app.kubernetes.io/component=database"

    def pods(self) -> list[dict[str, Any]]:
        return list(self.kubectl(f"get pods -l {self.selector}"))

    @staticmethod
    def ready(pod: dict[str, Any]) -> bool:
        conds = pod.get("status", {}).get("conditions", [])
        deleting = pod["metadata"].get("deletionTimestamp") is not None
        return not deleting and any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

    def roles(self) -> dict[str, str | None]:
        """pod name -> role label (None when unlabelled), for pods that exist."""
        return {p["metadata"]["name"]: p["metadata"]["labels"].get("role") for p in self.pods()}

    def settled(self, instances: int) -> str | None:
        """The primary's pod name once exactly one ready primary and instances-1 ready
        replicas are labelled (what the Services route to), else None."""
        pods = self.pods()
        ready = [p for p in pods if self.ready(p)]
        primaries = [p for p in ready if p["metadata"]["labels"].get("role") == "primary"]
        replicas = [p for p in ready if p["metadata"]["labels"].get("role") == "replica"]
        labelled = [p for p in pods if p["metadata"]["labels"].get("role") == "primary"]
        settled = len(pods) == instances and len(primaries) == 1 == len(labelled)
        if settled and len(replicas) == instances - 1:
            return str(primaries[0]["metadata"]["name"])
        return None

    def wait_settled(self, instances: int, timeout: float = 300) -> str:
        return wait_for(
            f"{instances} ready pods: one labelled primary, the others replica",
            lambda: self.settled(instances),
            timeout,
        )

    def service_endpoints(self, service: str) -> set[str]:
        eps = self.kubectl(f"get endpoints {self.name}-{service}")
        return {
            a["targetRef"]["name"]
            for subset in eps.get("subsets") or []
            for a in subset.get("addresses") or []
        }

    # -- traffic from inside the cluster ------------------------------------------------
    def dsn(self, service: str, dbname: str = "postgres") -> str:
        return f"host={self.name}-{service} port=5432 dbname={dbname} user=postgres"

    def client(self, script: str, *args: str, timeout: float = 60) -> Any:
        cmd = [
            "kubectl", "--kubeconfig", self.cluster.kube_config_path, "-n", self.namespace,
            "exec", CLIENT_POD, "--", "python3", "-c", script, *args,
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise AssertionError(f"client script failed: {proc.stderr.strip()[-2000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def client_background(self, script: str, *args: str) -> subprocess.Popen[str]:
        cmd = [
            "kubectl", "--kubeconfig", self.cluster.kube_config_path, "-n", self.namespace,
            "exec", CLIENT_POD, "--", "python3", "-c", script, *args,
        ]  # fmt: skip
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def sql(self, service: str, statement: str, dbname: str = "postgres") -> list[list[Any]]:
        return list(self.client(SQL, self.dsn(service, dbname), statement))

    def new_primary(self, old: str) -> str | None:
        """The one pod labelled primary if it is not ``old`` and the primary Service
        routes to it alone."""
        primaries = [n for n, r in self.roles().items() if r == "primary"]
        moved = len(primaries) == 1 and primaries[0] != old
        if moved and self.service_endpoints("primary") == {primaries[0]}:
            return primaries[0]
        return None

    def http(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        args = [method, f"http://{self.name}-demo-app:8080{path}"]
        if body is not None:
            args.append(json.dumps(body))
        status, data = self.client(HTTP, *args)
        return int(status), data

    def controller_post(self, pod: str, path: str, body: Any) -> tuple[int, Any]:
        """POST to a controller's API from inside its own pod (loopback; its token)."""
        script = (
            "import json, os, sys, urllib.request, urllib.error\n"
            "req = urllib.request.Request('http://127.0.0.1:8008' + sys.argv[1],"
            " data=sys.argv[2].encode(), method='POST', headers={'Content-Type':"
            " 'application/json', 'Authorization': 'Bearer '"
            " + os.environ['PGRAS_CONTROLLER__AUTH_TOKEN']})\n"
            "try:\n"
            "    r = urllib.request.urlopen(req, timeout=5); print(json.dumps([r.status, 0]))\n"
            "except urllib.error.HTTPError as e:\n"
            "    print(json.dumps([e.code, e.read().decode(errors='replace')]))\n"
        )
        cmd = [
            "kubectl", "--kubeconfig", self.cluster.kube_config_path, "-n", self.namespace,
            "exec", pod, "-c", "controller", "--", "python3", "-c", script, path, json.dumps(body),
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True)
        status, data = json.loads(proc.stdout.strip().splitlines()[-1])
        return int(status), data


def client_pod_manifest(release: str, namespace: str, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": CLIENT_POD, "namespace": namespace, "labels": {"app": "e2e"}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "client",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["/usr/bin/tini", "--", "sleep", "infinity"],
                    "env": [
                        {
                            "name": "PGPASSWORD",
                            "valueFrom": {
                                "secretKeyRef": {"name": release, "key": "superuser-password"}
                            },
                        }
                    ],
                }
            ],
        },
    }


@pytest.fixture(scope="session")
def release(kube_cluster: Any) -> Iterator[Release]:
    for var in ("E2E_NAMESPACE", "E2E_RELEASE", "HELM"):
        if not os.environ.get(var):
            pytest.fail(f"{var} is not set: run the e2e tier with `make e2e`", pytrace=False)
    rel = Release(
        cluster=kube_cluster,
        namespace=os.environ["E2E_NAMESPACE"],
        name=os.environ["E2E_RELEASE"],
        helm_path=os.environ["HELM"],
        helm_wait=(os.environ.get("E2E_HELM_WAIT") or "--wait").split(),
        values=os.environ.get("E2E_VALUES", ""),
    )
    values = rel.helm("get", "values", rel.name, "--all", "-o", "json").stdout
    tag = json.loads(values)["image"]["tag"]
    manifest = client_pod_manifest(rel.name, rel.namespace, f"postgres-ras/demo-app:{tag}")
    rel.kubectl("apply", std_input=json.dumps(manifest))
    wait_for(
        "the e2e client pod",
        lambda: rel.ready(rel.kubectl(f"get pod {CLIENT_POD}")),
        120,
    )
    try:
        yield rel
    finally:
        rel.kubectl(f"delete pod {CLIENT_POD} --wait=false", output="")
