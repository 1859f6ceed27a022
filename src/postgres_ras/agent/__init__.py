"""The node agent: owns PGDATA and the postmaster; never talks to Consul."""
