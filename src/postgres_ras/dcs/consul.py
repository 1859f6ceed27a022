"""The DCS on Consul: a session bound to a short TTL check, KV under ``pgras/<cluster>/``.

Failure detection is the TTL check, not the session TTL: the controller
passes its check every cycle, and when it stops, Consul marks the check
critical after ``ttl`` seconds and invalidates the session at once, deleting
the leader key and the member key it holds (behaviour ``delete``). The
session is not bound to ``serfHealth`` (network blips took leader locks in
patroni#522) and has lock-delay 0: the old leader fences itself before its
check can lapse (retry_timeout < ttl), so a delay would only lengthen the
outage. The session's own TTL (at least 10 s, Consul's minimum) is a
backstop in case the agent holding the check disappears.

A check lives on the agent it was registered with, and a session on that agent's
node. When that agent (a local Consul server) stops answering, the controller moves
to the next of its ``fallback_urls`` that answers: a new check and session there,
and the old session becomes a stale one of ours, so a primary takes its leader key
over atomically (``take_over_leader``) instead of losing it once the old session's
TTL runs out.
"""

from __future__ import annotations

import base64
import json
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import consul
import requests
from consul.exceptions import ClientError

from postgres_ras.dcs.base import (
    DCS,
    OPTIME_KEY,
    REMOVED_PREFIX,
    Cluster,
    Leader,
    Member,
    Switchover,
    parse_optime,
)
from postgres_ras.errors import DCSError

log = logging.getLogger(__name__)

PREFIX = "pgras"


class ConsulUnreachable(DCSError):
    """No answer at all (connection refused, timeout), as opposed to an error answer."""


@contextmanager
def _translate(what: str) -> Iterator[None]:
    try:
        yield
    except consul.ConsulException as exc:
        raise DCSError(f"Consul refused to {what}: {exc}") from None
    except (requests.RequestException, OSError) as exc:
        raise ConsulUnreachable(
            f"Consul unreachable while trying to {what}: {type(exc).__name__}"
        ) from None


def http_status(exc: consul.ConsulException) -> int | None:
    """The HTTP status py-consul put first in its exception message ("409 ..."), if any."""
    head = str(exc).split(" ", 1)[0]
    return int(head) if head.isdigit() else None


def _answers(agent: consul.Consul) -> bool:
    """Whether a Consul agent answers at all: ``agent/self`` needs no raft leader."""
    try:
        agent.agent.self()
    except (consul.ConsulException, requests.RequestException, OSError):
        return False
    return True


def cluster_prefix(cluster: str) -> str:
    return f"{PREFIX}/{cluster}/"


