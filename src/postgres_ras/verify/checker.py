"""From a recording to findings. Purely computational: no I/O, no clock.

What it guarantees:

- **lost acknowledged writes**: ids the workload saw acknowledged that the
  final primary does not hold (after catch-up). Writes whose outcome the
  client never learnt (``indeterminate``) are never counted as lost.
- **replica divergence**: acknowledged ids the final primary holds but a
  replica does not, and ids a replica holds that the primary does not.
- **duplicates**: ids present more than once on any member (each id is
  inserted at most once by the workload, so any repeat is the system's).
- **split brain**: only *definite* overlaps, so scheduling noise on a busy
  machine never cries wolf. A member's consecutive accepted writes (workload
  acks it served and direct probes), with no refusal in between, form a
  stretch; within it the member was certainly writable from the ack of one
  write to the send of the next (``D``), as long as the two commits are at
  most ``max_gap`` apart (a frozen member's silence proves nothing). Two
  members were writable at once when their ``D`` overlap, or when one
  member's whole write, from send to ack, lies inside the other's ``D``.
- **write outage**: per endpoint, the longest gap between consecutive acks
  that ended in the fault's window (from its start to the next fault's).
- **recovery**: from the fault's start to full strength.

What it does not: prove anything about writes it did not see; a split brain
shorter than the probe interval can go unseen.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from postgres_ras.verify.events import Ack, FaultRecord, ProbeOutcome, Recording


@dataclass(frozen=True)
class SplitBrain:
    members: tuple[str, str]
    start: float
    end: float

    def to_json(self) -> dict[str, Any]:
        return {
            "members": list(self.members),
            "start_s": round(self.start, 3),
            "end_s": round(self.end, 3),
        }


@dataclass(frozen=True)
class Outage:
    endpoint: str
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class FaultFindings:
    run: int
    fault: str
    label: str
    target: str | None
    started: float
    recovered: float | None
    lost_acknowledged_writes: int
    duplicate_writes: int
    split_brain_intervals: int
    max_write_outage_s: float
    max_read_outage_s: float
    recovery_s: float | None
    leader_before: str | None
    leader_after: str | None
    note: str = ""
    write_outage_by_endpoint: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "fault": self.fault,
            "label": self.label,
            "target": self.target,
            "started_s": round(self.started, 3),
            "lost_acknowledged_writes": self.lost_acknowledged_writes,
            "duplicate_writes": self.duplicate_writes,
            "split_brain_intervals": self.split_brain_intervals,
            "max_write_outage_s": round(self.max_write_outage_s, 3),
            "write_outage_by_endpoint_s": {
                k: round(v, 3) for k, v in sorted(self.write_outage_by_endpoint.items())
            },
            "max_read_outage_s": round(self.max_read_outage_s, 3),
            "recovery_s": None if self.recovery_s is None else round(self.recovery_s, 3),
            "leader_before": self.leader_before,
            "leader_after": self.leader_after,
            "note": self.note,
        }


@dataclass(frozen=True)
class Findings:
    faults: list[FaultFindings]
    acknowledged: int
    indeterminate: int
    lost: list[Ack]
    duplicates: dict[int, int]
    missing_on_replicas: dict[str, int]
    extra_on_replicas: dict[str, int]
    split_brain: list[SplitBrain]
    outages: list[Outage]
    max_write_outage_s: float
    recovery_s: float | None
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


# --- split brain ----------------------------------------------------------------------
@dataclass(frozen=True)
class _Accept:
    sent: float
    acked: float


def _stretches(accepts: Iterable[_Accept], refusals: Iterable[float]) -> list[list[_Accept]]:
    """Consecutive accepts of one member not separated by a refusal (ordered by time)."""
    timeline: list[tuple[float, int, _Accept | None]] = [(a.acked, 1, a) for a in accepts]
    timeline += [(t, 0, None) for t in refusals]
    timeline.sort(key=lambda e: (e[0], e[1]))
    out: list[list[_Accept]] = []
    current: list[_Accept] = []
    for _, _, accept in timeline:
        if accept is None:
            if current:
                out.append(current)
            current = []
        else:
            current.append(accept)
    if current:
        out.append(current)
    return out


def _definite(stretch: Sequence[_Accept], max_gap: float) -> list[tuple[float, float]]:
    """Where the member was certainly writable: between the ack of one write and the send
    of the next one sent after it, when both commits lie within ``max_gap`` seconds of
    each other (a longer silence, a frozen member, proves nothing in between)."""
    by_sent = sorted(stretch, key=lambda a: a.sent)
    sends = [a.sent for a in by_sent]
    pieces = []
    sources, targets = set(), set()
    for i, a in enumerate(by_sent):
        k = bisect.bisect_left(sends, a.acked)
        if k < len(by_sent):
            b = by_sent[k]
            if b.sent > a.acked and b.acked - a.sent <= max_gap:
                pieces.append((a.acked, b.sent))
                sources.add(i)
                targets.add(k)
    # A write in the middle of a chain links the pieces on either side of it.
    pieces += [(by_sent[i].sent, by_sent[i].acked) for i in sources & targets]
    return _merge(pieces)


def split_brain_intervals(rec: Recording, max_gap: float = 1.0) -> list[SplitBrain]:
    accepts: dict[str, list[_Accept]] = {}
    refusals: dict[str, list[float]] = {}
    for p in rec.probes:
        if p.outcome is ProbeOutcome.WRITABLE:
            accepts.setdefault(p.member, []).append(_Accept(p.sent, p.done))
        else:
            refusals.setdefault(p.member, []).append(p.done)
    for a in rec.acks:
        if a.member is not None:
            accepts.setdefault(a.member, []).append(_Accept(a.sent, a.acked))
    per_member = {
        m: [(s, _definite(s, max_gap)) for s in _stretches(acc, refusals.get(m, []))]
        for m, acc in accepts.items()
    }
    found: dict[tuple[str, str], list[tuple[float, float]]] = {}
    members = sorted(per_member)
    for i, ma in enumerate(members):
        for mb in members[i + 1 :]:
            for sa in per_member[ma]:
                for sb in per_member[mb]:
                    found.setdefault((ma, mb), []).extend(_overlaps(sa, sb))
    result = []
    for pair, intervals in found.items():
        for start, end in _merge(intervals):
            result.append(SplitBrain(pair, start, end))
    return sorted(result, key=lambda s: s.start)


Stretch = tuple[Sequence[_Accept], list[tuple[float, float]]]


def _overlaps(sa: Stretch, sb: Stretch) -> list[tuple[float, float]]:
    """Definite overlaps: both certainly writable, or one member's whole write (sent to
    acked) inside the other's certainly-writable time."""
    (accepts_a, da), (accepts_b, db) = sa, sb
    out = []
    for s1, e1 in da:
        for s2, e2 in db:
            if max(s1, s2) < min(e1, e2):
                out.append((max(s1, s2), min(e1, e2)))
    for accepts, other in ((accepts_a, db), (accepts_b, da)):
        for start, end in other:
            out += [(a.sent, a.acked) for a in accepts if start <= a.sent and a.acked <= end]
    return out


