"""What the tests share, one module per concern; no test module imports another.

- ``paths``: the repository and the recorded histories
- ``apps``: StatefulSet manifests and the Redis-like app the tests migrate
- ``cluster_state``: what the clusters hold (pods, Ready replicas, a snapshot)
- ``waits``: polling waits (and the nudge past a kube-scheduler quirk)
- ``diagnostics``: what a namespace holds, said when a wait fails
- ``namespaces``: fresh namespaces in both clusters
- ``processes``: the worker as a real process
- ``kubeconfigs``: edited copies of the clusters' kubeconfig
- ``commands``: the Temporal CLI, ``stsmigrate`` and other commands, run as a user would
- ``histories``: histories fetched, and recorded for the replay test
- ``fakes``: the clusters and probes faked in memory for the workflow tests
- ``scenarios``: requests, steps and the observer for migrations on the real clusters
- ``faults``: the fault-injection table, kept in pytest's ``config.stash``
- ``redis_cluster``: a real Redis Cluster of Debian's redis-server

The cluster-facing helpers use only the Kubernetes client, the contract's models and
``devenv`` (the observer is ``devenv.observer``, imported from there), never the
migrator's activities.
"""
