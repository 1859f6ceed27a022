"""A threaded HTTP server for a Flask app, run in a background thread and stoppable."""

from __future__ import annotations

import threading

from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

from postgres_ras.errors import FatalError


class Server:
    def __init__(self, app: Flask, host: str, port: int, name: str) -> None:
        try:
            self.server: BaseWSGIServer = make_server(host, port, app, threaded=True)
        except OSError as exc:
            raise FatalError(
                f"cannot listen on {host}:{port} for the {name} API: {exc.strerror}; "
                "is another node using that port?"
            ) from None
        self.thread = threading.Thread(target=self.server.serve_forever, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
