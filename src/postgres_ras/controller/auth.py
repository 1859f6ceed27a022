"""Who may call the controller's state-changing endpoints. Pure: no I/O.

A request that changes state (any method but GET/HEAD/OPTIONS) needs both:
- a client address on loopback or in ``controller.allow_networks``;
- ``Authorization: Bearer <controller.auth_token>``, compared in constant
  time. With no token configured every such request is refused, and the
  message says how to set one.
Read-only endpoints (probes, HAProxy checks, metrics) stay open.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import SecretStr

from postgres_ras.errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
TOKEN_HINT = (
    "set controller.auth_token in the node config or PGRAS_CONTROLLER__AUTH_TOKEN "
    "(in Kubernetes, from a Secret)"
)


@dataclass(frozen=True)
class Refusal:
    status: int
    message: str


def parse_networks(values: Sequence[str]) -> tuple[Network, ...]:
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ConfigError(
                f"controller.allow_networks: {value!r} is not a network like 10.0.0.0/8 "
                "(PGRAS_CONTROLLER__ALLOW_NETWORKS)"
            ) from None
    return tuple(networks)


def client_allowed(address: str | None, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address((address or "").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or any(ip in net for net in networks if ip.version == net.version)


def check(
    method: str,
    address: str | None,
    authorization: str | None,
    token: SecretStr | None,
    networks: Sequence[Network],
) -> Refusal | None:
    """None when the request may proceed, else why not (status 401 or 403)."""
    if method.upper() in READ_ONLY_METHODS:
        return None
    if not client_allowed(address, networks):
        return Refusal(
            403,
            f"client {address} may not change state: only loopback and "
            "controller.allow_networks (PGRAS_CONTROLLER__ALLOW_NETWORKS) may",
        )
    if token is None or not token.get_secret_value():
        return Refusal(
            403, f"state-changing endpoints are disabled: no token configured; {TOKEN_HINT}"
        )
    scheme, _, given = (authorization or "").partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        return Refusal(401, "missing or wrong 'Authorization: Bearer <token>' header")
    return None
