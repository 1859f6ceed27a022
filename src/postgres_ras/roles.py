"""A member's postgres role: one enum from the agent's status to the member key in Consul.

A ``StrEnum`` so that the value written to JSON and read back is the same word,
and a role parsed from a peer or the store compares equal to the enum member.
"""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    PRIMARY = "primary"
    REPLICA = "replica"
    STOPPED = "stopped"
    UNKNOWN = "unknown"

    @classmethod
    def parse(cls, value: object) -> Role:
        """``value`` as a Role; anything else (a newer peer's word, garbage) is UNKNOWN."""
        try:
            return cls(str(value))
        except ValueError:
            return cls.UNKNOWN
