"""Publishing this node's role where routers look for it.

Locally HAProxy asks the REST API, so nothing needs publishing; on
Kubernetes the role becomes a pod label that the primary/replicas Services
select. Publishers are called every cycle and must be idempotent and cheap
when nothing changed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

from postgres_ras.config import PublisherSettings

log = logging.getLogger(__name__)


class RolePublisher(Protocol):
    def publish(self, role: str) -> None:
        """Make ``role`` ('primary', 'replica' or 'none') visible; never raise."""


class NullPublisher:
    def publish(self, role: str) -> None:
        return None


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


def make_publisher(settings: PublisherSettings) -> RolePublisher:
    if settings.kind == "file":
        if settings.path is None:
            from postgres_ras.errors import ConfigError

            raise ConfigError("publisher.path is required when publisher.kind is 'file'")
        return FilePublisher(settings.path)
    if settings.kind == "kubernetes":
        from postgres_ras.errors import ConfigError

        raise ConfigError(
            "publisher.kind 'kubernetes' is not available in this release: use 'none' or 'file'"
        )
    return NullPublisher()
