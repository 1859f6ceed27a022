"""Issue 9.12: the dynamic config in Consul is validated by the same model as the file.

A bad value is logged once and ignored; the last good config stays in force.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from postgres_ras.config import HASettings, NodeConfig
from postgres_ras.controller.ha import HA
from postgres_ras.controller.state import Settings
from postgres_ras.dcs.base import Cluster

LOCAL = HASettings()
FENCE = 2.0


@pytest.mark.parametrize(
    ("dynamic", "words"),
    [
        ({"ttl": 1}, "ttl: Input should be greater than or equal to 2"),
        ({"ttl": 3, "retry_timeout": 3}, "retry_timeout (3.0) must be below ttl (3.0)"),
        ({"loop_wait": 3}, "loop_wait (3.0) must be below retry_timeout"),
        ({"ttl": 2, "retry_timeout": 1.5}, "above this node's agent.fence_timeout (2.0)"),
        ({"ttl": float("nan")}, "ttl:"),
        ({"ttl": float("inf")}, "ttl:"),
        ({"ttl": True}, "ttl: Input should be a valid number"),
        ({"ttl": "10"}, "ttl: Input should be a valid number"),
        ({"maximum_lag_on_failover": -1}, "maximum_lag_on_failover"),
        ({"maximum_lag_on_failover": 1.5}, "maximum_lag_on_failover"),
        ({"primary_start_timeout": 0}, "primary_start_timeout"),
        ({"synchronous_mode": "on"}, "synchronous_mode: Input should be a valid boolean"),
        ({"synchronous_node_count": 0}, "synchronous_node_count"),
    ],
)
def test_bad_dynamic_config_is_refused_with_the_reason(dynamic: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=None) as err:
        Settings.merged(LOCAL, FENCE, dynamic)
    assert words in str(err.value), str(err.value)


def test_good_dynamic_config_overrides_the_file_and_unknown_keys_are_ignored() -> None:
    s = Settings.merged(
        LOCAL, FENCE, {"ttl": 10, "retry_timeout": 6, "primary_start_timeout": 5, "other": 1}
    )
    assert (s.ttl, s.retry_timeout, s.loop_wait, s.primary_start_timeout) == (10, 6, 1, 5)


def test_defaults_are_the_config_models() -> None:
    assert Settings() == Settings.merged(LOCAL, FENCE, None)


def _ha() -> HA:
    config = NodeConfig.model_validate({"name": "n1", "data_dir": "/nonexistent"})
    return HA(config, dcs=None, agent=None, publisher=None)  # type: ignore[arg-type]


def test_bad_value_logged_once_and_last_good_config_stays(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ha = _ha()
    good = ha.settings(Cluster(config={"ttl": 8, "retry_timeout": 5}))
    assert (good.ttl, good.retry_timeout) == (8, 5)
    caplog.set_level(logging.WARNING)
    bad = Cluster(config={"ttl": 8, "retry_timeout": 9})
    for _ in range(5):
        assert ha.settings(bad) == good
    warnings = [r for r in caplog.records if "invalid dynamic config" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "retry_timeout (9.0) must be below ttl (8.0)" in warnings[0].getMessage()
    assert "keeping the last good one" in warnings[0].getMessage()
    fixed = ha.settings(Cluster(config={"ttl": 12, "retry_timeout": 9}))
    assert (fixed.ttl, fixed.retry_timeout) == (12, 9)
