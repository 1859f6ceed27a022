"""The project's exception tree.

Library exceptions are translated into these where they enter our code, so
callers can tell "Consul is unreachable" (DCSError) from "lost a race"
(a False return) and from "postgres failed" (PostgresError).
"""


class PgrasError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(PgrasError):
    """Invalid configuration: the message names the field and the fix."""


class DCSError(PgrasError):
    """The DCS (Consul) could not be reached or answered nonsense."""


class PostgresError(PgrasError):
    """A PostgreSQL operation (initdb, clone, start, promote, rewind...) failed."""


class AgentError(PgrasError):
    """The node agent could not be reached or refused a request."""


class FatalError(PgrasError):
    """An unrecoverable condition: the process should stop with this message."""
