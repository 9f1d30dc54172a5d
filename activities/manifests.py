"""Pure manifest transformations: source objects in, destination objects out.

Objects are plain dicts as the API serves them (camelCase JSON). Nothing here does
I/O, so every rule (what is stripped, what is kept, how names and classes map) is
unit-tested without a cluster. Secret data passes through ``copy_secret`` inside an
activity and is never returned to a workflow.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from typing import Any, cast

import jsonpatch

from contract import (
    ANNOTATION_MIGRATION_ID,
    ANNOTATION_SOURCE,
    LABEL_FENCE,
    LABEL_MIGRATION,
    LABEL_ORDINAL,
    MANAGED_BY,
    MigrationRequest,
    VolumePlan,
)
from contract.request import WITHHELD_FIELDS

Obj = dict[str, Any]

# Metadata the server owns or that ties an object to its old cluster.
_SERVER_METADATA = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "ownerReferences",
    "finalizers",
    "selfLink",
    "generateName",
)
# Annotations that describe the object's history in the old cluster.
_DROPPED_ANNOTATION_PREFIXES = (
    # The source's lock names the migration that holds the source; a copy would lock
    # the destination StatefulSet against an onward migration for good.
    "stsmigrate.dev/locked-by",
    "kubectl.kubernetes.io/last-applied-configuration",
    "pv.kubernetes.io/",
    "volume.kubernetes.io/",
    "volume.beta.kubernetes.io/",
    "deployment.kubernetes.io/",
)
# GitOps and Helm tracking: a copy that carried them would be taken by the tool for
# its own (an Argo CD or Flux in the destination would prune it or sync it back; a
# helm upgrade would claim it).
_GITOPS_LABELS = ("app.kubernetes.io/instance",)
_GITOPS_PREFIXES = (
    "argocd.argoproj.io/",
    "kustomize.toolkit.fluxcd.io/",
    "helm.toolkit.fluxcd.io/",
    "meta.helm.sh/",
)


def migration_label(migration_id: str) -> str:
    """A label-safe value for a migration id (ids can exceed 63 chars and hold '/')."""
    return hashlib.sha256(migration_id.encode()).hexdigest()[:16]


def ownership(migration_id: str, source: str, ordinal: int | None = None) -> tuple[Obj, Obj]:
    labels = {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_MIGRATION: migration_label(migration_id),
    }
    if ordinal is not None:
        labels[LABEL_ORDINAL] = str(ordinal)
    return labels, {ANNOTATION_MIGRATION_ID: migration_id, ANNOTATION_SOURCE: source}


def is_ours(obj: Obj, migration_id: str) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(LABEL_MIGRATION) == migration_label(migration_id))


def clean_metadata(meta: Obj, namespace: str | None, labels: Obj, annotations: Obj) -> Obj:
    """Metadata for a copy: server-owned fields, history annotations and GitOps/Helm
    tracking removed."""
    out = {k: v for k, v in meta.items() if k not in _SERVER_METADATA}
    kept = {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if not k.startswith(_DROPPED_ANNOTATION_PREFIXES + _GITOPS_PREFIXES)
    }
    out["annotations"] = {**kept, **annotations}
    out["labels"] = {**_without_tracking(meta.get("labels") or {}), **labels}
    if namespace is None:
        out.pop("namespace", None)
    else:
        out["namespace"] = namespace
    return out


def _without_tracking(labels: Obj) -> Obj:
    """Labels without GitOps and Helm tracking (only the object's own: a pod template's
    labels, which the selector matches, are never touched)."""
    return {
        k: v
        for k, v in labels.items()
        if k not in _GITOPS_LABELS
        and not k.startswith(_GITOPS_PREFIXES)
        and not (k == "app.kubernetes.io/managed-by" and v == "Helm")
    }


def _map_template_classes(templates: list[Obj], request: MigrationRequest) -> list[Obj]:
    out = []
    for vct in templates:
        vct = copy.deepcopy(vct)
        vct.pop("status", None)
        vct["metadata"] = {
            k: v
            for k, v in (vct.get("metadata") or {}).items()
            if k in ("name", "labels", "annotations")
        }
        spec = vct.setdefault("spec", {})
        if spec.get("storageClassName"):
            spec["storageClassName"] = request.mapped_class(spec["storageClassName"])
        out.append(vct)
    return out


class OverrideRefused(ValueError):
    """A destination override does not apply to the source's pod template, or changes
    what the destination must keep (the labels its selector matches)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 section 2, as its pseudo-code says: an object merges key by key, null
    removes a key, anything else (a list too) replaces the target."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _selector_keys(selector: Obj) -> list[str]:
    keys = set((selector.get("matchLabels") or {}).keys())
    keys |= {e["key"] for e in selector.get("matchExpressions") or [] if e.get("key")}
    return sorted(keys)


