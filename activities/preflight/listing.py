"""What preflight reads of a cluster in one request per kind, indexed by name, so its
cost does not grow with the number of ordinals: a GET per ordinal and claim template
on each side is thousands of sequential requests for a large StatefulSet, past the
activity's timeout on a remote API server."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from temporalio.exceptions import ApplicationError

from activities.kube import Kube, Obj
from contract.errors import FORBIDDEN


@dataclass(frozen=True)
class Volumes:
    """One cluster's claims of one namespace and its PersistentVolumes, by name.

    A kind the worker may not list (``None``: roles granted before preflight listed
    them) is read by name instead, one GET per lookup, as preflight used to."""

    claims: dict[str, Obj] | None = None
    volumes: dict[str, Obj] | None = None
    kube: Kube | None = None
    namespace: str = ""

    def claim(self, name: str) -> Obj | None:
        if self.claims is not None or self.kube is None:
            return (self.claims or {}).get(name)
        return self.kube.pvc(self.namespace, name)

    def volume(self, name: str) -> Obj | None:
        if self.volumes is not None or self.kube is None:
            return (self.volumes or {}).get(name)
        return self.kube.pv(name)


def _listed(list_fn: Callable[[], list[Obj]]) -> dict[str, Obj] | None:
    try:
        return {o["metadata"]["name"]: o for o in list_fn()}
    except ApplicationError as exc:
        if exc.type != FORBIDDEN:
            raise
        return None


def list_volumes(kube: Kube, ns: str) -> Volumes:
    """Two LISTs (a namespace that does not exist simply has no claims)."""
    return Volumes(
        claims=_listed(lambda: kube.pvcs(ns)), volumes=_listed(kube.pvs), kube=kube, namespace=ns
    )
