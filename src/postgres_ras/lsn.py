"""PostgreSQL LSNs: '16/B374D848' <-> integer byte positions."""

import re

# What PostgreSQL's pg_lsn accepts: 1 to 8 hex digits on each side, nothing else.
_LSN = re.compile(r"[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}")


def parse_lsn(text: str) -> int:
    if not isinstance(text, str) or not _LSN.fullmatch(text):
        raise ValueError(f"not an LSN: {text!r}")
    hi, _, lo = text.partition("/")
    return (int(hi, 16) << 32) + int(lo, 16)


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"
