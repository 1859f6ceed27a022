"""verify's targets, pure logic only: the docker target file, the restore plan after a
fault, full strength from the controllers' answers, faults per target, and the run
loop's per-fault bookkeeping (``faults.run_fault``) against a scripted target."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from postgres_ras.errors import FatalError, PgrasError
from postgres_ras.verify import docker_target as dt
from postgres_ras.verify import faults
from postgres_ras.verify.run import parse_faults


def member(k: int, **extra: Any) -> dict[str, Any]:
    return {
        "name": f"pg-{k}",
        "containers": [f"run-pg-{k}", f"run-pg-{k}-postgres", f"run-pg-{k}-controller"],
        "dsn": f"host=10.0.0.{10 + k} port=5432 dbname=postgres user=postgres",
        "api": f"http://10.0.0.{10 + k}:8008/",
        **extra,
    }


def spec_data(**extra: Any) -> dict[str, Any]:
    return {
        "members": [member(0), member(1), member(2)],
        "write": "host=10.0.0.3 port=25010 dbname=postgres user=postgres",
        **extra,
    }


# --- the target file -------------------------------------------------------------------
def test_spec_adds_the_password_from_a_file_to_every_dsn(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret it's\n")
    spec = dt.parse_spec(
        spec_data(
            password_file="pw",
            pgpool="postgresql://postgres@10.0.0.4:5432/postgres",
            consul_url="http://10.0.0.2:8500/",
            cluster="pg-postgres-ras",
        ),
        tmp_path,
        env={},
    )
    assert [m.name for m in spec.members] == ["pg-0", "pg-1", "pg-2"]
    assert spec.members[0].api == "http://10.0.0.10:8008"
    assert spec.members[0].dsn.endswith("password='s3cret it\\'s'")
    assert spec.endpoints["write"].endswith("password='s3cret it\\'s'")
    # A URL becomes key=value: verify appends options to every DSN.
    assert spec.endpoints["pgpool"].startswith("user=postgres dbname=postgres host=10.0.0.4")
    assert "read" not in spec.endpoints
    assert (spec.consul_url, spec.cluster) == ("http://10.0.0.2:8500", "pg-postgres-ras")


def test_spec_password_from_the_environment_or_libpq(tmp_path: Path) -> None:
    spec = dt.parse_spec(spec_data(password_env="PW"), tmp_path, env={"PW": "x"})
    assert spec.members[1].dsn.endswith("password=x")
    spec = dt.parse_spec(spec_data(), tmp_path, env={"PGPASSWORD": "y"})
    assert "password" not in spec.members[1].dsn  # libpq reads PGPASSWORD itself
    with pytest.raises(FatalError, match=r"environment variable PW \(password_env\) is not set"):
        dt.parse_spec(spec_data(password_env="PW"), tmp_path, env={})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "expected a JSON object"),
        ({"write": "host=a"}, "'members' must list at least two members"),
        (spec_data(members=[member(0), {**member(1), "containers": []}]), r"members\[1\]"),
        (spec_data(members=[member(0), member(0)]), "member names repeat"),
        (
            spec_data(members=[member(0), {**member(1), "containers": ["run-pg-0"]}]),
            "a container is named by more than one member",
        ),
        (spec_data(members=[member(0), member(1, api="10.0.0.11:8008")]), "controller's URL"),
        ({**spec_data(), "write": None}, "'write' must be a non-empty string"),
        (spec_data(write="host=a password=x"), "the password does not belong"),
        (spec_data(consul_url="http://c:8500"), "consul_url and cluster together"),
        (spec_data(password_file="pw", password_env="PW"), "not both"),
        (spec_data(password_file="missing"), "password_file .*missing"),
    ],
)
def test_spec_errors_name_what_is_wrong(data: Any, message: str, tmp_path: Path) -> None:
    with pytest.raises(FatalError, match=message):
        dt.parse_spec(data, tmp_path, env={})


def test_load_spec_reports_a_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(FatalError, match=r"target file .*nope.json: No such file"):
        dt.load_spec(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(FatalError, match="not JSON"):
        dt.load_spec(tmp_path / "bad.json")


# --- docker inspect and the restore plan ---------------------------------------------------
def inspected(
    name: str, mode: str = "bridge", running: bool = True, paused: bool = False, **networks: Any
) -> dict[str, Any]:
    return {
        "Id": "0123456789abcdef" * 4,
        "Name": "/" + name,
        "State": {"Running": running, "Paused": paused},
        "HostConfig": {"NetworkMode": mode},
        "NetworkSettings": {"Networks": networks},
    }


def test_container_info_keeps_address_and_aliases_but_not_the_id() -> None:
    info = dt.container_info(
        inspected(
            "run-pg-0",
            net={
                "IPAMConfig": {"IPv4Address": "10.0.0.10"},
                "Aliases": ["pg-0", "0123456789ab", "run-pg-0", "pg-0.pg.svc"],
            },
        )
    )
    assert info.holds_network and info.running and not info.paused
    assert info.networks == {"net": dt.Attachment("10.0.0.10", ("pg-0", "pg-0.pg.svc"))}
    joined = dt.container_info(inspected("run-pg-0-postgres", mode="container:abc"))
    assert not joined.holds_network and joined.networks == {}
    assert dt.connect_args("net", "run-pg-0", info.networks["net"]) == [
        "network", "connect", "--ip", "10.0.0.10", "--alias", "pg-0",
        "--alias", "pg-0.pg.svc", "net", "run-pg-0",
    ]  # fmt: skip


def test_restore_plan_starts_the_network_container_first_and_reconnects() -> None:
    spec = dt.parse_spec(spec_data(), env={})
    at = dt.Attachment("10.0.0.10", ("pg-0",))
    infos = {
        # pg-0: killed (every container stopped)
        "run-pg-0": dt.ContainerInfo("run-pg-0", "bridge", {}, running=False),
        "run-pg-0-postgres": dt.ContainerInfo("run-pg-0-postgres", "container:x", running=False),
        "run-pg-0-controller": dt.ContainerInfo(
            "run-pg-0-controller", "container:x", running=False
        ),
        # pg-1: paused and disconnected
        "run-pg-1": dt.ContainerInfo("run-pg-1", "bridge", {}, running=True, paused=True),
        "run-pg-1-postgres": dt.ContainerInfo(
            "run-pg-1-postgres", "container:y", running=True, paused=True
        ),
        "run-pg-1-controller": dt.ContainerInfo("run-pg-1-controller", "container:y", running=True),
        # pg-2: fine
        "run-pg-2": dt.ContainerInfo("run-pg-2", "bridge", {"net": at}, running=True),
        "run-pg-2-postgres": dt.ContainerInfo("run-pg-2-postgres", "container:z", running=True),
        "run-pg-2-controller": dt.ContainerInfo("run-pg-2-controller", "container:z", running=True),
    }
    attachments = {"run-pg-0": at, "run-pg-1": dt.Attachment("10.0.0.11", ()), "run-pg-2": at}
    assert dt.restore_plan(spec.members, infos, "net", attachments) == [
        ["start", "run-pg-0"],
        ["start", "run-pg-0-postgres", "run-pg-0-controller"],
        ["network", "connect", "--ip", "10.0.0.10", "--alias", "pg-0", "net", "run-pg-0"],
        ["unpause", "run-pg-1", "run-pg-1-postgres"],
        ["network", "connect", "--ip", "10.0.0.11", "net", "run-pg-1"],
    ]
    healthy = {n: i for n, i in infos.items() if n.startswith("run-pg-2")}
    assert dt.restore_plan(spec.members[2:], healthy, "net", attachments) == []


# --- full strength and leaders from the controllers --------------------------------------
def test_full_strength_needs_one_primary_and_streaming_replicas() -> None:
    ok = {"a": (True, False), "b": (False, True), "c": (False, True)}
    assert dt.is_full_strength(ok, {"leader": "a"})
    assert not dt.is_full_strength({**ok, "c": (False, False)}, None)
    assert not dt.is_full_strength({**ok, "b": (True, False)}, None)
    assert not dt.is_full_strength({k: (False, True) for k in ok}, None)
    sync = {"leader": "a", "synchronous_mode": True, "sync": ["a"]}
    assert not dt.is_full_strength(ok, sync)  # no confirmed standby yet
    assert dt.is_full_strength(ok, {**sync, "sync": ["a", "b"]})


class FakeApi:
    """Controllers answering from a table: url -> (status, body)."""

    def __init__(self, answers: dict[str, tuple[int, Any]]) -> None:
        self.answers = answers

    def __call__(self, url: str) -> tuple[int, Any]:
        return self.answers.get(url, (0, None))


def test_docker_target_reads_leader_and_strength_from_the_api() -> None:
    spec = dt.parse_spec(spec_data(), env={})
    base = {m.name: m.api for m in spec.members}
    view = {"leader": "pg-1", "members": [], "synchronous_mode": False, "sync": []}
    api = FakeApi(
        {
            base["pg-0"] + "/cluster": (0, None),  # frozen: the next one answers
            base["pg-1"] + "/cluster": (200, view),
            base["pg-1"] + "/primary": (200, {}),
            base["pg-0"] + "/replica": (200, {}),
            base["pg-2"] + "/replica": (503, {}),
        }
    )
    target = dt.DockerTarget(spec, get=api)
    assert target.leader() == "pg-1"
    assert dt.most_common(["pg-0", "pg-2", "pg-2"]) == "pg-2"  # a thawed pod's stale view
    assert dt.most_common([None, "pg-1"]) is None and dt.most_common([]) is None
    assert not target.full_strength()
    api.answers[base["pg-2"] + "/replica"] = (200, {})
    assert target.full_strength()
    assert target.wait_leader({"pg-1"}, 0.3) is None
    assert target.wait_leader(set(), 1) == "pg-1"
    assert target.ack_ports() == {}
    assert target.dynamic_config() is None
    with pytest.raises(FatalError, match="not available on a docker target"):
        target.check_faults((("kill-primary", "x"), ("restart-consul", "restart-consul")))
    target.check_faults((("partition-primary", "partition-primary"),))


def test_faults_per_target() -> None:
    assert parse_faults("kill-primary,repeat:2", dt.FAULTS) == (
        ("kill-primary", "kill-primary"),
        ("kill-primary", "repeat 1/2"),
        ("kill-primary", "repeat 2/2"),
    )
    with pytest.raises(FatalError, match="unknown fault 'kill-agent' on this target"):
        parse_faults("kill-agent", dt.FAULTS)


# --- run_fault: the bookkeeping every target shares --------------------------------------
class ScriptedTarget:
    def __init__(self, strength: list[bool], restore_error: str = "") -> None:
        self.leaders = iter(["a", "b"])
        self.strength = itertools.chain(strength, itertools.repeat(strength[-1]))
        self.restore_error = restore_error
        self.restored = 0

    def leader(self) -> str | None:
        return next(self.leaders)

    def full_strength(self) -> bool:
        return next(self.strength)

    def restore(self) -> None:
        self.restored += 1
        if self.restore_error:
            raise PgrasError(self.restore_error)


def test_run_fault_records_leaders_recovery_and_failures(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(faults, "POLL", 0.0)
    ticks = itertools.count()

    def clock() -> float:
        return float(next(ticks))

    target = ScriptedTarget([False, True, True, True])
    rec = faults.run_fault(
        target, lambda n, lead: (lead, f"{n} hit {lead}"), clock, 5, 1, "f", "f #1"
    )
    assert (rec.leader_before, rec.leader_after, rec.target) == ("a", "b", "a")
    assert rec.note == "f hit a" and target.restored == 1
    assert rec.started < rec.injected < rec.recovered  # type: ignore[operator]

    def boom(name: str, leader: str | None) -> tuple[str | None, str]:
        raise OSError("docker gone")

    target = ScriptedTarget([False], restore_error="no such container: x")
    rec = faults.run_fault(target, boom, clock, 0.05, 1, "f", "f")
    assert rec.recovered is None and rec.target is None
    assert rec.note == "injection failed: docker gone; restart failed: no such container: x"
