"""``pgras verify``: a chaos checker anyone can run against a local cluster or pods.

A workload records every acknowledged write and probes every member's
writability while faults are injected one after another; a pure checker
turns the recording into findings (lost and duplicate writes, split-brain
intervals, write outage and recovery time per fault).

Modules: ``events`` (the recording), ``checker`` (pure: recording ->
findings), ``workload`` (writers, readers, member probes), ``target`` (what a
run is aimed at: ``LocalTarget`` wraps ``faults``, the injection against
``local.LocalCluster``; ``docker_target`` aims at database pods running as
Docker containers: docker kill, pause, network disconnect), ``report``
(table, JSON), ``plot`` (PNG timeline), ``run`` (the orchestration behind the
CLI).
"""
