"""One parser of the cluster prefix: the controller's DCS and `pgras list` read the same KV.

The same Consul KV items go through ``ConsulDCS.get_cluster`` (the controller) and
``LocalCluster.members`` (``pgras list``), with only the Consul client faked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from postgres_ras.dcs import consul as consul_dcs
from postgres_ras.dcs.base import Cluster, Leader, Member
from postgres_ras.dcs.consul import ConsulDCS, cluster_prefix, parse_cluster
from postgres_ras.errors import DCSError
from postgres_ras.local import cluster as local_cluster
from postgres_ras.local.cluster import LocalCluster, MemberRow
from postgres_ras.local.layout import Layout

PREFIX = cluster_prefix("shop")


def kv(key: str, value: Any, session: str | None = None, index: int = 7) -> dict[str, Any]:
    """One entry as py-consul's kv.get(recurse=True) returns it."""
    raw = (
        value
        if isinstance(value, bytes) or value is None
        else (value.encode() if isinstance(value, str) else json.dumps(value).encode())
    )
    item: dict[str, Any] = {"Key": PREFIX + key, "Value": raw, "ModifyIndex": index, "Flags": 0}
    if session is not None:
        item["Session"] = session
    return item


def published(name: str, **over: Any) -> dict[str, Any]:
    """A member value as the controller writes it (``HA.member_data``)."""
    i = int(name.removeprefix("node"))
    data: dict[str, Any] = {
        "api_url": f"http://127.0.0.1:{25300 + i}",
        "conn_host": "127.0.0.1",
        "conn_port": 25100 + i,
        "role": "replica",
        "state": "running",
        "timeline": 2,
        "lsn": "0/3000000",
        "streaming": True,
        "sync_standby": False,
        "tags": {"nofailover": False, "noloadbalance": False},
    }
    data.update(over)
    return data


LEADER_AND_MEMBERS = [
    kv("leader", "node1", session="s1", index=40),
    kv("members/node1", published("node1", role="primary", lsn="0/3000100", streaming=False), "s1"),
    kv("members/node2", published("node2", lsn="0/3000000", sync_standby=True), "s2"),
    kv("members/node3", published("node3", lsn="0/2000000", streaming=False), "s3"),
]
INVALID_MEMBER = [
    kv("leader", "node1", session="s1", index=40),
    kv("members/node1", published("node1", role="primary", lsn="0/3000100", streaming=False), "s1"),
    kv("members/node2", b"{not json", "s2"),
    kv("members/node3", published("node3", lsn="0/3000000"), "s3"),
]
NO_LEADER = [
    kv("members/node2", published("node2", role="replica", lsn="0/3000000"), "s2"),
    kv("members/node3", published("node3", role="replica", lsn="0/2000000"), "s3"),
]


class FakeKV:
    def __init__(self, items: list[dict[str, Any]] | None, fail: bool = False) -> None:
        self.items, self.fail, self.calls = items, fail, 0

    def get(self, key: str, recurse: bool = False, **_: Any) -> tuple[int, Any]:
        self.calls += 1
        if self.fail:
            raise ConnectionError("connection refused")
        assert key == PREFIX and recurse
        return 123, self.items


class FakeClient:
    def __init__(self, kv: FakeKV) -> None:
        self.kv = kv


def controller_view(items: list[dict[str, Any]] | None) -> Cluster:
    dcs = ConsulDCS("shop", "node9", "http://127.0.0.1:1")
    dcs.client = FakeClient(FakeKV(items))
    return dcs.get_cluster()


@pytest.fixture
def local(tmp_path: Path) -> LocalCluster:
    c = LocalCluster(Layout(work_dir=tmp_path, cluster="shop"))
    c.layout.state_file.write_text(
        json.dumps({"cluster": "shop", "nodes": 3, "superuser_password": "pw"})
    )
    return c


def listed(
    monkeypatch: pytest.MonkeyPatch,
    local: LocalCluster,
    items: list[dict[str, Any]] | None,
    probe: dict[str, bool] | None = None,
) -> dict[str, MemberRow]:
    fake = FakeKV(items)
    monkeypatch.setattr(local_cluster, "consul_client", lambda *a, **k: FakeClient(fake))
    monkeypatch.setattr(local_cluster, "_answers", lambda urls: dict(probe or {}))
    rows = local.members(probe=probe is not None)
    assert fake.calls == 1
    return {r.name: r for r in rows}


