"""The API's HTTP server (httpserver.py) for real on 127.0.0.1: bounded workers, slow clients
cut, TLS, a clear error for a taken port."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from flask import Flask

from postgres_ras.errors import FatalError
from postgres_ras.httpserver import Server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def app() -> Flask:
    a = Flask("t")

    @a.get("/primary")
    def primary() -> str:
        return "ok"

    @a.get("/slow")
    def slow() -> str:
        time.sleep(0.5)
        return "slow"

    return a


@pytest.fixture
def server() -> Iterator[tuple[Server, int]]:
    port = free_port()
    s = Server(app(), "127.0.0.1", port, "test", threads=4, head_timeout=0.5)
    s.start()
    try:
        yield s, port
    finally:
        s.stop()


def test_silent_and_trickling_clients_do_not_hold_the_four_workers(
    server: tuple[Server, int],
) -> None:
    _, port = server
    socks = []
    for i in range(100):
        c = socket.create_connection(("127.0.0.1", port), timeout=5)
        if i % 2:
            c.sendall(b"GET /primary HTTP/1.1\r\nHost: x\r\n")
        socks.append(c)
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.2):
            for c in socks[1::2]:
                try:
                    c.sendall(b"X")
                except OSError:
                    pass

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        worst = 0.0
        for _ in range(15):
            started = time.monotonic()
            assert requests.get(f"http://127.0.0.1:{port}/primary", timeout=3).text == "ok"
            worst = max(worst, time.monotonic() - started)
            time.sleep(0.05)
        assert worst < 0.5, worst
        # Past head_timeout every slow client has been disconnected.
        time.sleep(1.0)
        closed = 0
        for c in socks:
            c.settimeout(1)
            try:
                closed += c.recv(1) == b""
            except OSError:
                closed += 1
        assert closed == len(socks)
    finally:
        stop.set()
        t.join(2)
        for c in socks:
            c.close()


def test_concurrency_is_bounded_by_the_pool(server: tuple[Server, int]) -> None:
    _, port = server
    done: list[float] = []
    started = time.monotonic()

    def one() -> None:
        requests.get(f"http://127.0.0.1:{port}/slow", timeout=10)
        done.append(time.monotonic() - started)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(done) == 8
    # 8 requests of 0.5 s on 4 workers: two waves, never all at once.
    assert max(done) >= 0.95, done


def test_taken_port_is_a_clear_error(server: tuple[Server, int]) -> None:
    _, port = server
    with pytest.raises(FatalError, match=f"cannot listen on 127.0.0.1:{port} for the dup API"):
        Server(app(), "127.0.0.1", port, "dup")


def self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "tls.crt", tmp / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    port = free_port()
    s = Server(app(), "127.0.0.1", port, "tls", tls_cert=cert, tls_key=key)
    s.start()
    try:
        assert s.tls
        resp = requests.get(f"https://127.0.0.1:{port}/primary", verify=str(cert), timeout=5)
        assert resp.text == "ok"
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"https://127.0.0.1:{port}/primary", timeout=5)  # unknown CA
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/primary", timeout=5).raise_for_status()
    finally:
        s.stop()


def test_bad_certificate_is_a_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate")
    with pytest.raises(FatalError, match="TLS certificate"):
        Server(app(), "127.0.0.1", free_port(), "tls", tls_cert=bogus, tls_key=bogus)
