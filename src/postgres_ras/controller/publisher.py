"""Publishing this node's role where routers look for it.

Locally HAProxy asks the REST API, so nothing needs publishing; on
Kubernetes the role becomes a pod label that the primary/replicas Services
select (``controller/kubernetes.py``). Publishers are called every cycle and
must be idempotent, cheap when nothing changed, and never block the loop.
``cycle_events`` turns one HA cycle into the events worth recording
(promotion, demotion, fencing, rewind, clone); publishers that keep events
(Kubernetes) record them, the others ignore them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

from postgres_ras.config import NodeConfig, PublisherSettings
from postgres_ras.controller.state import Action, Decision, Observation
from postgres_ras.errors import ConfigError

log = logging.getLogger(__name__)


class RolePublisher(Protocol):
    def publish(self, role: str) -> None:
        """Make ``role`` ('primary', 'replica' or 'none') visible; never raise, never block."""

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        """Record that something happened to this node (CamelCase reason); never raise/block."""

    def close(self, timeout: float = 3.0) -> None:
        """Flush what is pending (bounded by ``timeout``) and release resources."""


class NullPublisher:
    def publish(self, role: str) -> None:
        return None

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        return None

    def close(self, timeout: float = 3.0) -> None:
        return None


def cycle_events(d: Decision, o: Observation, sentence: str) -> list[tuple[str, str, bool]]:
    """The events one HA cycle is worth: (reason, message, warning). Pure.

    ``sentence`` is what ``apply`` returned; an action that failed ends in
    "failed: ..." and an outcome other than the intended one (lost the race,
    switchover aborted) has its own sentence, so both record nothing.
    """
    events: list[tuple[str, str, bool]] = []
    ok = sentence == d.reason
    a = Action
    won = sentence.startswith("won the leader race")
    if (d.action is a.ACQUIRE_AND_PROMOTE and won) or (d.action is a.PROMOTE and ok):
        events.append(("Promoted", f"promoted to primary: {d.reason}", False))
    elif d.action is a.DEMOTE and not sentence.startswith(f"{d.reason} failed"):
        events.append(("Demoted", sentence, True))
    elif d.action is a.SWITCHOVER and sentence.startswith("handed the leader lock"):
        events.append(("SwitchedOver", sentence, False))
    elif d.action is a.REWIND and ok:
        events.append(("Rewinding", f"{d.reason} (re-clone if rewind fails)", True))
    elif d.action is a.CLONE and ok:
        events.append(("Cloning", d.reason, False))
    if o.node is not None and o.node.fenced:
        events.append(("Fenced", f"the agent stopped postgres: {o.node.fenced}", True))
    return events


def report_cycle(publisher: RolePublisher, d: Decision, o: Observation, sentence: str) -> None:
    """Hand this cycle's events to the publisher (the HA loop calls it once per cycle)."""
    for reason, message, warning in cycle_events(d, o, sentence):
        publisher.event(reason, message, warning)


class FilePublisher:
    """Writes the role to a file (atomically), for scripts and simple routers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.last: str | None = None

    def publish(self, role: str) -> None:
        if role == self.last:
            return
        try:
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(role + "\n")
            tmp.replace(self.path)
            self.last = role
        except OSError as exc:
            log.warning("cannot publish role to %s: %s", self.path, exc)

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        return None

    def close(self, timeout: float = 3.0) -> None:
        return None


def make_publisher(config: NodeConfig) -> RolePublisher:
    settings: PublisherSettings = config.publisher
    if settings.kind == "file":
        if settings.path is None:
            raise ConfigError("publisher.path is required when publisher.kind is 'file'")
        return FilePublisher(settings.path)
    if settings.kind == "kubernetes":
        # Imported here: lightkube is only loaded where it is used.
        from postgres_ras.controller.kubernetes import make_kubernetes_publisher

        return make_kubernetes_publisher(settings, config.name)
    return NullPublisher()
