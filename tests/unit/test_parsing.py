"""Pure parsers and renderers.

Consul KV -> Cluster, member JSON, LSNs, pg_controldata, pgras.conf and pg_hba.conf.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postgres_ras.agent.controldata import ControlData, parse_controldata
from postgres_ras.agent.pgconf import (
    BASE_PARAMETERS,
    Upstream,
    conninfo,
    quote,
    render_pg_hba,
    render_pgras_conf,
)
from postgres_ras.config import NodeConfig
from postgres_ras.dcs.base import Cluster, Leader, Member, Switchover
from postgres_ras.dcs.consul import cluster_prefix, parse_cluster
from postgres_ras.lsn import format_lsn, parse_lsn

PREFIX = cluster_prefix("shop")
FAST = settings(max_examples=200, deadline=None, database=None)


def kv(key: str, value: Any, session: str | None = None, index: int = 7) -> dict[str, Any]:
    """One entry as python-consul's kv.get(recurse=True) returns it."""
    raw = (
        value
        if isinstance(value, bytes) or value is None
        else (value.encode() if isinstance(value, str) else json.dumps(value).encode())
    )
    item: dict[str, Any] = {"Key": PREFIX + key, "Value": raw, "ModifyIndex": index, "Flags": 0}
    if session is not None:
        item["Session"] = session
    return item


def member_json(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "api_url": "http://10.0.0.2:8008",
        "conn_host": "10.0.0.2",
        "conn_port": 5432,
        "role": "primary",
        "state": "running",
        "timeline": 3,
        "lsn": "0/3000060",
        "lag": 0,
        "tags": {"nofailover": False},
    }
    data.update(over)
    return data


# --- parse_cluster ----------------------------------------------------------------------


def test_prefix() -> None:
    assert PREFIX == "pgras/shop/"


def test_parse_cluster_everything() -> None:
    history = [
        {"member": "n1", "lsn": "0/0", "why": "bootstrap"},
        {"member": "n2", "why": "failover"},
    ]
    items = [
        kv("leader", "n2", session="s-2", index=41),
        kv("members/n2", member_json(), session="s-2"),
        kv(
            "members/n1",
            member_json(
                api_url="http://10.0.0.1:8008",
                conn_host="10.0.0.1",
                role="replica",
                lsn="0/3000000",
            ),
            session="s-1",
        ),
        kv(
            "members/n3",
            member_json(
                conn_host="10.0.0.3",
                role="replica",
                tags={"nofailover": True},
                lsn=None,
                timeline=None,
            ),
        ),
        kv("members/broken", b"{not json"),
        kv("members/notadict", [1, 2]),
        kv("members/noport", member_json(conn_port=None)),
        kv("initialize", "7301234567890123456"),
        kv("config", {"ttl": 10, "synchronous_mode": True}),
        kv("switchover", {"from": "n2", "to": "n1", "at": 1700000000.5}),
        kv("sync", "n1"),
        kv("history", history),
        kv("unrelated", "ignored"),
    ]
    c = parse_cluster(PREFIX, 99, items)
    assert c.index == 99
    assert c.leader == Leader("n2", "s-2", 41)
    assert [m.name for m in c.members] == ["n1", "n2", "n3"]  # sorted by name
    assert c.invalid_members == ("broken", "noport", "notadict")
    assert c.initialize == "7301234567890123456"
    assert c.config == {"ttl": 10, "synchronous_mode": True}
    assert c.switchover == Switchover("n2", "n1", 1700000000.5)
    assert c.sync == "n1"
    assert c.history == tuple(history)
    n2 = c.member("n2")
    assert n2 == Member(
        name="n2",
        api_url="http://10.0.0.2:8008",
        conn_host="10.0.0.2",
        conn_port=5432,
        role="primary",
        state="running",
        timeline=3,
        lsn=0x3000060,
        nofailover=False,
        session="s-2",
    )
    assert c.leader_member == n2
    n3 = c.member("n3")
    assert n3 is not None and n3.nofailover and n3.lsn is None and n3.timeline is None
    assert n3.session is None
    assert c.member("broken") is None


