"""Other writers of the StatefulSet, found before anything changes.

An autoscaler (HorizontalPodAutoscaler, KEDA ScaledObject, VerticalPodAutoscaler not
``Off``) that targets the StatefulSet in either cluster rewrites a slice's replicas or
its pods while an ordinal moves: a problem naming it and how to pause it. So is an
operator that controls the source (a controller ownerReference) unless the request
says it is paused (``owner_paused``). GitOps ownership (Argo CD, Flux) is a warning
naming the sync to suspend: a sync would put the source's replicas back.

Kinds served by CRDs may not be installed: a 404 from their API group means none.
"""

from __future__ import annotations

from collections.abc import Callable

from temporalio.exceptions import ApplicationError

from activities.kube import Kube, Obj
from activities.preflight.findings import Findings
from contract import MigrationRequest
from contract.errors import FORBIDDEN

# (group, version, plural) of the CRD-backed autoscalers.
SCALED_OBJECTS = ("keda.sh", "v1alpha1", "scaledobjects")
VERTICAL_AUTOSCALERS = ("autoscaling.k8s.io", "v1", "verticalpodautoscalers")
KEDA_PAUSED = "autoscaling.keda.sh/paused"
KEDA_OWNER = "scaledobject.keda.sh/name"  # label of the HPA KEDA makes for a ScaledObject
ARGO_TRACKING_ID = "argocd.argoproj.io/tracking-id"
ARGO_INSTANCE = "app.kubernetes.io/instance"  # Argo CD's default tracking label
# (Flux kind, label prefix, ``flux suspend`` noun)
FLUX = (
    ("Kustomization", "kustomize.toolkit.fluxcd.io", "kustomization"),
    ("HelmRelease", "helm.toolkit.fluxcd.io", "helmrelease"),
)


def check_writers(
    source: Kube, destination: Kube, sts: Obj, request: MigrationRequest, f: Findings
) -> None:
    """Autoscalers in both clusters, the source's controller, its GitOps owners."""
    name = request.statefulset
    check_autoscalers(source, "source", request.namespace, name, f)
    # One there would fight the destination's slice as soon as it owns an ordinal.
    check_autoscalers(destination, "destination", request.target_namespace, name, f)
    check_owner(sts, request, f)
    f.warnings.extend(gitops_warnings(sts))


def _targets(ref: Obj | None, name: str) -> bool:
    ref = ref or {}
    return bool(ref.get("kind") == "StatefulSet" and ref.get("name") == name)


def _listed(
    kube: Kube, side: str, what: str, read: Callable[[], list[Obj]], f: Findings
) -> list[Obj]:
    """The objects ``read`` lists; none, and a problem, when the credentials may not
    list them (the run would otherwise stop at this read instead of naming it)."""
    try:
        return read()
    except ApplicationError as err:
        if err.type != FORBIDDEN:
            raise
        f.problem(
            f"{side} cluster {kube.context}",
            f"the worker's credentials may not: list {what}",
            "grant them (deploy/rbac.yaml has the role this run needs)",
        )
        return []


