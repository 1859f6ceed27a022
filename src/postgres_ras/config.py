"""Node configuration: a YAML file, overridden by PGRAS_* environment variables.

One file describes one node; the agent and the controller of that node read
the same file and each takes what it needs. Environment variables override
the file: ``PGRAS_NAME=node1``, ``PGRAS_CONSUL__URL=http://consul:8500``,
``PGRAS_POSTGRES__PORT=5433`` (a double underscore descends one level).
Every error names the field at fault and where it came from.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from postgres_ras.errors import ConfigError

ENV_PREFIX = "PGRAS_"
# Variables of the pgras CLI and the tests, not node settings.
NOT_NODE_SETTINGS = frozenset(
    {
        "PGRAS_CONFIG",
        "PGRAS_WORK_DIR",
        "PGRAS_BASE_PORT",
        "PGRAS_CLUSTER_NAME",
        "PGRAS_TEST_BASE_PORT",
        "PGRAS_TUTORIAL_BASE_PORT",
    }
)
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Credentials(_Model):
    username: str
    password: str = Field(min_length=1)


# Field defaults rather than instance defaults, so that overriding only the password
# (PGRAS_POSTGRES__SUPERUSER__PASSWORD from a Secret) keeps the default username.
class SuperuserCredentials(Credentials):
    username: str = "postgres"
    password: str = Field(default="postgres", min_length=1)


class ReplicationCredentials(Credentials):
    username: str = "replicator"
    password: str = Field(default="replicator", min_length=1)


class PostgresSettings(_Model):
    listen: str = "127.0.0.1"
    host: str = "127.0.0.1"
    port: int = Field(default=5432, ge=1, le=65535)
    parameters: dict[str, str | int | float | bool] = Field(default_factory=dict)
    superuser: SuperuserCredentials = SuperuserCredentials()
    replication: ReplicationCredentials = ReplicationCredentials()
    # Clients allowed to connect (pg_hba.conf addresses), besides loopback.
    allow_networks: list[str] = Field(default_factory=lambda: ["127.0.0.1/32", "::1/128"])


class AgentSettings(_Model):
    listen: str = "127.0.0.1"
    port: int = Field(default=8010, ge=1, le=65535)
    # A primary whose controller has not heart-beaten for this long is demoted
    # by its agent. Must stay below ttl so the fence fires before a replica
    # can take the leader key.
    fence_timeout: float = Field(default=2.0, gt=0)
    # Shared secret the controller presents on every agent call (PGRAS_AGENT__AUTH_TOKEN).
    auth_token: SecretStr | None = None


class ControllerSettings(_Model):
    listen: str = "127.0.0.1"
    host: str = "127.0.0.1"
    port: int = Field(default=8008, ge=1, le=65535)
    # Where the controller reaches its own agent.
    agent_url: str = "http://127.0.0.1:8010"
    # Required on state-changing endpoints (POST /switchover): "Authorization: Bearer <token>"
    # (PGRAS_CONTROLLER__AUTH_TOKEN, in Kubernetes from a Secret). None refuses them all.
    auth_token: SecretStr | None = None
    # Clients allowed to call state-changing endpoints, besides loopback.
    allow_networks: list[str] = Field(default_factory=list)
    # Serve the API over TLS with this certificate and key (PEM); both or neither.
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @field_validator("allow_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not a network like 10.0.0.0/8") from None
        return value

    @property
    def scheme(self) -> str:
        """What peers and clients use to reach this API (members publish it in api_url)."""
        return "https" if self.tls_cert is not None else "http"

    @model_validator(mode="after")
    def _tls_pair(self) -> ControllerSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both or neither")
        return self


class ConsulSettings(_Model):
    url: str = "http://127.0.0.1:8500"
    # Other Consul agents, tried in order when ``url`` stops answering (a local cluster
    # lists its other servers); the session moves along and a held leader key with it.
    fallback_urls: list[str] = []
    token: SecretStr | None = None
    # CA bundle for an https:// Consul URL.
    ca_file: Path | None = None


class HASettings(_Model):
    """Timing and failover policy; the cluster-wide values live in Consul ``config``."""

    loop_wait: float = Field(default=1.0, gt=0, le=60)
    # At least 2 s: Consul's TTL checks count whole seconds and the lease ends 1 s early.
    ttl: float = Field(default=4.0, ge=2, le=600)
    retry_timeout: float = Field(default=3.0, gt=0, le=600)
    # A leader whose postgres has not served as primary for this long (failing to
    # start, unknown state, agent unreachable) stops it and releases the lock.
    primary_start_timeout: float = Field(default=20.0, gt=0, le=3600)
    maximum_lag_on_failover: int = Field(default=1048576, ge=0)
    # Only the members named in the Consul ``sync`` key may be promoted; the leader
    # keeps synchronous_standby_names = FIRST n (those members).
    synchronous_mode: bool = False
    synchronous_node_count: int = Field(default=1, ge=1, le=10)
    # With no synchronous standby left: block writes (true) rather than run async.
    synchronous_mode_strict: bool = False
    # The leader keeps the replication slot of a member that went away (crashed, cut off,
    # restarting) this long, so that it can rejoin from its own position: WAL retention is
    # by slots (capped by max_slot_wal_keep_size), not by wal_keep_size. 0: dropped at once.
    member_slots_ttl: float = Field(default=1800.0, ge=0, le=7 * 86400)

    @model_validator(mode="after")
    def _timing(self) -> HASettings:
        if self.retry_timeout >= self.ttl:
            raise ValueError(
                f"retry_timeout ({self.retry_timeout}) must be below ttl ({self.ttl}): a primary "
                "cut off from Consul must demote itself before its leader lock can lapse"
            )
        if self.loop_wait >= self.retry_timeout:
            raise ValueError(
                f"loop_wait ({self.loop_wait}) must be below retry_timeout ({self.retry_timeout})"
            )
        return self


class Tags(_Model):
    nofailover: bool = False
    noloadbalance: bool = False


class PublisherSettings(_Model):
    kind: Literal["none", "file", "kubernetes"] = "none"
    # kind=file: where the role is written.
    path: Path | None = None
    # kind=kubernetes: the pod label the primary/replicas Services select.
    label: str = "role"
    # This pod (downward API: metadata.namespace / metadata.name).
    namespace: str | None = None
    pod_name: str | None = None
    # Label selector of the cluster's database pods, e.g.
    # "app.kubernetes.io/instance=pg,app.kubernetes.io/component=database".
    pod_selector: str | None = None
    # Opt-in: the leader deletes the pod of a member unreachable for this long (0 = never).
    delete_unreachable_after: float = Field(default=0.0, ge=0)


class WatchdogSettings(_Model):
    """The Linux watchdog device the agent arms while postgres runs as a primary."""

    # off | automatic (use it when it can be armed) | required (no device, no leading).
    mode: Literal["off", "automatic", "required"] = "off"
    device: Path = Path("/dev/watchdog")
    # The device fires this long before ha.ttl runs out (timeout = ttl - safety_margin,
    # whole seconds, at least 1), so a hung node resets before a replica may take over.
    safety_margin: float = Field(default=1.0, ge=0, le=600)


class NodeConfig(_Model):
    name: str
    cluster: str = "pgras"
    data_dir: Path
    pg_bin_dir: Path | None = None
    # OS user that runs the postgres binaries when the agent runs as root.
    pg_user: str = "postgres"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    postgres: PostgresSettings = PostgresSettings()
    agent: AgentSettings = AgentSettings()
    controller: ControllerSettings = ControllerSettings()
    consul: ConsulSettings = ConsulSettings()
    ha: HASettings = HASettings()
    tags: Tags = Tags()
    publisher: PublisherSettings = PublisherSettings()
    watchdog: WatchdogSettings = WatchdogSettings()

    @field_validator("name", "cluster")
    @classmethod
    def _dns_name(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise ValueError(
                f"{value!r} is not a valid name: use lowercase letters, digits, '-' or '_' "
                "(at most 63 characters, starting and ending with a letter or digit)"
            )
        return value

    @model_validator(mode="after")
    def _fence(self) -> NodeConfig:
        if self.agent.fence_timeout >= self.ha.ttl:
            raise ValueError(
                f"agent.fence_timeout ({self.agent.fence_timeout}) must be below ha.ttl "
                f"({self.ha.ttl}): the agent must fence before a replica may take over "
                "(PGRAS_AGENT__FENCE_TIMEOUT, PGRAS_HA__TTL)"
            )
        return self

    @property
    def slot_name(self) -> str:
        return slot_name(self.name)


def slot_name(member: str) -> str:
    """Replication slot of a member: slots allow only [a-z0-9_]."""
    return re.sub(r"[^a-z0-9_]", "_", member.lower())


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # Sorted: PGRAS_HA comes before PGRAS_HA__TTL, so the finer variable wins.
    for key, value in sorted(environ.items()):
        if not key.startswith(ENV_PREFIX) or key in NOT_NODE_SETTINGS:
            continue
        path = [p.lower() for p in key[len(ENV_PREFIX) :].split("__") if p]
        if not path:
            continue
        parsed: Any = value
        if value.strip().startswith(("{", "[")):
            try:
                parsed = yaml.safe_load(value)
            except yaml.YAMLError as exc:
                first = str(exc).splitlines()[0]
                raise ConfigError(f"{key} is not a valid JSON list or mapping: {first}") from None
        node = out
        for depth, part in enumerate(path[:-1], 1):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                section = ENV_PREFIX + "__".join(p.upper() for p in path[:depth])
                raise ConfigError(f"{key} sets a field of {section}, which is not a mapping")
            node = child
        node[path[-1]] = parsed
    return out


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        env = ENV_PREFIX + "__".join(str(p).upper() for p in err["loc"])
        hint = f" (set it in the file or with {env}=...)" if err["loc"] else ""
        lines.append(f"  {field}: {msg}{hint}")
    return "\n".join(lines)


def load(
    path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None
) -> NodeConfig:
    """Read a node config file (may be None) and apply PGRAS_* overrides."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    source = "environment"
    if path is None and environ.get("PGRAS_CONFIG"):
        path = environ["PGRAS_CONFIG"]
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"config file {path} is not UTF-8 text (byte {exc.start}: {exc.reason})"
            ) from None
        try:
            loaded = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"config file {path} must hold a mapping, not {type(loaded).__name__}"
            )
        data = loaded
    data = _merge(data, _env_overrides(environ))
    try:
        return NodeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def dump(config: NodeConfig) -> str:
    return str(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
