"""The Kubernetes role publisher: the role label on this pod, events, and the leader's sweeps.

Client: lightkube. It is small (one pure-Python package plus generated
models), fully typed (mypy strict passes through it), offers the same API
sync and async, and speaks HTTP through httpx, whose timeouts we bound; the
official ``kubernetes`` package is ~10x larger, untyped and builds its
own urllib3 pools. In a pod it reads the service account (in-cluster
config); elsewhere ``KUBECONFIG``; tests hand it an explicit server.

Guarantees:
- ``publish()`` and ``event()`` never block and never raise: they hand the
  latest wish to one background thread, which calls the API server with
  bounded timeouts and retries with capped exponential backoff. The HA loop
  is never slowed by the API server.
- One log line per change of the published role, one per new API failure.
- Only the calls in ``API_CALLS`` are ever made, so the chart's Role can
  grant exactly these (the chart test compares the two).
- When this pod becomes primary it takes the primary label off every other
  pod matching ``pod_selector``, and keeps doing so while it leads, so a dead
  node's stale label never routes writes to two pods.

Not guaranteed: labels are routing, not safety. Safety rests on the Consul
lock and the agent's fence; a stale label can only send clients to a
postgres that refuses writes (fenced or read-only).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx2
from lightkube import ApiError, Client, KubeConfig
from lightkube.config.kubeconfig import SingleConfig
from lightkube.core.exceptions import ConfigError as LightkubeConfigError
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import StatefulSet
from lightkube.resources.core_v1 import Event, Pod
from lightkube.types import PatchType

from postgres_ras.config import PublisherSettings
from postgres_ras.controller.sweep import LeaderView, Sweeper
from postgres_ras.errors import ConfigError

log = logging.getLogger(__name__)


def ordinal(statefulset: str, pod: str) -> int | None:
    """``<statefulset>-<n>`` -> n; None for a name of another shape."""
    prefix = statefulset + "-"
    rest = pod[len(prefix) :] if pod.startswith(prefix) else ""
    return int(rest) if rest.isdigit() else None


# httpx2 logs every request at INFO; the role changes are what the log is for.
logging.getLogger("httpx2").setLevel(logging.WARNING)

# Every (api group, resource, verb) this module calls; the chart's Role grants exactly these.
# ("", "pods", "delete") is needed only with publisher.delete_unreachable_after > 0.
API_CALLS: frozenset[tuple[str, str, str]] = frozenset(
    {
        ("", "pods", "patch"),  # the role label on this pod; stripping stale primary labels
        ("", "pods", "list"),  # the cluster's pods (pod_selector), by the leader
        ("", "pods", "delete"),  # opt-in: the pod of a member unreachable for too long
        ("", "events", "create"),  # promotion, demotion, fencing, rewind, clone
        ("apps", "statefulsets", "get"),  # on shutdown: which members stay after a scale-down
    }
)
OPT_IN_CALLS: frozenset[tuple[str, str, str]] = frozenset({("", "pods", "delete")})

COMPONENT = "pgras-controller"
_LABEL_KEY = re.compile(r"^([a-z0-9.-]+/)?[A-Za-z0-9._-]+$")
ROLES = ("primary", "replica")


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff: first, first*2, ... up to cap seconds."""

    first: float = 0.5
    cap: float = 10.0

    def delay(self, failures: int) -> float:
        return float(min(self.cap, self.first * 2 ** max(0, failures - 1)))


def parse_selector(selector: str | None) -> dict[str, str]:
    """'a=b,c=d' -> {'a': 'b', 'c': 'd'}; only equality terms, which is what the chart sets."""
    result: dict[str, str] = {}
    for term in (selector or "").split(","):
        term = term.strip()
        if not term:
            continue
        key, sep, value = term.partition("=")
        if not sep or not _LABEL_KEY.match(key.strip()) or value.startswith("="):
            raise ConfigError(
                f"publisher.pod_selector: {term!r} is not a 'key=value' term "
                "(only equality terms separated by commas; PGRAS_PUBLISHER__POD_SELECTOR)"
            )
        result[key.strip()] = value.strip()
    return result


def load_kube_config(explicit: KubeConfig | None = None) -> KubeConfig:
    """In-cluster service account first, then KUBECONFIG / ~/.kube/config."""
    if explicit is not None:
        return explicit
    try:
        return KubeConfig.from_env()
    except (LightkubeConfigError, KeyError, OSError) as exc:
        raise ConfigError(
            "publisher.kind 'kubernetes' needs the pod's service account "
            "(automountServiceAccountToken) or a KUBECONFIG file: "
            f"{exc or type(exc).__name__}"
        ) from None


