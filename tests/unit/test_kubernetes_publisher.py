"""The Kubernetes publisher against a recorded Kubernetes API conversation.

A tiny real HTTP server on 127.0.0.1 answers with responses shaped like the
API server's (objects, lists, Status errors) and records every request; the
publisher talks to it through lightkube exactly as it would in a pod. The
tests assert the exact method/path/body sequence, retries with backoff, and
that every call is one the chart's Role grants (``API_CALLS``).
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from lightkube import KubeConfig
from lightkube.config.models import Cluster, User
from tests.helpers import poll, poll_value

from postgres_ras.config import PublisherSettings
from postgres_ras.controller.kubernetes import (
    API_CALLS,
    Backoff,
    KubeApi,
    KubernetesPublisher,
    make_kubernetes_publisher,
    parse_selector,
)
from postgres_ras.controller.sweep import LeaderView
from postgres_ras.errors import ConfigError

NS = "db"
SELECTOR = "app.kubernetes.io/instance=pg,app.kubernetes.io/component=database"


def pod(name: str, labels: dict[str, str] | None = None, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": NS,
        "uid": f"uid-{name}",
        "resourceVersion": "4711",
        "creationTimestamp": "2026-01-01T00:00:00Z",
        "labels": {
            "app.kubernetes.io/instance": "pg",
            "app.kubernetes.io/component": "database",
            **(labels or {}),
        },
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:05:00Z"
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": meta,
        "spec": {"containers": [{"name": "postgres", "image": "pgras/postgres:1"}]},
        "status": {"phase": "Running", "podIP": "10.0.0.7"},
    }


def pod_list(*items: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": "4712"},
        "items": list(items),
    }


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


EVENT = {
    "kind": "Event",
    "apiVersion": "v1",
    "metadata": {"name": "pg-1.17a2b3c4d5e6f708", "namespace": NS, "resourceVersion": "4713"},
    "involvedObject": {"kind": "Pod", "namespace": NS, "name": "pg-1", "apiVersion": "v1"},
    "reason": "Promoted",
    "message": "x",
    "type": "Normal",
    "count": 1,
}
STATEFULSET = {
    "kind": "StatefulSet",
    "apiVersion": "apps/v1",
    "metadata": {"name": "pg", "namespace": NS},
    "spec": {
        "replicas": 2,
        "serviceName": "pg-hl",
        "selector": {"matchLabels": {"app.kubernetes.io/instance": "pg"}},
        "template": {"metadata": {}, "spec": {"containers": [{"name": "postgres"}]}},
    },
}

ROUTES = [
    (re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)$"), "", "pods", True),
    (re.compile(r"^/api/v1/namespaces/([^/]+)/pods$"), "", "pods", False),
    (re.compile(r"^/api/v1/namespaces/([^/]+)/events$"), "", "events", False),
    (
        re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/statefulsets/([^/]+)$"),
        "apps",
        "statefulsets",
        True,
    ),
]
VERBS = {("GET", True): "get", ("GET", False): "list", ("PATCH", True): "patch"}
VERBS |= {("DELETE", True): "delete", ("POST", False): "create", ("PUT", True): "update"}


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    content_type: str | None
    at: float
    authorization: str | None = None

    @property
    def api_call(self) -> tuple[str, str, str]:
        for pattern, group, resource, named in ROUTES:
            if pattern.match(self.path):
                return (group, resource, VERBS[(self.method, named)])
        raise AssertionError(f"not a Kubernetes API path: {self.method} {self.path}")


@dataclass
class RecordedApi:
    """Answers (method, path) from queued responses, else from defaults; records requests."""

    defaults: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)
    queued: dict[tuple[str, str], list[tuple[int, Any]]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, method: str, path: str, code: int, body: Any) -> None:
        self.defaults[(method, path)] = (code, body)

    def queue(self, method: str, path: str, *responses: tuple[int, Any]) -> None:
        self.queued.setdefault((method, path), []).extend(responses)

    def handle(
        self, method: str, raw_path: str, body: bytes, ctype: str | None, auth: str | None
    ) -> tuple[int, Any]:
        url = urlsplit(raw_path)
        call = Call(
            method,
            url.path,
            parse_qs(url.query),
            json.loads(body) if body else None,
            ctype,
            time.monotonic(),
            auth,
        )
        with self.lock:
            self.calls.append(call)
            queue = self.queued.get((method, url.path))
            if queue:
                return queue.pop(0)
        if self.delay:
            time.sleep(self.delay)
        code, body = self.defaults.get(
            (method, url.path), (404, status(404, "NotFound", f"{url.path} not found"))
        )
        selector = call.query.get("labelSelector")
        if method == "GET" and code == 200 and selector and body.get("kind", "").endswith("List"):
            # Filter as the API server does (equality terms, which is all the client sends).
            wanted = dict(t.split("=", 1) for t in selector[0].split(","))
            items = [
                i
                for i in body["items"]
                if all(i["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())
            ]
            body = {**body, "items": items}
        return code, body

    def sequence(self) -> list[tuple[str, str]]:
        with self.lock:
            return [(c.method, c.path) for c in self.calls]

    def wait_calls(self, n: int, timeout: float = 5.0) -> list[Call]:
        def enough() -> list[Call]:
            with self.lock:
                return list(self.calls) if len(self.calls) >= n else []

        return poll_value(
            f"{n} API calls", enough, timeout, 0.01, retry_on=(), detail=self.sequence
        )


@pytest.fixture
def api() -> Iterator[tuple[RecordedApi, str]]:
    recorded = RecordedApi()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            code, body = recorded.handle(
                self.command,
                self.path,
                self.rfile.read(length),
                self.headers.get("Content-Type"),
                self.headers.get("Authorization"),
            )
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _serve

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorded, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


TOKEN = "sa-token-for-tests"
FAST = Backoff(0.05, 0.4)


def kube_config(url: str, namespace: str | None = NS) -> KubeConfig:
    # What a pod's service account gives: the server and a bearer token.
    return KubeConfig.from_one(
        cluster=Cluster(server=url), user=User(token=TOKEN), namespace=namespace
    )


def make(
    url: str,
    pod_name: str = "pg-1",
    backoff: Backoff = FAST,
    resync: float = 10.0,
    **settings: Any,
) -> KubernetesPublisher:
    s = PublisherSettings(kind="kubernetes", namespace=NS, pod_selector=SELECTOR, **settings)
    kube = KubeApi(kube_config(url), NS, timeout=2.0)
    return KubernetesPublisher(s, pod_name, kube, backoff=backoff, resync=resync)


@pytest.fixture
def publisher_factory() -> Iterator[Callable[..., KubernetesPublisher]]:
    made: list[KubernetesPublisher] = []

    def factory(*args: Any, **kwargs: Any) -> KubernetesPublisher:
        p = make(*args, **kwargs)
        made.append(p)
        return p

    yield factory
    for p in made:
        p.close(timeout=1.0)


POD1 = f"/api/v1/namespaces/{NS}/pods/pg-1"
POD0 = f"/api/v1/namespaces/{NS}/pods/pg-0"
PODS = f"/api/v1/namespaces/{NS}/pods"
EVENTS = f"/api/v1/namespaces/{NS}/events"


def assert_within_role(calls: list[Call]) -> None:
    used = {c.api_call for c in calls}
    assert used <= API_CALLS, f"calls outside the chart's Role: {used - API_CALLS}"


def test_replica_label_is_patched_once_then_removed(
    api: tuple[RecordedApi, str], publisher_factory: Callable[..., KubernetesPublisher]
) -> None:
    recorded, url = api
    recorded.answer("PATCH", POD1, 200, pod("pg-1", {"role": "replica"}))
    p = publisher_factory(url)
    for _ in range(5):  # every HA cycle publishes; only a change reaches the API
        p.publish("replica")
    recorded.wait_calls(1)
    time.sleep(0.2)
    p.publish("none")
    calls = recorded.wait_calls(2)
    time.sleep(0.2)
    assert recorded.sequence() == [("PATCH", POD1), ("PATCH", POD1)]
    assert calls[0].body == {"metadata": {"labels": {"role": "replica"}}}
    assert calls[1].body == {"metadata": {"labels": {"role": None}}}
    assert calls[0].content_type == "application/merge-patch+json"
    assert calls[0].query.get("fieldManager") == ["pgras-controller"]
    assert calls[0].authorization == f"Bearer {TOKEN}"  # the service account's token
    assert_within_role(calls)


def test_promotion_takes_stale_primary_labels_off_other_pods(
    api: tuple[RecordedApi, str], publisher_factory: Callable[..., KubernetesPublisher]
) -> None:
    recorded, url = api
    recorded.answer("PATCH", POD1, 200, pod("pg-1", {"role": "primary"}))
    recorded.answer("PATCH", POD0, 200, pod("pg-0"))
    recorded.answer(
        "GET",
        PODS,
        200,
        pod_list(pod("pg-0", {"role": "primary"}), pod("pg-1", {"role": "primary"})),
    )
    recorded.answer("POST", EVENTS, 201, EVENT)
    p = publisher_factory(url, label="role")
    p.publish("primary")
    calls = recorded.wait_calls(4)
    assert [(c.method, c.path) for c in calls[:4]] == [
        ("PATCH", POD1),
        ("GET", PODS),
        ("PATCH", POD0),
        ("POST", EVENTS),
    ]
    assert calls[0].body == {"metadata": {"labels": {"role": "primary"}}}
    assert calls[1].query["labelSelector"] == [SELECTOR + ",role=primary"]
    assert calls[2].body == {"metadata": {"labels": {"role": None}}}
    event = calls[3].body
    assert event["involvedObject"]["name"] == "pg-1" and event["involvedObject"]["kind"] == "Pod"
    assert event["reason"] == "StalePrimaryLabel" and "pg-0" in event["message"]
    assert event["source"] == {"component": "pgras-controller"}
    assert_within_role(calls)


def test_the_leader_reapplies_its_own_label_if_it_was_taken_off(
    api: tuple[RecordedApi, str], publisher_factory: Callable[..., KubernetesPublisher]
) -> None:
    recorded, url = api
    recorded.answer("PATCH", POD1, 200, pod("pg-1", {"role": "primary"}))
    recorded.queue("GET", PODS, (200, pod_list()))  # first sweep: our label is gone
    recorded.answer("GET", PODS, 200, pod_list(pod("pg-1", {"role": "primary"})))
    p = publisher_factory(url, resync=0.1)
    p.view = lambda: LeaderView(leading=True, members=frozenset({"pg-1"}))
    p.publish("primary")
    recorded.wait_calls(4)
    assert recorded.sequence()[:4] == [
        ("PATCH", POD1),
        ("GET", PODS),
        ("PATCH", POD1),
        ("GET", PODS),
    ]
    assert recorded.calls[2].body == {"metadata": {"labels": {"role": "primary"}}}


def test_a_former_leader_never_strips_labels(
    api: tuple[RecordedApi, str], publisher_factory: Callable[..., KubernetesPublisher]
) -> None:
    recorded, url = api
    recorded.answer("PATCH", POD1, 200, pod("pg-1", {"role": "primary"}))
    recorded.answer("GET", PODS, 200, pod_list(pod("pg-0", {"role": "primary"})))
    p = publisher_factory(url, resync=0.05)
    p.view = lambda: LeaderView(leading=False, members=frozenset({"pg-0", "pg-1"}))
    p.publish("primary")  # still wished by the last cycle, but the lock is gone
    time.sleep(0.5)
    assert recorded.sequence() == [("PATCH", POD1)]


def test_failed_patch_is_retried_with_growing_backoff(
    api: tuple[RecordedApi, str],
    publisher_factory: Callable[..., KubernetesPublisher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorded, url = api
    recorded.queue(
        "PATCH",
        POD1,
        (500, status(500, "InternalError", "etcdserver: request timed out")),
        (500, status(500, "InternalError", "etcdserver: request timed out")),
        (409, status(409, "Conflict", "the object has been modified")),
    )
    recorded.answer("PATCH", POD1, 200, pod("pg-1", {"role": "replica"}))
    caplog.set_level(logging.INFO, logger="postgres_ras.controller.kubernetes")
    p = publisher_factory(url, backoff=Backoff(0.1, 1.0))
    p.publish("replica")
    calls = recorded.wait_calls(4)
    time.sleep(0.3)
    assert recorded.sequence() == [("PATCH", POD1)] * 4  # 3 failures, then success, then quiet
    gaps = [b.at - a.at for a, b in itertools.pairwise(calls)]
    assert gaps[0] >= 0.09 and gaps[1] >= 0.19 and gaps[2] >= 0.39, gaps
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # One line per distinct failure, not one per attempt.
    assert len(warnings) == 2, warnings
    assert "HTTP 500" in warnings[0] and "HTTP 409" in warnings[1]
    assert any("role=replica" in r.getMessage() for r in caplog.records)
    assert_within_role(calls)


def test_publish_never_blocks_on_a_slow_api_server(
    api: tuple[RecordedApi, str], publisher_factory: Callable[..., KubernetesPublisher]
) -> None:
    recorded, url = api
    recorded.delay = 1.5
    recorded.answer("PATCH", POD1, 200, pod("pg-1"))
    p = publisher_factory(url)
    started = time.monotonic()
    for role in ("replica", "none", "replica", "primary", "replica") * 20:
        p.publish(role)
        p.event("Fenced", f"x {role}", warning=True)
    assert time.monotonic() - started < 0.1


def test_events_are_created_and_a_refused_one_is_dropped(
    api: tuple[RecordedApi, str], publisher_factory: Callable[..., KubernetesPublisher]
) -> None:
    recorded, url = api
    recorded.queue("POST", EVENTS, (403, status(403, "Forbidden", "events is forbidden")))
    recorded.answer("POST", EVENTS, 201, EVENT)
    p = publisher_factory(url)
    p.event("Fenced", "the agent stopped postgres: lease expired", warning=True)
    p.event("Promoted", "promoted to primary: no leader")
    p.event("Promoted", "promoted to primary: no leader")  # a repeat adds nothing
    calls = recorded.wait_calls(2)
    time.sleep(0.3)
    assert recorded.sequence() == [("POST", EVENTS)] * 2
    assert calls[0].body["reason"] == "Fenced" and calls[0].body["type"] == "Warning"
    body = calls[1].body
    assert body["reason"] == "Promoted" and body["type"] == "Normal"
    assert body["metadata"]["generateName"] == "pg-1."
    assert body["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": "pg-1",
        "namespace": NS,
    }
    assert_within_role(calls)


def test_leader_deletes_the_pod_of_a_member_gone_too_long(
    api: tuple[RecordedApi, str], publisher_factory: Callable[..., KubernetesPublisher]
) -> None:
    recorded, url = api
    recorded.answer("PATCH", POD1, 200, pod("pg-1", {"role": "primary"}))
    listing = pod_list(pod("pg-0"), pod("pg-1", {"role": "primary"}), pod("pg-2", deleting=True))
    recorded.answer("GET", PODS, 200, listing)
    recorded.answer("DELETE", POD0, 200, pod("pg-0", deleting=True))
    recorded.answer("POST", EVENTS, 201, EVENT)
    p = publisher_factory(url, resync=0.1, delete_unreachable_after=0.3)
    p.view = lambda: LeaderView(leading=True, members=frozenset({"pg-1"}))
    p.publish("primary")
    poll(f"DELETE {POD0}", lambda: ("DELETE", POD0) in recorded.sequence(), 5, 0.02, retry_on=())
    calls = list(recorded.calls)
    deletes = [c for c in calls if c.method == "DELETE"]
    assert [c.path for c in deletes] == [POD0]  # never ours, never one already terminating
    assert deletes[0].query["gracePeriodSeconds"] == ["0"]
    first_list = next(c for c in calls if c.method == "GET")
    assert deletes[0].at - first_list.at >= 0.29  # only after delete_unreachable_after
    assert_within_role(calls)


def test_no_deletion_while_membership_is_unknown(
    api: tuple[RecordedApi, str], publisher_factory: Callable[..., KubernetesPublisher]
) -> None:
    recorded, url = api
    recorded.answer("PATCH", POD1, 200, pod("pg-1", {"role": "primary"}))
    recorded.answer("GET", PODS, 200, pod_list(pod("pg-0"), pod("pg-1", {"role": "primary"})))
    p = publisher_factory(url, resync=0.05, delete_unreachable_after=0.1)
    p.view = lambda: LeaderView(leading=True, members=None)  # Consul unreachable
    p.publish("primary")
    time.sleep(0.8)
    assert all(m != "DELETE" for m, _ in recorded.sequence())
    assert ("GET", PODS) in recorded.sequence()


def test_staying_members_reads_the_statefulset(
    api: tuple[RecordedApi, str], publisher_factory: Callable[..., KubernetesPublisher]
) -> None:
    recorded, url = api
    sts_path = f"/apis/apps/v1/namespaces/{NS}/statefulsets/pg"
    recorded.answer("GET", sts_path, 200, STATEFULSET)
    p = publisher_factory(url, pod_name="pg-2")
    assert p.staying_members(["pg-0", "pg-1", "pg-2", "other"]) == ["pg-0", "pg-1", "other"]
    assert recorded.sequence() == [("GET", sts_path)]
    recorded.answer("GET", sts_path, 500, status(500, "InternalError", "boom"))
    assert p.staying_members(["pg-0", "pg-2"]) == ["pg-0", "pg-2"]  # unknown: all may stay
    assert_within_role(recorded.calls)


def test_delete_is_the_only_opt_in_call() -> None:
    from postgres_ras.controller.kubernetes import OPT_IN_CALLS

    assert {("", "pods", "delete")} == OPT_IN_CALLS
    assert OPT_IN_CALLS <= API_CALLS


def test_selector_parsing() -> None:
    assert parse_selector("a=b, c=d") == {"a": "b", "c": "d"}
    assert parse_selector(None) == {}
    with pytest.raises(ConfigError, match="PGRAS_PUBLISHER__POD_SELECTOR"):
        parse_selector("a!=b")
    with pytest.raises(ConfigError, match="key=value"):
        parse_selector("a")


def test_namespace_and_pod_name_defaults(api: tuple[RecordedApi, str]) -> None:
    _, url = api
    cases = [
        (PublisherSettings(kind="kubernetes"), "x", "pg-0", "x"),  # the service account's
        (PublisherSettings(kind="kubernetes"), None, "pg-0", "default"),  # as kubectl
        (PublisherSettings(kind="kubernetes", namespace="n", pod_name="p"), "x", "p", "n"),
    ]
    for settings, kube_ns, pod_name, namespace in cases:
        p = make_kubernetes_publisher(settings, "pg-0", kube_config(url, kube_ns))
        try:
            assert (p.pod, p.api.namespace) == (pod_name, namespace)
        finally:
            p.close(0.5)


def test_no_service_account_and_no_kubeconfig(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from postgres_ras.controller.kubernetes import load_kube_config

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="service account"):
        load_kube_config()
