"""The Consul client honours the TLS settings of the node config."""

from __future__ import annotations

import pytest
from consul import ConsulException
from consul.exceptions import ClientError

from postgres_ras.dcs.consul import client, http_status
from postgres_ras.errors import DCSError


def test_https_consul_verified_against_the_configured_ca() -> None:
    c = client("https://consul.internal:8501", "token", 1.0, "/etc/pgras/consul-ca.pem")
    assert c.http.verify == "/etc/pgras/consul-ca.pem"
    assert c.http.base_uri.startswith("https://consul.internal:8501")


def test_https_consul_verified_against_system_cas_by_default() -> None:
    assert client("https://consul.internal", None).http.verify is True


def test_bad_consul_url_is_a_clear_error() -> None:
    with pytest.raises(DCSError, match="expected http"):
        client("consul:8500")


def test_http_status_of_a_rolled_back_transaction() -> None:
    # A lost check-and-set comes back as 409; a server error must never look like one.
    assert http_status(ClientError("409 Transaction rolled back")) == 409
    assert http_status(ConsulException("500 rpc error: leadership lost")) == 500
    assert http_status(ConsulException("Failed to decode JSON")) is None
