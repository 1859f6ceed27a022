"""The DCS contract against a real Consul: a lost race is False, never an error, and back."""

from __future__ import annotations

from postgres_ras.dcs.consul import ConsulDCS
from tests.integration.conftest import Harness


def test_take_over_leader_lost_race_is_false_and_won_race_is_true(cluster: Harness) -> None:
    url = cluster.c.layout.consul_url
    old = ConsulDCS("contract", "m1", url)
    new = ConsulDCS("contract", "m1", url)
    try:
        old.keepalive(10)
        assert old.acquire_leader()
        index = old.get_cluster().leader.index  # type: ignore[union-attr]
        new.keepalive(10)
        # A stale index: Consul rolls the transaction back (409): lost, not "unreachable".
        assert new.take_over_leader(index - 1) is False
        assert new.get_cluster().leader.session == old.session  # type: ignore[union-attr]
        assert new.take_over_leader(index) is True
        assert new.get_cluster().leader.session == new.session  # type: ignore[union-attr]
    finally:
        new.close()
        old.close()
