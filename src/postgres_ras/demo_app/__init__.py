"""The puppies REST API (Flask on gunicorn) used to verify the cluster end to end."""

from postgres_ras.demo_app.app import create_app

__all__ = ["create_app"]
