"""The one-machine cluster: Consul, N nodes, HAProxy, pgpool and the demo apps."""
