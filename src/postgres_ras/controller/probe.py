"""Asking other members' REST APIs how they are, right before a leader race."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests

from postgres_ras.controller.state import PeerView, Role
from postgres_ras.lsn import parse_lsn


@dataclass(frozen=True)
class Target:
    name: str
    api_url: str


def probe_one(target: Target, timeout: float, fresh: bool = False) -> PeerView:
    """``fresh`` asks the peer to read its postgres now rather than report its last cycle."""
    try:
        url = target.api_url.rstrip("/") + "/status" + ("?fresh=1" if fresh else "")
        resp = requests.get(url, timeout=timeout)
        data = resp.json()
        if data.get("job") == "demoting":
            # Going away (whatever a live read of its postgres says this instant).
            return PeerView(name=target.name, reachable=True, job="demoting", has_data=True)
        role = Role.parse(data.get("role"))
        lsn = data.get("lsn")
        return PeerView(
            name=target.name,
            reachable=True,
            primary_ok=bool(data.get("primary_ok")),
            running=bool(data.get("running")),
            role=role,
            timeline=int(data["timeline"]) if data.get("timeline") is not None else None,
            lsn=parse_lsn(lsn) if isinstance(lsn, str) else None,
            nofailover=bool(data.get("nofailover")),
            streaming=bool(data.get("streaming")),
            job=data["job"] if isinstance(data.get("job"), str) else None,
            job_error=data["job_error"] if isinstance(data.get("job_error"), str) else None,
            has_data=data["has_data"] if isinstance(data.get("has_data"), bool) else None,
        )
    except (
        requests.RequestException,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        OverflowError,
    ):
        return PeerView(name=target.name, reachable=False)


def identity(api_url: str, timeout: float = 1.0) -> tuple[str, str] | None:
    """(name, instance) a controller's API answers with, or None when it does not answer."""
    try:
        data = requests.get(api_url.rstrip("/") + "/status", timeout=timeout).json()
        return str(data["name"]), str(data["instance"])
    except (requests.RequestException, ValueError, KeyError, TypeError, AttributeError):
        return None


def probe_all(targets: list[Target], timeout: float = 1.0) -> tuple[PeerView, ...]:
    """Every target's live state (``fresh``: its postgres read now, not at its last cycle)."""
    if not targets:
        return ()
    with ThreadPoolExecutor(max_workers=min(8, len(targets))) as pool:
        return tuple(pool.map(lambda t: probe_one(t, timeout, fresh=True), targets))