@pytest.mark.parametrize(
    ("value", "names"),
    [
        (b"n2", ("n2",)),
        (b"n2,n3", ("n2", "n3")),
        (b"", ()),
        (None, ()),
        (b" n2 , ,n3", ("n2", "n3")),
    ],
)
def test_parse_cluster_sync_key(value: bytes | None, names: tuple[str, ...]) -> None:
    """The sync key: names and its modify index (writers check-and-set against it)."""
    c = parse_cluster(PREFIX, 5, [{"Key": PREFIX + "sync", "Value": value, "ModifyIndex": 42}])
    assert (c.sync_names, c.sync_index) == (names, 42)
    assert parse_cluster(PREFIX, 5, []).sync_index == 0


def test_parse_cluster_empty() -> None:
    for items in (None, []):
        c = parse_cluster(PREFIX, 0, items)
        assert (c.leader, c.members, c.initialize, c.config, c.switchover, c.sync) == (
            None,
            (),
            None,
            None,
            None,
            None,
        )
        assert c.history == () and c.invalid_members == ()
        assert c.leader_member is None


def test_leader_without_value_is_no_leader() -> None:
    assert parse_cluster(PREFIX, 1, [kv("leader", b"", session="s")]).leader is None
    assert parse_cluster(PREFIX, 1, [kv("leader", None)]).leader is None


def test_leader_without_session() -> None:
    assert parse_cluster(PREFIX, 1, [kv("leader", "n1", index=5)]).leader == Leader("n1", None, 5)


def test_leader_whose_member_key_is_missing() -> None:
    c = parse_cluster(PREFIX, 1, [kv("leader", "n2", session="s"), kv("members/n1", member_json())])
    assert c.leader is not None and c.leader_member is None


def test_values_may_arrive_as_text() -> None:
    item = {"Key": PREFIX + "leader", "Value": "n1", "ModifyIndex": 3, "Session": "s"}
    assert parse_cluster(PREFIX, 1, [item]).leader == Leader("n1", "s", 3)


def test_invalid_utf8_is_replaced_not_raised() -> None:
    c = parse_cluster(PREFIX, 1, [kv("sync", b"n\xff1"), kv("members/x", b"\xff\xfe")])
    assert c.sync == "n\ufffd1"
    assert c.invalid_members == ("x",)


@pytest.mark.parametrize(
    ("key", "raw", "field", "expected"),
    [
        ("config", b"not json", "config", None),
        ("config", b"[1, 2]", "config", None),
        ("config", b"", "config", None),
        ("history", b"{broken", "history", ()),
        ("history", b'{"a": 1}', "history", ()),
        ("switchover", b"{}", "switchover", None),
        ("switchover", b'{"from": "n1", "at": "soon"}', "switchover", None),
        ("switchover", b"[]", "switchover", None),
        ("initialize", b"", "initialize", None),
        ("sync", b"", "sync", None),
    ],
)
def test_nonsense_values_are_dropped(key: str, raw: bytes, field: str, expected: Any) -> None:
    c = parse_cluster(PREFIX, 1, [kv(key, raw)])
    assert getattr(c, field) == expected


def test_initialize_pending() -> None:
    assert parse_cluster(PREFIX, 1, [kv("initialize", "pending")]).initialize == "pending"


def test_switchover_without_target() -> None:
    c = parse_cluster(PREFIX, 1, [kv("switchover", {"from": "n2", "to": None, "at": 5})])
    assert c.switchover == Switchover("n2", None, 5.0)


def test_switchover_round_trip() -> None:
    sw = Switchover("n1", "n3", 1000.0)
    assert Switchover.from_json(sw.to_json()) == sw
    assert Switchover.from_json(sw.to_json().encode()) == sw
    assert Switchover.from_json(None) is None


def test_cluster_member_lookup() -> None:
    c = Cluster(members=(Member("a", "u", "h", 1, "replica", "running", 1, 1, False, None),))
    assert c.member("a") is not None and c.member("b") is None
    assert c.leader_member is None


