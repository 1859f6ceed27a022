"""gunicorn entry point: ``gunicorn postgres_ras.demo_app.wsgi:app`` (DSN from PUPPIES_DSN)."""

from postgres_ras.demo_app.app import create_app

app = create_app()
