from postgres_ras.cli import run

raise SystemExit(run())