def overridden_template(sts: Obj, request: MigrationRequest) -> Obj:
    """The source's pod template with the request's ``destination_overrides`` applied in
    order (RFC 7386 merge patches here, RFC 6902 JSON patches by ``jsonpatch``): what the
    destination StatefulSet is created with and what preflight dry-runs, the same object.

    Raises OverrideRefused when a patch does not apply (a ``test`` that fails, a path
    that is not there) or changes a label the selector matches: the selector cannot
    change, and the destination's pods must be the same app's. Anything else a patch
    makes go wrong is an OverrideRefused too (naming the patch, never a value): a
    refusal is final, where another error would be retried by preflight for ever."""
    where = ["destination_overrides"]
    try:
        return _overridden_template(sts, request, where)
    except OverrideRefused:
        raise
    except Exception as e:
        # The class alone: a message may quote the template (an env value in it).
        raise OverrideRefused(
            f"{where[0]} does not apply to the source's pod template ({type(e).__name__})"
        ) from None


def _overridden_template(sts: Obj, request: MigrationRequest, where: list[str]) -> Obj:
    """``overridden_template``; ``where[0]`` names the patch (or operation) being applied."""
    source = (sts.get("spec") or {}).get("template") or {}
    template: Any = copy.deepcopy(source)
    for i, override in enumerate(request.destination_overrides):
        where[0] = f"destination_overrides[{i}] ({override.type})"
        if override.type == "merge":
            template = merge_patch(template, override.patch)
            continue
        # One operation at a time, so a refusal can name the one that failed.
        for j, op in enumerate(cast(list[Obj], override.patch)):
            where[0] = (
                f"destination_overrides[{i}] (json) operation {j} ({op.get('op')} {op.get('path')})"
            )
            try:
                template = jsonpatch.apply_patch(template, [op])
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
                # Never the library's message: it quotes the template (an env value in it).
                why = (
                    "its test found another value there"
                    if isinstance(e, jsonpatch.JsonPatchTestFailed)
                    else "a path it names is not there"
                )
                raise OverrideRefused(
                    f"{where[0]} does not apply to the source's pod template: {why}"
                ) from None
    where[0] = "destination_overrides"
    if not isinstance(template, dict) or not isinstance(template.get("spec"), dict):
        raise OverrideRefused("destination_overrides leave the pod template without a spec")
    meta = template.get("metadata") or {}
    for key in ("labels", "annotations"):
        if not isinstance(meta, dict) or not isinstance(meta.get(key) or {}, dict):
            raise OverrideRefused(
                f"destination_overrides leave the pod template's metadata.{key} no map "
                "of names to strings"
            )
    _volumes_kept(sts, template)
    before = (source.get("metadata") or {}).get("labels") or {}
    after = meta.get("labels") or {}
    for key in _selector_keys((sts.get("spec") or {}).get("selector") or {}):
        if before.get(key) != after.get(key):
            raise OverrideRefused(
                f"destination_overrides change the pod template's label {key} "
                f"({before.get(key)!r} -> {after.get(key)!r}), which the StatefulSet's "
                "selector matches: the selector cannot change and the destination's pods "
                "are the same app's; leave the selector's labels as they are"
            )
    return template


