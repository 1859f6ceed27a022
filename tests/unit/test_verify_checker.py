"""The verify checker on hand-made recordings: lost writes, duplicates, split brain,
outages, recovery, and the promises each breaks."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pytest

from postgres_ras.verify.checker import check, outages, split_brain_intervals
from postgres_ras.verify.events import (
    Ack,
    FaultRecord,
    FinalState,
    Probe,
    ProbeOutcome,
    Read,
    Recording,
)

W, R, D = ProbeOutcome.WRITABLE, ProbeOutcome.READ_ONLY, ProbeOutcome.DOWN


def probes(member: str, outcome: ProbeOutcome, start: float, end: float) -> list[Probe]:
    """A probe every 0.1 s from ``start`` to ``end``, each taking 5 ms."""
    out = []
    t = start
    while t < end - 1e-9:
        out.append(Probe(member, t, t + 0.005, outcome))
        t = round(t + 0.1, 6)
    return out


def acks(
    member: str, start: float, end: float, first_id: int, endpoint: str = "write"
) -> list[Ack]:
    """One ack every 0.02 s from ``start`` to ``end``, each taking 4 ms."""
    out = []
    t, i = start, first_id
    while t < end - 1e-9:
        out.append(Ack(i, t, t + 0.004, endpoint, member))
        t, i = round(t + 0.02, 6), i + 1
    return out


def fault(started: float, recovered: float | None, name: str = "kill-primary") -> FaultRecord:
    return FaultRecord(
        run=1,
        name=name,
        label=name,
        target="node1",
        started=started,
        injected=started + 0.1,
        recovered=recovered,
        leader_before="node1",
        leader_after="node2",
    )


def everywhere(ids: Iterable[int], members: Sequence[str] = ("node1", "node2", "node3")) -> dict:
    rows = {i: 1 for i in ids}
    return {m: dict(rows) for m in members}


def failover_recording(**overrides: object) -> Recording:
    """node1 primary until 5.0 s, killed; node2 primary from 9.0 s; back at 15 s."""
    a = acks("node1", 1.0, 5.0, 1) + acks("node2", 9.0, 20.0, 10_000)
    pr = (
        probes("node1", W, 0.0, 5.0)
        + probes("node1", D, 5.0, 12.0)
        + probes("node1", R, 12.0, 20.0)
        + probes("node2", R, 0.0, 9.0)
        + probes("node2", W, 9.0, 20.0)
        + probes("node3", R, 0.0, 20.0)
    )
    fields: dict[str, object] = {
        "acks": a,
        "indeterminate": frozenset(),
        "probes": pr,
        "reads": [Read(t / 10, t / 10 + 0.01, True, "read") for t in range(200)],
        "faults": [fault(5.0, 15.0)],
        "final": FinalState("node2", everywhere(x.id for x in a), {"node1": True, "node3": True}),
        "end": 20.0,
        "synchronous": False,
        "lost_bound": 100,
    }
    fields.update(overrides)
    return Recording(**fields)  # type: ignore[arg-type]


def test_clean_failover_keeps_every_promise() -> None:
    f = check(failover_recording())
    assert f.ok, f.violations
    assert f.lost == [] and f.duplicates == {} and f.split_brain == []
    (ff,) = f.faults
    assert ff.lost_acknowledged_writes == 0
    assert ff.max_write_outage_s == pytest.approx(9.004 - 4.984, abs=1e-6)
    assert ff.recovery_s == pytest.approx(10.0)
    assert ff.max_read_outage_s < 0.25


def test_lost_acknowledged_write_is_found_and_attributed() -> None:
    rec = failover_recording()
    rows = {m: dict(r) for m, r in rec.final.rows.items()}
    lost_id = max(a.id for a in rec.acks if a.member == "node1")
    for r in rows.values():
        del r[lost_id]
    f = check(failover_recording(final=FinalState("node2", rows, {"node1": True, "node3": True})))
    assert [a.id for a in f.lost] == [lost_id]
    assert f.faults[0].lost_acknowledged_writes == 1
    assert f.ok, "asynchronous mode: reported, not broken, while within the bound"


def test_lost_write_breaks_synchronous_mode_and_the_async_bound() -> None:
    rec = failover_recording()
    lost_id = rec.acks[-1].id
    rows = {m: {i: n for i, n in r.items() if i != lost_id} for m, r in rec.final.rows.items()}
    final = FinalState("node2", rows, {"node1": True, "node3": True})
    sync = check(failover_recording(final=final, synchronous=True, lost_bound=0))
    assert any("synchronous mode lost 1" in v for v in sync.violations)
    over = check(failover_recording(final=final, lost_bound=0))
    assert any("more than the bound of 0" in v for v in over.violations)


def test_indeterminate_write_is_never_lost() -> None:
    rec = failover_recording(indeterminate=frozenset({999_999}))
    f = check(rec)
    assert f.ok and f.indeterminate == 1 and f.lost == []


def test_split_brain_two_writable_members_is_reported() -> None:
    rec = failover_recording()
    # node1 keeps accepting writes until 11 s although node2 is writable from 9 s.
    pr = [p for p in rec.probes if p.member != "node1"]
    pr += probes("node1", W, 0.0, 11.0) + probes("node1", R, 11.0, 20.0)
    f = check(failover_recording(probes=pr))
    assert len(f.split_brain) == 1
    b = f.split_brain[0]
    assert b.members == ("node1", "node2")
    assert 9.0 <= b.start < 9.1 and 10.8 < b.end <= 10.91
    assert f.faults[0].split_brain_intervals == 1
    assert not f.ok and any("split brain: node1 and node2" in v for v in f.violations)


def test_split_brain_from_a_stale_connection_of_the_workload() -> None:
    """A pooled connection still writing to the former primary counts (the pgpool trap)."""
    rec = failover_recording()
    stale = [Ack(50_000, 12.0, 12.01, "pgpool", "node1")]
    rows = {m: {**r, 50_000: 1} for m, r in rec.final.rows.items()}
    # node1 still accepted one write at 12 s; its probes saw it down and read-only around it.
    f = check(
        failover_recording(
            acks=[*rec.acks, stale[0]],
            final=FinalState("node2", rows, {"node1": True, "node3": True}),
        )
    )
    # A single write inside node2's writable stretch is a definite overlap.
    assert [b.members for b in f.split_brain] == [("node1", "node2")]
    assert f.split_brain[0].start == 12.0


def test_handover_without_overlap_is_not_split_brain() -> None:
    """node1 stops at 5.0 s, node2 starts at 5.05 s: close, but never both."""
    pr = (
        probes("node1", W, 0.0, 5.0)
        + probes("node1", R, 5.0, 10.0)
        + probes("node2", R, 0.0, 5.05)
        + probes("node2", W, 5.05, 10.0)
    )
    rec = failover_recording(probes=pr, acks=acks("node1", 0.0, 5.0, 1))
    assert split_brain_intervals(rec) == []


def test_write_pending_across_a_freeze_is_not_a_definite_split_brain() -> None:
    """A write sent before node1 froze and acked when it woke might have committed
    before node2 was promoted: not definite. A write sent after it woke is."""
    base = probes("node1", W, 0.0, 5.0) + probes("node2", R, 0.0, 8.0)
    base += probes("node2", W, 8.0, 20.0)
    pending = Probe("node1", 5.0, 14.0, W)
    rec = failover_recording(probes=[*base, pending], acks=[])
    assert split_brain_intervals(rec) == []
    after = Probe("node1", 14.1, 14.12, W)
    rec = failover_recording(probes=[*base, pending, after], acks=[])
    (b,) = split_brain_intervals(rec)
    assert (b.start, b.end) == (14.1, 14.12)


def test_a_refusal_splits_the_writable_stretch() -> None:
    """node1 writable, then read-only while node2 leads, then writable again: no overlap."""
    pr = (
        probes("node1", W, 0.0, 3.0)
        + probes("node1", R, 3.0, 7.0)
        + probes("node1", W, 7.0, 10.0)
        + probes("node2", R, 0.0, 3.5)
        + probes("node2", W, 3.5, 6.5)
        + probes("node2", R, 6.5, 10.0)
    )
    assert split_brain_intervals(failover_recording(probes=pr, acks=[])) == []


def test_duplicates_and_replica_divergence_break_promises() -> None:
    rec = failover_recording()
    rows = {m: dict(r) for m, r in rec.final.rows.items()}
    first = rec.acks[0].id
    rows["node2"][first] = 2  # stored twice on the primary
    del rows["node3"][rec.acks[5].id]  # a replica lacks an acknowledged write
    rows["node1"][77_777] = 1  # a replica holds a write the primary does not
    f = check(failover_recording(final=FinalState("node2", rows, {"node1": True, "node3": True})))
    assert f.duplicates == {first: 2}
    assert f.faults[0].duplicate_writes == 1
    assert f.missing_on_replicas == {"node1": 0, "node3": 1}
    assert f.extra_on_replicas == {"node1": 1, "node3": 0}
    assert len(f.violations) == 3


def test_unrecovered_fault_and_lagging_replica_break_promises() -> None:
    rec = failover_recording(
        faults=[fault(5.0, None)],
        final=FinalState("node2", failover_recording().final.rows, {"node1": False}),
    )
    f = check(rec)
    assert f.faults[0].recovery_s is None and f.recovery_s is None
    assert any("not back at full strength" in v for v in f.violations)
    assert any("node1 did not catch up" in v for v in f.violations)


def test_no_acks_or_no_primary_is_a_failure() -> None:
    f = check(failover_recording(acks=[], final=FinalState(None, {})))
    assert any("no write was acknowledged" in v for v in f.violations)
    assert any("no primary at the end" in v for v in f.violations)


def test_outage_per_fault_uses_each_faults_window() -> None:
    a = (
        acks("node1", 0.0, 5.0, 1)
        + acks("node1", 7.0, 20.0, 1000)
        + acks("node1", 21.0, 30.0, 5000)
    )
    rows = everywhere(x.id for x in a)
    rec = failover_recording(
        acks=a,
        probes=[],
        faults=[fault(4.9, 10.0), fault(20.0, 25.0, "restart-pgpool")],
        final=FinalState("node1", rows, {}),
        end=30.0,
    )
    f = check(rec)
    assert [round(x.max_write_outage_s, 2) for x in f.faults] == [2.02, 1.02]
    assert f.faults[0].write_outage_by_endpoint == pytest.approx({"write": 2.02}, abs=0.01)
    assert round(f.max_write_outage_s, 2) == 2.02


def test_outages_counts_the_silence_up_to_the_end() -> None:
    outs = outages({"write": [1.0, 1.1, 1.2], "pgpool": [1.0, 5.0]}, end=6.0, min_gap=0.5)
    assert [(o.endpoint, o.start, o.end) for o in outs] == [
        ("pgpool", 1.0, 5.0),
        ("write", 1.2, 6.0),
        ("pgpool", 5.0, 6.0),
    ]


def test_a_lost_write_after_recovery_belongs_to_the_next_fault() -> None:
    a = acks("node1", 0.0, 30.0, 1)
    late = a[-300]  # acked at ~24 s: after the first fault recovered (15 s)
    rows = everywhere(x.id for x in a if x.id != late.id)
    rec = failover_recording(
        acks=a,
        probes=[],
        faults=[fault(5.0, 15.0), fault(20.0, 28.0)],
        final=FinalState("node1", rows, {}),
        end=30.0,
    )
    f = check(rec)
    assert [x.lost_acknowledged_writes for x in f.faults] == [0, 1]
