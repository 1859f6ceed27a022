"""Findings as a table for people and as JSON for scripts (no I/O: returns text/data)."""

from __future__ import annotations

from typing import Any

from postgres_ras.verify.checker import Findings

COLUMNS = (
    ("fault", 18),
    ("target", 11),
    ("leader after", 12),
    ("lost", 5),
    ("dup", 4),
    ("split", 5),
    ("outage s", 8),
    ("read out s", 10),
    ("recovery s", 10),
)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _row(cells: list[str]) -> str:
    return (
        "| " + " | ".join(f"{c[:w]:<{w}}" for c, (_, w) in zip(cells, COLUMNS, strict=True)) + " |"
    )


def totals(f: Findings) -> dict[str, Any]:
    return {
        "lost_acknowledged_writes": len(f.lost),
        "duplicate_writes": len(f.duplicates),
        "split_brain_intervals": len(f.split_brain),
        "max_write_outage_s": round(f.max_write_outage_s, 3),
        "recovery_s": None if f.recovery_s is None else round(f.recovery_s, 3),
        "acknowledged_writes": f.acknowledged,
        "indeterminate_writes": f.indeterminate,
    }


def by_fault(f: Findings) -> dict[str, dict[str, Any]]:
    """Per fault name over every run: sums of counts, maxima of times."""
    out: dict[str, dict[str, Any]] = {}
    for ff in f.faults:
        agg = out.setdefault(
            ff.fault,
            {
                "injections": 0,
                "lost_acknowledged_writes": 0,
                "duplicate_writes": 0,
                "split_brain_intervals": 0,
                "max_write_outage_s": 0.0,
                "recovery_s": 0.0,
            },
        )
        agg["injections"] += 1
        agg["lost_acknowledged_writes"] += ff.lost_acknowledged_writes
        agg["duplicate_writes"] += ff.duplicate_writes
        agg["split_brain_intervals"] += ff.split_brain_intervals
        agg["max_write_outage_s"] = round(max(agg["max_write_outage_s"], ff.max_write_outage_s), 3)
        if agg["recovery_s"] is not None:
            agg["recovery_s"] = (
                None if ff.recovery_s is None else round(max(agg["recovery_s"], ff.recovery_s), 3)
            )
    return out


def to_json(f: Findings, meta: dict[str, Any]) -> dict[str, Any]:
    return {
        **meta,
        "ok": f.ok,
        "violations": list(f.violations),
        "total": totals(f),
        "by_fault": by_fault(f),
        "faults": [ff.to_json() for ff in f.faults],
        "split_brain": [b.to_json() for b in f.split_brain],
        "lost": [
            {"id": a.id, "acked_s": round(a.acked, 3), "member": a.member, "endpoint": a.endpoint}
            for a in f.lost[:100]
        ],
        "missing_on_replicas": f.missing_on_replicas,
        "extra_on_replicas": f.extra_on_replicas,
    }


def table(f: Findings, meta: dict[str, Any]) -> str:
    line = "+" + "+".join("-" * (w + 2) for _, w in COLUMNS) + "+"
    out = [
        f"pgras verify: {meta.get('mode', '?')} mode, {meta.get('members', '?')} members, "
        f"{f.acknowledged} acknowledged writes ({f.indeterminate} indeterminate) "
        f"in {meta.get('duration_s', 0):.0f}s",
        line,
        _row([name for name, _ in COLUMNS]),
        line,
    ]
    for ff in f.faults:
        out.append(
            _row(
                [
                    ff.label,
                    ff.target or "",
                    ff.leader_after or "",
                    str(ff.lost_acknowledged_writes),
                    str(ff.duplicate_writes),
                    str(ff.split_brain_intervals),
                    _fmt(ff.max_write_outage_s),
                    _fmt(ff.max_read_outage_s),
                    _fmt(ff.recovery_s) if ff.recovered is not None else "NOT BACK",
                ]
            )
        )
    out.append(line)
    t = totals(f)
    out.append(
        _row(
            [
                "total",
                "",
                "",
                str(t["lost_acknowledged_writes"]),
                str(t["duplicate_writes"]),
                str(t["split_brain_intervals"]),
                _fmt(f.max_write_outage_s),
                "",
                _fmt(f.recovery_s),
            ]
        )
    )
    out.append(line)
    notes = [f"  {ff.label}: {ff.note}" for ff in f.faults if ff.note]
    if notes:
        out += ["notes:", *notes]
    for member, n in sorted(f.missing_on_replicas.items()):
        if n:
            out.append(f"  {member} lacks {n} acknowledged writes the primary holds")
    if f.lost:
        shown = ", ".join(f"{a.id}@{a.acked:.2f}s({a.member or '?'})" for a in f.lost[:10])
        out.append(f"lost: {shown}{' ...' if len(f.lost) > 10 else ''}")
    if f.violations:
        out.append("PROMISES BROKEN:")
        out += [f"  - {v}" for v in f.violations]
    else:
        out.append("all promises kept")
    return "\n".join(out)
