"""Write loads run during a measurement: what the write outage and lost writes are read from.

A load is chosen by name (``LOADS``), so the measurements in measure.py take it
as a parameter: the single writer today; a pgbench load through the writer DSN
(issue 11) is one more class here with the same four methods, not a second copy
of the measurements.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, Self

from postgres_ras.local.workload import Writer, lost_writes


class Load(Protocol):
    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...

    def acked_since(self, t: float) -> bool:
        """Whether a write was acknowledged after monotonic time ``t`` (writes resumed)."""
        ...

    def outage_after(self, t: float) -> float:
        """The longest gap between acknowledged writes that ended after ``t``, seconds."""
        ...

    def lost_on(self, dsn: str) -> int:
        """How many acknowledged writes are missing on the server ``dsn`` points at."""
        ...


class SingleWriter:
    """One connection inserting increasing ids (postgres_ras.local.workload.Writer)."""

    def __init__(self, dsn: str) -> None:
        self.writer = Writer(dsn)
        self._marks: list[tuple[float, int]] = []  # (when asked, writes acknowledged then)

    def __enter__(self) -> Self:
        self.writer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.writer.stop()

    def acked_since(self, t: float) -> bool:
        result = self.writer.result
        if any(start + gap >= t for start, gap in result.gaps):
            return True  # writes resumed after a gap that spans t
        count, now = len(result.acked), time.monotonic()
        # No gap yet (a very short interruption): more acks than when we asked after t.
        resumed = any(at >= t and count > seen for at, seen in self._marks)
        self._marks.append((now, count))
        return resumed

    def outage_after(self, t: float) -> float:
        return self.writer.result.outage_after(t)

    def lost_on(self, dsn: str) -> int:
        return len(lost_writes(dsn, self.writer.result.acked))


LOADS: dict[str, Callable[[str], Load]] = {"writer": SingleWriter}
