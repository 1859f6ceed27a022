"""tests/helpers.py's bounded poll: what every tier's waits rest on."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from tests.helpers import poll, poll_value


def test_poll_value_returns_the_first_truthy_value_and_retries_exceptions() -> None:
    answers: Iterator[object] = iter([ConnectionError("mid-restart"), None, [], "leader"])

    def get() -> object:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert poll_value("a leader", get, 5, 0.001) == "leader"


def test_poll_returns_the_seconds_it_took() -> None:
    calls = itertools.count()
    took = poll("the third call", lambda: next(calls) >= 2, 5, 0.01)
    assert 0.015 <= took < 5


def test_an_exception_outside_retry_on_ends_the_wait_at_once() -> None:
    def get() -> bool:
        raise AssertionError("container exited")

    with pytest.raises(AssertionError, match="container exited"):
        poll("a pod", get, 5, 0.01, retry_on=())


def test_timeout_fails_naming_what_the_last_error_the_last_value_and_the_detail() -> None:
    calls = itertools.count()

    def get() -> list[int]:
        if next(calls) == 0:
            raise ConnectionError("refused")
        return []

    with pytest.raises(pytest.fail.Exception) as failed:
        poll_value("rows", get, 0.05, 0.01, detail=lambda: "cluster view: none")
    message = str(failed.value)
    assert message.startswith("timed out after 0.05s waiting for rows"), message
    assert "(last error: ConnectionError: refused)" in message, message
    assert "(last: [])" in message, message
    assert message.endswith("\ncluster view: none"), message
    assert next(calls) >= 3  # tried again after the error, and once more at the deadline


def test_a_false_check_is_not_reported_as_a_value() -> None:
    with pytest.raises(pytest.fail.Exception) as failed:
        poll("never", lambda: False, 0.02, 0.01)
    assert str(failed.value) == "timed out after 0.02s waiting for never"
