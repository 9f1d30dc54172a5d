"""Preflight checks of the clusters themselves: the worker holds both contexts, they
are two StatefulSets, the servers are new enough, the credentials may do every
request the run makes, and the destination namespace exists."""

from __future__ import annotations

import re

from activities import permissions
from activities.kube import Kube
from activities.preflight.findings import Findings, Versions
from contract import MigrationRequest

MIN_MINOR = 27  # .spec.ordinals: beta and on by default in 1.27, GA in 1.31


def minor_version(git_version: str) -> tuple[int, int] | None:
    match = re.match(r"v?(\d+)\.(\d+)", git_version)
    return (int(match[1]), int(match[2])) if match else None


def check_contexts(
    source: Kube | None, destination: Kube | None, request: MigrationRequest, f: Findings
) -> None:
    for side, kube, context in (
        ("source", source, request.source_context),
        ("destination", destination, request.destination_context),
    ):
        if kube is None:
            f.problem(
                f"{side} context {context!r}",
                "the worker's kubeconfig has no such context",
                "name a context the worker holds, or add it to the worker's "
                "kubeconfig (STSMIGRATE_KUBECONFIG)",
            )


def check_not_itself(request: MigrationRequest, f: Findings) -> bool:
    """The destination is another StatefulSet than the source."""
    if request.source_context == request.destination_context and (
        request.namespace == request.target_namespace
    ):
        f.problem(
            "request",
            "source and destination are the same StatefulSet",
            "name another destination context or namespace",
        )
        return False
    return True


def check_versions(source: Kube, destination: Kube, f: Findings) -> Versions:
    return Versions(
        source=_check_version("source", source, f),
        destination=_check_version("destination", destination, f),
    )


def _check_version(side: str, kube: Kube, f: Findings) -> str:
    version = kube.version()
    parsed = minor_version(version)
    if parsed is None or parsed < (1, MIN_MINOR):
        f.problem(
            f"{side} cluster {kube.context}",
            f"Kubernetes {version} is too old: StatefulSet .spec.ordinals needs "
            f"1.{MIN_MINOR} or later",
            "upgrade the control plane to 1.27+ (1.31+ recommended, where the feature is GA)",
        )
    return version


def check_permissions(
    source: Kube, destination: Kube, request: MigrationRequest, f: Findings
) -> None:
    # Permissions before anything else is read: without them the reads below would
    # only fail one by one, while this names every missing permission at once. Every
    # verb of the table, a rollback's too (an operator can ask for one at any time).
    sides: tuple[tuple[permissions.Side, Kube, str], ...] = (
        ("source", source, request.namespace),
        ("destination", destination, request.target_namespace),
    )
    for side, kube, namespace in sides:
        perms = permissions.needed(side, cleanup=request.cleanup, hooks=request.hooks.configured)
        missing, spared = lacking(kube, perms, namespace, request.statefulset)
        if spared:
            f.warnings.append(
                f"{side} cluster {kube.context}: the worker's credentials may not "
                f"{', '.join(spared)}, so the run writes no Kubernetes Events there "
                "(deploy/rbac.yaml grants it)"
            )
        if missing:
            f.problem(
                f"{side} cluster {kube.context}",
                f"the worker's credentials may not: {', '.join(missing)}",
                "grant them (deploy/rbac.yaml has the roles; `stsmigrate rbac` prints them)",
            )


def lacking(
    kube: Kube, perms: list[tuple[str, str, str, bool]], namespace: str, statefulset: str
) -> tuple[list[str], list[str]]:
    """(missing, spared): the verbs of ``perms`` the credentials lack ("verb resource"),
    the optional ones apart ("verb resource.group")."""
    out = [
        (verb, resource, group)
        for verb, resource, group, namespaced in perms
        if not kube.can(
            verb,
            resource,
            group,
            namespace if namespaced else None,
            # Roles may be narrowed to the StatefulSet's name (stsmigrate rbac -s).
            statefulset if permissions.by_name(resource, group, verb) else None,
        )
    ]
    missing = [f"{v} {r}" for v, r, g in out if not permissions.optional(v, r, g)]
    spared = [f"{v} {r}.{g}" for v, r, g in out if permissions.optional(v, r, g)]
    return missing, spared


def check_destination_namespace(destination: Kube, request: MigrationRequest, f: Findings) -> bool:
    tns = request.target_namespace
    if destination.namespace(tns) is not None:
        return True
    f.problem(
        f"destination namespace {tns}",
        f"does not exist in {destination.context}",
        f"kubectl --context {destination.context} create namespace {tns}",
    )
    return False