def check_autoscalers(kube: Kube, side: str, ns: str, name: str, f: Findings) -> None:
    """No HPA, unpaused ScaledObject or active VPA in ``ns`` targets StatefulSet ``name``."""
    ctx = kube.context
    after = (
        "create it in the destination once the migration is done"
        if side == "source"
        else "create it again once the migration is done"
    )
    hpas = _listed(kube, side, "horizontalpodautoscalers", lambda: kube.autoscalers(ns), f)
    for hpa in hpas:
        if _targets((hpa.get("spec") or {}).get("scaleTargetRef"), name):
            hpa_name = hpa["metadata"]["name"]
            # KEDA makes an HPA per ScaledObject and makes it again if it is deleted.
            keda = ((hpa.get("metadata") or {}).get("labels") or {}).get(KEDA_OWNER)
            fix = (
                f"it is KEDA's, for ScaledObject {keda}: pause that (kubectl --context {ctx} "
                f'-n {ns} annotate scaledobject {keda} {KEDA_PAUSED}="true"); KEDA then '
                "removes this HPA"
                if keda
                else f"delete it for the migration (kubectl --context {ctx} -n {ns} delete "
                f"hpa {hpa_name}) and {after}"
            )
            f.problem(
                f"{side} HorizontalPodAutoscaler {ns}/{hpa_name}",
                f"targets StatefulSet {name}: it writes replicas while the migration moves "
                "the slice (minReplicas = maxReplicas is not enough: it still writes)",
                fix,
            )
    scaled = _listed(
        kube, side, "scaledobjects.keda.sh", lambda: kube.custom_objects(*SCALED_OBJECTS, ns), f
    )
    for obj in scaled:
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        spec = obj.get("spec") or {}
        if _targets(spec.get("scaleTargetRef"), name) and annotations.get(KEDA_PAUSED) != "true":
            so_name = obj["metadata"]["name"]
            f.problem(
                f"{side} KEDA ScaledObject {ns}/{so_name}",
                f"targets StatefulSet {name}: KEDA writes replicas while the migration "
                "moves the slice",
                f"pause it for the migration: kubectl --context {ctx} -n {ns} annotate "
                f'scaledobject {so_name} {KEDA_PAUSED}="true" (remove it once the migration '
                "is done)",
            )
    vpas = _listed(
        kube,
        side,
        "verticalpodautoscalers.autoscaling.k8s.io",
        lambda: kube.custom_objects(*VERTICAL_AUTOSCALERS, ns),
        f,
    )
    for vpa in vpas:
        spec = vpa.get("spec") or {}
        mode = (spec.get("updatePolicy") or {}).get("updateMode") or "Auto"
        if _targets(spec.get("targetRef"), name) and mode != "Off":
            vpa_name = vpa["metadata"]["name"]
            off = '{"spec":{"updatePolicy":{"updateMode":"Off"}}}'
            f.problem(
                f"{side} VerticalPodAutoscaler {ns}/{vpa_name}",
                f"targets StatefulSet {name} with updateMode {mode}: it evicts and "
                "resizes the pods the migration moves",
                f"set updateMode Off for the migration: kubectl --context {ctx} -n {ns} "
                f"patch vpa {vpa_name} --type merge -p '{off}'",
            )


def check_owner(sts: Obj, request: MigrationRequest, f: Findings) -> None:
    """An operator that controls the source would undo the migration's changes."""
    meta = sts.get("metadata") or {}
    owners = [o for o in meta.get("ownerReferences") or [] if o.get("controller")]
    if not owners:
        return
    ref = f"source StatefulSet {meta.get('namespace')}/{meta.get('name')}"
    owner = f"{owners[0].get('kind')} {owners[0].get('name')}"
    if request.owner_paused:
        f.warnings.append(
            f"{ref} is controlled by {owner}; taken as paused (owner_paused: true): keep "
            "its operator paused until the migration is done"
        )
        return
    f.problem(
        ref,
        f"is controlled by {owner} (ownerReference with controller: true): its operator "
        "would scale the source back or fight the destination's slice",
        f"pause the operator that manages {owner} (or scale it to zero) until the "
        "migration is done, then set owner_paused: true in the request",
    )


def gitops_warnings(sts: Obj) -> list[str]:
    """Argo CD and Flux ownership of the source, each with the pause to set."""
    meta = sts.get("metadata") or {}
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    ref = f"source StatefulSet {meta.get('namespace')}/{meta.get('name')}"
    sync = "a sync would put back the source's replicas while ordinals move"
    out = []
    tracking = str(annotations.get(ARGO_TRACKING_ID) or "")
    if tracking or labels.get(ARGO_INSTANCE):
        # "<app>:<group>/<kind>:<namespace>/<name>"; "<ns>_<app>" for an Application
        # outside Argo CD's own namespace, which the CLI spells "<ns>/<app>".
        app = tracking.split(":", 1)[0].replace("_", "/", 1) or str(labels[ARGO_INSTANCE])
        how = f"annotation {ARGO_TRACKING_ID}" if tracking else f"label {ARGO_INSTANCE}"
        out.append(
            f"{ref} is tracked by Argo CD Application {app} ({how}): {sync}; turn off "
            f"automated sync for the migration: argocd app set {app} --sync-policy none "
            "(and remove selfHeal from its syncPolicy if it is set in Git)"
        )
    for kind, prefix, noun in FLUX:
        name, ns = labels.get(f"{prefix}/name"), labels.get(f"{prefix}/namespace")
        if name and ns:
            out.append(
                f"{ref} is applied by Flux {kind} {ns}/{name} (labels {prefix}/name and "
                f"/namespace): {sync}; suspend it for the migration: flux suspend {noun} "
                f"{name} -n {ns} (flux resume once it is done, with the source's replicas "
                "and the destination changed in Git)"
            )
    return out
