"""``pgras``: run a node's agent or controller, or drive the local cluster."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from postgres_ras import config as config_mod
from postgres_ras import log
from postgres_ras.errors import FatalError, PgrasError
from postgres_ras.local.layout import (
    CONSUL_SERVER_COUNTS,
    DEFAULT_BASE_PORT,
    Layout,
    check_consul_servers,
)


def default_work_dir() -> Path:
    """The same directory whatever the current one, so every shell finds the cluster."""
    if os.geteuid() == 0:
        # Root's home is private and postgres runs as the unprivileged postgres user.
        return Path("/var/tmp/pgras")
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "pgras"


def _layout(ctx: click.Context) -> Layout:
    work_dir: Path = ctx.obj["work_dir"]
    base_port = ctx.obj["base_port"]
    state_file = work_dir / "cluster.json"
    if base_port is None and state_file.exists():
        try:
            base_port = int(json.loads(state_file.read_text())["base_port"])
        except (OSError, ValueError, KeyError):
            base_port = None
    return Layout(work_dir.resolve(), base_port or DEFAULT_BASE_PORT, ctx.obj["cluster"])


def _local(ctx: click.Context) -> Any:
    from postgres_ras.local.cluster import LocalCluster

    return LocalCluster(_layout(ctx))


def _existing(ctx: click.Context) -> Any:
    """The local cluster of the work directory; a clear error when there is none."""
    cluster = _local(ctx)
    if not cluster.state().get("superuser_password"):
        raise FatalError(
            f"no local cluster in {cluster.layout.work_dir}: start one with `pgras up` "
            "(or `make up`), or point --work-dir / PGRAS_WORK_DIR at an existing one"
        )
    return cluster


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--work-dir",
    type=click.Path(path_type=Path),
    envvar="PGRAS_WORK_DIR",
    default=None,
    help=(
        "Local cluster state, data and logs [default: $XDG_STATE_HOME/pgras, i.e. "
        "~/.local/state/pgras, or /var/tmp/pgras as root]."
    ),
)
@click.option(
    "--base-port",
    type=click.IntRange(1024, 60000),
    envvar="PGRAS_BASE_PORT",
    default=None,
    help=f"First port of the local cluster [default: {DEFAULT_BASE_PORT}].",
)
@click.option(
    "--cluster",
    default="pgras",
    envvar="PGRAS_CLUSTER_NAME",
    show_default=True,
    help="Cluster name (Consul prefix pgras/<cluster>/).",
)
@click.pass_context
def main(ctx: click.Context, work_dir: Path | None, base_port: int | None, cluster: str) -> None:
    """postgres-ras: a resilient PostgreSQL cluster that heals itself."""
    if work_dir is None:
        work_dir = default_work_dir()
    ctx.obj = {"work_dir": work_dir, "base_port": base_port, "cluster": cluster}


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(),
    envvar="PGRAS_CONFIG",
    help="Node config file (YAML); PGRAS_* variables override it.",
)


def _run_component(component: str, config_path: str | None) -> None:
    cfg = config_mod.load(config_path)
    log.setup(component, cfg.name, cfg.log_level)
    if component == "agent":
        from postgres_ras.agent import service as agent_service

        sys.exit(agent_service.run(cfg))
    from postgres_ras.controller import service as controller_service

    sys.exit(controller_service.run(cfg))


@main.command()
@config_option
def agent(config_path: str | None) -> None:
    """Run the node agent (owns PGDATA and postgres)."""
    _run_component("agent", config_path)


@main.command()
@config_option
def controller(config_path: str | None) -> None:
    """Run the controller (HA loop, Consul, REST API)."""
    _run_component("controller", config_path)


@main.command("check-config")
@click.argument("path", type=click.Path())
def check_config(path: str) -> None:
    """Validate a node config file and print the effective configuration."""
    cfg = config_mod.load(path)
    click.echo(config_mod.dump(cfg), nl=False)


def _consul_servers_option(
    ctx: click.Context, param: click.Parameter, value: int | None
) -> int | None:
    if value is None:
        return None
    try:
        return check_consul_servers(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc).removeprefix("--consul-servers "), ctx, param) from None


@main.command()
@click.option(
    "--nodes",
    type=click.IntRange(1, 50),
    default=None,
    help="Number of nodes [default: 3, or as before].",
)
@click.option("--no-access", is_flag=True, help="Do not start HAProxy, pgpool and the demo apps.")
@click.option(
    "--timeout",
    type=float,
    default=120.0,
    show_default=True,
    help="Seconds to wait for a healthy cluster (0: do not wait).",
)
@click.option(
    "--synchronous",
    is_flag=True,
    help="Turn synchronous_mode on in the dynamic config (no acknowledged write lost).",
)
@click.option(
    "--consul-servers",
    type=int,
    default=None,
    callback=_consul_servers_option,
    help=(
        f"Consul servers: {', '.join(map(str, CONSUL_SERVER_COUNTS[:-1]))} or "
        f"{CONSUL_SERVER_COUNTS[-1]}; set when the cluster is made, kept after [default: 1]."
    ),
)
@click.pass_context
def up(
    ctx: click.Context,
    nodes: int | None,
    no_access: bool,
    timeout: float,
    synchronous: bool,
    consul_servers: int | None,
) -> None:
    """Start the local cluster (or whatever part of it is not running)."""
    cluster = _local(ctx)
    cluster.up(
        nodes=nodes,
        access=not no_access,
        wait=timeout,
        synchronous=synchronous,
        consul_servers=consul_servers,
    )
    _print_members(cluster, as_json=False)


@main.command()
@click.option("--destroy", is_flag=True, help="Also delete all data and logs.")
@click.pass_context
def down(ctx: click.Context, destroy: bool) -> None:
    """Stop every process of the local cluster."""
    cluster = _local(ctx)
    if destroy:
        cluster.destroy()
    else:
        cluster.down()
    click.echo("stopped" + (" and deleted" if destroy else ""))


@main.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> None:
    """Show the members: role, state, timeline, lag."""
    _print_members(_existing(ctx), as_json)


TABLE_COLUMNS = (
    ("Member", 8),
    ("Host", 16),
    ("Role", 12),
    ("State", 14),
    ("TL", 3),
    ("Lag (bytes)", 11),
)


def _table_row(cells: list[str]) -> str:
    return (
        "| "
        + " | ".join(f"{c:<{w}}" for c, (_, w) in zip(cells, TABLE_COLUMNS, strict=True))
        + " |"
    )


def _print_members(cluster: Any, as_json: bool) -> None:
    rows = cluster.members(probe=True)
    if as_json:
        click.echo(json.dumps([r.to_json() for r in rows], indent=2))
        return
    click.echo(f"cluster {cluster.layout.cluster} in {cluster.layout.work_dir}")
    line = "+" + "+".join("-" * (w + 2) for _, w in TABLE_COLUMNS) + "+"
    click.echo(line)
    click.echo(_table_row([name for name, _ in TABLE_COLUMNS]))
    click.echo(line)
    for r in rows:
        click.echo(
            _table_row(
                [
                    r.name,
                    f"{r.host}:{r.port}",
                    "Leader"
                    if r.leader
                    else ("Sync Standby" if r.sync_standby else r.role.capitalize()),
                    "streaming" if r.streaming else r.state,
                    "" if r.timeline is None else str(r.timeline),
                    "" if r.lag is None else str(r.lag),
                ]
            )
        )
    click.echo(line)


@main.command()
@click.option(
    "--to", "target", default=None, help="Member to hand over to [default: best replica]."
)
@click.pass_context
def switchover(ctx: click.Context, target: str | None) -> None:
    """Planned switchover: hand leadership to a replica without losing writes."""
    old, new = _local(ctx).switchover(target)
    click.echo(f"switched over from {old} to {new}")


@main.command()
@click.argument("nodes", type=click.IntRange(1, 50))
@click.pass_context
def scale(ctx: click.Context, nodes: int) -> None:
    """Grow or shrink the local cluster to NODES members."""
    cluster = _local(ctx)
    cluster.scale(nodes)
    _print_members(cluster, as_json=False)


@main.command()
@click.argument("node", required=False)
@click.option("--primary", is_flag=True, help="Kill whichever node is the primary.")
@click.option(
    "--signal",
    "sig",
    type=click.Choice(["KILL", "STOP", "CONT", "TERM"]),
    default="KILL",
    show_default=True,
)
@click.pass_context
def kill(ctx: click.Context, node: str | None, primary: bool, sig: str) -> None:
    """Kill (or freeze with STOP, resume with CONT) a node's processes."""
    cluster = _local(ctx)
    if primary == (node is not None):
        raise click.UsageError("give either a NODE name or --primary")
    if primary:
        leader = cluster.leader()
        if leader is None:
            raise click.ClickException("no primary right now")
        node = leader.name
    assert node is not None
    if node not in cluster.node_names():
        raise click.UsageError(f"unknown node {node!r}; members: {', '.join(cluster.node_names())}")
    pids = cluster.kill(node, signal.Signals["SIG" + sig])
    click.echo(f"sent SIG{sig} to {node} (pids {', '.join(map(str, pids)) or 'none running'})")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def endpoints(ctx: click.Context, as_json: bool) -> None:
    """Where to connect: write, read and pgpool endpoints and the demo apps."""
    from postgres_ras.local import access

    cluster = _existing(ctx)
    data = access.endpoints(cluster.layout, cluster.superuser)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(f"cluster {cluster.layout.cluster} in {cluster.layout.work_dir}")
        width = max(len(key) for key in data)
        for key, value in data.items():
            click.echo(f"{key:<{width}}  {value}")


