"""The leader lease's arithmetic (controller/lease.py), on an injected clock."""

from __future__ import annotations

from tests.unit.fakes import FakeClock

from postgres_ras.controller.lease import Lease


def test_a_renewal_is_not_a_lease_until_confirmed() -> None:
    clock = FakeClock(100.0)
    lease = Lease(clock)
    lease.renewed(t0=100.0, ttl=4.0, retry_timeout=5.0)
    assert lease.deadline is None and lease.remaining() is None and not lease.valid
    lease.confirm()
    assert lease.deadline == 103.0  # ttl - 1: one second short of what Consul guarantees
    assert lease.valid and lease.remaining() == 3.0


def test_retry_timeout_shorter_than_ttl_bounds_the_lease() -> None:
    lease = Lease(FakeClock(100.0))
    lease.renewed(t0=99.5, ttl=10.0, retry_timeout=2.0)
    lease.confirm()
    assert lease.deadline == 101.5  # from t0, the moment before the keepalive was sent


def test_a_lapsed_lease_reports_zero_then_drop_reports_none() -> None:
    clock = FakeClock(100.0)
    lease = Lease(clock)
    lease.renewed(t0=100.0, ttl=4.0, retry_timeout=5.0)
    lease.confirm()
    clock.now = 104.0
    assert lease.remaining() == 0.0 and not lease.valid
    lease.drop()
    assert lease.remaining() is None and lease.deadline is None


def test_confirm_without_a_new_renewal_claims_no_more_than_the_last_one() -> None:
    """A confirmation in a cycle whose keepalive failed must not extend anything."""
    clock = FakeClock(100.0)
    lease = Lease(clock)
    lease.renewed(t0=100.0, ttl=4.0, retry_timeout=5.0)
    clock.now = 102.5
    lease.confirm()
    assert lease.deadline == 103.0