def _volumes_kept(sts: Obj, template: Obj) -> None:
    """Every volume of the source's pods is still there, and every mount of a claim
    template's volume is as it was (I2: the destination's pods use the data they move)."""
    spec, source = (
        template["spec"],
        ((sts.get("spec") or {}).get("template") or {}).get("spec") or {},
    )
    names = {v.get("name") for v in spec.get("volumes") or []}
    for volume in source.get("volumes") or []:
        if volume.get("name") not in names:
            raise OverrideRefused(
                f"destination_overrides remove the pod template's volume {volume.get('name')}: "
                "the destination's pods keep every volume of the source's"
            )
    claims = {
        (t.get("metadata") or {}).get("name")
        for t in (sts.get("spec") or {}).get("volumeClaimTemplates") or []
    }

    def mounts(pod: Obj) -> dict[tuple[str, str], list[Obj]]:
        return {
            (kind, str(c.get("name"))): [
                m for m in c.get("volumeMounts") or [] if m.get("name") in claims
            ]
            for kind in ("containers", "initContainers")
            for c in pod.get(kind) or []
        }

    after = mounts(spec)
    for (kind, name), kept in mounts(source).items():
        if kept and after.get((kind, name)) != kept:
            raise OverrideRefused(
                f"destination_overrides drop or change a mount of a claim template's volume "
                f"in {kind} {name}: the destination's pods mount the moved volumes as the "
                "source's do (change other fields of the container with a json patch)"
            )


def omitted_zero(value: object) -> bool:
    """A zero value (false, "", 0, [], {}): the API server leaves it out of an object it
    stores (omitempty), so its absence there is no difference."""
    return value in (False, "", 0, [], {})


def with_overrides(sts: Obj, request: MigrationRequest) -> Obj:
    """``sts`` with its pod template overridden (itself when the request has none)."""
    if not request.destination_overrides:
        return sts
    return {**sts, "spec": {**sts["spec"], "template": overridden_template(sts, request)}}


def template_digest(template: Obj) -> str:
    """The sha256 of a pod template's canonical JSON (keys sorted, no spaces): what the
    plan pins (``Plan.destination_template_digest``) and the creation of the destination
    StatefulSet compares, so what is created is what preflight checked."""
    text = json.dumps(template, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def override_operations(sts: Obj, request: MigrationRequest) -> list[Obj]:
    """What the overrides change in the pod template: the RFC 6902 operations that
    ``jsonpatch`` makes from the difference, whatever kind of patch made it."""
    if not request.destination_overrides:
        return []
    before = (sts.get("spec") or {}).get("template") or {}
    return [dict(op) for op in jsonpatch.make_patch(before, overridden_template(sts, request))]


def _withheld(path: str, value: Any) -> bool:
    """Whether the operation's path, or any key of its value, is in WITHHELD_FIELDS."""
    if WITHHELD_FIELDS & set(path.split("/")):
        return True
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if WITHHELD_FIELDS & set(item):
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def override_changes(sts: Obj, request: MigrationRequest) -> list[str]:
    """``override_operations`` for the plan, one line each (values cut short; withheld
    under WITHHELD_FIELDS)."""
    out = []
    for op in override_operations(sts, request):
        shown = f"{op['op']} {op['path']}"
        if "from" in op:
            shown += f" from {op['from']}"
        if "value" in op and _withheld(op["path"], op["value"]):
            shown += " (value withheld)"
        elif "value" in op:
            value = json.dumps(op["value"], sort_keys=True, separators=(",", ":"))
            shown += " " + (value if len(value) <= 200 else value[:197] + "...")
        out.append(shown)
    return out


def destination_statefulset(
    source: Obj, request: MigrationRequest, migration_id: str, start: int
) -> Obj:
    """The destination StatefulSet: the source's spec, with its pod template overridden
    (``overridden_template``), owning the empty slice [start, start)."""
    labels, annotations = ownership(migration_id, source_ref(request))
    spec = copy.deepcopy(with_overrides(source, request)["spec"])
    spec["replicas"] = 0
    spec["ordinals"] = {"start": start}
    spec["volumeClaimTemplates"] = _map_template_classes(
        spec.get("volumeClaimTemplates") or [], request
    )
    # Scaling the destination down (a rollback) must never delete a claim.
    retention = dict(spec.get("persistentVolumeClaimRetentionPolicy") or {})
    retention["whenScaled"] = "Retain"
    retention.setdefault("whenDeleted", "Retain")
    spec["persistentVolumeClaimRetentionPolicy"] = retention
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": clean_metadata(
            source["metadata"], request.target_namespace, labels, annotations
        ),
        "spec": spec,
    }


