"""Node configuration: YAML file, PGRAS_* overrides, and errors that name the field and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from postgres_ras import config
from postgres_ras.config import NodeConfig, load, slot_name
from postgres_ras.errors import ConfigError

MINIMAL = {"PGRAS_NAME": "node1", "PGRAS_DATA_DIR": "/var/lib/pgras/data"}

FULL_YAML = """\
name: node1
cluster: shop
data_dir: /srv/pg/data
pg_bin_dir: /usr/lib/postgresql/15/bin
log_level: DEBUG
postgres:
  listen: 0.0.0.0
  host: 10.0.0.1
  port: 5433
  parameters:
    work_mem: 8MB
    max_connections: 200
    jit: false
  superuser: {username: admin, password: "s3cret"}
  replication: {username: repl, password: "r3pl"}
  allow_networks: [10.0.0.0/8]
agent:
  port: 8011
  fence_timeout: 1.5
controller:
  port: 8009
  agent_url: http://127.0.0.1:8011
consul:
  url: http://consul:8500
  token: abc
ha:
  loop_wait: 1
  ttl: 10
  retry_timeout: 5
  maximum_lag_on_failover: 0
  synchronous_mode: false
tags:
  nofailover: true
publisher:
  kind: file
  path: /run/pgras/role
"""


def write(tmp_path: Path, text: str | bytes, name: str = "node.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def error_of(path: Path | str | None, environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        load(path, environ)
    return str(info.value)


# --- loading ----------------------------------------------------------------------------


def test_full_file(tmp_path: Path) -> None:
    c = load(write(tmp_path, FULL_YAML), {})
    assert c.name == "node1" and c.cluster == "shop"
    assert c.data_dir == Path("/srv/pg/data")
    assert c.pg_bin_dir == Path("/usr/lib/postgresql/15/bin")
    assert c.log_level == "DEBUG"
    assert c.postgres.port == 5433
    assert c.postgres.parameters == {"work_mem": "8MB", "max_connections": 200, "jit": False}
    assert c.postgres.superuser.username == "admin"
    assert c.postgres.replication.password == "r3pl"
    assert c.postgres.allow_networks == ["10.0.0.0/8"]
    assert c.agent.port == 8011 and c.agent.fence_timeout == 1.5
    assert c.controller.agent_url == "http://127.0.0.1:8011"
    assert c.consul.url == "http://consul:8500"
    assert c.consul.token is not None and c.consul.token.get_secret_value() == "abc"
    assert (c.ha.ttl, c.ha.retry_timeout, c.ha.loop_wait) == (10, 5, 1)
    assert c.ha.maximum_lag_on_failover == 0 and c.ha.synchronous_mode is False
    assert c.tags.nofailover is True
    assert c.publisher.kind == "file" and c.publisher.path == Path("/run/pgras/role")


def test_defaults_from_the_environment_alone() -> None:
    c = load(None, MINIMAL)
    assert c.cluster == "pgras"
    assert c.postgres.port == 5432 and c.agent.port == 8010 and c.controller.port == 8008
    assert c.consul.url == "http://127.0.0.1:8500" and c.consul.token is None
    assert (c.ha.ttl, c.ha.retry_timeout, c.ha.loop_wait) == (4.0, 3.0, 1.0)
    assert c.agent.fence_timeout < c.ha.ttl
    assert c.ha.maximum_lag_on_failover == 1048576
    assert c.tags.nofailover is False
    assert c.publisher.kind == "none"


def test_config_is_frozen() -> None:
    c = load(None, MINIMAL)
    with pytest.raises(ValueError):
        c.name = "other"  # type: ignore[misc]


def test_empty_file_is_an_empty_mapping(tmp_path: Path) -> None:
    c = load(write(tmp_path, ""), MINIMAL)
    assert c.name == "node1"


def test_pgras_config_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "name: fromfile\ndata_dir: /d\n")
    assert load(None, {"PGRAS_CONFIG": str(path)}).name == "fromfile"


def test_explicit_path_wins_over_pgras_config(tmp_path: Path) -> None:
    a = write(tmp_path, "name: a\ndata_dir: /d\n", "a.yaml")
    b = write(tmp_path, "name: b\ndata_dir: /d\n", "b.yaml")
    assert load(a, {"PGRAS_CONFIG": str(b)}).name == "a"


def test_path_accepts_str_and_pathlike(tmp_path: Path) -> None:
    path = write(tmp_path, "name: n\ndata_dir: /d\n")
    assert load(str(path), {}).name == load(path, {}).name == "n"


# --- PGRAS_* overrides ------------------------------------------------------------------


def test_env_overrides_the_file(tmp_path: Path) -> None:
    env = {
        "PGRAS_NAME": "node2",
        "PGRAS_POSTGRES__PORT": "6543",
        "PGRAS_CONSUL__URL": "http://10.1.1.1:8500",
        "PGRAS_HA__TTL": "20",
        "PGRAS_TAGS__NOFAILOVER": "false",
    }
    c = load(write(tmp_path, FULL_YAML), env)
    assert c.name == "node2"
    assert c.postgres.port == 6543
    assert c.consul.url == "http://10.1.1.1:8500"
    assert c.ha.ttl == 20
    assert c.tags.nofailover is False
    # Siblings of an overridden leaf keep their file values.
    assert c.postgres.host == "10.0.0.1" and c.postgres.superuser.username == "admin"
    assert c.ha.retry_timeout == 5
    assert c.consul.token is not None and c.consul.token.get_secret_value() == "abc"


def test_env_two_levels_deep(tmp_path: Path) -> None:
    env = {
        "PGRAS_POSTGRES__SUPERUSER__PASSWORD": "n3w",
        "PGRAS_POSTGRES__PARAMETERS__WORK_MEM": "16MB",
    }
    c = load(write(tmp_path, FULL_YAML), env)
    assert c.postgres.superuser.password == "n3w"
    assert c.postgres.superuser.username == "admin"
    assert c.postgres.parameters["work_mem"] == "16MB"
    assert c.postgres.parameters["max_connections"] == 200


def test_env_json_list() -> None:
    env = {**MINIMAL, "PGRAS_POSTGRES__ALLOW_NETWORKS": '["10.0.0.0/8", "192.168.0.0/16"]'}
    assert load(None, env).postgres.allow_networks == ["10.0.0.0/8", "192.168.0.0/16"]


def test_env_json_list_replaces_the_file_list(tmp_path: Path) -> None:
    env = {"PGRAS_POSTGRES__ALLOW_NETWORKS": '["172.16.0.0/12"]'}
    assert load(write(tmp_path, FULL_YAML), env).postgres.allow_networks == ["172.16.0.0/12"]


def test_env_json_mapping_merges_into_the_file(tmp_path: Path) -> None:
    env = {"PGRAS_HA": '{"ttl": 30, "retry_timeout": 20}'}
    c = load(write(tmp_path, FULL_YAML), env)
    assert (c.ha.ttl, c.ha.retry_timeout) == (30, 20)
    assert c.ha.maximum_lag_on_failover == 0  # from the file


def test_env_scalars_stay_strings_until_validated() -> None:
    # A password that looks like YAML is not parsed as YAML.
    env = {
        **MINIMAL,
        "PGRAS_POSTGRES__SUPERUSER__USERNAME": "postgres",
        "PGRAS_POSTGRES__SUPERUSER__PASSWORD": "yes",
        "PGRAS_CONSUL__TOKEN": "123",
    }
    c = load(None, env)
    assert c.postgres.superuser.password == "yes"
    assert c.consul.token is not None and c.consul.token.get_secret_value() == "123"


@pytest.mark.parametrize("who", ["SUPERUSER", "REPLICATION"])
def test_env_password_alone_keeps_the_default_username(who: str) -> None:
    c = load(None, {**MINIMAL, f"PGRAS_POSTGRES__{who}__PASSWORD": "from-a-secret"})
    creds = c.postgres.superuser if who == "SUPERUSER" else c.postgres.replication
    assert creds.password == "from-a-secret"
    assert creds.username == ("postgres" if who == "SUPERUSER" else "replicator")


def test_env_keys_are_case_folded() -> None:
    assert load(None, {**MINIMAL, "PGRAS_Log_Level": "ERROR"}).log_level == "ERROR"


def test_other_variables_are_ignored() -> None:
    env = {**MINIMAL, "PGRASX": "1", "PATH": "/bin", "PG_PORT": "1", "pgras_name": "x"}
    assert load(None, env).name == "node1"


def test_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in MINIMAL.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("PGRAS_CONFIG", raising=False)
    assert load(None).name == "node1"


# --- errors: ConfigError naming the field and the variable -----------------------------


@pytest.mark.parametrize(
    ("env", "words"),
    [
        pytest.param(
            {"PGRAS_POSTGRES__PORT": "0"}, ["postgres.port", "PGRAS_POSTGRES__PORT"], id="port-zero"
        ),
        pytest.param(
            {"PGRAS_POSTGRES__PORT": "70000"},
            ["postgres.port", "PGRAS_POSTGRES__PORT"],
            id="port-too-big",
        ),
        pytest.param(
            {"PGRAS_AGENT__PORT": "http"},
            ["agent.port", "PGRAS_AGENT__PORT"],
            id="port-not-a-number",
        ),
        pytest.param(
            {"PGRAS_CONTROLLER__PORT": "-1"},
            ["controller.port", "PGRAS_CONTROLLER__PORT"],
            id="controller-port",
        ),
        pytest.param(
            {"PGRAS_NAME": "Node_1"},
            ["name", "not a valid name", "PGRAS_NAME"],
            id="uppercase-name",
        ),
        pytest.param(
            {"PGRAS_NAME": "node.1"}, ["name", "not a valid name", "PGRAS_NAME"], id="dotted-name"
        ),
        pytest.param({"PGRAS_NAME": "-node"}, ["name", "PGRAS_NAME"], id="leading-dash"),
        pytest.param(
            {"PGRAS_NAME": "x" * 64}, ["name", "63 characters", "PGRAS_NAME"], id="name-too-long"
        ),
        pytest.param(
            {"PGRAS_CLUSTER": "my cluster"},
            ["cluster", "not a valid name", "PGRAS_CLUSTER"],
            id="bad-cluster",
        ),
        pytest.param(
            {"PGRAS_HA__RETRY_TIMEOUT": "4"},
            ["retry_timeout (4.0) must be below ttl (4.0)", "PGRAS_HA"],
            id="retry-equals-ttl",
        ),
        pytest.param(
            {"PGRAS_HA__RETRY_TIMEOUT": "9", "PGRAS_HA__TTL": "5"},
            ["retry_timeout", "ttl", "PGRAS_HA"],
            id="retry-above-ttl",
        ),
        pytest.param(
            {"PGRAS_HA__LOOP_WAIT": "3"},
            ["loop_wait", "retry_timeout", "PGRAS_HA"],
            id="loop-wait-too-long",
        ),
        pytest.param(
            {"PGRAS_AGENT__FENCE_TIMEOUT": "4"},
            ["agent.fence_timeout (4.0) must be below ha.ttl (4.0)"],
            id="fence-equals-ttl",
        ),
        pytest.param(
            {"PGRAS_AGENT__FENCE_TIMEOUT": "0"},
            ["agent.fence_timeout", "PGRAS_AGENT__FENCE_TIMEOUT"],
            id="fence-zero",
        ),
        pytest.param({"PGRAS_HA__TTL": "0"}, ["ha.ttl", "PGRAS_HA__TTL"], id="ttl-zero"),
        pytest.param(
            {"PGRAS_HA__MAXIMUM_LAG_ON_FAILOVER": "-1"},
            ["ha.maximum_lag_on_failover", "PGRAS_HA__MAXIMUM_LAG_ON_FAILOVER"],
            id="negative-lag",
        ),
        pytest.param(
            {"PGRAS_HA__SYNCHRONOUS_MODE": "maybe"},
            ["ha.synchronous_mode", "PGRAS_HA__SYNCHRONOUS_MODE"],
            id="not-a-bool",
        ),
        pytest.param(
            {"PGRAS_LOG_LEVEL": "TRACE"}, ["log_level", "PGRAS_LOG_LEVEL"], id="bad-log-level"
        ),
        pytest.param(
            {"PGRAS_PUBLISHER__KIND": "consul"},
            ["publisher.kind", "PGRAS_PUBLISHER__KIND"],
            id="bad-publisher",
        ),
        pytest.param(
            {"PGRAS_POSTGRES__SUPERUSER__PASSWORD": ""},
            ["postgres.superuser.password", "PGRAS_POSTGRES__SUPERUSER__PASSWORD"],
            id="empty-password",
        ),
        pytest.param(
            {"PGRAS_HA__TIMEOUT": "3"},
            ["ha.timeout", "Extra inputs are not permitted", "PGRAS_HA__TIMEOUT"],
            id="unknown-nested-field",
        ),
        pytest.param(
            {"PGRAS_COLOUR": "blue"},
            ["colour", "Extra inputs are not permitted", "PGRAS_COLOUR"],
            id="unknown-top-field",
        ),
    ],
)
def test_invalid_values_name_field_and_variable(env: dict[str, str], words: list[str]) -> None:
    message = error_of(None, {**MINIMAL, **env})
    assert message.startswith("invalid configuration (environment):")
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert "pydantic" not in message.lower()
    assert "Traceback" not in message


def test_missing_required_fields() -> None:
    message = error_of(None, {})
    assert "name: Field required (set it in the file or with PGRAS_NAME=...)" in message
    assert "data_dir: Field required (set it in the file or with PGRAS_DATA_DIR=...)" in message


def test_every_error_is_listed_once_per_field() -> None:
    env = {**MINIMAL, "PGRAS_POSTGRES__PORT": "0", "PGRAS_AGENT__PORT": "0"}
    lines = error_of(None, env).splitlines()
    assert len(lines) == 3
    assert sorted(line.split(":")[0].strip() for line in lines[1:]) == [
        "agent.port",
        "postgres.port",
    ]


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "name: node1\ndata_dir: /d\nha:\n  ttl: 2\n  retry_timeout: 3\n")
    message = error_of(path, {})
    assert message.startswith(f"invalid configuration ({path}):")
    assert "retry_timeout (3.0) must be below ttl (2.0)" in message


def test_unknown_field_in_file(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "name: n\ndata_dir: /d\npostgres:\n  prot: 5432\n"), {})
    assert "postgres.prot: Extra inputs are not permitted" in message


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        pytest.param("- a\n- b\n", "list", id="list"),
        pytest.param("just text\n", "str", id="scalar"),
        pytest.param("42\n", "int", id="number"),
    ],
)
def test_file_must_hold_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    path = write(tmp_path, text)
    assert error_of(path, {}) == f"config file {path} must hold a mapping, not {kind}"


def test_invalid_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "name: [unclosed\n")
    message = error_of(path, {})
    assert message.startswith(f"config file {path} is not valid YAML")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    assert error_of(path, {}) == f"cannot read config file {path}: No such file or directory"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    assert error_of(tmp_path, {}) == f"cannot read config file {tmp_path}: Is a directory"


def test_unreadable_file(tmp_path: Path) -> None:
    # A directory cannot be read as a file, whoever runs the test (root included).
    directory = tmp_path / "node.yaml"
    directory.mkdir()
    message = error_of(directory, {})
    assert "cannot read config file" in message and str(directory) in message


def test_errors_are_config_errors_without_a_chained_traceback(tmp_path: Path) -> None:
    for path, env in [(write(tmp_path, "[1, 2"), {}), (None, {"PGRAS_NAME": "UP"})]:
        with pytest.raises(ConfigError) as info:
            load(path, env)
        assert info.value.__cause__ is None
        assert info.value.__suppress_context__


def test_binary_file_is_a_config_error(tmp_path: Path) -> None:
    error_of(write(tmp_path, b"name: n\ndata_dir: /d\n# \xff\xfe\n"), {})


def test_malformed_json_in_env_names_the_variable() -> None:
    message = error_of(None, {**MINIMAL, "PGRAS_POSTGRES__ALLOW_NETWORKS": "[10.0.0.0/8"})
    assert "PGRAS_POSTGRES__ALLOW_NETWORKS" in message


def test_scalar_and_nested_variable_for_one_section() -> None:
    error_of(None, {**MINIMAL, "PGRAS_HA": "fast", "PGRAS_HA__TTL": "5"})


def test_fence_timeout_error_names_its_variable() -> None:
    message = error_of(None, {**MINIMAL, "PGRAS_AGENT__FENCE_TIMEOUT": "5"})
    assert "PGRAS_AGENT__FENCE_TIMEOUT" in message
    assert "PGRAS_=" not in message


# --- helpers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("member", "slot"),
    [("node1", "node1"), ("pg-0", "pg_0"), ("db_2", "db_2"), ("A-b", "a_b")],
)
def test_slot_name(member: str, slot: str) -> None:
    assert slot_name(member) == slot


def test_slot_name_property() -> None:
    assert load(None, {**MINIMAL, "PGRAS_NAME": "pg-ras-1"}).slot_name == "pg_ras_1"


def test_dump_round_trips_and_masks_secrets(tmp_path: Path) -> None:
    c = load(write(tmp_path, FULL_YAML), {})
    text = config.dump(c)
    assert "token: abc" not in text and "**********" in text
    again = load(write(tmp_path, text, "dumped.yaml"), {})
    assert again.model_copy(update={"consul": c.consul}) == c
    assert isinstance(again, NodeConfig)


def test_synchronous_mode_is_accepted_with_count_and_strict() -> None:
    env = {
        "PGRAS_NAME": "n",
        "PGRAS_DATA_DIR": "/d",
        "PGRAS_HA__SYNCHRONOUS_MODE": "true",
        "PGRAS_HA__SYNCHRONOUS_NODE_COUNT": "2",
        "PGRAS_HA__SYNCHRONOUS_MODE_STRICT": "true",
    }
    c = load(None, env)
    assert (c.ha.synchronous_mode, c.ha.synchronous_node_count) == (True, 2)
    assert c.ha.synchronous_mode_strict is True


def test_synchronous_node_count_must_be_positive() -> None:
    env = {"PGRAS_NAME": "n", "PGRAS_DATA_DIR": "/d", "PGRAS_HA__SYNCHRONOUS_NODE_COUNT": "0"}
    assert "synchronous_node_count" in error_of(None, env)
