"""The chart's renders and the kustomize base applied to the local clusters in a
server-side dry run: the apiservers validate every object (schema, defaults, admission)
without keeping any. (Lint, schema and the roles' equality with the permission table:
tests/test_chart.py.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devenv.clusters import LocalClusters
from tests.support.chart import render_text
from tests.support.paths import REPO

pytestmark = pytest.mark.cluster

# The local clusters have no prometheus-operator CRDs, so no ServiceMonitor here.
WORKER = (
    "metrics.enabled=true",
    "temporal.tls.secretName=temporal-mtls",
    "temporal.apiKey.secretName=temporal-api-key",
    "codec.secretName=stsmigrate-codec",
)


def dry_run(clusters: LocalClusters, context: str, manifest: str) -> set[str]:
    out = clusters.kubectl(context, "apply", "--dry-run=server", "-f", "-", input=manifest)
    lines = set(out.splitlines())
    assert lines and all(line.endswith(" created (server dry run)") for line in lines), out
    return {line.removesuffix(" created (server dry run)") for line in lines}


def test_the_worker_release_is_accepted_by_an_apiserver(
    clusters: LocalClusters, namespace: str
) -> None:
    applied = dry_run(clusters, "source", render_text(namespace, *WORKER))
    assert applied == {
        "serviceaccount/t-statefulset-migrator",
        "service/t-statefulset-migrator-metrics",
        "deployment.apps/t-statefulset-migrator",
        "poddisruptionbudget.policy/t-statefulset-migrator",
    }


@pytest.mark.parametrize("side", ["source", "destination"])
def test_each_sides_roles_are_accepted_by_its_cluster(
    clusters: LocalClusters, namespace: str, side: str
) -> None:
    manifest = render_text(
        namespace, "worker.enabled=false", f"rbac.side={side}", f"rbac.namespaces={{{namespace}}}"
    )
    applied = dry_run(clusters, side, manifest)
    assert applied == {
        "serviceaccount/stsmigrate",
        f"clusterrole.rbac.authorization.k8s.io/stsmigrate-{side}-cluster",
        f"clusterrole.rbac.authorization.k8s.io/stsmigrate-{side}-namespaced",
        f"clusterrolebinding.rbac.authorization.k8s.io/stsmigrate-{side}-cluster",
        f"rolebinding.rbac.authorization.k8s.io/stsmigrate-{side}-namespaced",
    }


def test_an_overlay_of_the_kustomize_base_is_accepted(
    clusters: LocalClusters, namespace: str, tmp_path: Path
) -> None:
    base = os.path.relpath(REPO / "deploy" / "kustomize" / "base", tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        f"resources: [{base}]\n"
        f"namespace: {namespace}\n"
        "images:\n"
        "  - name: statefulset-migrator\n"
        "    newName: registry.example.com/statefulset-migrator\n"
        "    newTag: 0.1.0\n"
    )
    manifest = clusters.kubectl("source", "kustomize", str(tmp_path))
    assert "image: registry.example.com/statefulset-migrator:0.1.0" in manifest
    assert dry_run(clusters, "source", manifest) == {
        "serviceaccount/stsmigrate-worker",
        "deployment.apps/stsmigrate-worker",
        "poddisruptionbudget.policy/stsmigrate-worker",
    }
