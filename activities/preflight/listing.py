"""What preflight reads of a cluster in one request per kind, indexed by name, so its
cost does not grow with the number of ordinals: a GET per ordinal and claim template
on each side is thousands of sequential requests for a large StatefulSet, past the
activity's timeout on a remote API server."""

from __future__ import annotations

from dataclasses import dataclass, field

from activities.kube import Kube, Obj


@dataclass(frozen=True)
class Volumes:
    """One cluster's claims of one namespace and all its PersistentVolumes, by name."""

    claims: dict[str, Obj] = field(default_factory=dict)
    volumes: dict[str, Obj] = field(default_factory=dict)

    def claim(self, name: str) -> Obj | None:
        return self.claims.get(name)

    def volume(self, name: str) -> Obj | None:
        return self.volumes.get(name)


def list_volumes(kube: Kube, ns: str) -> Volumes:
    """Two LISTs (a namespace that does not exist simply has no claims)."""
    return Volumes(
        claims={c["metadata"]["name"]: c for c in kube.pvcs(ns)},
        volumes={v["metadata"]["name"]: v for v in kube.pvs()},
    )