def test_list_uses_the_controllers_parser() -> None:
    # No second parser: `pgras list` calls the very function the Consul DCS calls.
    assert vars(local_cluster)["parse_cluster"] is consul_dcs.parse_cluster


def test_raw_cluster_is_the_controllers_snapshot(
    monkeypatch: pytest.MonkeyPatch, local: LocalCluster
) -> None:
    fake = FakeKV(LEADER_AND_MEMBERS)
    monkeypatch.setattr(local_cluster, "consul_client", lambda *a, **k: FakeClient(fake))
    seen = local.raw_cluster()
    expected = controller_view(LEADER_AND_MEMBERS)
    assert seen.index == expected.index == 123
    assert (seen.leader, seen.members, seen.invalid_members) == (
        expected.leader,
        expected.members,
        expected.invalid_members,
    )


def test_raw_cluster_when_consul_is_down(
    monkeypatch: pytest.MonkeyPatch, local: LocalCluster
) -> None:
    fake = FakeKV(None, fail=True)
    monkeypatch.setattr(local_cluster, "consul_client", lambda *a, **k: FakeClient(fake))
    with pytest.raises(DCSError, match=r"unreachable.*pgras up"):
        local.members()


# --- a leader plus members --------------------------------------------------------------


def test_leader_and_members_parsed_once_for_both() -> None:
    c = parse_cluster(PREFIX, 9, LEADER_AND_MEMBERS)
    assert c.leader == Leader("node1", "s1", 40)
    assert [m.name for m in c.members] == ["node1", "node2", "node3"]
    assert c.invalid_members == ()
    node2 = c.member("node2")
    assert node2 == Member(
        name="node2",
        api_url="http://127.0.0.1:25302",
        conn_host="127.0.0.1",
        conn_port=25102,
        role="replica",
        state="running",
        timeline=2,
        lsn=0x3000000,
        nofailover=False,
        session="s2",
        streaming=True,
        sync_standby=True,
    )
    assert c.leader_member is not None and c.leader_member.lsn == 0x3000100
    assert controller_view(LEADER_AND_MEMBERS).members == c.members


def test_member_fields_default_when_absent() -> None:
    """Older controllers published neither ``streaming`` nor ``sync_standby``."""
    data = published("node2")
    del data["streaming"], data["sync_standby"]
    m = Member.from_json("node2", json.dumps(data), None)
    assert m is not None and (m.streaming, m.sync_standby) == (False, False)
    # Positional construction (ten fields) still works for existing callers.
    old = Member("n", "u", "h", 1, "replica", "running", 1, 1, False, None)
    assert (old.streaming, old.sync_standby) == (False, False)


def test_list_of_leader_and_members(monkeypatch: pytest.MonkeyPatch, local: LocalCluster) -> None:
    rows = listed(monkeypatch, local, LEADER_AND_MEMBERS)
    assert list(rows) == ["node1", "node2", "node3"]
    assert rows["node1"] == MemberRow(
        name="node1",
        host="127.0.0.1",
        port=25101,
        role="primary",
        state="running",
        timeline=2,
        lag=None,
        leader=True,
        streaming=False,
        api_url="http://127.0.0.1:25301",
        conninfo="host=127.0.0.1 port=25101 user=postgres password=pw dbname=postgres",
        sync_standby=False,
    )
    assert (rows["node2"].lag, rows["node2"].streaming, rows["node2"].sync_standby) == (
        0x100,
        True,
        True,
    )
    assert (rows["node3"].lag, rows["node3"].streaming) == (0x1000100, False)
    assert not rows["node2"].leader and not rows["node3"].leader


def test_leaders_sync_flag_is_not_shown(
    monkeypatch: pytest.MonkeyPatch, local: LocalCluster
) -> None:
    items = [
        kv("leader", "node1", session="s1"),
        kv("members/node1", published("node1", role="primary", sync_standby=True), "s1"),
    ]
    assert not listed(monkeypatch, local, items)["node1"].sync_standby


