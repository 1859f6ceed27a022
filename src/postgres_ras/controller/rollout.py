"""The orchestrated rollout of the database StatefulSet: every pod restarted, one switchover.

The chart sets the StatefulSet's ``updateStrategy`` to ``OnDelete``, so a
``helm upgrade`` changes the pod template without restarting anything; its
post-upgrade (and post-rollback) hook Job then runs
``python3 -m postgres_ras.controller.rollout``, which restarts the pods in the
order that costs one switchover at most:

1. the outdated replicas, one at a time, highest ordinal first, each time
   waiting until the new pod is Ready on the update revision and its controller
   is listed as a running replica;
2. then, if the primary's pod is outdated, ``POST /switchover`` to an updated
   running replica, a wait until that member leads, and the deletion of the old
   primary's pod (a replica by then: its SIGTERM handover finds it does not lead
   and does nothing), waiting for it to come back as a replica.

A one-instance cluster has no replica to switch over to: its pod is deleted as
it is (no failover either: the lone controller releases the lock on SIGTERM and
takes it again when the new pod starts), and writes stop until the pod is back.

The logic is a pure planner (``plan``: observation in, one step out) and a thin
driver (``Rollout``) that observes, does the step, and waits, bounded, for its
effect. Guarantees:
- Idempotent: the planner looks only at what is there now (each pod's
  ``controller-revision-hash`` label against the StatefulSet's
  ``status.updateRevision``, readiness, the controllers' ``GET /cluster``), so a
  re-run (the next ``helm upgrade``) continues where an earlier run stopped.
- A pod is deleted only while the cluster has a leader, no switchover is under
  way, and every pod of the StatefulSet exists and is Ready.
- Every wait is bounded; a timeout ends the run with exit status 1 and one
  message naming the pod and what was awaited. One log line per step, naming the
  pod and why.
Not guaranteed: that nothing else (a failure, an operator) moves leadership while
it runs; each step is planned afresh from what is observed then.

Kubernetes calls: exactly ``API_CALLS`` (the chart's rollout Role grants these).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx2
import requests
from lightkube import ApiError, Client, KubeConfig
from lightkube.resources.apps_v1 import StatefulSet
from lightkube.resources.core_v1 import Pod

from postgres_ras.controller.kubernetes import ordinal
from postgres_ras.lsn import parse_lsn

log = logging.getLogger(__name__)

REVISION_LABEL = "controller-revision-hash"
# Every (api group, resource, verb) the driver calls; the chart's rollout Role grants these.
API_CALLS: frozenset[tuple[str, str, str]] = frozenset(
    {
        ("apps", "statefulsets", "get"),  # spec.replicas, selector, status.updateRevision
        ("", "pods", "list"),  # the StatefulSet's pods: revision label, readiness
        ("", "pods", "delete"),  # one outdated pod at a time
    }
)
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


# --- what the planner sees ------------------------------------------------------------


@dataclass(frozen=True)
class PodView:
    """One pod of the StatefulSet as the Kubernetes API shows it."""

    name: str
    ordinal: int
    revision: str | None  # the controller-revision-hash label
    ready: bool  # condition Ready is True
    terminating: bool = False  # metadata.deletionTimestamp is set


@dataclass(frozen=True)
class MemberView:
    """One member as the controllers' ``GET /cluster`` lists it."""

    name: str
    role: str
    state: str
    lsn: int | None = None
    sync_standby: bool = False
    # /cluster does not list it today; honoured when it does (False = not streaming yet).
    streaming: bool | None = None

    @property
    def running_replica(self) -> bool:
        return self.role == "replica" and self.state == "running" and self.streaming is not False

    @property
    def running_primary(self) -> bool:
        return self.role == "primary" and self.state == "running"