class KubeApi:
    """The few API calls we make, each bounded by the client timeout. Raises ApiError/HTTPError."""

    def __init__(self, config: KubeConfig | SingleConfig, namespace: str, timeout: float) -> None:
        self.namespace = namespace
        self.client = Client(
            config, namespace=namespace, timeout=httpx2.Timeout(timeout), field_manager=COMPONENT
        )

    def set_label(self, pod: str, label: str, value: str | None) -> None:
        # A JSON merge patch: null removes the label, and nothing else of the pod is touched.
        self.client.patch(
            Pod, pod, {"metadata": {"labels": {label: value}}}, patch_type=PatchType.MERGE
        )

    def list_pods(self, labels: dict[str, str]) -> list[Pod]:
        return list(self.client.list(Pod, labels=labels))  # type: ignore[arg-type,type-var]

    def delete_pod(self, pod: str) -> None:
        # Grace 0: a pod on an unreachable node never confirms a graceful stop, and the
        # StatefulSet creates the replacement only once the old object is gone.
        self.client.delete(Pod, pod, grace_period=0)

    def event(self, pod: str, uid: str | None, reason: str, message: str, warning: bool) -> None:
        now = datetime.now(UTC)
        self.client.create(
            Event(
                metadata=ObjectMeta(generateName=f"{pod}.", namespace=self.namespace),
                involvedObject=ObjectReference(
                    apiVersion="v1", kind="Pod", name=pod, namespace=self.namespace, uid=uid
                ),
                reason=reason,
                message=message[:1024],
                type="Warning" if warning else "Normal",
                source=EventSource(component=COMPONENT),
                firstTimestamp=now,
                lastTimestamp=now,
                count=1,
            )
        )

    def statefulset_replicas(self, name: str) -> int | None:
        sts = self.client.get(StatefulSet, name)
        return sts.spec.replicas if sts.spec is not None else None

    def close(self) -> None:
        self.client.close()


def _describe(exc: Exception) -> str:
    if isinstance(exc, ApiError):
        return f"HTTP {exc.status.code}: {exc.status.message or exc.status.reason}"
    return f"{type(exc).__name__}: {exc}"


def _permanent(exc: Exception) -> bool:
    """4xx other than conflict/throttling will not heal by retrying the same request."""
    code = exc.status.code if isinstance(exc, ApiError) else None
    return code is not None and 400 <= code < 500 and code not in (409, 429)


