"""The chart on a kind cluster, in order: the tutorial scenario through the Services,
pgpool and the demo app; the primary pod deleted; scale 3 -> 5 -> 3 with the primary
on the highest ordinal; a rolling image upgrade; helm test; uninstall.

Run by ``make e2e`` (scripts/e2e-kind.sh), which installs the release first.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from tests.e2e.conftest import FIGURES, WRITER, Release, wait_for

pytestmark = pytest.mark.timeout(900)

INSTANCES = 3
SEED = {"name": "Tyler", "breed": "Retrieved", "age": 3, "sex": "M"}


def watch_primaries(release: Release, stop: threading.Event, seen: list[str]) -> None:
    """Record each change of the pod labelled primary (for switchover counts)."""
    while not stop.is_set():
        try:
            primaries = [n for n, r in release.roles().items() if r == "primary"]
        except Exception:  # the API may blink during upgrades: keep watching
            primaries = []
        if len(primaries) == 1 and (not seen or seen[-1] != primaries[0]):
            seen.append(primaries[0])
        stop.wait(0.5)


def finish_writer(proc: Any, timeout: float) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"the writer failed: {err[-2000:]}"
    return dict(json.loads(out.strip().splitlines()[-1]))


def assert_no_acked_write_lost(release: Release, acked: list[int]) -> None:
    if not acked:
        return
    present = release.sql(
        "primary",
        "SELECT count(*) FROM e2e_writes WHERE id = ANY('{" + ",".join(map(str, acked)) + "}')",
    )
    assert present[0][0] == len(acked), (
        f"{len(acked) - present[0][0]} of {len(acked)} acknowledged writes lost"
    )


def test_installed_one_primary_and_services_follow_the_label(release: Release) -> None:
    primary = release.wait_settled(INSTANCES, timeout=300)
    assert release.service_endpoints("primary") == {primary}
    replicas = {n for n, r in release.roles().items() if r == "replica"}
    wait_for(
        "the replicas Service to hold every replica",
        lambda: release.service_endpoints("replicas") == replicas,
        60,
    )
    assert release.sql("primary", "SELECT pg_is_in_recovery()") == [[False]]
    assert release.sql("replicas", "SELECT pg_is_in_recovery()") == [[True]]


def test_tutorial_scenario_through_the_demo_app_and_pgpool(release: Release) -> None:
    status, body = wait_for(
        "the demo app to list puppies",
        lambda: (r := release.http("GET", "/api/puppies"))[0] == 200 and r,
        120,
    )
    assert any({k: p[k] for k in SEED} == SEED for p in body["data"]), body
    status, made = release.http(
        "POST", "/api/puppies", {"name": "Ozzy", "breed": "Beagle", "age": 2, "sex": "M"}
    )
    assert status in (200, 201), made
    listed = wait_for(
        "Ozzy in the list",
        lambda: [p for p in release.http("GET", "/api/puppies")[1]["data"] if p["name"] == "Ozzy"],
        30,
    )
    pid = listed[0]["id"]
    status, _ = release.http(
        "PUT", f"/api/puppies/{pid}", {"name": "Ozzy", "breed": "Beagle", "age": 3, "sex": "M"}
    )
    assert status == 200
    wait_for(
        "the update to reach the replicas",
        lambda: (
            release.sql("replicas", f"SELECT age FROM pups WHERE id = {pid}", "puppies") == [[3]]
        ),
        30,
    )
    status, _ = release.http("DELETE", f"/api/puppies/{pid}")
    assert status == 200
    # Writes and reads straight through pgpool (backend 0 = primary, 1 = replicas).
    release.sql("pgpool", "CREATE TABLE IF NOT EXISTS e2e_pgpool (id int PRIMARY KEY)")
    release.sql("pgpool", "INSERT INTO e2e_pgpool VALUES (1) ON CONFLICT DO NOTHING")
    wait_for(
        "the pgpool write read back through pgpool",
        lambda: release.sql("pgpool", "SELECT id FROM e2e_pgpool") == [[1]],
        30,
    )
    rows = release.sql("primary", "SELECT count(*) FROM pg_stat_replication")
    assert rows == [[INSTANCES - 1]], rows


def test_delete_primary_pod(release: Release) -> None:
    old = release.wait_settled(INSTANCES)
    writer = release.client_background(WRITER, release.dsn("primary"), "45", "0.1")
    time.sleep(5)  # the writer runs
    start = time.monotonic()
    release.kubectl(f"delete pod {old} --wait=false", output="")
    new = wait_for(
        "another pod labelled primary and writable through the primary Service",
        lambda: release.new_primary(old),
        120,
        0.2,
    )
    FIGURES["pod deletion: new primary labelled and ready"] = time.monotonic() - start
    assert release.sql("primary", "SELECT pg_is_in_recovery()") == [[False]], new
    wait_for(
        f"{old} back as a ready replica",
        lambda: release.settled(INSTANCES) == new and release.roles().get(old) == "replica",
        300,
    )
    FIGURES["pod deletion: old pod back as a replica"] = time.monotonic() - start
    result = finish_writer(writer, 120)
    FIGURES["pod deletion: longest write gap through <release>-primary"] = result["max_gap"]
    assert result["acked"], "no write succeeded"
    assert result["max_gap"] < 30, f"write outage {result['max_gap']:.1f}s"
    assert_no_acked_write_lost(release, result["acked"])


def test_scale_up_then_down_with_the_primary_on_the_highest_ordinal(release: Release) -> None:
    FIGURES["scale 3 -> 5 (helm upgrade --wait)"] = release.upgrade("instances=5")
    release.wait_settled(5, timeout=300)
    highest = f"{release.name}-4"
    primary = release.wait_settled(5)
    if primary != highest:
        status, body = release.controller_post(primary, "/switchover", {"to": highest})
        assert status in (200, 202), body
        wait_for(f"{highest} primary", lambda: release.settled(5) == highest, 60, 0.5)
    writer = release.client_background(WRITER, release.dsn("primary"), "60", "0.1")
    time.sleep(3)
    # Without the pre-upgrade handover Job: the leaving primary's controller hands over
    # on SIGTERM to a member that stays (it reads its StatefulSet).
    FIGURES["scale 5 -> 3 (helm upgrade --wait)"] = release.upgrade(
        "instances=3", "upgradeHandover.enabled=false"
    )
    new = release.wait_settled(INSTANCES, timeout=300)
    assert new in {f"{release.name}-{i}" for i in range(INSTANCES)}
    result = finish_writer(writer, 120)
    FIGURES["scale 5 -> 3: longest write gap"] = result["max_gap"]
    assert result["max_gap"] < 15, f"write outage {result['max_gap']:.1f}s during scale-down"
    assert_no_acked_write_lost(release, result["acked"])
    members = release.sql("primary", "SELECT count(*) FROM pg_stat_replication")
    assert members == [[INSTANCES - 1]], f"replication of removed members left behind: {members}"


def test_rolling_image_upgrade_restarts_the_primary_last(release: Release) -> None:
    """OnDelete plus the post-upgrade rollout Job: the outdated replicas restart first,
    then one switchover to an updated replica, then the old primary: the primary moves
    exactly once, and no acknowledged write is lost."""
    release.wait_settled(INSTANCES)
    seen: list[str] = []
    stop = threading.Event()
    watcher = threading.Thread(target=watch_primaries, args=(release, stop, seen), daemon=True)
    watcher.start()
    writer = release.client_background(WRITER, release.dsn("primary"), "90", "0.1")
    try:
        FIGURES["rolling image upgrade (helm upgrade --wait)"] = release.upgrade(
            "image.tag=dev2", "upgradeHandover.enabled=true"
        )
        release.wait_settled(INSTANCES, timeout=300)
    finally:
        stop.set()
        watcher.join(5)
    result = finish_writer(writer, 180)
    FIGURES["rolling image upgrade: longest write gap"] = result["max_gap"]
    moves = len(seen) - 1
    assert moves == 1, f"the primary moved {moves} times, not once: {seen}"
    assert_no_acked_write_lost(release, result["acked"])
    images = {c["image"] for p in release.pods() for c in p["spec"]["containers"]}
    assert all(i.endswith(":dev2") for i in images), images


def test_helm_test(release: Release) -> None:
    start = time.monotonic()
    release.helm("test", release.name, "--timeout", "5m")
    FIGURES["helm test"] = time.monotonic() - start


def test_uninstall_keeps_volumes_and_secret(release: Release) -> None:
    release.helm("uninstall", release.name, "--wait", "--timeout", "5m")
    wait_for("the database pods to go", lambda: not release.pods(), 180)
    pvcs = release.kubectl(f"get pvc -l {release.selector}")
    assert len(pvcs) >= INSTANCES, "whenDeleted: Retain keeps the volumes"
    secret = release.kubectl(f"get secret {release.name}")
    assert "superuser-password" in secret["data"], "the generated Secret is kept"
