"""HTTP client of the node-local agent API. Errors become AgentError."""

from __future__ import annotations

from typing import Any

import requests

from postgres_ras.dcs.base import Member
from postgres_ras.errors import AgentError


class AgentClient:
    def __init__(self, base_url: str, timeout: float = 2.0, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.http = requests.Session()
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        try:
            resp = self.http.request(
                method, self.base_url + path, json=body, timeout=timeout or self.timeout
            )
        except requests.RequestException as exc:
            raise AgentError(f"agent unreachable ({method} {path}): {type(exc).__name__}") from None
        try:
            data = resp.json()
        except ValueError:
            raise AgentError(f"agent answered {resp.status_code} without JSON to {path}") from None
        if resp.status_code >= 400:
            raise AgentError(f"agent refused {path}: {data.get('error', resp.status_code)}")
        if not isinstance(data, dict):
            raise AgentError(f"agent answered {path} with a non-object")
        return data

    def status(self) -> dict[str, Any]:
        return self._call("GET", "/status")

    def heartbeat(self, lease: float | None, deadline: float | None = None) -> dict[str, Any]:
        """``deadline``: the lease's end on CLOCK_BOOTTIME, which the agent shares."""
        body = {"lease": lease, "deadline": deadline if lease is not None else None}
        return self._call("POST", "/heartbeat", body, timeout=1.0)

    def bootstrap(self) -> None:
        self._call("POST", "/bootstrap")

    def clone(self, upstream: Member) -> None:
        self._call("POST", "/clone", {"upstream": _up(upstream)})

    def start_primary(self) -> None:
        self._call("POST", "/start", {"role": "primary"})

    def start_replica(self, upstream: Member | None, rewind: bool = False) -> None:
        body = {
            "role": "replica",
            "upstream": _up(upstream) if upstream else None,
            "rewind": rewind,
        }
        self._call("POST", "/start", body)

    def promote(self, slots: list[str] | None = None) -> None:
        """Promote (a job); ``slots`` are created first, while still a standby."""
        self._call("POST", "/promote", {"slots": slots or []}, timeout=35)

    def stop(self, mode: str, reason: str) -> dict[str, Any]:
        return self._call("POST", "/stop", {"mode": mode, "reason": reason}, timeout=60)

    def ensure_slots(self, names: list[str]) -> dict[str, Any]:
        return self._call("POST", "/slots", {"names": names})

    def replication(self) -> dict[str, Any]:
        """The primary's synchronous replication state (GET /sync)."""
        return self._call("GET", "/sync")

    def set_sync(self, names: str) -> None:
        """Set synchronous_standby_names on this node and reload postgres."""
        self._call("POST", "/sync", {"synchronous_standby_names": names})


def _up(member: Member) -> dict[str, Any]:
    return {"host": member.conn_host, "port": member.conn_port}
