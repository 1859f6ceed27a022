"""The HTTP server for the controller and agent APIs: cheroot, bounded and stoppable.

Why cheroot (CherryPy's server): a fixed pool of worker threads, idle
keep-alive connections parked in a selector instead of holding a thread,
socket timeouts, and TLS built in (waitress has no TLS; werkzeug's server
is for development and starts a thread per connection without bound).

What it guarantees, so load on the API can never starve the HA loop or the
heartbeat (they run in their own threads and never wait on this server):
- at most ``threads`` requests are served at once; more wait in the queue;
- a connection reaches a worker only once its whole request head has
  arrived; one that does not send it within ``head_timeout`` of being
  accepted (or of waking from keep-alive) is closed without ever holding a
  worker (slowloris); at most 1000 such connections are kept waiting;
- a request (head, body, response) taking longer than ``request_timeout``
  is cut; every socket read/write has ``socket_timeout``;
- idle keep-alive connections cost a file descriptor, not a thread.

Not covered: over TLS the head cannot be peeked before the handshake, so a
slow TLS client holds a worker up to ``request_timeout`` (and cheroot does
the handshake in its accept loop, bounded by ``socket_timeout``).
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cheroot import server as cheroot_server
from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter
from flask import Flask

from postgres_ras.errors import FatalError

log = logging.getLogger(__name__)


HEAD_LIMIT = 65536  # cheroot's own limit answers 413/414 beyond this


class _Gate:
    """Holds a connection back from the worker pool until its request head has arrived.

    cheroot hands a connection to a worker as soon as it is accepted or readable, and
    the worker then blocks reading the head: a few hundred clients that connect and
    send nothing, or trickle, would occupy every worker. Here they wait in one thread,
    checked every ``period`` with a non-consuming peek, and are closed once
    ``head_timeout`` has passed. TLS sockets cannot be peeked: they go straight to a
    worker and rely on the request deadline below.
    """

    def __init__(
        self,
        dispatch: Callable[[Any], None],
        head_timeout: float,
        period: float = 0.02,
        max_parked: int = 1000,
    ) -> None:
        self.dispatch = dispatch
        self.head_timeout = head_timeout
        self.period = period
        self.max_parked = max_parked
        self._lock = threading.Lock()
        self._parked: dict[int, tuple[float, Any]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="http-gate", daemon=True)
        self._thread.start()

    @staticmethod
    def _head_ready(conn: Any) -> bool:
        if conn.rfile.has_data() or isinstance(conn.socket, ssl.SSLSocket):
            return True
        sock = conn.socket
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            data = sock.recv(HEAD_LIMIT, socket.MSG_PEEK)
        except (OSError, ValueError):
            return True  # let the worker meet the error and close the connection
        # End of stream, a complete head, or an oversized one: a worker answers at once.
        return not data or b"\r\n\r\n" in data or len(data) >= HEAD_LIMIT

    def submit(self, conn: Any) -> None:
        if self._head_ready(conn):
            self.dispatch(conn)
            return
        evicted = None
        with self._lock:
            if len(self._parked) >= self.max_parked:
                oldest = min(self._parked, key=lambda k: self._parked[k][0])
                evicted = self._parked.pop(oldest)[1]
            self._parked[id(conn)] = (time.monotonic() + self.head_timeout, conn)
        if evicted is not None:
            evicted.close()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            with self._lock:
                parked = list(self._parked.items())
            now = time.monotonic()
            for key, (deadline, conn) in parked:
                ready = self._head_ready(conn)
                if ready or now >= deadline:
                    with self._lock:
                        self._parked.pop(key, None)
                    if ready:
                        self.dispatch(conn)
                    else:
                        conn.close()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            parked, self._parked = list(self._parked.values()), {}
        for _, conn in parked:
            conn.close()


class _Deadlines:
    """One watchdog thread that cuts connections whose request is overdue."""

    def __init__(self, period: float = 0.2) -> None:
        self._lock = threading.Lock()
        self._due: dict[int, tuple[float, socket.socket]] = {}
        self._stop = threading.Event()
        self._period = period
        self._thread = threading.Thread(target=self._run, name="http-deadlines", daemon=True)
        self._thread.start()

    def arm(self, sock: socket.socket, seconds: float) -> int:
        key = id(sock)
        with self._lock:
            self._due[key] = (time.monotonic() + seconds, sock)
        return key

    def disarm(self, key: int) -> None:
        with self._lock:
            self._due.pop(key, None)

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            now = time.monotonic()
            with self._lock:
                overdue = [(k, s) for k, (t, s) in self._due.items() if t <= now]
                for key, _ in overdue:
                    del self._due[key]
            for _, sock in overdue:
                try:
                    # The worker blocked in recv()/send() sees the stream end and frees itself.
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        self._stop.set()


def _connection_class(deadlines: _Deadlines, request_timeout: float) -> type[Any]:
    class DeadlineConnection(cheroot_server.HTTPConnection):
        def communicate(self) -> bool:
            key = deadlines.arm(self.socket, request_timeout)
            try:
                return bool(super().communicate())  # type: ignore[no-untyped-call]
            finally:
                deadlines.disarm(key)

    return DeadlineConnection


class _GatedServer(wsgi.Server):
    gate: _Gate | None = None

    def error_log(self, msg: str = "", level: int = 20, traceback: bool = False) -> None:
        # cheroot writes to stderr; ours goes through logging, and dropped slow or
        # broken clients (its INFO/WARNING chatter) stay out of the event log.
        log.log(
            logging.ERROR if level >= logging.ERROR else logging.DEBUG,
            "%s",
            msg,
            exc_info=traceback,
        )

    def process_conn(self, conn: Any) -> None:
        if self.gate is None:
            super().process_conn(conn)
        else:
            self.gate.submit(conn)


class Server:
    """Serves a Flask app on host:port from a background thread until ``stop()``."""

    def __init__(
        self,
        app: Flask,
        host: str,
        port: int,
        name: str,
        *,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        threads: int = 16,
        socket_timeout: int = 5,
        head_timeout: float = 2.0,
        request_timeout: float = 15.0,
    ) -> None:
        self.name = name
        self.deadlines = _Deadlines()
        self.server = _GatedServer(
            (host, port),
            app,
            numthreads=threads,
            max=threads,
            server_name=f"pgras-{name}",
            request_queue_size=128,
            timeout=int(socket_timeout),
            shutdown_timeout=2,
            accepted_queue_size=256,
            accepted_queue_timeout=1,
        )
        self.server.ConnectionClass = _connection_class(self.deadlines, request_timeout)
        self.gate = _Gate(super(_GatedServer, self.server).process_conn, head_timeout)
        self.server.gate = self.gate
        if (tls_cert is None) != (tls_key is None):
            raise FatalError(f"the {name} API needs both tls_cert and tls_key for TLS, or neither")
        if tls_cert is not None and tls_key is not None:
            try:
                self.server.ssl_adapter = BuiltinSSLAdapter(str(tls_cert), str(tls_key))
            except (OSError, ssl.SSLError) as exc:
                raise FatalError(
                    f"cannot load the {name} API's TLS certificate {tls_cert} / key {tls_key}: "
                    f"{exc}"
                ) from None
        try:
            self.server.prepare()  # binds now, so a taken port fails at start-up
        except OSError as exc:
            self.deadlines.stop()
            self.gate.stop()
            raise FatalError(
                f"cannot listen on {host}:{port} for the {name} API: "
                f"{exc.strerror or exc}; is another node using that port?"
            ) from None
        self.thread = threading.Thread(target=self._serve, name=name, daemon=True)

    @property
    def tls(self) -> bool:
        return self.server.ssl_adapter is not None

    def _serve(self) -> None:
        try:
            self.server.serve()
        except Exception:  # the API must not die silently
            log.exception("the %s API server stopped unexpectedly", self.name)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.stop()
        self.gate.stop()
        self.deadlines.stop()
        self.thread.join(5)
