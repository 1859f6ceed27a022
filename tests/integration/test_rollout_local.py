"""Issue 10: the orchestrated rollout costs exactly one switchover, on a real local cluster.

The planner and driver of postgres_ras.controller.rollout run unchanged against a
LocalCluster standing in for the StatefulSet: a node is a pod (ordinal = its index - 1),
"delete a pod" restarts that node's processes, the "revision" is a per-node dict the
restart flips to the new one, and "Ready" is the controller's own /readiness (what the
chart's readinessProbe asks). The cluster view and the switchover go through the real
controller REST API (GET /cluster, POST /switchover with the controller token).

With a Writer running: every node restarted once, replicas first (highest ordinal
first), then the primary after exactly one leader change; at most one writable
primary at every check; no acknowledged write lost. Prints the write outage.
"""

from __future__ import annotations

import threading
import time

import pytest
import requests

from postgres_ras.controller.rollout import ClusterView, Observation, PodView, Rollout
from postgres_ras.local.workload import Writer, lost_writes
from tests.integration.conftest import Harness

OLD, NEW = "node-old", "node-new"


class LocalStatefulSet:
    """The rollout's Target over a LocalCluster."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.ports = {p.name: p for p in h.c.node_ports()}
        self.revision = dict.fromkeys(self.ports, OLD)
        self.token = h.c.controller_token()
        self.host = h.c.layout.host
        self.deleted: list[str] = []
        self.switchovers: list[tuple[str, str, int]] = []

    def api(self, name: str) -> str:
        return f"http://{self.host}:{self.ports[name].api}"

    def ready(self, name: str) -> bool:
        try:
            return requests.get(self.api(name) + "/readiness", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def observe(self) -> Observation:
        pods = tuple(
            PodView(name, p.index - 1, self.revision[name], self.ready(name))
            for name, p in self.ports.items()
        )
        cluster, error = None, "no controller answered"
        for pod in sorted(pods, key=lambda p: not p.ready):
            try:
                resp = requests.get(self.api(pod.name) + "/cluster", timeout=1)
                if resp.status_code == 200:
                    cluster = ClusterView.from_api(resp.json())
                    break
                error = f"{pod.name}: HTTP {resp.status_code}"
            except (requests.RequestException, ValueError) as exc:
                error = f"{pod.name}: {type(exc).__name__}"
        return Observation("node", NEW, len(pods), pods, cluster, cluster_error=error)

    def delete(self, pod: str) -> None:
        """A pod deletion: the node's processes stop (SIGTERM first, as the kubelet does)
        and start again on the new revision."""
        self.deleted.append(pod)
        self.h.c.stop_node(pod)
        self.revision[pod] = NEW
        self.h.c.start_node(self.ports[pod])

    def switchover(self, o: Observation, source: str, target: str) -> tuple[int, str]:
        resp = requests.post(
            self.api(source) + "/switchover",
            json={"to": target},
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=5,
        )
        self.switchovers.append((source, target, resp.status_code))
        return resp.status_code, resp.text


class Watch:
    """Every 0.1 s: which nodes accept writes, and who leads (from Consul)."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.max_writable: tuple[int, list[str]] = (0, [])
        self.leaders: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watch", daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            writable = self.h.writable_nodes()
            if len(writable) > self.max_writable[0]:
                self.max_writable = (len(writable), writable)
            try:
                leader = self.h.c.raw_cluster().leader
            except Exception:
                leader = None
            if leader is not None and (not self.leaders or self.leaders[-1] != leader.name):
                self.leaders.append(leader.name)
            self._stop.wait(0.1)


@pytest.mark.timeout(900)
def test_rollout_restarts_every_node_with_exactly_one_switchover(cluster: Harness) -> None:
    first = cluster.leader().name
    target = LocalStatefulSet(cluster)
    replicas = sorted((n for n in target.ports if n != first), key=lambda n: -target.ports[n].index)
    with Writer(cluster.writer_dsn(), max_seconds=600) as writer, Watch(cluster) as watch:
        time.sleep(1.0)
        started = time.monotonic()
        rc = Rollout(
            target, pod_timeout=120, switchover_timeout=60, settle_timeout=120, poll=0.25
        ).run()
        took = time.monotonic() - started
        time.sleep(1.5)
    assert rc == 0, "the rollout failed: see its log lines above"
    last = cluster.leader().name
    missing = lost_writes(cluster.node_dsn(last), writer.result.acked)
    print(
        f"rollout of {len(target.ports)} nodes in {took:.1f}s: restarted {target.deleted}, "
        f"switchovers {target.switchovers}, leaders {watch.leaders}; write outage "
        f"{writer.result.outage_after(started):.2f}s at most (gaps > 0.05 s: "
        f"{[round(g, 2) for at, g in writer.result.gaps if at + g >= started]}), "
        f"{len(writer.result.acked)} acknowledged, {len(missing)} lost"
    )
    assert target.deleted == [*replicas, first], "replicas first (highest first), primary last"
    assert all(rev == NEW for rev in target.revision.values())
    assert [(s, t) for s, t, code in target.switchovers if code == 202] == [(first, last)]
    assert watch.leaders == [first, last], f"exactly one leader change: {watch.leaders}"
    assert watch.max_writable[0] <= 1, f"two writable primaries at once: {watch.max_writable}"
    assert missing == []
    assert cluster.c.is_healthy(3)
    # A second run finds nothing to do.
    assert Rollout(target, settle_timeout=30, poll=0.25).run() == 0
    assert len(target.deleted) == 3
