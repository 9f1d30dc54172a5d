"""Cluster access for activities: one ApiClient per kubeconfig context, held by the worker.

Workflow inputs name contexts only; the credentials behind them never leave the
worker. API access goes through activities.kube (request timeouts, one error
classifier), like every other activity.
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog
from kubernetes import client
from temporalio import activity

from activities.kube import is_ready, kube_for
from contract import ClusterInfo, ReadClusterInfoInput

log = structlog.get_logger(__name__)


class ClusterActivities:
    def __init__(self, clients: Mapping[str, client.ApiClient]) -> None:
        self._clients = dict(clients)

    @activity.defn
    def read_cluster_info(self, request: ReadClusterInfoInput) -> ClusterInfo:
        kube = kube_for(self._clients, request.context)
        version = kube.version()
        nodes = kube.nodes()
        ready = sum(1 for node in nodes if is_ready(node))
        info = ClusterInfo(
            context=request.context, server_version=version, nodes=len(nodes), nodes_ready=ready
        )
        log.info(
            "cluster_info_read",
            context=request.context,
            version=info.server_version,
            nodes=info.nodes,
            nodes_ready=ready,
        )
        return info
