"""Validation of puppy input: every rejection names the field it is about."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_TEXT = 200
MIN_AGE = 0
MAX_AGE = 1000
FIELDS = ("name", "breed", "age", "sex")


class InputError(Exception):
    """Bad client input (400); ``field`` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class PuppyInput:
    name: str
    breed: str | None
    age: int | None
    sex: str | None

    def values(self) -> tuple[str, str | None, int | None, str | None]:
        return (self.name, self.breed, self.age, self.sex)


def parse_puppy(fields: dict[str, Any]) -> PuppyInput:
    """Validate a POST/PUT body: ``name`` required, ``age`` an integer, texts bounded."""
    name = _text(fields, "name")
    if name is None or not name.strip():
        raise InputError("name", "name is required")
    return PuppyInput(
        name=name,
        breed=_text(fields, "breed"),
        age=_age(fields.get("age")),
        sex=_text(fields, "sex"),
    )


def _text(fields: dict[str, Any], field: str) -> str | None:
    value = fields.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(field, f"{field} must be a string")
    if len(value) > MAX_TEXT:
        raise InputError(field, f"{field} must be at most {MAX_TEXT} characters")
    if "\x00" in value:
        raise InputError(field, f"{field} must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(field, f"{field} must be valid UTF-8 text") from exc
    return value


def _age(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise InputError("age", "age must be an integer")
    if isinstance(value, str):
        text = value.strip()
        if not text.lstrip("+-").isdigit() or not text.isascii() or len(text) > 6:
            raise InputError("age", "age must be an integer")
        value = int(text)
    if not isinstance(value, int):
        raise InputError("age", "age must be an integer")
    if not MIN_AGE <= value <= MAX_AGE:
        raise InputError("age", f"age must be between {MIN_AGE} and {MAX_AGE}")
    return value
