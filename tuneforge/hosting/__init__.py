"""Hosting clusters' units as replicas: one serving engine (`tuneforge.serving`) per unit, each in its own
process, or a Ray actor with `tuneforge serve --executor ray`, so hosting grows past the API server's
process and machine.

    router.py     the API server's side: `Hosting` (cluster id -> `ReplicaSet`), placement (least loaded,
                  an adapter kept where it is resident), restarts, the re-sending of unstarted requests,
                  scaling to the cluster's unitCount
    launchers.py  where a replica runs: `ProcessLauncher` (`python -m tuneforge.hosting`, served by
                  multiprocessing.managers on the loopback) or `RayLauncher` (an actor); `ReplicaDied`
    replica.py    the replica itself: `ReplicaCore`, an EnginePool behind plain-data calls
                  (submit, events as a long poll, cancel, shutdown)
    wire.py       the contract between the two sides: the serving errors as data, the poll interval

The service layer (services/actions/inference.py) routes an endpoint's requests here and everything
else to its own process's engines; `ReplicaSet.submit(weights, request)` answers as `Engine.submit`
does, with a `tuneforge.serving.Stream` and the same errors, plus `Interrupted` for an answer cut off
by its replica's death. How it behaves: docs/serving.md, "Hosting clusters: replicas".
"""