# --- Member.from_json -------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        None,
        b"",
        b"null",
        b"42",
        b'"text"',
        b"[]",
        b"{",
        b"{}",
        json.dumps({k: v for k, v in member_json().items() if k != "conn_host"}),
        json.dumps({k: v for k, v in member_json().items() if k != "api_url"}),
        json.dumps({k: v for k, v in member_json().items() if k != "conn_port"}),
        json.dumps(member_json(conn_port="fivefour")),
        json.dumps(member_json(conn_port=0)),
        json.dumps(member_json(conn_port=65536)),
        json.dumps(member_json(conn_port=-5432)),
        json.dumps(member_json(conn_port=None)),
        json.dumps(member_json(conn_port=[5432])),
        json.dumps(member_json(timeline="three")),
        json.dumps(member_json(timeline={})),
        json.dumps(member_json(lsn="nonsense")),
        json.dumps(member_json(lsn="0/XYZ")),
        json.dumps(member_json(lsn={"hi": 0})),
        json.dumps(member_json(lsn=[1])),
        json.dumps(member_json(tags="nofailover")),
        json.dumps(member_json(tags=["nofailover"])),
    ],
)
def test_member_nonsense_is_none(raw: bytes | str | None) -> None:
    assert Member.from_json("n1", raw, "s") is None


@pytest.mark.parametrize("field", ["conn_port", "timeline", "lsn"])
def test_member_with_infinite_number_is_none(field: str) -> None:
    raw = json.dumps(member_json()).replace(f'"{field}": ', f'"{field}": 1e999, "x{field}": ', 1)
    assert Member.from_json("n1", raw, None) is None


def test_member_lsn_forms() -> None:
    assert (
        Member.from_json("n", json.dumps(member_json(lsn="16/B374D848")), None).lsn == 0x16B374D848
    )  # type: ignore[union-attr]
    assert Member.from_json("n", json.dumps(member_json(lsn=1234)), None).lsn == 1234  # type: ignore[union-attr]
    assert Member.from_json("n", json.dumps(member_json(lsn=None)), None).lsn is None  # type: ignore[union-attr]


def test_member_defaults() -> None:
    data = {"api_url": "http://h:8008", "conn_host": "h", "conn_port": "5432"}
    m = Member.from_json("n", json.dumps(data), "s")
    assert m == Member(
        "n", "http://h:8008", "h", 5432, "unknown", "unknown", None, None, False, "s"
    )


@pytest.mark.parametrize("port", [1, 5432, 65535])
def test_member_port_bounds(port: int) -> None:
    m = Member.from_json("n", json.dumps(member_json(conn_port=port)), None)
    assert m is not None and m.conn_port == port


@FAST
@given(st.one_of(st.binary(max_size=64), st.text(max_size=64), st.none()))
def test_member_never_raises_on_garbage(raw: bytes | str | None) -> None:
    m = Member.from_json("n", raw, None)
    assert m is None or isinstance(m, Member)


json_values = st.recursive(
    # Infinity is left to test_member_with_infinite_number_is_none (a known bug).
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@FAST
@given(st.fixed_dictionaries({}, optional={k: json_values for k in member_json()}))
def test_member_never_raises_on_odd_json(data: dict[str, Any]) -> None:
    m = Member.from_json("n", json.dumps(data), None)
    if m is not None:
        assert 0 < m.conn_port < 65536


# --- LSNs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0/0", 0),
        ("0/1", 1),
        ("0/3000060", 0x3000060),
        ("16/B374D848", 0x16B374D848),
        ("16/b374d848", 0x16B374D848),
        ("FFFFFFFF/FFFFFFFF", 2**64 - 1),
        ("1/0", 2**32),
    ],
)
def test_parse_lsn(text: str, value: int) -> None:
    assert parse_lsn(text) == value


@pytest.mark.parametrize("text", ["", "/", "0/", "/0", "00", "G/0", "0/G", "1/2/3", "0-0", "lsn"])
def test_parse_lsn_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_lsn(text)


