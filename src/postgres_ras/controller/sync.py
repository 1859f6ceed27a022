"""Synchronous mode: the leader's upkeep of synchronous_standby_names and the ``sync`` key.

The promise: in synchronous mode every acknowledged commit is on every member the
``sync`` key names, so promoting one of them (decide() lets only them race) loses no
acknowledged write. The order of changes keeps it at every instant:

- to ADD a standby, postgres first (``FIRST n (...)`` naming it), then wait until
  pg_stat_replication reports it ``sync`` and, in a later cycle, until it has flushed
  the primary's position of the moment it was first seen ``sync`` (commits acknowledged
  before postgres waited for it are on it too); only then name it in the key;
- to REMOVE or replace one, the key first (check-and-set, so it can no longer race),
  then postgres;
- before a promotion, the new primary names only itself in the key (the old standbys
  would not receive its writes) and picks its own standbys afterwards;
- with no standby left: the key names the primary alone, first; then without
  ``synchronous_mode_strict`` synchronous_standby_names = '' (writes go on unreplicated
  and only the primary holds them), with strict ``*`` (writes block until a standby
  streams).

The key never names nobody while synchronous mode is on: a key naming only the
primary says that it alone holds every acknowledged commit, so after it dies
nobody else may be promoted, and when it comes back it is the one member that may
race (as Patroni's ``/sync`` leader field). An empty key would leave no member
eligible ever again (seen with ``pgras verify --synchronous --faults double``).

``synchronous_standby_names`` always lists exactly the standbys required
(``FIRST k (k names)``), so each named one holds every acknowledged commit. Every
change is a reload: switching modes costs no restart and no write outage.

Not guaranteed: availability. A leader that dies with no confirmed standby is not
replaced until it returns, as in Patroni; then it leads again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from postgres_ras.controller.agent_client import AgentClient
from postgres_ras.controller.state import Observation, Role, Settings
from postgres_ras.dcs.base import DCS, SYNC_KEY, Cluster, format_sync
from postgres_ras.lsn import parse_lsn

log = logging.getLogger(__name__)

SYNC_STATES = ("sync", "quorum")


@dataclass(frozen=True)
class Standby:
    """One walsender's standby as the primary's pg_stat_replication reports it."""

    name: str
    streaming: bool
    sync: bool
    flush: int | None

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Standby:
        flush = row.get("flush_lsn")
        return cls(
            name=str(row.get("name") or ""),
            streaming=row.get("state") == "streaming",
            sync=row.get("sync_state") in SYNC_STATES,
            flush=parse_lsn(flush) if flush else None,
        )


def is_sync_standby(o: Observation) -> bool:
    """A replica named in the ``sync`` key while synchronous mode is on."""
    return bool(
        o.settings.synchronous_mode
        and o.cluster is not None
        and o.me in o.cluster.sync_names
        and o.node is not None
        and o.node.role is Role.REPLICA
    )


def quote_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def render_names(names: tuple[str, ...], strict: bool) -> str:
    """synchronous_standby_names requiring every one of ``names`` ('*' / '' when none)."""
    if not names:
        return "*" if strict else ""
    return f"FIRST {len(names)} ({', '.join(quote_name(n) for n in names)})"


def choose(
    settings: Settings, me: str, cluster: Cluster, standbys: tuple[Standby, ...]
) -> tuple[str, ...]:
    """The standbys to require (pure): streaming members that may be promoted, the ones
    already named in the key first (no needless change), then the most advanced."""
    eligible = {m.name for m in cluster.members if not m.nofailover and m.name != me}
    healthy = {s.name: s for s in standbys if s.streaming and s.name in eligible}
    named = [n for n in cluster.sync_names if n in healthy]
    others = sorted(
        (s for n, s in healthy.items() if n not in named),
        key=lambda s: (-(s.flush or 0), s.name),
    )
    return tuple((named + [s.name for s in others])[: settings.synchronous_node_count])


class SyncKeeper:
    """The leader's synchronous-mode duty, run once per cycle while it holds the lock."""

    def __init__(self, name: str, dcs: DCS, agent: AgentClient) -> None:
        self.name = name
        self.dcs = dcs
        self.agent = agent
        # standby -> the primary position it must flush before the key may name it
        self._pending: dict[str, int] = {}

    def before_promotion(self, o: Observation) -> bool:
        """Name only me in the key before this node promotes (strict: ``*`` first, so no
        write goes unreplicated). False when the key does not name me or changed meanwhile:
        do not promote."""
        if not o.settings.synchronous_mode or o.cluster is None:
            return True
        if self.name not in o.cluster.sync_names:
            # Holding the lock without being named (the key changed after the race): a
            # promotion could lose what the old primary acknowledged. The lock is released
            # after primary_start_timeout (decide's ABDICATE) unless the key names me again.
            log.warning("not promoting: synchronous mode and the sync key names %s", o.cluster.sync)
            return False
        self._pending.clear()
        if o.settings.synchronous_mode_strict:
            self.agent.set_sync("*")
        if not self.dcs.cas(SYNC_KEY, format_sync((self.name,)), o.cluster.sync_index):
            return False
        log.info(
            "synchronous mode: sync key names only me (was %s) before promotion", o.cluster.sync
        )
        return True

    def _write_key(self, cluster: Cluster, names: tuple[str, ...], why: str) -> str:
        """The key names ``names``, or only me (the primary) when there are none."""
        if not self.dcs.cas(SYNC_KEY, format_sync(names or (self.name,)), cluster.sync_index):
            return "sync key changed meanwhile; retrying next cycle"
        return why

    def reconcile(self, o: Observation) -> str | None:
        """One step towards the wanted synchronous state; a sentence when something changed.

        Raises DCSError / AgentError; the caller reports them as the cycle's failure.
        """
        cluster = o.cluster
        assert cluster is not None
        s = o.settings
        state = self.agent.replication()
        if state.get("in_recovery"):
            return None
        configured = str(state.get("configured") or "")
        active = str(state.get("active") or "")
        if not s.synchronous_mode:
            self._pending.clear()
            if cluster.sync is not None:
                self.dcs.delete(SYNC_KEY)  # the record first, then postgres
                return "synchronous mode off: sync key removed"
            if configured or active:
                self.agent.set_sync("")
                return "synchronous mode off: synchronous_standby_names cleared (asynchronous)"
            return None
        standbys = tuple(Standby.from_json(r) for r in state.get("standbys") or ())
        wanted = choose(s, self.name, cluster, standbys)
        if not cluster.sync_names:
            # Absent, or empty (written by an older version): record who holds every commit.
            return self._write_key(
                cluster, (), "sync key names the primary until a standby is confirmed"
            )
        key = tuple(n for n in cluster.sync_names if n != self.name)  # the standbys named
        kept = tuple(n for n in key if n in wanted)
        if kept != key:
            gone = ", ".join(n for n in key if n not in kept)
            if not wanted:
                why = f"no synchronous standby left ({gone} gone): sync key names the primary; " + (
                    "strict: writes block until a standby streams"
                    if s.synchronous_mode_strict
                    else "dropping to asynchronous replication"
                )
            else:
                why = f"synchronous standby {gone} removed from the sync key before postgres"
            return self._write_key(cluster, kept, why)
        target = render_names(wanted, s.synchronous_mode_strict)
        if configured != target:
            self._pending = {n: v for n, v in self._pending.items() if n in wanted}
            self.agent.set_sync(target)
            if not wanted and not s.synchronous_mode_strict:
                return "no synchronous standby: synchronous_standby_names = '' (asynchronous)"
            return f"synchronous_standby_names = {target!r}"
        if active != target or not state.get("lsn"):
            return None  # postgres has not reloaded yet
        position = parse_lsn(str(state["lsn"]))
        confirmed = []
        by_name = {sb.name: sb for sb in standbys}
        for name in wanted:
            sb = by_name.get(name)
            if name in key or sb is None:
                continue
            if not sb.sync:
                self._pending.pop(name, None)
                continue
            need = self._pending.get(name)
            if need is None:
                self._pending[name] = position  # confirmed in a later cycle
            elif sb.flush is not None and sb.flush >= need:
                confirmed.append(name)
        if not confirmed:
            return None
        for name in confirmed:
            self._pending.pop(name, None)
        names = tuple(sorted({*key, *confirmed}))
        return self._write_key(
            cluster, names, f"synchronous standby {', '.join(confirmed)} confirmed in the sync key"
        )
