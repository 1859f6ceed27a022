"""pg_controldata output, parsed (the state of a stopped data directory)."""

from __future__ import annotations

from dataclasses import dataclass

from postgres_ras.lsn import parse_lsn

PRIMARY_STATES = {"in production", "shut down", "in crash recovery", "shutting down"}


@dataclass(frozen=True)
class ControlData:
    system_identifier: str
    state: str
    timeline: int
    checkpoint_lsn: int
    min_recovery_lsn: int

    @property
    def was_primary(self) -> bool:
        """A data directory last run as a primary may hold WAL the new leader lacks."""
        return self.state in PRIMARY_STATES

    @property
    def clean(self) -> bool:
        return self.state in ("shut down", "shut down in recovery")


def parse_controldata(text: str) -> ControlData:
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            values[key.strip()] = value.strip()
    try:
        return ControlData(
            system_identifier=values["Database system identifier"],
            state=values["Database cluster state"],
            timeline=int(values["Latest checkpoint's TimeLineID"]),
            checkpoint_lsn=parse_lsn(values["Latest checkpoint location"]),
            min_recovery_lsn=parse_lsn(values.get("Minimum recovery ending location", "0/0")),
        )
    except (KeyError, ValueError) as exc:
        raise ValueError(f"unexpected pg_controldata output: {exc}") from None