@pytest.mark.parametrize("text", ["-1/0", "0/-1", "0x1/0", "1_0/0", " 1/2", "0/100000000"])
def test_parse_lsn_rejects_what_postgres_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_lsn(text)


@pytest.mark.parametrize(
    ("value", "text"), [(0, "0/0"), (0x16B374D848, "16/B374D848"), (2**64 - 1, "FFFFFFFF/FFFFFFFF")]
)
def test_format_lsn(value: int, text: str) -> None:
    assert format_lsn(value) == text


@FAST
@given(st.integers(0, 2**64 - 1))
def test_lsn_round_trip(value: int) -> None:
    text = format_lsn(value)
    assert re.fullmatch(r"[0-9A-F]{1,8}/[0-9A-F]{1,8}", text)
    assert parse_lsn(text) == value
    assert parse_lsn(text.lower()) == value


@FAST
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_lsn_text_round_trip(hi: int, lo: int) -> None:
    assert format_lsn(parse_lsn(f"{hi:X}/{lo:X}")) == f"{hi:X}/{lo:X}"
    # Order of LSNs is the order of (hi, lo).
    assert parse_lsn(f"{hi:X}/{lo:X}") == (hi << 32) | lo


# --- pg_controldata ---------------------------------------------------------------------

CONTROLDATA_PG15 = """\
pg_control version number:            1300
Catalog version number:               202209061
Database system identifier:           7301234567890123456
Database cluster state:               {state}
pg_control last modified:             Tue 12 Mar 2024 10:15:42 AM UTC
Latest checkpoint location:           0/3000060
Latest checkpoint's REDO location:    0/3000028
Latest checkpoint's REDO WAL file:    000000020000000000000003
Latest checkpoint's TimeLineID:       2
Latest checkpoint's PrevTimeLineID:   2
Latest checkpoint's full_page_writes: on
Latest checkpoint's NextXID:          0:735
Latest checkpoint's NextOID:          16389
Latest checkpoint's NextMultiXactId:  1
Latest checkpoint's NextMultiOffset:  0
Latest checkpoint's oldestXID:        716
Latest checkpoint's oldestXID's DB:   1
Latest checkpoint's oldestActiveXID:  735
Latest checkpoint's oldestMultiXid:   1
Latest checkpoint's oldestMulti's DB: 1
Latest checkpoint's oldestCommitTsXid:0
Latest checkpoint's newestCommitTsXid:0
Time of latest checkpoint:            Tue 12 Mar 2024 10:15:40 AM UTC
Fake LSN counter for unlogged rels:   0/3E8
Minimum recovery ending location:     {min_recovery}
Min recovery ending loc's timeline:   0
Backup start location:                0/0
Backup end location:                  0/0
End-of-backup record required:        no
wal_level setting:                    replica
wal_log_hints setting:                on
max_connections setting:              100
max_worker_processes setting:         8
max_wal_senders setting:              20
max_prepared_xacts setting:           0
max_locks_per_xact setting:           64
track_commit_timestamp setting:       off
Maximum data alignment:               8
Database block size:                  8192
Blocks per segment of large relation: 131072
WAL block size:                       8192
Bytes per WAL segment:                16777216
Maximum length of identifiers:        64
Maximum columns in an index:          32
Maximum size of a TOAST chunk:        1996
Size of a large-object chunk:         2048
Date/time type storage:               64-bit integers
Float8 argument passing:              by value
Data page checksum version:           0
Mock authentication nonce:            8c0a1f7e3b5d2c4a9e6f1b0d7c3a5e2f4b8d6c1a9e7f3b5d0c2a4e6f8b1d
"""


def controldata(state: str, min_recovery: str = "0/0") -> str:
    return CONTROLDATA_PG15.format(state=state, min_recovery=min_recovery)


def test_parse_controldata_pg15() -> None:
    c = parse_controldata(controldata("in production"))
    assert c == ControlData(
        system_identifier="7301234567890123456",
        state="in production",
        timeline=2,
        checkpoint_lsn=0x3000060,
        min_recovery_lsn=0,
    )


def test_parse_controldata_min_recovery() -> None:
    c = parse_controldata(controldata("shut down in recovery", "0/5000100"))
    assert c.min_recovery_lsn == 0x5000100