def source_ref(request: MigrationRequest) -> str:
    """The source StatefulSet an object we made came from (``ANNOTATION_SOURCE``)."""
    return f"{request.source_context}/{request.namespace}/{request.statefulset}"


# The fields that say which storage a PV points at, per volume source: the only ones
# that reach a plan, the history or a message. Never a secret reference, a CHAP field, a
# keyring or user, flexVolume options or CSI volumeAttributes (a driver may put a
# credential there); nor fsType or readOnly, which say how it is mounted, not what.
# The destination PV still gets the whole source (destination_pv): that goes from
# cluster to cluster, not into a payload.
IDENTITY_FIELDS: dict[str, tuple[str, ...]] = {
    "csi": ("driver", "volumeHandle"),
    "hostPath": ("path",),
    "local": ("path",),
    "nfs": ("server", "path"),
    "iscsi": ("targetPortal", "iqn", "lun"),
    "rbd": ("monitors", "pool", "image"),
    "cephfs": ("monitors", "path"),
    "flexVolume": ("driver",),
    "fc": ("targetWWNs", "lun", "wwids"),
    "awsElasticBlockStore": ("volumeID", "partition"),
    "gcePersistentDisk": ("pdName", "partition"),
    "azureDisk": ("diskURI",),
    "azureFile": ("shareName",),
    "cinder": ("volumeID",),
    "glusterfs": ("endpoints", "path"),
    "portworxVolume": ("volumeID",),
    "vsphereVolume": ("volumePath",),
    "photonPersistentDisk": ("pdID",),
    "quobyte": ("registry", "volume"),
    "scaleIO": ("system", "volumeName"),
    "storageos": ("volumeNamespace", "volumeName"),
    "flocker": ("datasetName", "datasetUUID"),
}
# Dict-valued PV spec fields that are no volume source.
_NOT_A_SOURCE = ("capacity", "claimRef", "nodeAffinity")


def volume_source(pv: Obj) -> tuple[str, Obj]:
    """(kind, fields) of the PV's volume source, e.g. ("nfs", {"server": ..}); ("", {})."""
    spec = pv.get("spec") or {}
    for kind in IDENTITY_FIELDS:
        if isinstance(spec.get(kind), dict):
            return kind, spec[kind]
    for key, value in spec.items():
        if isinstance(value, dict) and key not in _NOT_A_SOURCE:
            return key, value
    return "", {}


def _shown(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def storage_identity(pv: Obj) -> str:
    """What a PV points at, for plans, history and messages: only the fields of
    IDENTITY_FIELDS (a source kind this table does not know shows its name alone).
    Compare storage with ``same_storage``, which also sees what this leaves out."""
    kind, source = volume_source(pv)
    if kind == "csi":
        return f"csi {source.get('driver')} {source.get('volumeHandle')}"
    if kind in ("hostPath", "local"):
        return f"{kind} {source.get('path')}"
    if kind == "nfs":
        return f"nfs {source.get('server')}:{source.get('path')}"
    if not kind:
        return "unknown"
    fields = IDENTITY_FIELDS.get(kind, ())
    shown = [f"{f}={_shown(source[f])}" for f in fields if source.get(f) not in (None, "", [])]
    return " ".join([kind, *shown])


def same_storage(a: Obj, b: Obj) -> bool:
    """Both PVs point at the same storage: the same identity and, where the identity
    fields do not pin the volume (flexVolume, whose options name it; a source kind not
    in IDENTITY_FIELDS), the same whole source. Compared in the worker, never shown."""
    if storage_identity(a) != storage_identity(b):
        return False
    kind, source = volume_source(a)
    if kind == "flexVolume" or kind not in IDENTITY_FIELDS:
        return source == volume_source(b)[1]
    return True


def destination_pv(
    source_pv: Obj,
    request: MigrationRequest,
    migration_id: str,
    claim: str,
    ordinal: int,
    claim_uid: str = "",
) -> Obj:
    """The PV for the destination: same storage, pre-bound to the destination claim;
    with ``claim_uid`` (the claim exists already) bound to exactly that claim, so the PV
    controller finds a whole binding and binds nothing itself.

    Reclaim policy Retain: the same storage is still described by the source's
    (Released) PV, so no cluster may delete it on its own.
    """
    labels, annotations = ownership(migration_id, source_ref(request), ordinal)
    spec = copy.deepcopy(source_pv["spec"])
    spec["claimRef"] = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "namespace": request.target_namespace,
        "name": claim,
    }
    if claim_uid:
        spec["claimRef"]["uid"] = claim_uid
    spec["persistentVolumeReclaimPolicy"] = "Retain"
    if spec.get("storageClassName"):
        spec["storageClassName"] = request.mapped_class(spec["storageClassName"])
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": clean_metadata(source_pv["metadata"], None, labels, annotations),
        "spec": spec,
    }


