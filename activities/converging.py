"""What every migration activity shares, and the contract each one keeps.

Each activity converges (absolute desired state; read, compare, write only the
difference), so Temporal may run it again after a crash at any instant and the
clusters end the same. Objects we create carry our labels, so AlreadyExists
with our label is success; NotFound on delete is success. A state that is
neither the one we want nor the one we expect to change from means another actor
changed something: that is refused (``ConflictingChange``), never fought.
Secret data is read and written in activities only; nothing returned holds it.
"""

from __future__ import annotations

from collections.abc import Mapping

from kubernetes import client
from temporalio.exceptions import ApplicationError

from activities.kube import Kube, kube_for
from contract.errors import CONFLICTING_CHANGE


def conflict(message: str) -> ApplicationError:
    """Another actor changed what this step converges: refused, never fought."""
    return ApplicationError(message, type=CONFLICTING_CHANGE, non_retryable=True)


class ConvergingActivities:
    """The worker's clients, one per kubeconfig context; base of the activity mixins."""

    def __init__(self, clients: Mapping[str, client.ApiClient]) -> None:
        self._clients = dict(clients)

    def kube(self, context: str) -> Kube:
        return kube_for(self._clients, context)

    def _maybe_kube(self, context: str) -> Kube | None:
        return Kube(self._clients[context], context) if context in self._clients else None
