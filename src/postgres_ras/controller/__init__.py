"""The controller: membership and leadership in Consul, the HA loop, the node REST API."""