@dataclass(frozen=True)
class ClusterView:
    leader: str | None
    members: Mapping[str, MemberView] = field(default_factory=dict)
    switchover: str | None = None  # "a -> b" while a switchover request is pending
    synchronous_mode: bool = False

    @classmethod
    def from_api(cls, body: object) -> ClusterView:
        """Parse a ``GET /cluster`` answer (raises ValueError on nonsense)."""
        if not isinstance(body, Mapping) or not isinstance(body.get("members"), list):
            raise ValueError("GET /cluster answered without a member list")
        members = {}
        for raw in body["members"]:
            if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str):
                continue
            streaming = raw.get("streaming")
            members[raw["name"]] = MemberView(
                name=raw["name"],
                role=str(raw.get("role", "unknown")),
                state=str(raw.get("state", "unknown")),
                lsn=_lsn(raw.get("lsn")),
                sync_standby=bool(raw.get("sync_standby", False)),
                streaming=None if streaming is None else bool(streaming),
            )
        sw = body.get("switchover")
        leader = body.get("leader")
        return cls(
            leader=leader if isinstance(leader, str) else None,
            members=members,
            switchover=(
                f"{sw.get('from')} -> {sw.get('to') or 'any replica'}"
                if isinstance(sw, Mapping)
                else None
            ),
            synchronous_mode=bool(body.get("synchronous_mode", False)),
        )


def _lsn(value: object) -> int | None:
    if isinstance(value, int):
        return value
    try:
        return parse_lsn(value) if isinstance(value, str) else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Observation:
    statefulset: str
    update_revision: str | None  # status.updateRevision
    replicas: int  # spec.replicas
    pods: tuple[PodView, ...]
    cluster: ClusterView | None  # None: no controller answered GET /cluster
    observed: bool = True  # status.observedGeneration >= metadata.generation
    cluster_error: str = ""

    def pod(self, name: str) -> PodView | None:
        return next((p for p in self.pods if p.name == name), None)

    def member(self, name: str) -> MemberView | None:
        return self.cluster.members.get(name) if self.cluster else None


# --- the steps --------------------------------------------------------------------------


@dataclass(frozen=True)
class Done:
    reason: str


@dataclass(frozen=True)
class Wait:
    """Not safe to act now: ``pod`` (when one is to blame) and what is awaited."""

    pod: str | None
    reason: str

    def describe(self) -> str:
        return f"pod {self.pod}: {self.reason}" if self.pod else self.reason


@dataclass(frozen=True)
class DeletePod:
    pod: str
    reason: str


@dataclass(frozen=True)
class Switchover:
    source: str
    target: str
    reason: str


Step = Done | Wait | DeletePod | Switchover