def test_parse_controldata_without_min_recovery_line() -> None:
    text = "\n".join(
        line
        for line in controldata("shut down").splitlines()
        if not line.startswith("Minimum recovery")
    )
    assert parse_controldata(text).min_recovery_lsn == 0


@pytest.mark.parametrize(
    ("state", "was_primary", "clean"),
    [
        ("in production", True, False),
        ("shut down", True, True),
        ("shutting down", True, False),
        ("in crash recovery", True, False),
        ("shut down in recovery", False, True),
        ("in archive recovery", False, False),
        ("starting up", False, False),
    ],
)
def test_controldata_state(state: str, was_primary: bool, clean: bool) -> None:
    c = parse_controldata(controldata(state))
    assert c.state == state
    assert c.was_primary is was_primary
    assert c.clean is clean


@pytest.mark.parametrize(
    "text",
    [
        "",
        'pg_controldata: fatal: could not open file "global/pg_control" for reading',
        controldata("in production").replace("Database system identifier", "System id"),
        controldata("in production").replace(
            "Latest checkpoint's TimeLineID:       2", "Latest checkpoint's TimeLineID:       two"
        ),
        controldata("in production").replace(
            "Latest checkpoint location:           0/3000060",
            "Latest checkpoint location:           ?",
        ),
    ],
)
def test_parse_controldata_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="unexpected pg_controldata output"):
        parse_controldata(text)


# --- pgras.conf and pg_hba.conf -------------------------------------------------------


def node_config(**over: Any) -> NodeConfig:
    data: dict[str, Any] = {
        "name": "pg-1",
        "cluster": "shop",
        "data_dir": "/srv/pg",
        "postgres": {
            "listen": "0.0.0.0",
            "port": 5433,
            "replication": {"username": "repl", "password": "it's a \\ secret"},
            "parameters": {"work_mem": "8MB", "max_connections": 300},
        },
    }
    data.update(over)
    return NodeConfig.model_validate(data)


