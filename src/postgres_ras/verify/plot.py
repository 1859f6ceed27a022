"""The PNG timeline of a verify run (matplotlib, Agg backend, imported lazily).

Top: acknowledged writes per second per endpoint, faults marked, write
outages shaded, split-brain intervals in red. Bottom: each member's state
from the direct probes (writable, read-only, down).
"""

from __future__ import annotations

from pathlib import Path

from postgres_ras.errors import PgrasError
from postgres_ras.verify.checker import Findings
from postgres_ras.verify.events import ProbeOutcome, Recording

STATE_COLOURS = {
    ProbeOutcome.WRITABLE: "#2ca02c",
    ProbeOutcome.READ_ONLY: "#1f77b4",
    ProbeOutcome.DOWN: "#bbbbbb",
}


def write_png(rec: Recording, findings: Findings, path: Path, bin_s: float = 0.5) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        raise PgrasError("--plot needs matplotlib: pip install matplotlib") from None
    members = sorted({p.member for p in rec.probes})
    fig, (ax, lanes) = plt.subplots(
        2,
        1,
        figsize=(12, 4.5 + 0.35 * len(members)),
        sharex=True,
        gridspec_kw={"height_ratios": [3, max(1, len(members)) * 0.4]},
    )
    end = max(rec.end, 1.0)
    nbins = int(end / bin_s) + 1
    endpoints = sorted({a.endpoint for a in rec.acks})
    xs = [i * bin_s for i in range(nbins)]
    for endpoint in endpoints:
        counts = [0] * nbins
        for a in rec.acks:
            if a.endpoint == endpoint:
                counts[min(nbins - 1, int(a.acked / bin_s))] += 1
        ax.step(xs, [c / bin_s for c in counts], where="post", label=f"acks/s via {endpoint}")
    for o in findings.outages:
        ax.axvspan(o.start, o.end, color="orange", alpha=0.25, lw=0)
    for b in findings.split_brain:
        ax.axvspan(b.start, max(b.end, b.start + 0.05), color="red", alpha=0.5, lw=0)
    if findings.lost:
        ax.plot(
            [a.acked for a in findings.lost],
            [0.0] * len(findings.lost),
            "|",
            color="red",
            ms=14,
            label="lost acknowledged write",
        )
    top = ax.get_ylim()[1]
    for f in rec.faults:
        ax.axvline(f.started, color="black", ls="--", lw=1)
        ax.text(f.started, top * 0.98, f" {f.label}", rotation=90, va="top", fontsize=8)
        if f.recovered is not None:
            ax.axvline(f.recovered, color="green", ls=":", lw=1)
    ax.set_ylabel("acknowledged writes / s")
    handles, labels = ax.get_legend_handles_labels()
    handles += [Patch(color="orange", alpha=0.25), Patch(color="red", alpha=0.5)]
    labels += ["write outage", "split brain"]
    handles += [Patch(color=c) for c in STATE_COLOURS.values()]
    labels += [f"member {s.value}" for s in STATE_COLOURS]
    ax.legend(handles, labels, loc="lower right", fontsize=7, ncol=2)
    lost = len(findings.lost)
    ax.set_title(
        f"pgras verify: {findings.acknowledged} acked, {lost} lost, "
        f"{len(findings.split_brain)} split-brain intervals "
        f"(dashed: fault injected, dotted green: full strength again)"
    )
    for row, member in enumerate(members):
        for outcome, spans in _segments(rec, member).items():
            lanes.broken_barh(spans, (row - 0.4, 0.8), color=STATE_COLOURS[outcome], lw=0)
    lanes.set_yticks(range(len(members)), members)
    lanes.set_xlabel("seconds since start")
    lanes.set_xlim(0, end)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _segments(rec: Recording, member: str) -> dict[ProbeOutcome, list[tuple[float, float]]]:
    """Runs of equal probe outcomes as (start, width) spans, per outcome."""
    probes = sorted((p for p in rec.probes if p.member == member), key=lambda p: p.sent)
    out: dict[ProbeOutcome, list[tuple[float, float]]] = {}
    start = 0
    for i in range(1, len(probes) + 1):
        if i == len(probes) or probes[i].outcome is not probes[start].outcome:
            stop = probes[i].sent if i < len(probes) else probes[-1].done
            begin = probes[start].sent
            out.setdefault(probes[start].outcome, []).append((begin, max(stop - begin, 0.01)))
            start = i
    return out
