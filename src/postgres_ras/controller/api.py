"""The node REST API: health endpoints for routers and Kubernetes, cluster view, metrics,
switchover.

Read-only endpoints are open (probes and HAProxy use them); state-changing
ones pass ``controller/auth.py`` (client network + bearer token).
"""

from __future__ import annotations

import time
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from postgres_ras.controller import auth
from postgres_ras.controller.ha import HA
from postgres_ras.controller.openapi import openapi_document
from postgres_ras.controller.state import NodeView, Role
from postgres_ras.dcs.base import Switchover
from postgres_ras.errors import AgentError, DCSError
from postgres_ras.lsn import format_lsn


def node_status(ha: HA) -> dict[str, Any]:
    """This node as its last cycle saw it, except what a demotion in progress changes now:
    a node inside a demotion answers "demoting" (no healthy primary, nothing to defer to)."""
    snap = ha.snapshot
    o = snap.observation
    node = o.node if o else None
    cluster = o.cluster if o else None
    # getattr: stand-ins of HA in other modules' tests need not know these two.
    instance = getattr(ha, "instance", None)
    if getattr(ha, "demoting", False):
        return {
            "name": ha.config.name,
            "role": "demoting",
            "running": False,
            "primary_ok": False,
            "timeline": node.timeline if node else None,
            "lsn": format_lsn(node.lsn) if node and node.lsn is not None else None,
            "streaming": False,
            "upstream": None,
            "job": "demoting",
            "job_error": None,
            "has_data": True,
            "instance": instance,
            "fenced": None,
            "nofailover": ha.config.tags.nofailover,
            "leader": cluster.leader.name if cluster and cluster.leader else None,
            "dcs_ok": cluster is not None,
            "decision": "demoting: stopping postgres",
            "age": round(time.time() - snap.at, 3) if snap.at else None,
        }
    return {
        "name": ha.config.name,
        "role": node.role.value if node else "unknown",
        "running": bool(node and node.running),
        "primary_ok": snap.primary_ok,
        "timeline": node.timeline if node else None,
        "lsn": format_lsn(node.lsn) if node and node.lsn is not None else None,
        "streaming": bool(node and node.streaming),
        "upstream": node.upstream if node else None,
        "job": node.job if node else None,
        "job_error": node.job_error if node else None,
        "has_data": node.has_data if node else None,
        # This controller process: tells a restarted me from a live twin with my name.
        "instance": instance,
        "fenced": node.fenced if node else None,
        "nofailover": ha.config.tags.nofailover,
        "leader": cluster.leader.name if cluster and cluster.leader else None,
        "dcs_ok": cluster is not None,
        "decision": snap.decision.reason if snap.decision else None,
        "age": round(time.time() - snap.at, 3) if snap.at else None,
    }


def replica_lag(ha: HA) -> int | None:
    o = ha.snapshot.observation
    if o is None or o.node is None or o.node.lsn is None or o.cluster is None:
        return None
    lm = o.cluster.leader_member
    if lm is None or lm.lsn is None:
        return None
    return max(0, lm.lsn - o.node.lsn)


def parse_lag(raw: str | None, default: int | None) -> int | None:
    """The ``?lag=`` bound in bytes; raises ValueError with the message to return."""
    if raw is None:
        return default
    try:
        bound = int(raw)
    except ValueError:
        raise ValueError("query parameter 'lag' must be an integer number of bytes") from None
    if bound < 0:
        raise ValueError("query parameter 'lag' must not be negative")
    return bound


def is_streaming_replica(ha: HA) -> bool:
    o = ha.snapshot.observation
    return bool(
        o and o.node and o.node.running and o.node.role is Role.REPLICA and o.node.streaming
    )


def within_lag(ha: HA, bound: int | None) -> bool:
    if bound is None:
        return True
    lag = replica_lag(ha)
    return lag is not None and lag <= bound


def liveness(ha: HA, now: float) -> tuple[bool, float | None, float]:
    """(alive, seconds since the last completed cycle, ttl): alive while that is <= ttl.

    Never looks at postgres: a long recovery or basebackup must not get the
    container restarted, only a stuck HA loop must.
    """
    snap = ha.snapshot
    o = snap.observation
    ttl = o.settings.ttl if o is not None else ha.config.ha.ttl
    if not snap.at:
        return False, None, ttl
    age = max(0.0, now - snap.at)
    return age <= ttl, round(age, 3), ttl