def client(
    url: str, token: str | None = None, timeout: float = 1.5, ca_file: str | None = None
) -> consul.Consul:
    """A py-consul client; ``ca_file`` verifies an https:// Consul against that CA bundle."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DCSError(f"bad Consul URL {url!r}: expected http(s)://host:port")
    return consul.Consul(
        host=parts.hostname,
        port=parts.port or (443 if parts.scheme == "https" else 8500),
        scheme=parts.scheme,
        token=token,
        verify=ca_file if ca_file else True,
        connections_timeout=timeout,
    )


def _epoch(value: str) -> float:
    """A time written as epoch seconds; 0 (long ago) when it does not parse."""
    try:
        at = float(value)
    except ValueError:
        return 0.0
    return at if math.isfinite(at) else 0.0


def parse_cluster(prefix: str, index: int, items: list[dict[str, Any]] | None) -> Cluster:
    """Turn the raw KV entries of one prefix into a Cluster snapshot (pure).

    The one parser of the cluster prefix: the controller (``ConsulDCS.get_cluster``) and
    ``pgras list`` (``LocalCluster.raw_cluster``) both read the store through it. It never
    raises on a value: a member key whose value does not parse (not JSON, not an object,
    a required field missing or out of range) becomes no Member, so the controller never
    follows or promotes it, and its name goes to ``invalid_members``, which the API and
    ``pgras list`` show. Other nonsense values are dropped (None or empty).
    """
    fields: dict[str, Any] = {}
    members: list[Member] = []
    invalid: list[str] = []
    removed: dict[str, float] = {}
    for item in items or []:
        key = item["Key"][len(prefix) :]
        raw = item.get("Value") or b""
        value = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        if key == "leader":
            if value:
                fields["leader"] = Leader(value, item.get("Session"), int(item["ModifyIndex"]))
        elif key.startswith("members/"):
            name = key[len("members/") :]
            member = Member.from_json(name, value, item.get("Session"))
            if member is None:
                invalid.append(name)
            else:
                members.append(member)
        elif key.startswith(REMOVED_PREFIX):
            removed[key[len(REMOVED_PREFIX) :]] = _epoch(value)
        elif key == "initialize":
            fields["initialize"] = value or None
        elif key == "config":
            try:
                loaded = json.loads(value)
                fields["config"] = loaded if isinstance(loaded, dict) else None
            except ValueError:
                fields["config"] = None
        elif key == "switchover":
            fields["switchover"] = Switchover.from_json(value)
        elif key == OPTIME_KEY:
            fields["optime"] = parse_optime(value)
        elif key == "sync":
            fields["sync"] = value or None
            fields["sync_index"] = int(item.get("ModifyIndex") or 0)
        elif key == "history":
            try:
                loaded = json.loads(value)
                fields["history"] = tuple(loaded) if isinstance(loaded, list) else ()
            except ValueError:
                fields["history"] = ()
    members.sort(key=lambda m: m.name)
    return Cluster(
        members=tuple(members),
        invalid_members=tuple(sorted(invalid)),
        removed=removed,
        index=index,
        **fields,
    )


class ConsulDCS(DCS):
    def __init__(
        self,
        cluster: str,
        member: str,
        url: str,
        token: str | None = None,
        timeout: float = 1.5,
        ca_file: str | None = None,
        fallback_urls: tuple[str, ...] = (),
    ) -> None:
        super().__init__(cluster, member)
        self.prefix = cluster_prefix(cluster)
        self.urls = (url, *fallback_urls)
        self._clients = [client(u, token, timeout, ca_file) for u in self.urls]
        self._current = 0
        self.client = self._clients[0]
        self.check_id = f"pgras-{cluster}-{member}"
        self.session_name = f"pgras-{cluster}-{member}"
        self._session: str | None = None
        self._check_ttl: float | None = None
        self._first = True

    @property
    def session(self) -> str | None:
        return self._session

    def _key(self, key: str) -> str:
        return self.prefix + key

    def _register_check(self, ttl: float) -> None:
        ms = max(1000, int(ttl * 1000))
        self.client.agent.check.register(
            name=self.check_id, check_id=self.check_id, check=consul.Check.ttl(f"{ms}ms")
        )
        self._check_ttl = ttl

    @property
    def url(self) -> str:
        """The Consul agent in use now."""
        return self.urls[self._current]

    def keepalive(self, ttl: float) -> str:
        try:
            return self._keepalive(ttl)
        except ConsulUnreachable:
            if not self._move_to_next_agent():
                raise
        return self._keepalive(ttl)

    def _move_to_next_agent(self) -> bool:
        """Use the next agent, in the configured order, that answers; False when none does,
        or when the agent in use still answers.

        The session and check on the silent agent stay behind: the session is remembered
        as stale, so the leader key it may hold is taken over, not released (releasing it
        would start a race while this node still runs the primary)."""
        count = len(self._clients)
        if count < 2 or _answers(self.client):
            # Alive: what timed out was held waiting for a raft leader (an election), and
            # every other agent waits for the same one. Moving would only leave our
            # session, which the new leader keeps, behind as stale: a fenced primary would
            # then drop its own lock and start a race instead of restarting under it.
            return False
        for step in range(1, count):
            index = (self._current + step) % count
            if not _answers(self._clients[index]):
                continue
            log.warning(
                "Consul agent %s does not answer: using %s; session %s left behind as stale",
                self.url,
                self.urls[index],
                self._session,
            )
            if self._session is not None:
                self.stale_sessions.add(self._session)
            self._session = None
            self._check_ttl = None
            self._current = index
            self.client = self._clients[index]
            return True
        return False

    def _keepalive(self, ttl: float) -> str:
        with _translate("keep the member session alive"):
            if self._first:
                # Sessions of an earlier incarnation of this member: remembered so the
                # decision can tell "my old lock" from "somebody else's lock".
                _, sessions = self.client.session.list()
                self.stale_sessions = {
                    s["ID"] for s in sessions or [] if s.get("Name") == self.session_name
                }
                self._first = False
            if self._check_ttl != ttl:
                self._register_check(ttl)
            try:
                self.client.agent.check.ttl_pass(self.check_id)
            except consul.ConsulException:
                # The agent lost the check (restarted without its state): register anew.
                self._register_check(ttl)
                self.client.agent.check.ttl_pass(self.check_id)
            if self._session is not None:
                try:
                    self.client.session.renew(self._session)
                    return self._session
                except consul.NotFound:
                    log.warning("session %s was invalidated; creating a new one", self._session)
                    self._session = None
            self._session = self.client.session.create(
                name=self.session_name,
                checks=[self.check_id],
                lock_delay=0,
                behavior="delete",
                ttl=max(10, math.ceil(ttl * 2)),
            )
            return self._session

    def get_cluster(self) -> Cluster:
        with _translate("read the cluster state"):
            index, items = self.client.kv.get(self.prefix, recurse=True)
        return parse_cluster(self.prefix, int(index or 0), items)

    def wait_for_change(self, index: int, timeout: float) -> int:
        ms = max(10, int(timeout * 1000))
        with _translate("watch the leader key"):
            new_index, _ = self.client.kv.get(self._key("leader"), index=index, wait=f"{ms}ms")
        return int(new_index or 0)

    def acquire_leader(self) -> bool:
        if self._session is None:
            return False
        with _translate("acquire the leader key"):
            return bool(
                self.client.kv.put(self._key("leader"), self.member_name, acquire=self._session)
            )

    def take_over_leader(self, index: int) -> bool:
        """Move the leader key from a stale session of ours to the current one, atomically."""
        if self._session is None:
            return False
        value = base64.b64encode(self.member_name.encode()).decode()
        ops = [
            {"KV": {"Verb": "delete-cas", "Key": self._key("leader"), "Index": index}},
            {
                "KV": {
                    "Verb": "lock",
                    "Key": self._key("leader"),
                    "Value": value,
                    "Session": self._session,
                }
            },
        ]
        with _translate("take over the leader key"):
            try:
                self.client.txn.put(ops)
            except ClientError as exc:
                if http_status(exc) == 409:
                    return False  # rolled back: the key moved on, we lost the race
                raise
        return True

    def destroy_stale_sessions(self) -> None:
        with _translate("destroy stale sessions"):
            for sid in list(self.stale_sessions):
                self.client.session.destroy(sid)
                self.stale_sessions.discard(sid)

    def release_leader(self) -> None:
        with _translate("release the leader key"):
            _, item = self.client.kv.get(self._key("leader"))
            if item and item.get("Session") == self._session and self._session:
                self.client.kv.delete(self._key("leader"), cas=item["ModifyIndex"])

    def touch_member(self, data: dict[str, Any]) -> None:
        if self._session is None:
            return
        key = self._key(f"members/{self.member_name}")
        value = json.dumps(data, sort_keys=True)
        with _translate("write the member key"):
            if not self.client.kv.put(key, value, acquire=self._session):
                # Still locked by a stale session of ours: drop it and write again.
                self.client.kv.delete(key)
                self.client.kv.put(key, value, acquire=self._session)

    def delete_member(self, name: str) -> None:
        with _translate(f"delete member {name}"):
            self.client.kv.delete(self._key(f"members/{name}"))

    def cas(self, key: str, value: str, index: int) -> bool:
        with _translate(f"write {key}"):
            return bool(self.client.kv.put(self._key(key), value, cas=index))

    def put(self, key: str, value: str) -> None:
        with _translate(f"write {key}"):
            self.client.kv.put(self._key(key), value)

    def delete(self, key: str) -> None:
        with _translate(f"delete {key}"):
            self.client.kv.delete(self._key(key))

    def abandon(self) -> None:
        """Destroy this process's own session only: the check (shared by name with a live
        twin) and the member key stay, so the twin keeps its lock."""
        with _translate("destroy our session"):
            if self._session:
                self.client.session.destroy(self._session)
                self._session = None

    def close(self) -> None:
        with _translate("close the session"):
            if self._session:
                self.client.session.destroy(self._session)
                self._session = None
            self.client.agent.check.deregister(self.check_id)
