"""Preflight of ``destination_overrides``: the patches apply to the source's pod template
and leave the labels its selector matches as they are (``manifests.overridden_template``,
the function the run creates the destination StatefulSet with); what they change goes
into the plan. The request's own validator already refused any path outside the pod
template and any env value of a credential's name, before the run started."""

from __future__ import annotations

import jsonpointer
import pydantic
from kubernetes import client

from activities import manifests
from activities.kube import Kube, Obj
from activities.preflight.findings import Findings
from contract import MigrationRequest

_WHERE = "request destination_overrides"
_FIX = (
    "write each patch against the source's pod template (kubectl get statefulset -o "
    "jsonpath='{.spec.template}'), changing only what the destination needs (env, image, "
    "nodeSelector, tolerations, resources, annotations; kubectl explain pod.spec)"
)


def check_overrides(
    sts: Obj, request: MigrationRequest, f: Findings
) -> tuple[Obj | None, list[str]]:
    """The StatefulSet the destination's pods are made from (the source's, its pod
    template overridden) and the plan's list of changes; ``None`` on a refusal (a
    problem): nothing made from it can be dry-run."""
    try:
        pods, changes = (
            manifests.with_overrides(sts, request),
            manifests.override_changes(sts, request),
        )
    except manifests.OverrideRefused as e:
        f.problem(_WHERE, str(e), _FIX)
        return None, []
    if request.destination_overrides and (wrong := _not_a_pod_template(pods)):
        f.problem(_WHERE, f"the overridden pod template is not one: {wrong}", _FIX)
        return None, []
    f.warnings.extend(_image_changes(sts, pods))
    return pods, changes


def _images(sts: Obj) -> dict[str, str]:
    spec = sts["spec"]["template"].get("spec") or {}
    return {
        str(c.get("name")): str(c.get("image"))
        for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    }


def _image_changes(sts: Obj, pods: Obj) -> list[str]:
    """A warning per container whose image an override changes: a rollback gives the
    ordinal's volume back to the source's pods, which run the source's image."""
    before, after = _images(sts), _images(pods)
    return [
        f"destination_overrides change the image of container {name} ({before[name]} -> "
        f"{image}): a rollback gives an ordinal's volume back to the source's pods, on "
        f"{before[name]}; make sure it reads what {image} writes"
        for name, image in after.items()
        if name in before and before[name] != image
    ]


def _not_a_pod_template(sts: Obj) -> str:
    """What the kubernetes client's model of a pod template refuses in it (its fields'
    places and the reasons, never a value): the client checks every body it sends
    against the same model, so the dry runs and the creation would fail on it."""
    try:
        client.V1PodTemplateSpec.model_validate(sts["spec"]["template"])
    except pydantic.ValidationError as e:
        return "; ".join(
            f"{'.'.join(str(p) for p in x['loc'])}: {x['msg']}" for x in e.errors()[:5]
        )
    return ""


def check_overrides_kept(sts: Obj, existing: Obj, request: MigrationRequest, f: Findings) -> None:
    """An existing destination StatefulSet keeps its pod template: overrides are applied
    only when the run creates it (a later run of the migration resumes with what the
    first made, which is the overridden template, not a difference to refuse). Warn
    where it does not hold what the overrides would set."""
    if not request.destination_overrides:
        return
    try:
        wanted = manifests.overridden_template(sts, request)
    except manifests.OverrideRefused:
        return  # check_overrides names it
    there = (existing.get("spec") or {}).get("template") or {}
    differ = []
    for op in manifests.override_operations(sts, request):
        path = op["path"]
        if op["op"] == "remove":
            if jsonpointer.resolve_pointer(there, path, None) is not None:
                differ.append(path)
        else:
            have = jsonpointer.resolve_pointer(there, path, None)
            want = jsonpointer.resolve_pointer(wanted, path, None)
            if have != want and not (have is None and manifests.omitted_zero(want)):
                differ.append(path)
    if differ:
        name = f"{request.target_namespace}/{request.statefulset}"
        f.warnings.append(
            f"destination StatefulSet {name} exists and its pod template differs from the "
            f"overridden one at {', '.join(differ)}: destination_overrides are applied only "
            "when the run creates it, so its pods keep what it has (patch it with kubectl, "
            "or delete it while it owns no pods so the run makes it again)"
        )


def check_overrides_keep_selectors(
    source: Kube, sts: Obj, overridden: Obj | None, request: MigrationRequest, f: Findings
) -> None:
    """No override takes the destination's pods out of the app's headless Service (their
    DNS names) or a PodDisruptionBudget of the source's pods (the budget the run shares):
    each of those whose selector matches the source's pods must match the overridden."""
    if overridden is None or not request.destination_overrides:
        return
    before = ((sts["spec"]["template"].get("metadata") or {}).get("labels")) or {}
    after = ((overridden["spec"]["template"].get("metadata") or {}).get("labels")) or {}
    if before == after:
        return
    selectors: list[tuple[str, str, Obj]] = [
        ("PodDisruptionBudget", p["metadata"]["name"], (p.get("spec") or {}).get("selector") or {})
        for p in source.pdbs(request.namespace)
    ]
    if name := sts["spec"].get("serviceName"):
        service = source.dependency("Service", request.namespace, name)
        if service is not None:
            selected = (service.get("spec") or {}).get("selector") or {}
            selectors.append(("Service", name, {"matchLabels": selected}))
    for kind, name, selector in selectors:
        if manifests.selector_matches(selector, before) and not manifests.selector_matches(
            selector, after
        ):
            what = "DNS names" if kind == "Service" else "disruption budget"
            f.problem(
                _WHERE,
                f"the overridden labels take the destination's pods out of {kind} "
                f"{request.namespace}/{name}, which selects the source's (the app's {what})",
                f"leave the labels {kind} {name} selects as they are",
            )
