"""What a verify run records: plain, immutable data with run-relative timestamps.

Every time is seconds on one monotonic clock whose zero is the start of the
run. Nothing here does I/O; the checker consumes these records and the
workload and fault injector produce them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


class ProbeOutcome(enum.Enum):
    WRITABLE = "writable"  # a real INSERT committed on the member
    READ_ONLY = "read_only"  # the member answered and refused the write
    DOWN = "down"  # no connection, or the connection broke


@dataclass(frozen=True)
class Ack:
    """One acknowledged write: ``id`` committed, as the server told the client."""

    id: int
    sent: float
    acked: float
    endpoint: str  # "write" (HAProxy) or "pgpool"
    member: str | None  # the member that acknowledged it (inet_server_port), if known


@dataclass(frozen=True)
class Probe:
    """One direct write probe of one member."""

    member: str
    sent: float
    done: float
    outcome: ProbeOutcome


@dataclass(frozen=True)
class Read:
    sent: float
    done: float
    ok: bool
    endpoint: str


@dataclass(frozen=True)
class FaultRecord:
    """One injected fault: when it started, when the injection ended, when the
    cluster was back at full strength (None: not within the timeout)."""

    run: int
    name: str
    label: str
    target: str | None
    started: float
    injected: float
    recovered: float | None
    leader_before: str | None
    leader_after: str | None
    note: str = ""


@dataclass(frozen=True)
class FinalState:
    """The rows each member holds after catch-up: member -> id -> number of rows."""

    primary: str | None
    rows: Mapping[str, Mapping[int, int]]
    caught_up: Mapping[str, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class Recording:
    acks: Sequence[Ack]
    indeterminate: frozenset[int]
    probes: Sequence[Probe]
    reads: Sequence[Read]
    faults: Sequence[FaultRecord]
    final: FinalState
    end: float  # when the workload stopped
    synchronous: bool = False
    # Most acknowledged writes an asynchronous failover may lose (None: no bound).
    lost_bound: int | None = None


def recording_to_json(rec: Recording) -> dict[str, Any]:
    """The whole recording as JSON-ready data (``--events``), to re-check or plot later."""
    return {
        "acks": [[a.id, a.sent, a.acked, a.endpoint, a.member] for a in rec.acks],
        "indeterminate": sorted(rec.indeterminate),
        "probes": [[p.member, p.sent, p.done, p.outcome.value] for p in rec.probes],
        "reads": [[r.sent, r.done, r.ok, r.endpoint] for r in rec.reads],
        "faults": [asdict(f) for f in rec.faults],
        "final": {
            "primary": rec.final.primary,
            "rows": {m: sorted(rows.items()) for m, rows in rec.final.rows.items()},
            "caught_up": dict(rec.final.caught_up),
        },
        "end": rec.end,
        "synchronous": rec.synchronous,
        "lost_bound": rec.lost_bound,
    }


def recording_from_json(data: Mapping[str, Any]) -> Recording:
    final = data["final"]
    return Recording(
        acks=[Ack(int(i), s, a, e, m) for i, s, a, e, m in data["acks"]],
        indeterminate=frozenset(int(i) for i in data["indeterminate"]),
        probes=[Probe(m, s, d, ProbeOutcome(o)) for m, s, d, o in data["probes"]],
        reads=[Read(s, d, bool(ok), e) for s, d, ok, e in data["reads"]],
        faults=[FaultRecord(**f) for f in data["faults"]],
        final=FinalState(
            final["primary"],
            {m: {int(i): int(n) for i, n in rows} for m, rows in final["rows"].items()},
            dict(final["caught_up"]),
        ),
        end=float(data["end"]),
        synchronous=bool(data["synchronous"]),
        lost_bound=data["lost_bound"],
    )
