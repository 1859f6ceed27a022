"""The HA loop's timers: a stopwatch and a first-seen age on an injected clock."""

from __future__ import annotations

from postgres_ras.controller.timers import FirstSeen, Stopwatch


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def test_stopwatch_counts_while_held_and_restarts_after_a_break() -> None:
    clock = Clock()
    watch = Stopwatch(clock)
    assert watch.held(True) == 0.0
    clock.now += 3
    assert watch.held(True) == 3.0 and watch.elapsed() == 3.0
    assert watch.held(False) == 0.0 and watch.elapsed() == 0.0
    clock.now += 5
    assert watch.held(True) == 0.0


def test_first_seen_restarts_for_a_new_value() -> None:
    clock = Clock()
    seen = FirstSeen(clock)
    assert seen.age("a") == 0.0
    clock.now += 2
    assert seen.age("a") == 2.0
    assert seen.age("b") == 0.0
    clock.now += 1
    assert seen.age(None) == 0.0 and seen.age("b") == 0.0
