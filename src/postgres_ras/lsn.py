"""PostgreSQL LSNs: '16/B374D848' <-> integer byte positions."""


def parse_lsn(text: str) -> int:
    hi, _, lo = text.partition("/")
    if not _ or not hi or not lo:
        raise ValueError(f"not an LSN: {text!r}")
    return (int(hi, 16) << 32) + int(lo, 16)


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"
