"""Several local Consul servers: port layout, argv, option validation, leader mapping."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from postgres_ras.cli import main
from postgres_ras.errors import FatalError
from postgres_ras.local import consul_server
from postgres_ras.local.cluster import LocalCluster
from postgres_ras.local.layout import (
    CONSUL_SERVER_COUNTS,
    MAX_NODES,
    ConsulPorts,
    Layout,
    check_consul_servers,
)
from postgres_ras.local.procs import ProcessTable
from postgres_ras.verify import run as verify_run
from postgres_ras.verify.faults import FaultError, Injector

BASE = 27500


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(tmp_path, BASE)


def _flag(argv: list[str], name: str) -> list[str]:
    return [a.split("=", 1)[1] for a in argv if a.startswith(f"-{name}=")]


# --- layout -----------------------------------------------------------------------------
def test_server_zero_keeps_the_one_server_ports(layout: Layout) -> None:
    first = layout.consul(0)
    assert (first.name, first.http, first.server, first.serf) == (
        "consul",
        BASE,
        BASE + 1,
        BASE + 2,
    )
    assert (first.http, first.server, first.serf) == (
        layout.consul_http,
        layout.consul_server,
        layout.consul_serf,
    )
    assert first.url == layout.consul_url
    assert first.raft_address == f"127.0.0.1:{BASE + 1}"


def test_extra_servers_use_free_offsets(layout: Layout) -> None:
    servers = layout.consul_servers(5)
    assert [s.name for s in servers] == ["consul", "consul2", "consul3", "consul4", "consul5"]
    assert [(s.http - BASE, s.server - BASE, s.serf - BASE) for s in servers[1:]] == [
        (40, 41, 42),
        (43, 44, 45),
        (46, 47, 48),
        (49, 50, 51),
    ]


def test_no_consul_port_collides_with_any_other_port_of_the_layout(layout: Layout) -> None:
    consul = [
        p
        for s in layout.consul_servers(max(CONSUL_SERVER_COUNTS))
        for p in (s.http, s.server, s.serf)
    ]
    others = [
        layout.haproxy_write,
        layout.haproxy_read,
        layout.haproxy_stats,
        layout.pgpool,
        layout.pgpool_pcp,
        layout.app_pgpool,
        layout.app_write,
        layout.app_read,
    ]
    for i in range(1, MAX_NODES + 1):
        node = layout.node(i)
        others += [node.postgres, node.agent, node.api]
    assert len(set(consul)) == len(consul)
    assert not set(consul) & set(others)


def test_server_index_out_of_range(layout: Layout) -> None:
    with pytest.raises(ValueError, match="out of range"):
        layout.consul(max(CONSUL_SERVER_COUNTS))
    with pytest.raises(ValueError, match="out of range"):
        layout.consul(-1)


def test_each_node_talks_to_its_own_server_round_robin(layout: Layout) -> None:
    assert [layout.node_consul(i, 3).name for i in range(1, 7)] == [
        "consul",
        "consul2",
        "consul3",
        "consul",
        "consul2",
        "consul3",
    ]
    assert {layout.node_consul(i, 1).url for i in range(1, 5)} == {layout.consul_url}


def test_each_node_falls_back_to_the_next_servers_in_turn(layout: Layout) -> None:
    names = {i: [s.name for s in layout.node_consul_fallbacks(i, 3)] for i in (1, 2, 3, 4)}
    assert names == {
        1: ["consul2", "consul3"],
        2: ["consul3", "consul"],
        3: ["consul", "consul2"],
        4: ["consul2", "consul3"],
    }
    assert layout.node_consul_fallbacks(1, 1) == []


# --- option validation ------------------------------------------------------------------
@pytest.mark.parametrize("count", [1, 3, 5])
def test_allowed_counts(count: int) -> None:
    assert check_consul_servers(count) == count


@pytest.mark.parametrize("count", [0, 2, 4, 6, 7, -1])
def test_other_counts_are_refused_naming_the_option_and_the_allowed_values(count: int) -> None:
    with pytest.raises(
        ValueError, match=rf"--consul-servers must be one of 1, 3, 5 .*not {count}$"
    ):
        check_consul_servers(count)


def test_up_refuses_a_bad_count_before_starting_anything(tmp_path: Path) -> None:
    work = tmp_path / "w"
    result = CliRunner().invoke(main, ["--work-dir", str(work), "up", "--consul-servers", "2"])
    assert result.exit_code == 2
    assert "Invalid value for '--consul-servers'" in result.output
    assert "must be one of 1, 3, 5" in result.output
    assert not work.exists()


def test_up_help_names_the_option() -> None:
    result = CliRunner().invoke(main, ["up", "--help"])
    assert result.exit_code == 0
    assert "--consul-servers" in result.output
    assert "1, 3 or 5" in result.output


# --- argv ---------------------------------------------------------------------------------
def test_one_server_argv_is_unchanged(layout: Layout) -> None:
    argv = consul_server.argv(layout, binary="consul")
    assert argv[:3] == ["consul", "agent", "-server"]
    assert _flag(argv, "bootstrap-expect") == ["1"]
    assert _flag(argv, "data-dir") == [str(layout.component_dir("consul"))]
    assert _flag(argv, "node") == ["pgras-pgras"]
    assert _flag(argv, "http-port") == [str(BASE)]
    assert _flag(argv, "retry-join") == []
    assert "performance { raft_multiplier = 1 }" in argv


def test_three_server_argv(layout: Layout) -> None:
    argvs = [consul_server.argv(layout, i, 3, binary="consul") for i in range(3)]
    for argv in argvs:
        assert _flag(argv, "bootstrap-expect") == ["3"]
        assert _flag(argv, "retry-interval") == ["1s"]
        assert _flag(argv, "bind") == ["127.0.0.1"]
    assert [_flag(a, "node")[0] for a in argvs] == ["pgras-pgras", "pgras-pgras-2", "pgras-pgras-3"]
    assert [_flag(a, "data-dir")[0] for a in argvs] == [
        str(layout.component_dir(n)) for n in ("consul", "consul2", "consul3")
    ]
    ports = [
        tuple(int(_flag(a, f)[0]) for f in ("http-port", "server-port", "serf-lan-port"))
        for a in argvs
    ]
    assert ports == [(s.http, s.server, s.serf) for s in layout.consul_servers(3)]
    serf = [s.serf for s in layout.consul_servers(3)]
    for i, argv in enumerate(argvs):
        # Every other server, never itself.
        assert _flag(argv, "retry-join") == [f"127.0.0.1:{p}" for j, p in enumerate(serf) if j != i]


def test_argv_refuses_an_index_outside_the_count(layout: Layout) -> None:
    with pytest.raises(ValueError, match="out of range"):
        consul_server.argv(layout, 3, 3, binary="consul")
    with pytest.raises(ValueError, match="--consul-servers"):
        consul_server.argv(layout, 0, 2, binary="consul")


# --- health and the raft leader -----------------------------------------------------------
def _fake_status(
    monkeypatch: pytest.MonkeyPatch, answers: dict[tuple[int, str], Any]
) -> list[tuple[int, str]]:
    """Replace the HTTP status calls by ``answers[(http port, what)]`` (None: no answer)."""
    asked: list[tuple[int, str]] = []

    def status(server: ConsulPorts, what: str, timeout: float) -> Any:
        asked.append((server.http, what))
        return answers.get((server.http, what))

    monkeypatch.setattr(consul_server, "_status", status)
    return asked


def test_healthy_needs_a_leader_and_every_peer(
    layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    servers = layout.consul_servers(3)
    raft = [s.raft_address for s in servers]
    answers: dict[tuple[int, str], Any] = {(s.http, "leader"): raft[1] for s in servers}
    answers |= {(s.http, "peers"): raft[:2] for s in servers}
    _fake_status(monkeypatch, answers)
    assert not consul_server.healthy(layout, servers=3)  # the third is not a peer yet
    answers |= {(s.http, "peers"): raft for s in servers}
    assert consul_server.healthy(layout, servers=3)
    answers[(servers[2].http, "leader")] = ""  # one server knows no leader
    assert not consul_server.healthy(layout, servers=3)


def test_one_server_needs_only_a_leader(layout: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = _fake_status(monkeypatch, {(BASE, "leader"): f"127.0.0.1:{BASE + 1}"})
    assert consul_server.healthy(layout)
    assert asked == [(BASE, "leader")]


def test_leader_maps_the_raft_address_to_the_process(
    layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    servers = layout.consul_servers(3)
    # Server 0 is down (no answer); server 1 names server 2 as leader.
    _fake_status(monkeypatch, {(servers[1].http, "leader"): servers[2].raft_address})
    found = consul_server.leader(layout, 3)
    assert found is not None and found.name == "consul3"


def test_leader_ignores_an_unknown_address(layout: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_status(monkeypatch, {(BASE, "leader"): "10.0.0.9:8300"})
    assert consul_server.leader(layout, 3) is None


def test_wait_new_leader_asks_only_the_survivors(
    layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    servers = layout.consul_servers(3)
    old = servers[0]
    answers: dict[tuple[int, str], Any] = {(old.http, "leader"): old.raft_address}
    answers |= {(s.http, "leader"): servers[1].raft_address for s in servers[1:]}
    asked = _fake_status(monkeypatch, answers)
    new = consul_server.wait_new_leader(layout, 3, old, timeout=1)
    assert new is not None and new.name == "consul2"
    assert all(port != old.http for port, _ in asked)


def test_wait_new_leader_is_bounded(layout: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    servers = layout.consul_servers(3)
    # The survivors disagree (one still names the killed leader): no agreed new leader.
    _fake_status(
        monkeypatch,
        {(servers[1].http, "leader"): servers[0].raft_address, (servers[2].http, "leader"): ""},
    )
    t0 = time.monotonic()
    assert consul_server.wait_new_leader(layout, 3, servers[0], timeout=0.3) is None
    assert time.monotonic() - t0 < 2


def test_kill_leader_refuses_a_single_server(layout: Layout) -> None:
    table = ProcessTable(layout.run, layout.logs)
    with pytest.raises(
        FatalError, match="kill-consul-leader needs a cluster started with --consul-servers 3"
    ):
        consul_server.kill_leader(layout, table, 1)


def test_kill_leader_refuses_a_leader_without_a_process(
    layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    servers = layout.consul_servers(3)
    _fake_status(monkeypatch, {(BASE, "leader"): servers[1].raft_address})
    table = ProcessTable(layout.run, layout.logs)
    with pytest.raises(FatalError, match="consul2 is not in the process table"):
        consul_server.kill_leader(layout, table, 3)


# --- the count is remembered by the work dir ----------------------------------------------
def test_count_is_saved_and_each_node_gets_its_server(tmp_path: Path) -> None:
    cluster = LocalCluster(Layout(tmp_path, BASE))
    cluster._ensure_state(3, 3)
    assert json.loads(cluster.layout.state_file.read_text())["consul_servers"] == 3
    again = LocalCluster(Layout(tmp_path, BASE))
    assert again.consul_servers == 3
    assert again.consul_names() == ["consul", "consul2", "consul3"]
    urls = [again.node_config(again.layout.node(i)).consul.url for i in (1, 2, 3)]
    assert urls == [s.url for s in again.layout.consul_servers(3)]
    fallbacks = again.node_config(again.layout.node(1)).consul.fallback_urls
    assert fallbacks == [s.url for s in again.layout.consul_servers(3)[1:]]
    again._ensure_state(None, None)  # `pgras up` again, no option: keeps 3
    assert again.consul_servers == 3


def test_count_cannot_change_on_an_existing_cluster(tmp_path: Path) -> None:
    cluster = LocalCluster(Layout(tmp_path, BASE))
    cluster._ensure_state(3, 3)
    with pytest.raises(FatalError, match="made with --consul-servers 3; the count cannot change"):
        cluster._ensure_state(None, 1)
    cluster._ensure_state(None, 3)  # the same count is fine


def test_a_cluster_made_before_the_option_runs_one_server(tmp_path: Path) -> None:
    cluster = LocalCluster(Layout(tmp_path, BASE))
    cluster._ensure_state(3)
    state = cluster.state()
    del state["consul_servers"]
    cluster._save_state(state)
    assert cluster.consul_servers == 1
    assert cluster.node_config(cluster.layout.node(2)).consul.url == cluster.layout.consul_url
    cluster._ensure_state(None, 1)
    with pytest.raises(FatalError, match="cannot change"):
        cluster._ensure_state(None, 3)


def test_a_bad_count_is_refused_by_the_cluster_too(tmp_path: Path) -> None:
    cluster = LocalCluster(Layout(tmp_path, BASE))
    with pytest.raises(FatalError, match="--consul-servers must be one of 1, 3, 5"):
        cluster._ensure_state(3, 4)
    assert not cluster.layout.state_file.exists()


# --- the verify fault -----------------------------------------------------------------------
class _FakeCluster:
    def __init__(self, layout: Layout, servers: int) -> None:
        self.layout = layout
        self.consul_servers = servers

    def node_names(self) -> list[str]:
        return ["node1", "node2", "node3"]


def test_parse_faults_accepts_kill_consul_leader() -> None:
    assert verify_run.parse_faults("kill-consul-leader") == (
        ("kill-consul-leader", "kill-consul-leader"),
    )


def test_verify_refuses_kill_consul_leader_on_one_server(layout: Layout) -> None:
    faults = verify_run.parse_faults("kill-primary,kill-consul-leader")
    with pytest.raises(
        FatalError, match="kill-consul-leader needs a cluster started with --consul-servers 3"
    ):
        verify_run.check_consul_servers(_FakeCluster(layout, 1), faults)
    verify_run.check_consul_servers(_FakeCluster(layout, 3), faults)
    verify_run.check_consul_servers(
        _FakeCluster(layout, 1), verify_run.parse_faults("kill-primary")
    )


def test_injector_refuses_kill_consul_leader_on_one_server(layout: Layout) -> None:
    injector = Injector(_FakeCluster(layout, 1), time.monotonic, ttl=4.0)
    with pytest.raises(FaultError, match="needs a cluster started with --consul-servers 3"):
        injector.inject(1, "kill-consul-leader", "kill-consul-leader")


def test_verify_reads_the_count_from_the_work_dir(tmp_path: Path) -> None:
    cluster = LocalCluster(Layout(tmp_path, BASE))
    cluster._ensure_state(3)
    faults = verify_run.parse_faults("kill-consul-leader")
    with pytest.raises(FatalError, match=r"runs 1 Consul server\)$"):
        verify_run.check_consul_servers(cluster, faults)
    three = LocalCluster(Layout(tmp_path / "three", BASE))
    three._ensure_state(3, 3)
    verify_run.check_consul_servers(three, faults)