def test_lapsed_member_key_is_listed_down(
    monkeypatch: pytest.MonkeyPatch, local: LocalCluster
) -> None:
    rows = listed(monkeypatch, local, LEADER_AND_MEMBERS[:3])  # node3's key lapsed
    assert rows["node3"] == MemberRow(
        name="node3",
        host="127.0.0.1",
        port=25103,
        role="unknown",
        state="down",
        timeline=None,
        lag=None,
        leader=False,
        streaming=False,
        api_url="",
        conninfo="",
    )


def test_member_whose_api_does_not_answer_is_unreachable(
    monkeypatch: pytest.MonkeyPatch, local: LocalCluster
) -> None:
    probe = {"node1": False, "node2": True, "node3": True}
    rows = listed(monkeypatch, local, LEADER_AND_MEMBERS, probe=probe)
    assert (rows["node1"].state, rows["node1"].streaming, rows["node1"].leader) == (
        "unreachable",
        False,
        True,
    )
    assert (rows["node2"].state, rows["node2"].streaming) == ("running", True)


# --- a member with invalid JSON ---------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"[1, 2]", b"null", b"\xff\xfe", json.dumps({"role": "replica"}).encode()],
    ids=["not-json", "not-an-object", "null", "not-utf8", "fields-missing"],
)
def test_invalid_member_is_explicit_for_the_controller(raw: bytes) -> None:
    items = [*INVALID_MEMBER[:2], kv("members/node2", raw, "s2"), INVALID_MEMBER[3]]
    c = controller_view(items)  # the controller reads it without raising
    assert c.invalid_members == ("node2",)
    assert [m.name for m in c.members] == ["node1", "node3"]
    assert c.member("node2") is None  # never followed, never a candidate
    assert c.leader_member is not None and c.leader_member.name == "node1"


def test_invalid_member_is_listed_invalid(
    monkeypatch: pytest.MonkeyPatch, local: LocalCluster
) -> None:
    rows = listed(monkeypatch, local, INVALID_MEMBER, probe={"node1": True, "node3": True})
    assert rows["node2"] == MemberRow(
        name="node2",
        host="?",
        port=0,
        role="invalid",
        state="invalid",
        timeline=None,
        lag=None,
        leader=False,
        streaming=False,
        api_url="",
        conninfo="host=? port=0 user=postgres password=pw dbname=postgres",
    )
    assert rows["node3"].lag == 0x100 and rows["node1"].leader


def test_invalid_leader_member(monkeypatch: pytest.MonkeyPatch, local: LocalCluster) -> None:
    items = [kv("leader", "node1", session="s1"), kv("members/node1", b"{", "s1"), NO_LEADER[0]]
    c = parse_cluster(PREFIX, 1, items)
    assert c.leader is not None and c.leader_member is None
    rows = listed(monkeypatch, local, items)
    assert (rows["node1"].state, rows["node1"].leader) == ("invalid", True)
    assert rows["node2"].lag is None  # no leader position to measure against


# --- a missing leader -------------------------------------------------------------------


def test_missing_leader() -> None:
    c = controller_view(NO_LEADER)
    assert c.leader is None and c.leader_member is None
    assert [m.name for m in c.members] == ["node2", "node3"]


def test_missing_leader_listed(monkeypatch: pytest.MonkeyPatch, local: LocalCluster) -> None:
    rows = listed(monkeypatch, local, NO_LEADER)
    assert not any(r.leader for r in rows.values())
    assert all(r.lag is None for r in rows.values())  # lag is measured from the leader
    assert rows["node1"].state == "down"
    assert (rows["node2"].state, rows["node2"].role) == ("running", "replica")


def test_empty_prefix(monkeypatch: pytest.MonkeyPatch, local: LocalCluster) -> None:
    empty: tuple[list[dict[str, Any]] | None, ...] = (None, [])
    for items in empty:
        c = controller_view(items)
        assert (c.leader, c.members, c.invalid_members) == (None, (), ())
        rows = listed(monkeypatch, local, items)
        assert [r.state for r in rows.values()] == ["down", "down", "down"]


def test_removal_markers_are_parsed_with_their_time() -> None:
    items = [kv("removed/node3", "1700000000.5"), kv("removed/node4", "garbage")]
    c = parse_cluster(PREFIX, 1, items)
    assert c.removed == {"node3": 1700000000.5, "node4": 0.0}  # unparsable: long ago
    assert c.members == ()