def plan(o: Observation) -> Step:
    """The next step of the rollout, from what is observed now. Pure."""
    rev = o.update_revision
    if not o.observed or rev is None:
        return Wait(None, f"StatefulSet {o.statefulset}: its new spec is not observed yet")
    outdated = sorted(
        (p for p in o.pods if p.revision != rev), key=lambda p: p.ordinal, reverse=True
    )
    if not outdated:
        return Done(f"all {len(o.pods)} pods run the update revision {rev}")
    # Safety first: a pod is deleted only while every pod is there and Ready.
    for p in sorted(o.pods, key=lambda p: p.ordinal):
        if p.ordinal >= o.replicas:
            return Wait(
                p.name, f"is beyond spec.replicas ({o.replicas}): a scale-down is under way"
            )
    present = {p.ordinal for p in o.pods}
    for n in range(o.replicas):
        if n not in present:
            return Wait(f"{o.statefulset}-{n}", "does not exist yet (the StatefulSet creates it)")
    for p in sorted(o.pods, key=lambda p: p.ordinal):
        if p.terminating:
            return Wait(p.name, "is terminating")
        if not p.ready:
            return Wait(p.name, "is not Ready")
    if o.cluster is None:
        return Wait(None, f"no controller answered GET /cluster ({o.cluster_error or 'no pod'})")
    leader = o.cluster.leader
    if leader is None:
        return Wait(None, "the cluster has no leader")
    if o.cluster.switchover is not None:
        return Wait(leader, f"a switchover is under way ({o.cluster.switchover})")
    leader_pod = o.pod(leader)
    if leader_pod is None:
        return Wait(leader, f"the leader is not a pod of StatefulSet {o.statefulset}")
    leader_member = o.member(leader)
    if leader_member is None or not leader_member.running_primary:
        return Wait(leader, "leads but is not listed as a running primary yet")

    replicas = [p for p in outdated if p.name != leader]
    if replicas:
        p = replicas[0]
        return DeletePod(
            p.name,
            f"replica on revision {p.revision}, update revision {rev}: outdated replicas "
            "restart first, highest ordinal first",
        )
    # Only the primary's pod is outdated.
    if len(o.pods) == 1:
        return DeletePod(
            leader,
            f"primary on revision {p_rev(leader_pod)}, update revision {rev}, and the only "
            "instance: no replica to switch over to, so it restarts as it is (no failover; "
            "writes stop until it is back)",
        )
    sync_only = o.cluster.synchronous_mode
    candidates = []
    for p in o.pods:
        m = o.member(p.name)
        if p.name == leader or p.revision != rev or m is None or not m.running_replica:
            continue
        if sync_only and not m.sync_standby:
            continue
        candidates.append((m.sync_standby, m.lsn if m.lsn is not None else -1, -p.ordinal, p))
    if not candidates:
        what = "synchronous standby" if sync_only else "running replica"
        return Wait(leader, f"is outdated, but no updated {what} to switch over to yet")
    target = max(candidates, key=lambda c: c[:3])[3]
    return Switchover(
        leader,
        target.name,
        f"primary on revision {p_rev(leader_pod)}, update revision {rev}: every replica is "
        f"updated, so leadership moves to {target.name} before {leader}'s pod restarts",
    )


def p_rev(pod: PodView) -> str:
    return pod.revision or "(no revision label)"


def back(o: Observation, pod: str) -> str | None:
    """None once ``pod`` is Ready on the update revision and listed as a running replica
    of a leader (or, leading, as a running primary); else what it is still short of."""
    p = o.pod(pod)
    if p is None:
        return f"pod {pod} does not exist yet"
    if p.terminating:
        return f"pod {pod} is still terminating"
    if p.revision != o.update_revision:
        return f"pod {pod} runs revision {p_rev(p)}, not the update revision {o.update_revision}"
    if not p.ready:
        return f"pod {pod} is not Ready yet"
    m = o.member(pod)
    if m is None:
        return f"pod {pod} is not listed by GET /cluster yet ({o.cluster_error or 'no member'})"
    assert o.cluster is not None  # a member was listed
    if o.cluster.leader is None:
        return f"the cluster to have a leader again (pod {pod} is {m.role}, {m.state})"
    if o.cluster.leader == pod:
        return None if m.running_primary else f"pod {pod} leads but is {m.role}, {m.state}"
    if m.running_replica:
        return None
    return f"pod {pod} is listed as {m.role}, {m.state}, not as a running replica yet"


def leads(o: Observation, target: str) -> str | None:
    """None once ``target`` holds the leader lock and runs as primary; else what is seen."""
    if o.cluster is None:
        return f"no controller answered GET /cluster ({o.cluster_error})"
    if o.cluster.leader != target:
        return f"the leader is still {o.cluster.leader}"
    m = o.member(target)
    if m is not None and m.running_primary:
        return None
    return f"{target} leads but is not listed as a running primary yet"


# --- the driver --------------------------------------------------------------------------


class Unavailable(Exception):
    """An observation failed (Kubernetes API unreachable): a wait counts it as "not yet"."""


class RolloutFailed(Exception):
    """The run stops: the message names the pod and what it waited for."""


class Target(Protocol):
    def observe(self) -> Observation: ...

    def delete(self, pod: str) -> None: ...

    def switchover(self, o: Observation, source: str, target: str) -> tuple[int, str]: ...