class KubernetesPublisher:
    """RolePublisher for Kubernetes: one background thread does every API call."""

    def __init__(
        self,
        settings: PublisherSettings,
        pod: str,
        api: KubeApi,
        backoff: Backoff = Backoff(),
        resync: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.pod = pod
        self.api = api
        self.backoff = backoff
        self.resync = resync
        self.clock = clock
        self.selector = parse_selector(settings.pod_selector)
        self.sweeper = Sweeper(pod, settings.delete_unreachable_after, clock)
        self.view: Callable[[], LeaderView | None] = lambda: None
        self._cond = threading.Condition()
        self._desired: str | None = None  # label value wanted; None = no label
        self._wanted = False  # publish() was called at least once
        self._applied: tuple[str | None] | None = None  # (value,) once patched
        self._events: deque[tuple[str, str, bool]] = deque(maxlen=50)
        self._recent: dict[tuple[str, str], float] = {}
        self._failures = 0
        self._last_error = ""
        self._next_sweep = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="k8s-publisher", daemon=True)
        self._thread.start()

    # --- called by the HA loop: never blocks ------------------------------------------
    def publish(self, role: str) -> None:
        value = role if role in ROLES else None
        with self._cond:
            if not self._wanted or value != self._desired:
                self._wanted = True
                self._desired = value
                self._cond.notify()

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        now = self.clock()
        key = (reason, message)
        with self._cond:
            # The same event again within 10 minutes adds nothing (e.g. a fence still shown).
            if now - self._recent.get(key, -1e9) < 600:
                return
            self._recent = {k: t for k, t in self._recent.items() if now - t < 600}
            self._recent[key] = now
            self._events.append((reason, message, warning))
            self._cond.notify()

    # --- shutdown helpers ------------------------------------------------------------------
    def staying_members(self, names: list[str]) -> list[str]:
        """Members that survive a StatefulSet scale-down under way (all of them if unknown).

        Pods are named <statefulset>-<ordinal>; ordinals >= spec.replicas are being removed.
        """
        base = self.pod.rpartition("-")[0]
        if ordinal(base, self.pod) is None:
            return names
        try:
            replicas = self.api.statefulset_replicas(base)
        except (ApiError, httpx2.HTTPError) as exc:
            log.warning(
                "cannot read StatefulSet %s (%s): any member may stay", base, _describe(exc)
            )
            return names
        if replicas is None:
            return names
        return [n for n in names if (k := ordinal(base, n)) is None or k < replicas]

    def close(self, timeout: float = 3.0) -> None:
        """Stop the thread after a last attempt at what is pending (bounded by ``timeout``)."""
        self._stop.set()
        with self._cond:
            self._cond.notify()
        self._thread.join(timeout)
        if not self._thread.is_alive():  # else a request is in flight: the process exit ends it
            self.api.close()

    # --- the background thread ---------------------------------------------------------
    def _due(self) -> bool:
        return (
            (self._wanted and self._applied != (self._desired,))
            or bool(self._events)
            or (self._desired == "primary" and self.clock() >= self._next_sweep)
        )

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._due() and not self._stop.is_set():
                    wait = self._next_sweep - self.clock() if self._desired == "primary" else None
                    self._cond.wait(None if wait is None else max(0.05, wait))
                if self._stop.is_set() and not self._due():
                    return
                desired, wanted = self._desired, self._wanted
                event = self._events[0] if self._events else None
            sending_event = False
            try:
                if wanted and self._applied != (desired,):
                    self._patch_own(desired)
                elif event is not None:
                    sending_event = True
                    self._send_event(event)
                else:
                    self._leader_sweep()
                self._recovered()
            except (ApiError, httpx2.HTTPError) as exc:
                if sending_event and event is not None and _permanent(exc):
                    self._pop_event(event)  # a refused event will be refused again: drop it
                self._failed(exc)
                if self._stop.wait(self.backoff.delay(self._failures)):
                    return

    def _patch_own(self, value: str | None) -> None:
        self.api.set_label(self.pod, self.settings.label, value)
        before = self._applied
        self._applied = (value,)
        shown = f"{self.settings.label}={value}" if value else f"no {self.settings.label} label"
        log.info("pod %s now has %s", self.pod, shown)
        if value == "primary" and before != (value,):
            self._next_sweep = 0.0  # take stale primary labels off the others at once

    def _send_event(self, event: tuple[str, str, bool]) -> None:
        reason, message, warning = event
        self.api.event(self.pod, None, reason, message, warning)
        self._pop_event(event)

    def _pop_event(self, event: tuple[str, str, bool]) -> None:
        with self._cond:
            if self._events and self._events[0] == event:
                self._events.popleft()

    def _leader_sweep(self) -> None:
        label = self.settings.label
        view = self.view()
        if view is not None and not view.leading:
            # Our role changed since this sweep was due: a former leader must never strip
            # the new leader's label (the next publish() sets ours to what we are now).
            self._next_sweep = self.clock() + self.resync
            return
        labelled = [
            p.metadata.name
            for p in self.api.list_pods({**self.selector, label: "primary"})
            if p.metadata is not None and p.metadata.name
        ]
        if self.pod not in labelled and self._desired == "primary":
            # Someone took our label off (kubectl, or a former leader racing us): re-apply.
            log.warning("pod %s lost its %s=primary label; applying it again", self.pod, label)
            self._applied = None
        for name in labelled:
            if name != self.pod:
                self.api.set_label(name, label, None)
                log.warning("took the stale %s=primary label off pod %s", label, name)
                self.event("StalePrimaryLabel", f"removed {label}=primary from pod {name}")
        if self.settings.delete_unreachable_after > 0:
            self._delete_unreachable()
        # Only after success: a failed sweep is retried with backoff, not after resync.
        self._next_sweep = self.clock() + self.resync

    def _delete_unreachable(self) -> None:
        view = self.view()
        pods = self.api.list_pods(self.selector)
        for name in self.sweeper.due(view, pods):
            self.api.delete_pod(name)
            self.sweeper.deleted(name)
            message = (
                f"deleted pod {name}: not a cluster member for over "
                f"{self.settings.delete_unreachable_after:.0f}s (its lease had expired)"
            )
            log.warning("%s", message)
            self.event("DeletedUnreachableMember", message, warning=True)

    def _failed(self, exc: Exception) -> None:
        self._failures += 1
        text = _describe(exc)
        if text != self._last_error:
            log.warning(
                "Kubernetes API call failed (%s); retrying with backoff up to %.0fs",
                text,
                self.backoff.cap,
            )
            self._last_error = text

    def _recovered(self) -> None:
        if self._failures:
            log.info("Kubernetes API reachable again after %d failed attempts", self._failures)
        self._failures = 0
        self._last_error = ""


def make_kubernetes_publisher(
    settings: PublisherSettings, member: str, kube_config: KubeConfig | None = None
) -> KubernetesPublisher:
    config = load_kube_config(kube_config)
    try:
        single = config.get()
    except LightkubeConfigError as exc:
        raise ConfigError(f"publisher.kind 'kubernetes': bad kubeconfig: {exc}") from None
    # In a pod the service account names the namespace; a kubeconfig without one means
    # "default", as for kubectl. publisher.namespace (downward API) wins over both.
    namespace = settings.namespace or (single.namespace if single else "default")
    api = KubeApi(config, namespace, timeout=5.0)
    return KubernetesPublisher(settings, settings.pod_name or member, api)
