"""postgres-ras: a resilient PostgreSQL cluster that elects its primary through Consul."""

__version__ = "0.1.0"