def destination_pvc(
    source_pv: Obj, volume: VolumePlan, request: MigrationRequest, migration_id: str, ordinal: int
) -> Obj:
    """The destination claim of ``volume``, naming its PV. Built from the PV and the plan:
    by the time it is made, the source claim has been released."""
    labels, annotations = ownership(migration_id, source_ref(request), ordinal)
    return _claim(
        source_pv, volume, request.target_namespace, request.mapped_class, labels, annotations
    )


def reclaimed_pvc(
    source_pv: Obj, volume: VolumePlan, request: MigrationRequest, migration_id: str, ordinal: int
) -> Obj:
    """Rollback: the source claim of ``volume`` made again, in the source namespace and of
    the PV's own class, naming the retained source PV."""
    labels, annotations = ownership(migration_id, source_ref(request), ordinal)
    return _claim(source_pv, volume, request.namespace, _same_class, labels, annotations)


def _same_class(storage_class: str) -> str:
    return storage_class


def _claim(
    pv_obj: Obj,
    volume: VolumePlan,
    namespace: str,
    map_class: Callable[[str], str | None],
    labels: Obj,
    annotations: Obj,
) -> Obj:
    """A claim bound by volumeName to ``volume``'s PV (``pv_obj``), asking for what it has."""
    pv = pv_obj["spec"]
    spec: Obj = {
        "accessModes": pv.get("accessModes") or ["ReadWriteOnce"],
        "resources": {"requests": {"storage": volume.size or pv["capacity"]["storage"]}},
        "volumeName": volume.volume,
        "volumeMode": pv.get("volumeMode") or "Filesystem",
    }
    # A claim binds only to a volume of its own class.
    if pv.get("storageClassName"):
        spec["storageClassName"] = map_class(pv["storageClassName"])
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": volume.claim,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": spec,
    }


def fence_pvc(
    pv: Obj, claim: str, namespace: str, migration_id: str, source: str, ordinal: int
) -> Obj:
    """A fence: the claim ``claim`` made again in place of a released one, naming the
    released volume ``pv`` and asking for exactly what it has.

    The PV controller never binds it: the volume's claimRef still holds the released
    claim's uid, so the fence stays Pending. A foreign scale-up of the giver then gets
    a Pending pod on it, never a pod on a new, empty volume (which a missing claim
    would get from the StatefulSet's claim template). Adopting it (``LABEL_FENCE``
    removed, the old uid dropped from the claimRef) makes it the real claim again.
    """
    labels, annotations = ownership(migration_id, source, ordinal)
    spec = pv.get("spec") or {}
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": claim,
            "namespace": namespace,
            "labels": {**labels, LABEL_FENCE: "true"},
            "annotations": annotations,
        },
        "spec": {
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "resources": {"requests": {"storage": (spec.get("capacity") or {})["storage"]}},
            # "" (not absent): no default class is filled in, so nothing provisions it.
            "storageClassName": spec.get("storageClassName") or "",
            "volumeMode": spec.get("volumeMode") or "Filesystem",
            "volumeName": pv["metadata"]["name"],
        },
    }


