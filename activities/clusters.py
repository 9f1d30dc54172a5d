"""Cluster access for activities: one ApiClient per kubeconfig context, held by the worker.

Workflow inputs name contexts only; the credentials behind them never leave the
worker. Every API call carries a request timeout, so a hung apiserver turns into
a retryable error instead of a stuck activity.
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog
from kubernetes import client
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import errors
from activities.models import ClusterInfo, ReadClusterInfoInput

# (connect, read) seconds for one API request.
REQUEST_TIMEOUT = (5, 30)

log = structlog.get_logger(__name__)


class ClusterActivities:
    def __init__(self, clients: Mapping[str, client.ApiClient]) -> None:
        self._clients = dict(clients)

    def api(self, context: str) -> client.ApiClient:
        try:
            return self._clients[context]
        except KeyError:
            known = ", ".join(sorted(self._clients)) or "none"
            raise ApplicationError(
                f"this worker holds no kubeconfig context {context!r} (it holds: {known}); "
                "add it to the worker's kubeconfig or fix the request",
                type=errors.UNKNOWN_CONTEXT,
                non_retryable=True,
            ) from None

    @activity.defn
    def read_cluster_info(self, request: ReadClusterInfoInput) -> ClusterInfo:
        api = self.api(request.context)
        try:
            version = client.VersionApi(api).get_code(_request_timeout=REQUEST_TIMEOUT)
            nodes = client.CoreV1Api(api).list_node(_request_timeout=REQUEST_TIMEOUT).items
        except errors.API_FAILURES as exc:
            raise errors.classify(exc, f"read cluster info of {request.context!r}") from None
        ready = sum(
            1
            for node in nodes
            if node.status
            and any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
        )
        info = ClusterInfo(
            context=request.context,
            server_version=version.git_version,
            nodes=len(nodes),
            nodes_ready=ready,
        )
        log.info(
            "cluster_info_read",
            context=request.context,
            version=info.server_version,
            nodes=info.nodes,
            nodes_ready=ready,
        )
        return info