class Rollout:
    """Observe, plan, act, wait (bounded) for the effect; until done or a wait times out."""

    def __init__(
        self,
        target: Target,
        pod_timeout: float = 300.0,
        switchover_timeout: float = 60.0,
        settle_timeout: float = 300.0,
        deadline: float | None = None,
        poll: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.target = target
        self.pod_timeout = pod_timeout
        self.switchover_timeout = switchover_timeout
        self.settle_timeout = settle_timeout
        self.poll = poll
        self.clock = clock
        self.sleep = sleep
        self.ends = clock() + deadline if deadline else None
        self.switchovers = 0
        self.deleted: list[str] = []

    def run(self) -> int:
        try:
            log.info("rollout: %s", self._run())
            return 0
        except RolloutFailed as exc:
            log.error("rollout: FAILED: %s (re-run it, e.g. by `helm upgrade`, to go on)", exc)
            return 1

    def _run(self) -> str:
        actions = 0
        while True:
            o = self._observe_until_ok()
            step = plan(o)
            if isinstance(step, Done):
                return (
                    f"done: {step.reason} ({len(self.deleted)} pods restarted, "
                    f"{self.switchovers} switchover{'s' if self.switchovers != 1 else ''})"
                )
            if isinstance(step, Wait):
                log.info("rollout: waiting: %s", step.describe())
                self._wait("a safe moment for the next step", self._actionable, self.settle_timeout)
                continue
            actions += 1
            if actions > 3 * max(o.replicas, len(o.pods)) + 3:
                raise RolloutFailed(
                    f"{actions - 1} steps taken and still not done: leadership or the pods keep "
                    "changing under the rollout; stopping rather than restarting pods forever"
                )
            if isinstance(step, DeletePod):
                self._delete(step)
            else:
                self._switchover(o, step)

    def _delete(self, step: DeletePod) -> None:
        log.info("rollout: deleting pod %s: %s", step.pod, step.reason)
        try:
            self.target.delete(step.pod)
        except Unavailable as exc:
            raise RolloutFailed(f"cannot delete pod {step.pod}: {exc}") from None
        self.deleted.append(step.pod)
        took, _ = self._wait(
            f"pod {step.pod} to come back Ready on the update revision and serving",
            lambda o: back(o, step.pod),
            self.pod_timeout,
        )
        log.info(
            "rollout: pod %s is back: Ready on the update revision and serving (%.1fs)",
            step.pod,
            took,
        )

    def _switchover(self, o: Observation, step: Switchover) -> None:
        log.info("rollout: switchover %s -> %s: %s", step.source, step.target, step.reason)
        status, body = self.target.switchover(o, step.source, step.target)
        if status in (401, 403):
            raise RolloutFailed(
                f"POST /switchover to {step.target} refused ({status} {body}): the controller "
                "token (Secret key controller-token) or controllerApi.allowNetworks"
            )
        if status != 202:
            # A stale view (the target not yet a running replica to the controllers, a
            # leader change): plan again once the views have moved on.
            log.warning(
                "rollout: switchover to %s not accepted (%s %s); planning again",
                step.target,
                status,
                body,
            )
            self.sleep(self.poll)
            return
        self.switchovers += 1
        took, _ = self._wait(
            f"pod {step.target} to lead after the switchover from {step.source}",
            lambda o: leads(o, step.target),
            self.switchover_timeout,
        )
        log.info("rollout: %s leads now (%.1fs); %s restarts next", step.target, took, step.source)

    # --- bounded waits -------------------------------------------------------------------
    def _actionable(self, o: Observation) -> str | None:
        step = plan(o)
        return step.describe() if isinstance(step, Wait) else None

    def _observe_until_ok(self) -> Observation:
        return self._wait("the Kubernetes API to answer", lambda o: None, self.settle_timeout)[1]

    def _wait(
        self, what: str, check: Callable[[Observation], str | None], timeout: float
    ) -> tuple[float, Observation]:
        """Poll until ``check`` returns None; the seconds it took and the last observation.
        After ``timeout`` (or at the run's deadline) raises RolloutFailed naming ``what``
        was awaited and what was seen last."""
        started = self.clock()
        ends = started + timeout
        if self.ends is not None and self.ends < ends:
            ends = self.ends
        while True:
            try:
                o = self.target.observe()
                seen = check(o)
            except Unavailable as exc:
                seen = str(exc)
            else:
                if seen is None:
                    return self.clock() - started, o
            if self.clock() >= ends:
                raise RolloutFailed(
                    f"timed out after {self.clock() - started:.0f}s waiting for {what}; "
                    f"last seen: {seen}"
                )
            self.sleep(self.poll)


# --- the real target: lightkube + the controllers' REST API -----------------------------


class KubeTarget:
    """The StatefulSet through lightkube, the cluster through the controllers' REST API."""

    def __init__(
        self,
        statefulset: str,
        namespace: str,
        api_url: str,
        token: str,
        kube_timeout: float = 10.0,
        http_timeout: float = 5.0,
    ) -> None:
        self.statefulset = statefulset
        self.api_url = api_url
        self.token = token
        self.http_timeout = http_timeout
        self.client = Client(
            KubeConfig.from_env(),
            namespace=namespace,
            timeout=httpx2.Timeout(kube_timeout),
            field_manager="pgras-rollout",
        )

    def observe(self) -> Observation:
        try:
            sts = self.client.get(StatefulSet, self.statefulset)
            spec, status, meta = sts.spec, sts.status, sts.metadata
            selector = dict(spec.selector.matchLabels or {}) if spec and spec.selector else {}
            if not selector:
                raise Unavailable(f"StatefulSet {self.statefulset} has no matchLabels selector")
            pods = list(self.client.list(Pod, labels=selector))
        except (ApiError, httpx2.HTTPError) as exc:
            raise Unavailable(_describe(exc)) from None
        generation = meta.generation if meta and meta.generation is not None else 0
        observed = status is not None and (status.observedGeneration or 0) >= generation
        views = pod_views(self.statefulset, pods)
        cluster, error = self._cluster(views)
        return Observation(
            statefulset=self.statefulset,
            update_revision=status.updateRevision if status else None,
            replicas=spec.replicas if spec and spec.replicas is not None else 1,
            pods=views,
            cluster=cluster,
            observed=observed,
            cluster_error=error,
        )

    def _urls(self, pods: Iterable[PodView], first: str | None = None) -> list[str]:
        """Controller URLs, Ready pods first (``first`` before all), terminating ones never."""
        ordered = sorted(
            (p for p in pods if not p.terminating),
            key=lambda p: (p.name != first, not p.ready, -p.ordinal),
        )
        return [self.api_url.format(pod=p.name) for p in ordered]

    def _cluster(self, pods: Sequence[PodView]) -> tuple[ClusterView | None, str]:
        error = "no pod to ask"
        for url in self._urls(pods):
            try:
                resp = requests.get(url + "/cluster", timeout=self.http_timeout)
                if resp.status_code != 200:
                    error = f"{url}: HTTP {resp.status_code}"
                    continue
                return ClusterView.from_api(resp.json()), ""
            except (requests.RequestException, ValueError) as exc:
                error = f"{url}: {type(exc).__name__}"
        return None, error

    def switchover(self, o: Observation, source: str, target: str) -> tuple[int, str]:
        last = (0, "no controller answered")
        for url in self._urls(o.pods, first=source):
            try:
                resp = requests.post(
                    url + "/switchover",
                    json={"to": target},
                    headers={"Authorization": f"Bearer {self.token}"},
                    timeout=self.http_timeout,
                )
            except requests.RequestException as exc:
                last = (0, f"{url}: {type(exc).__name__}")
                continue
            return resp.status_code, resp.text.strip()[:300]
        return last

    def delete(self, pod: str) -> None:
        try:
            # The pod's own grace period: its controllers stop cleanly (a replica's
            # SIGTERM handover has nothing to hand over).
            self.client.delete(Pod, pod)
        except ApiError as exc:
            if exc.status.code != 404:  # gone already: as good as deleted
                raise Unavailable(_describe(exc)) from None
        except httpx2.HTTPError as exc:
            raise Unavailable(_describe(exc)) from None


def pod_views(statefulset: str, pods: Iterable[Any]) -> tuple[PodView, ...]:
    """lightkube Pods -> PodViews (pods not named <statefulset>-<n> are left out)."""
    views = []
    for pod in pods:
        meta = pod.metadata
        name = meta.name if meta else None
        n = ordinal(statefulset, name or "")
        if name is None or n is None:
            continue
        conditions = pod.status.conditions if pod.status and pod.status.conditions else []
        ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
        views.append(
            PodView(
                name=name,
                ordinal=n,
                revision=(meta.labels or {}).get(REVISION_LABEL),
                ready=ready,
                terminating=meta.deletionTimestamp is not None,
            )
        )
    return tuple(sorted(views, key=lambda p: p.ordinal))


def _describe(exc: Exception) -> str:
    if isinstance(exc, ApiError):
        return f"Kubernetes API: HTTP {exc.status.code}: {exc.status.message or exc.status.reason}"
    return f"Kubernetes API: {type(exc).__name__}: {exc}"


# --- the command ----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python3 -m postgres_ras.controller.rollout",
        description="Restart the database StatefulSet's outdated pods (updateStrategy "
        "OnDelete): replicas first, highest ordinal first, then the primary after one "
        "switchover. The controller token comes from the CONTROLLER_TOKEN variable.",
    )
    p.add_argument("--statefulset", required=True, help="the database StatefulSet's name")
    p.add_argument(
        "--namespace", default=None, help="its namespace (default: the service account's)"
    )
    p.add_argument(
        "--api-url",
        required=True,
        help="a controller's REST API base URL, {pod} standing for the pod name, e.g. "
        "http://{pod}.pg-headless.db.svc.cluster.local:8008",
    )
    p.add_argument("--pod-timeout", type=float, default=300.0, help="seconds per pod restart")
    p.add_argument("--switchover-timeout", type=float, default=60.0)
    p.add_argument(
        "--settle-timeout",
        type=float,
        default=300.0,
        help="seconds to wait for a safe moment (all pods Ready, a leader) before a step",
    )
    p.add_argument(
        "--deadline", type=float, default=0.0, help="seconds for the whole run (0 = no limit)"
    )
    p.add_argument("--poll", type=float, default=1.0, help="seconds between two observations")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    args = parse_args(argv)
    if "{pod}" not in args.api_url:
        log.error("rollout: --api-url %r must contain {pod}", args.api_url)
        return 2
    token = env.get("CONTROLLER_TOKEN", "")
    if not token:
        log.error("rollout: CONTROLLER_TOKEN is not set (the Secret's controller-token)")
        return 2
    namespace = args.namespace
    if not namespace:
        try:
            namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
        except OSError:
            namespace = "default"
    try:
        target = KubeTarget(args.statefulset, namespace, args.api_url.rstrip("/"), token)
    except Exception as exc:  # lightkube's config errors have no common base: report any
        log.error("rollout: no Kubernetes API access (%s: %s)", type(exc).__name__, exc)
        return 2
    log.info(
        "rollout: StatefulSet %s in namespace %s: outdated replicas first, the primary last",
        args.statefulset,
        namespace,
    )
    return Rollout(
        target,
        pod_timeout=args.pod_timeout,
        switchover_timeout=args.switchover_timeout,
        settle_timeout=args.settle_timeout,
        deadline=args.deadline or None,
        poll=args.poll,
    ).run()


if __name__ == "__main__":
    sys.exit(main())