def conf_lines(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, _, value = line.partition(" = ")
        assert key not in out, f"{key} set twice"
        out[key] = value
    return out


def guc_unquote(value: str) -> str:
    """Read a quoted postgresql.conf value the way PostgreSQL's GUC file parser does."""
    assert re.fullmatch(r"'([^'\\\n]|\\.|'')*'", value), value
    body, out, i = value[1:-1], [], 0
    escapes = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            nxt = body[i + 1]
            out.append(escapes.get(nxt, nxt))
            i += 2
        elif ch == "'":
            out.append("'")
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def libpq_parse(info: str) -> dict[str, str]:
    """Parse a libpq key=value connection string (quoted values, backslash escapes)."""
    out: dict[str, str] = {}
    i = 0
    while i < len(info):
        if info[i].isspace():
            i += 1
            continue
        eq = info.index("=", i)
        key = info[i:eq].strip()
        i = eq + 1
        value = []
        if info[i] == "'":
            i += 1
            while info[i] != "'":
                if info[i] == "\\":
                    i += 1
                value.append(info[i])
                i += 1
            i += 1
        else:
            while i < len(info) and not info[i].isspace():
                if info[i] == "\\":
                    i += 1
                value.append(info[i])
                i += 1
        out[key] = "".join(value)
    return out


def test_render_replica_conf() -> None:
    cfg = node_config()
    text = render_pgras_conf(cfg, Upstream("10.0.0.2", 5432))
    assert text.startswith("# Written by the pgras agent")
    conf = conf_lines(text)
    assert conf["primary_slot_name"] == "'pg_1'"
    assert conf["listen_addresses"] == "'0.0.0.0'"
    assert conf["port"] == "5433"
    assert conf["cluster_name"] == "'shop-pg-1'"
    assert conf["work_mem"] == "'8MB'"
    assert conf["max_connections"] == "300"  # the node's parameters win over the base ones
    assert conf["hot_standby"] == "on" and conf["logging_collector"] == "off"
    info = libpq_parse(guc_unquote(conf["primary_conninfo"]))
    assert info == {
        "host": "10.0.0.2",
        "port": "5432",
        "user": "repl",
        "password": "it's a \\ secret",
        "application_name": "pg-1",
        "connect_timeout": "2",
        "keepalives_idle": "2",
        "keepalives_interval": "1",
        "keepalives_count": "3",
    }


def test_password_with_a_quote_is_escaped_twice() -> None:
    cfg = node_config(postgres={"replication": {"username": "r", "password": "pa'ss"}})
    line = next(
        line
        for line in render_pgras_conf(cfg, Upstream("h", 1)).splitlines()
        if line.startswith("primary_conninfo")
    )
    # libpq escapes the quote as \' and postgresql.conf then doubles quotes and backslashes.
    assert "password=''pa\\\\''ss''" in line


def test_primary_conf_has_no_upstream() -> None:
    conf = conf_lines(render_pgras_conf(node_config(), None))
    assert conf["primary_conninfo"] == "''"
    assert conf["primary_slot_name"] == "''"


def test_extra_parameters_win_but_not_over_identity() -> None:
    extra = {"work_mem": "64MB", "port": 1, "synchronous_standby_names": "*"}
    conf = conf_lines(render_pgras_conf(node_config(), None, extra))
    assert conf["work_mem"] == "'64MB'"
    assert conf["synchronous_standby_names"] == "'*'"
    assert conf["port"] == "5433"


def test_base_parameters_are_all_rendered_sorted() -> None:
    text = render_pgras_conf(node_config(postgres={}), None)
    conf = conf_lines(text)
    for key, value in BASE_PARAMETERS.items():
        assert conf[key] == quote(value)
    keys = [line.partition(" = ")[0] for line in text.splitlines()[1:]]
    assert keys == sorted(keys)
    assert text.endswith("\n")
    assert conf["unix_socket_directories"] == "''"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (True, "on"),
        (False, "off"),
        (5, "5"),
        (1.5, "1.5"),
        ("8MB", "'8MB'"),
        ("it's", "'it''s'"),
        ("a\\b", "'a\\\\b'"),
    ],
)
def test_quote(value: Any, text: str) -> None:
    assert quote(value) == text


printable_no_newline = st.text(
    st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=30
)


@FAST
@given(password=printable_no_newline, host=st.from_regex(r"[a-z0-9.-]{1,20}", fullmatch=True))
def test_conninfo_survives_both_quoting_layers(password: str, host: str) -> None:
    rendered = quote(conninfo(host=host, port=5432, password=password))
    assert libpq_parse(guc_unquote(rendered)) == {
        "host": host,
        "port": "5432",
        "password": password,
    }


def test_render_pg_hba() -> None:
    cfg = node_config(
        postgres={
            "replication": {"username": "repl", "password": "x"},
            "allow_networks": ["10.0.0.0/8", "127.0.0.1/32"],
        }
    )
    text = render_pg_hba(cfg)
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert lines == [
        "host replication repl 127.0.0.1/32 scram-sha-256",
        "host all all 127.0.0.1/32 scram-sha-256",
        "host replication repl ::1/128 scram-sha-256",
        "host all all ::1/128 scram-sha-256",
        "host replication repl 10.0.0.0/8 scram-sha-256",
        "host all all 10.0.0.0/8 scram-sha-256",
    ]
    assert text.endswith("\n")
    assert "trust" not in text and "local" not in lines[0]


def test_render_pg_hba_defaults_to_loopback_only() -> None:
    text = render_pg_hba(node_config(postgres={}))
    nets = {line.split()[3] for line in text.splitlines() if line.startswith("host ")}
    assert nets == {"127.0.0.1/32", "::1/128"}
    assert "host replication replicator 127.0.0.1/32 scram-sha-256" in text


def test_render_does_not_touch_the_disk(tmp_path: Path) -> None:
    cfg = node_config(data_dir=str(tmp_path / "absent"))
    render_pgras_conf(cfg, Upstream("h", 1))
    render_pg_hba(cfg)
    assert not (tmp_path / "absent").exists()
