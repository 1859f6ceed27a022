"""The clock for leases: CLOCK_BOOTTIME, shared by the controller and its agent.

It keeps counting through a suspend (CLOCK_MONOTONIC stops), so a node that
slept cannot wake up believing its lease still runs. The controller and its
agent run on one kernel (one pod), so a deadline read on one side means the
same instant on the other.
"""

from __future__ import annotations

import time


def boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)