@main.command()
@click.option("--synchronous", is_flag=True, help="Switch the cluster to synchronous_mode first.")
@click.option(
    "--faults",
    default="kill-primary,kill-controller,kill-agent,stop-primary,kill-replica,"
    "restart-consul,double,restart-pgpool",
    show_default=True,
    help="Faults in order; also partition-primary (root) and repeat[:N] (N failovers).",
)
@click.option(
    "--runs", type=click.IntRange(1, 100), default=1, show_default=True,
    help="Inject the whole fault list this many times.",
)  # fmt: skip
@click.option(
    "--duration", type=click.FloatRange(0), default=0.0, show_default=True,
    help="Keep the workload up at least this many seconds.",
)  # fmt: skip
@click.option(
    "--settle", type=click.FloatRange(0), default=3.0, show_default=True,
    help="Seconds of steady load before the first fault and after each recovery.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@click.option(
    "--plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Write a PNG timeline (acks/s, faults, outages, member states) to FILE.",
)  # fmt: skip
@click.option(
    "--events", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Also write the raw recording (JSON) to this file.",
)  # fmt: skip
@click.option(
    "--target", "target_kind", type=click.Choice(["local", "docker"]), default="local",
    show_default=True,
    help="local: the cluster of the work directory; docker: pods in Docker (--target-file).",
)  # fmt: skip
@click.option(
    "--target-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="JSON naming the docker target's members (containers, DSN, controller URL), "
    "endpoints and password_file/password_env; see postgres_ras.verify.docker_target.",
)  # fmt: skip
@click.pass_context
def verify(
    ctx: click.Context,
    synchronous: bool,
    faults: str,
    runs: int,
    duration: float,
    settle: float,
    as_json: bool,
    plot: Path | None,
    events: Path | None,
    target_kind: str,
    target_file: Path | None,
) -> None:
    """Chaos check: workload + faults; lost writes, split brain, outage, recovery.

    Against the local cluster (default) or, with --target docker --target-file F,
    database pods running as Docker containers (faults kill-primary, stop-primary,
    partition-primary, kill-replica).

    Exit status: 0 every promise kept, 1 a promise broken, 2 error, 3 synchronous mode
    asked for but not provided by the controller.
    """
    from postgres_ras.verify import run as verify_run
    from postgres_ras.verify.target import LocalTarget, Target

    log.setup("verify", "local", "WARNING")
    if (target_kind == "docker") != (target_file is not None):
        raise click.UsageError("--target-file goes with --target docker (and only with it)")
    target: Target
    if target_file is not None:
        from postgres_ras.verify import docker_target

        if ctx.get_parameter_source("faults") is click.core.ParameterSource.DEFAULT:
            faults = ",".join(docker_target.FAULTS)
        parsed = verify_run.parse_faults(faults, docker_target.FAULTS)
        target = docker_target.from_file(target_file)
    else:
        parsed = verify_run.parse_faults(faults)
        target = LocalTarget(_existing(ctx))
    opts = verify_run.Options(
        faults=parsed,
        runs=runs,
        duration=duration,
        synchronous=synchronous,
        settle=settle,
        as_json=as_json,
        plot=plot,
        events=events,
    )
    sys.exit(verify_run.verify(target, opts, click.echo, lambda m: click.echo(m, err=True)))


def run() -> int:
    try:
        main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except PgrasError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(run())
