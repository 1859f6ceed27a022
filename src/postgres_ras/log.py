"""Logging set-up: one line per event, always with the member name."""

import logging
import sys


def setup(component: str, name: str, level: str = "INFO") -> logging.Logger:
    fmt = f"%(asctime)s %(levelname)s {component}[{name}] %(message)s"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # werkzeug logs every request; the health checks would drown the events.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    return logging.getLogger(f"pgras.{component}")