def create_app(ha: HA) -> Flask:
    app = Flask("pgras-controller")
    networks = auth.parse_networks(ha.config.controller.allow_networks)
    token = ha.config.controller.auth_token

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        return jsonify(error=exc.description), exc.code

    @app.before_request
    def guard() -> Any:
        refusal = auth.check(
            request.method,
            request.remote_addr,
            request.headers.get("Authorization"),
            token,
            networks,
        )
        if refusal is None:
            return None
        resp = jsonify(error=refusal.message)
        if refusal.status == 401:
            resp.headers["WWW-Authenticate"] = 'Bearer realm="pgras-controller"'
        return resp, refusal.status

    def answer(ok: bool) -> Any:
        return jsonify(node_status(ha)), (200 if ok else 503)

    @app.get("/openapi.json")
    def openapi() -> Any:
        return jsonify(openapi_document())

    @app.get("/readiness")
    def readiness() -> Any:
        # Ready: the lock-holding running primary, or a streaming replica within the lag
        # bound. A primary that lost the lock drops out at once (primary_ok is per cycle).
        if ha.snapshot.primary_ok:
            return answer(True)
        o = ha.snapshot.observation
        default = o.settings.maximum_lag_on_failover if o else ha.config.ha.maximum_lag_on_failover
        try:
            bound = parse_lag(request.args.get("lag"), default)
        except ValueError as exc:
            return jsonify(error=str(exc)), 400
        return answer(is_streaming_replica(ha) and within_lag(ha, bound))

    @app.get("/liveness")
    def live() -> Any:
        alive, age, ttl = liveness(ha, time.time())
        return jsonify(alive=alive, last_cycle_age=age, ttl=ttl), (200 if alive else 503)

    @app.get("/status")
    def status() -> Any:
        data = node_status(ha)
        if request.args.get("fresh"):
            # Live WAL position from the agent, for a switchover waiting on this replica.
            try:
                live = NodeView.from_status(ha.agent.status())
            except (AgentError, ValueError, KeyError, TypeError) as exc:
                return jsonify(error=f"agent unreachable: {exc}"), 503
            data.update(
                role=live.role.value,
                running=live.running,
                streaming=live.streaming,
                lsn=format_lsn(live.lsn) if live.lsn is not None else None,
            )
        return jsonify(data)

    @app.get("/health")
    def health() -> Any:
        o = ha.snapshot.observation
        return answer(bool(o and o.node and o.node.running))

    @app.get("/primary")
    def primary() -> Any:
        return answer(ha.snapshot.primary_ok)

    @app.get("/replica")
    def replica() -> Any:
        try:
            bound = parse_lag(request.args.get("lag"), None)
        except ValueError as exc:
            return jsonify(error=str(exc)), 400
        return answer(is_streaming_replica(ha) and within_lag(ha, bound))

    @app.get("/cluster")
    def cluster() -> Any:
        o = ha.snapshot.observation
        c = o.cluster if o else None
        if o is None or c is None:
            return jsonify(error="Consul unreachable: no cluster view"), 503
        return jsonify(
            cluster=ha.config.cluster,
            leader=c.leader.name if c.leader else None,
            initialize=c.initialize,
            members=[
                {
                    "name": m.name,
                    "api_url": m.api_url,
                    "host": m.conn_host,
                    "port": m.conn_port,
                    "role": m.role,
                    "state": m.state,
                    "timeline": m.timeline,
                    "lsn": format_lsn(m.lsn) if m.lsn is not None else None,
                    "leader": bool(c.leader and c.leader.name == m.name),
                    "sync_standby": o.settings.synchronous_mode
                    and m.name in c.sync_names
                    and not (c.leader and c.leader.name == m.name),
                }
                for m in c.members
            ],
            invalid_members=list(c.invalid_members),
            synchronous_mode=o.settings.synchronous_mode,
            sync=list(c.sync_names),
            switchover=(
                {"from": c.switchover.source, "to": c.switchover.target} if c.switchover else None
            ),
            history=list(c.history[-10:]),
        )

    @app.get("/metrics")
    def prom() -> Any:
        # Imported on first use: prometheus_client is ~10 % of the controller's start-up,
        # which a member restarting after a crash spends before it asks to rejoin.
        from postgres_ras.controller import metrics

        return Response(metrics.render(ha, replica_lag(ha)), mimetype=metrics.CONTENT_TYPE)

    @app.post("/switchover")
    def switchover() -> Any:
        data = request.get_json(silent=True) if request.get_data() else {}
        if not isinstance(data, dict):
            return jsonify(error='body must be a JSON object like {"to": "node2"}'), 400
        target = data.get("to")
        try:
            c = ha.dcs.get_cluster()  # fresh: a member may have joined since the last cycle
        except DCSError as exc:
            return jsonify(error=str(exc)), 503
        if c.leader is None:
            return jsonify(error="no leader right now: nothing to switch over"), 503
        if target is not None:
            if not isinstance(target, str) or c.member(target) is None:
                return jsonify(error=f"field 'to': {target!r} is not a member of the cluster"), 400
            if target == c.leader.name:
                return jsonify(error=f"field 'to': {target} is already the leader"), 400
            member = c.member(target)
            assert member is not None
            if member.role != Role.REPLICA or member.state != "running":
                return jsonify(error=f"field 'to': {target} is not a running replica"), 409
        elif not any(m.role == Role.REPLICA and m.state == "running" for m in c.members):
            return jsonify(error="no running replica to switch over to"), 409
        request_ = Switchover(c.leader.name, target, time.time())
        try:
            ha.dcs.put("switchover", request_.to_json())
        except DCSError as exc:
            return jsonify(error=str(exc)), 503
        return jsonify(accepted=True, **{"from": c.leader.name, "to": target}), 202

    return app
