"""What the clusters hold: pod names, Ready replicas, and a snapshot of everything a
migration of a namespace could touch (compared before and after to prove nothing
changed)."""

from __future__ import annotations

from typing import Any

from kubernetes import client


def pod_names(api: client.ApiClient, namespace: str) -> set[str]:
    return {p.metadata.name for p in client.CoreV1Api(api).list_namespaced_pod(namespace).items}


def ready_replicas(api: client.ApiClient, namespace: str, name: str) -> int:
    sts: Any = client.AppsV1Api(api).read_namespaced_stateful_set(name, namespace)
    return int(sts.status.ready_replicas or 0)


def snapshot(kube: dict[str, client.ApiClient], namespace: str) -> dict[str, str]:
    """name -> resourceVersion of everything a migration of this namespace could touch, in
    both clusters. Cluster-scoped objects are limited to this namespace's volumes: other
    tests' volumes change as their namespaces are torn down."""
    out: dict[str, str] = {}
    for side, api in kube.items():
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        listings: list[tuple[str, Any]] = [
            ("sts", apps.list_namespaced_stateful_set(namespace)),
            ("pod", core.list_namespaced_pod(namespace)),
            ("pvc", core.list_namespaced_persistent_volume_claim(namespace)),
            ("secret", core.list_namespaced_secret(namespace)),
            ("cm", core.list_namespaced_config_map(namespace)),
            ("svc", core.list_namespaced_service(namespace)),
        ]
        for kind, listing in listings:
            for item in listing.items:
                out[f"{side}/{kind}/{item.metadata.name}"] = item.metadata.resource_version
        pvs: Any = core.list_persistent_volume()
        ours = {
            pv.metadata.name
            for pv in pvs.items
            if pv.spec.claim_ref and pv.spec.claim_ref.namespace == namespace
        }
        for pv in pvs.items:
            if pv.metadata.name in ours:
                out[f"{side}/pv/{pv.metadata.name}"] = pv.metadata.resource_version
        vas: Any = client.StorageV1Api(api).list_volume_attachment()
        for va in vas.items:
            if va.spec.source.persistent_volume_name in ours:
                out[f"{side}/va/{va.metadata.name}"] = va.metadata.resource_version
    return out


def budgets(kube: dict[str, client.ApiClient], namespace: str, name: str) -> dict[str, Any]:
    """maxUnavailable of the app's PDB in each cluster (with no annotation of ours left
    once restored: then the PDB's own spec)."""
    out = {}
    for side in ("source", "destination"):
        pdb: Any = client.PolicyV1Api(kube[side]).read_namespaced_pod_disruption_budget(
            name, namespace
        )
        saved = (pdb.metadata.annotations or {}).get("stsmigrate.dev/disruption-budget")
        out[side] = pdb.spec.max_unavailable if saved or pdb.spec.min_available is None else None
    return out


def release_fence(api: client.ApiClient, namespace: str, name: str) -> None:
    """What a human does once nothing points the app at the source: let it go (and the
    test's namespace be deleted)."""
    apps = client.AppsV1Api(api)
    try:
        sts: Any = apps.read_namespaced_stateful_set(name, namespace)
    except client.exceptions.ApiException:
        return
    finalizers = list(sts.metadata.finalizers or [])
    if "stsmigrate.dev/fence" not in finalizers:
        return
    # As the README says (deploy/admission.yaml's stsmigrate-fence wants the first). A
    # JSON patch: finalizers merge in a strategic merge patch, so [] would remove none.
    release = {"metadata": {"annotations": {"stsmigrate.dev/release-fence": "true"}}}
    apps.patch_namespaced_stateful_set(name, namespace, release)
    at = f"/metadata/finalizers/{finalizers.index('stsmigrate.dev/fence')}"
    apps.patch_namespaced_stateful_set(
        name,
        namespace,
        [{"op": "test", "path": at, "value": "stsmigrate.dev/fence"}, {"op": "remove", "path": at}],
    )
