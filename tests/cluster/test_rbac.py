"""deploy/rbac.yaml grants every permission preflight checks for, and no more verbs."""

from __future__ import annotations

import copy
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from activities.preflight import DESTINATION_PERMISSIONS, SOURCE_PERMISSIONS
from devenv.clusters import LocalClusters

pytestmark = pytest.mark.cluster
RBAC = Path(__file__).resolve().parents[2] / "deploy" / "rbac.yaml"


def can_i(
    clusters: LocalClusters,
    context: str,
    user: str,
    verb: str,
    resource: str,
    namespace: str | None,
) -> bool:
    args = [
        str(clusters.bins / "kubectl"),
        f"--kubeconfig={clusters.kubeconfig}",
        f"--context={context}",
        "auth",
        "can-i",
        verb,
        resource,
        f"--as={user}",
    ]
    args += [f"--namespace={namespace}"] if namespace else []
    out = subprocess.run(args, capture_output=True, text=True, timeout=30)
    return out.stdout.strip() == "yes"


@pytest.mark.parametrize("side", ["source", "destination"])
def test_roles_grant_what_preflight_checks(
    clusters: LocalClusters, namespace: str, side: str
) -> None:
    docs: list[dict[str, Any]] = list(yaml.safe_load_all(RBAC.read_text()))
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ClusterRole"}
    suffix = uuid.uuid4().hex[:6]
    user = f"stsmigrate-{suffix}"
    objects: list[dict[str, Any]] = []
    for scope in ("cluster", "namespaced"):
        role = copy.deepcopy(roles[f"stsmigrate-{side}-{scope}"])
        role["metadata"]["name"] += f"-{suffix}"
        objects.append(role)
        binding: dict[str, Any] = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding" if scope == "cluster" else "RoleBinding",
            "metadata": {"name": role["metadata"]["name"]},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role["metadata"]["name"],
            },
            "subjects": [{"kind": "User", "name": user}],
        }
        if scope == "namespaced":
            binding["metadata"]["namespace"] = namespace
        objects.append(binding)
    clusters.kubectl(
        side,
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
    )
    try:
        perms = SOURCE_PERMISSIONS if side == "source" else DESTINATION_PERMISSIONS
        for verb, resource, group, namespaced in perms:
            target = f"{resource}.{group}" if group else resource
            assert can_i(clusters, side, user, verb, target, namespace if namespaced else None), (
                f"{side} role lacks {verb} {target}"
            )
        # Least privilege: nothing beyond the app's namespace, no deletes of storage.
        assert not can_i(clusters, side, user, "delete", "persistentvolumes", None)
        assert not can_i(clusters, side, user, "get", "secrets", "kube-system")
        assert not can_i(clusters, side, user, "delete", "pods", namespace)
    finally:
        clusters.kubectl(
            side,
            "delete",
            "-f",
            "-",
            "--ignore-not-found",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
        )