def _merge(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


# --- outages --------------------------------------------------------------------------
def outages(times_by_endpoint: dict[str, list[float]], end: float, min_gap: float) -> list[Outage]:
    """Gaps of at least ``min_gap`` seconds between consecutive successes, per endpoint
    (the stretch from the last success to ``end`` counts too)."""
    out = []
    for endpoint, times in times_by_endpoint.items():
        ts = sorted(times)
        for a, b in zip(ts, [*ts[1:], end], strict=True):
            if b - a >= min_gap:
                out.append(Outage(endpoint, a, b))
    return sorted(out, key=lambda o: o.start)


def _longest_in(outs: Sequence[Outage], start: float, end: float) -> float:
    """The longest outage that ended inside ``[start, end)``: a fault's outage begins
    with the last ack before it, which may come just before the fault started."""
    return max((o.seconds for o in outs if start < o.end <= end), default=0.0)


# --- the whole check ------------------------------------------------------------------
def _windows(faults: Sequence[FaultRecord], end: float) -> list[tuple[float, float]]:
    """Each fault's window: from its start to the next fault's start (or the end)."""
    starts = [f.started for f in faults]
    return list(zip(starts, [*starts[1:], end], strict=True))


def _attribute(t: float, faults: Sequence[FaultRecord], end: float) -> int | None:
    """The fault that can have caused a loss of a write acknowledged at ``t``: the
    first one not back at full strength before ``t``."""
    for i, f in enumerate(faults):
        done = f.recovered if f.recovered is not None else end
        if t <= done:
            return i
    return len(faults) - 1 if faults else None


def check(rec: Recording, min_gap: float = 0.25) -> Findings:
    final = rec.final
    primary_rows = final.rows.get(final.primary or "", {}) if final.primary else {}
    acked_ids = {a.id for a in rec.acks}
    lost = [a for a in rec.acks if a.id not in primary_rows]
    duplicates: Counter[int] = Counter()
    for rows in final.rows.values():
        for i, n in rows.items():
            if n > 1:
                duplicates[i] = max(duplicates[i], n)
    missing: dict[str, int] = {}
    extra: dict[str, int] = {}
    for member, rows in final.rows.items():
        if member == final.primary:
            continue
        missing[member] = sum(1 for i in acked_ids if i in primary_rows and i not in rows)
        extra[member] = sum(1 for i in rows if i not in primary_rows)
    brains = split_brain_intervals(rec)
    by_endpoint: dict[str, list[float]] = {}
    for a in rec.acks:
        by_endpoint.setdefault(a.endpoint, []).append(a.acked)
    outs = outages(by_endpoint, rec.end, min_gap)
    reads_ok: dict[str, list[float]] = {}
    for r in rec.reads:
        if r.ok:
            reads_ok.setdefault(r.endpoint, []).append(r.done)
    read_outs = outages(reads_ok, rec.end, min_gap)

    faults = list(rec.faults)
    lost_by = Counter(_attribute(a.acked, faults, rec.end) for a in lost)
    ack_time = {a.id: a.acked for a in rec.acks}
    dup_by = Counter(_attribute(ack_time[i], faults, rec.end) for i in duplicates if i in ack_time)
    brain_by: Counter[int | None] = Counter()
    windows = _windows(faults, rec.end)
    for b in brains:
        idx = next((i for i, (s, e) in enumerate(windows) if s <= b.start < e), None)
        brain_by[idx] += 1
    per_fault = []
    for i, (f, (ws, we)) in enumerate(zip(faults, windows, strict=True)):
        per_fault.append(
            FaultFindings(
                run=f.run,
                fault=f.name,
                label=f.label,
                target=f.target,
                started=f.started,
                recovered=f.recovered,
                lost_acknowledged_writes=lost_by[i],
                duplicate_writes=dup_by[i],
                split_brain_intervals=brain_by[i],
                max_write_outage_s=_longest_in(outs, ws, we),
                max_read_outage_s=_longest_in(read_outs, ws, we),
                recovery_s=None if f.recovered is None else f.recovered - f.started,
                leader_before=f.leader_before,
                leader_after=f.leader_after,
                note=f.note,
                write_outage_by_endpoint={
                    ep: _longest_in([o for o in outs if o.endpoint == ep], ws, we)
                    for ep in by_endpoint
                },
            )
        )
    recoveries = [f.recovery_s for f in per_fault]
    findings = Findings(
        faults=per_fault,
        acknowledged=len(rec.acks),
        indeterminate=len(rec.indeterminate),
        lost=lost,
        duplicates=dict(duplicates),
        missing_on_replicas=missing,
        extra_on_replicas=extra,
        split_brain=brains,
        outages=outs,
        max_write_outage_s=max((o.seconds for o in outs), default=0.0),
        recovery_s=None
        if any(r is None for r in recoveries)
        else max((r for r in recoveries if r is not None), default=0.0),
    )
    findings.violations.extend(_violations(rec, findings))
    return findings


def _violations(rec: Recording, f: Findings) -> list[str]:
    """The promises the run saw broken, one sentence each."""
    out = []
    if not rec.acks:
        out.append("no write was acknowledged at all: the workload never reached the primary")
    if rec.final.primary is None:
        out.append("no primary at the end of the run: lost writes could not be checked")
    for b in f.split_brain:
        out.append(
            f"split brain: {b.members[0]} and {b.members[1]} both accepted writes "
            f"from t={b.start:.3f}s to t={b.end:.3f}s"
        )
    if f.duplicates:
        out.append(f"{len(f.duplicates)} ids stored more than once (e.g. {min(f.duplicates)})")
    if f.lost:
        if rec.synchronous:
            out.append(f"synchronous mode lost {len(f.lost)} acknowledged writes")
        elif rec.lost_bound is not None and len(f.lost) > rec.lost_bound:
            out.append(
                f"asynchronous mode lost {len(f.lost)} acknowledged writes, more than the "
                f"bound of {rec.lost_bound} that maximum_lag_on_failover allows"
            )
    for member, n in sorted(f.missing_on_replicas.items()):
        if n and rec.final.caught_up.get(member, True):
            out.append(f"replica {member} lacks {n} acknowledged writes the primary holds")
    for member, n in sorted(f.extra_on_replicas.items()):
        if n:
            out.append(f"replica {member} holds {n} writes the primary does not (diverged)")
    for member, caught in sorted(rec.final.caught_up.items()):
        if not caught:
            out.append(f"replica {member} did not catch up with the primary")
    for ff in f.faults:
        if ff.recovered is None:
            out.append(f"{ff.label}: the cluster was not back at full strength in time")
    return out
