"""The distributed configuration store: who leads, who is a member, cluster config."""