def is_fence(pvc: Obj, migration_id: str, volume: str) -> bool:
    """``pvc`` is a fence this migration left for ``volume``, still unbound. A Bound
    claim is never taken for a fence (whatever its labels say), and adoption removes
    the label before the claim can bind."""
    labels = (pvc.get("metadata") or {}).get("labels") or {}
    return bool(
        migration_id
        and labels.get(LABEL_FENCE) == "true"
        and is_ours(pvc, migration_id)
        and (pvc.get("spec") or {}).get("volumeName") == volume
        and (pvc.get("status") or {}).get("phase") != "Bound"
    )


def is_bound_to(pvc: Obj, pv: Obj | None) -> bool:
    """``pvc`` is Bound to ``pv`` and ``pv`` to it: both sides of the binding agree (the
    claim's volumeName and phase, the volume's claimRef uid), whoever made the claim."""
    if pv is None:
        return False
    claim_ref = (pv.get("spec") or {}).get("claimRef") or {}
    meta = pvc.get("metadata") or {}
    return bool(
        (pvc.get("status") or {}).get("phase") == "Bound"
        and (pvc.get("spec") or {}).get("volumeName") == pv["metadata"]["name"]
        and meta.get("uid")
        and claim_ref.get("uid") == meta.get("uid")
    )


def referenced_dependencies(pod_spec: Obj) -> dict[str, set[str]]:
    """Secrets, ConfigMaps and ServiceAccount a pod template needs, by kind.

    ``optional: true`` references are included too: copying an existing optional
    object keeps the app's behaviour; a missing one is simply not copied.
    """
    found: dict[str, set[str]] = {"Secret": set(), "ConfigMap": set(), "ServiceAccount": set()}
    for ref in pod_spec.get("imagePullSecrets") or []:
        if ref.get("name"):
            found["Secret"].add(ref["name"])
    account = pod_spec.get("serviceAccountName") or pod_spec.get("serviceAccount")
    if account and account != "default":
        found["ServiceAccount"].add(account)
    for container in (pod_spec.get("containers") or []) + (pod_spec.get("initContainers") or []):
        for env in container.get("env") or []:
            source = env.get("valueFrom") or {}
            if (source.get("secretKeyRef") or {}).get("name"):
                found["Secret"].add(source["secretKeyRef"]["name"])
            if (source.get("configMapKeyRef") or {}).get("name"):
                found["ConfigMap"].add(source["configMapKeyRef"]["name"])
        for env_from in container.get("envFrom") or []:
            if (env_from.get("secretRef") or {}).get("name"):
                found["Secret"].add(env_from["secretRef"]["name"])
            if (env_from.get("configMapRef") or {}).get("name"):
                found["ConfigMap"].add(env_from["configMapRef"]["name"])
    for volume in pod_spec.get("volumes") or []:
        if (volume.get("secret") or {}).get("secretName"):
            found["Secret"].add(volume["secret"]["secretName"])
        if (volume.get("configMap") or {}).get("name"):
            found["ConfigMap"].add(volume["configMap"]["name"])
        for source in (volume.get("projected") or {}).get("sources") or []:
            if (source.get("secret") or {}).get("name"):
                found["Secret"].add(source["secret"]["name"])
            if (source.get("configMap") or {}).get("name"):
                found["ConfigMap"].add(source["configMap"]["name"])
    return found


def copy_object(obj: Obj, kind: str, request: MigrationRequest, migration_id: str) -> Obj:
    """A dependency (Secret, ConfigMap, ServiceAccount, Service, PDB) for the destination."""
    labels, annotations = ownership(migration_id, source_ref(request))
    out = {k: copy.deepcopy(v) for k, v in obj.items() if k not in ("status", "metadata")}
    out["metadata"] = clean_metadata(obj["metadata"], request.target_namespace, labels, annotations)
    out.setdefault("kind", kind)
    if kind == "Service":
        spec = out.get("spec") or {}
        # Addresses are allocated per cluster; a headless Service keeps clusterIP None.
        if spec.get("clusterIP") != "None":
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
        else:
            spec["clusterIPs"] = ["None"]
        spec.pop("healthCheckNodePort", None)
        for port in spec.get("ports") or []:
            port.pop("nodePort", None)
    if kind == "ServiceAccount":
        # Token Secrets are per cluster and are recreated there.
        out.pop("secrets", None)
    return out


def selector_matches(selector: Obj, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against a label set."""
    if not selector:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True
