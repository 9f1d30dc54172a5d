"""The app's disruption budget shared by the two clusters while it moves (KEP-3335).

A PodDisruptionBudget only counts the pods of its own cluster. Copied verbatim to
the destination, the app's budget would double: two clusters each allowing
``maxUnavailable`` voluntary disruptions. So before each ordinal moves (or is given
back), ``share_disruption_budget`` sets both PDBs to an absolute ``maxUnavailable``
whose sum is the app's allowance less the ordinal in flight, split by the slice each
cluster owns; ``restore_disruption_budget`` puts each PDB back at the end. Each PDB's
own spec is kept in an annotation the first time it is changed (in the same patch),
so a crash at any instant converges to the same budgets and the restore knows what
to restore. A restore that fails leaves the budgets tighter, never looser.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import structlog
from temporalio import activity

from activities import manifests
from activities.converging import ConvergingActivities
from activities.kube import Kube, Obj
from contract import BudgetInput, BudgetShare, SharedBudget

if TYPE_CHECKING:  # (preflight imports this module)
    from activities.preflight.findings import Findings

log = structlog.get_logger("activities.migration")

ORIGINAL = "stsmigrate.dev/disruption-budget"
FIELDS = ("minAvailable", "maxUnavailable")


def _scaled(value: int | str, total: int) -> int:
    """An IntOrString against ``total``, rounded up as the disruption controller does."""
    if isinstance(value, str) and value.endswith("%"):
        return math.ceil(int(value[:-1]) * total / 100)
    return int(value)


def allowance(spec: Obj, total: int) -> int:
    """Voluntary disruptions a PDB spec allows among ``total`` pods."""
    if spec.get("maxUnavailable") is not None:
        return max(0, _scaled(spec["maxUnavailable"], total))
    if spec.get("minAvailable") is not None:
        return max(0, total - _scaled(spec["minAvailable"], total))
    return 0


def split(allowed: int, source_pods: int, destination_pods: int) -> tuple[int, int]:
    """``allowed`` disruptions as (source, destination), by the slice each cluster owns."""
    total = source_pods + destination_pods
    destination = allowed * destination_pods // total if total else 0
    return allowed - destination, destination


def original(pdb: Obj) -> Obj:
    """The PDB's own budget: from our annotation once we changed it, else its spec."""
    saved = ((pdb.get("metadata") or {}).get("annotations") or {}).get(ORIGINAL)
    if saved:
        return dict(json.loads(saved))
    spec = pdb.get("spec") or {}
    return {k: spec.get(k) for k in FIELDS}


def _saved(pdb: Obj) -> bool:
    return ORIGINAL in ((pdb.get("metadata") or {}).get("annotations") or {})


def _budget_patch(pdb: Obj, own: Obj, max_unavailable: int | None) -> Obj | None:
    """The merge patch that gives ``pdb`` its shared budget (``max_unavailable``) with
    ``own`` saved, or (None) its own budget back; None when it already has it."""
    restore = max_unavailable is None
    want: dict[str, Any] = (
        own if restore else {"minAvailable": None, "maxUnavailable": max_unavailable}
    )
    spec = pdb.get("spec") or {}
    if {k: spec.get(k) for k in FIELDS} == want and _saved(pdb) == (not restore):
        return None
    annotation = None if restore else json.dumps(own, sort_keys=True)
    return {"metadata": {"annotations": {ORIGINAL: annotation}}, "spec": want}


def _copied(pdb: Obj, request: BudgetInput) -> bool:
    """A destination PDB this migration copied and has not shared yet."""
    return not _saved(pdb) and manifests.is_ours(pdb, request.migration_id)


def _operated(pdb: Obj) -> bool:
    """A PDB another controller owns (an operator's): it would fight any change."""
    refs = (pdb.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("controller") for ref in refs)


class BudgetActivities(ConvergingActivities):
    def _slices(self, request: BudgetInput) -> tuple[Kube, Kube, list[str], tuple[int, int]]:
        """Both clusters, the app's PDBs (selecting its pods in the source) and the pods
        each StatefulSet owns now."""
        r = request.request
        source, dest = self.kube(r.source_context), self.kube(r.destination_context)
        pods = []
        for kube, ns in ((source, r.namespace), (dest, r.target_namespace)):
            sts = kube.statefulset(ns, r.statefulset)
            pods.append(int(((sts or {}).get("spec") or {}).get("replicas") or 0))
        sts = source.statefulset(r.namespace, r.statefulset) or {}
        template = (sts.get("spec") or {}).get("template") or {}
        labels = (template.get("metadata") or {}).get("labels") or {}
        names = [
            p["metadata"]["name"]
            for p in source.pdbs(r.namespace)
            if manifests.selector_matches((p.get("spec") or {}).get("selector") or {}, labels)
        ]
        return source, dest, names, (pods[0], pods[1])

    @activity.defn
    def share_disruption_budget(self, request: BudgetInput) -> BudgetShare:
        source, dest, names, pods = self._slices(request)
        return self._share(request, source, dest, names, pods, request.in_flight)

    def _share(
        self,
        request: BudgetInput,
        source: Kube,
        dest: Kube,
        names: list[str],
        pods: tuple[int, int],
        in_flight: int,
    ) -> BudgetShare:
        r = request.request
        shared = []
        for name in names:
            src_pdb = source.dependency("PodDisruptionBudget", r.namespace, name)
            dst_pdb = dest.dependency("PodDisruptionBudget", r.target_namespace, name)
            if src_pdb is None:
                continue
            app = original(src_pdb)
            allowed = allowance(app, pods[0] + pods[1])
            ours = split(max(0, allowed - in_flight), pods[0], pods[1])
            written: list[int | None] = []
            for kube, ns, pdb, budget, slice_pods in (
                (source, r.namespace, src_pdb, ours[0], pods[0]),
                (dest, r.target_namespace, dst_pdb, ours[1], pods[1]),
            ):
                if pdb is None or _operated(pdb):
                    written.append(None)
                    continue
                # The destination's copy is the app's budget (it may have been copied
                # while the source's was shared); one that was there already keeps its
                # own, and no PDB is ever given more than its own spec allows.
                own = app if pdb is dst_pdb and _copied(pdb, request) else original(pdb)
                budget = min(budget, allowance(own, slice_pods))
                patch = _budget_patch(pdb, own, budget)
                if patch is not None:
                    kube.patch_pdb(ns, name, patch)
                written.append(budget)
            shared.append(
                SharedBudget(name=name, allowed=allowed, source=written[0], destination=written[1])
            )
        log.info(
            "disruption_budget_shared",
            migration_id=request.migration_id,
            budgets=[b.model_dump() for b in shared],
        )
        return BudgetShare(budgets=shared)

    @activity.defn
    def restore_disruption_budget(self, request: BudgetInput) -> BudgetShare:
        """At the end of a run: each PDB its own spec back once one cluster owns every
        ordinal; an app left in both clusters keeps one budget shared between them
        (nothing in flight), or it would have two."""
        r = request.request
        source, dest, names, pods = self._slices(request)
        if pods[0] and pods[1]:
            return self._share(request, source, dest, names, pods, 0)
        for name in names:
            for kube, ns in ((source, r.namespace), (dest, r.target_namespace)):
                pdb = kube.dependency("PodDisruptionBudget", ns, name)
                if pdb is None or not _saved(pdb):
                    continue
                patch = _budget_patch(pdb, original(pdb), None)
                if patch is not None:
                    kube.patch_pdb(ns, name, patch)
        log.info("disruption_budget_restored", migration_id=request.migration_id, pdbs=names)
        return BudgetShare()


def check_budget(
    pdbs: list[Obj], total: int, warnings: list[str], found: Findings | None = None, block: int = 1
) -> None:
    """Preflight: a PDB of the app that allows no voluntary disruption is named, since
    each move takes one pod down anyway (a scale-down is no eviction); a block of
    ``block`` ordinals in flight at once (max_unavailable) that a PDB does not allow
    across both clusters is a problem (``found``)."""
    for pdb in pdbs:
        allowed = allowance(original(pdb), total)
        name = pdb["metadata"]["name"]
        if allowed == 0:
            warnings.append(
                f"PodDisruptionBudget {name} allows no voluntary "
                f"disruption of the {total} pods, yet each move takes one pod down (a "
                "scale-down is not an eviction); while the app moves, no other disruption "
                "is allowed in either cluster"
            )
        if found is not None and block > 1 and block > allowed:
            found.problem(
                f"PodDisruptionBudget {name}",
                f"allows {allowed} voluntary disruption(s) of the {total} pods, but "
                f"max_unavailable {block} would take {block} pods down at once (across both "
                "clusters)",
                f"set max_unavailable to {allowed} or less, or loosen the PodDisruptionBudget",
            )


def check_pod_management(sts: Obj, block: int, warnings: list[str], approval: str = "none") -> None:
    """Preflight: what OrderedReady, and approval of each ordinal, mean for a block of
    ordinals in flight."""
    if block > 1 and approval == "each":
        warnings.append(
            f"approval is each: with max_unavailable {block} every ordinal is still approved "
            "and moved on its own (an ordinal held for approval moves alone)"
        )
    policy = (sts.get("spec") or {}).get("podManagementPolicy") or "OrderedReady"
    if block > 1 and policy == "OrderedReady":
        warnings.append(
            f"podManagementPolicy is OrderedReady: with max_unavailable {block} the "
            "StatefulSet controller still stops a block's pods one at a time (highest first, "
            "each gone before the next) and starts them one at a time in ordinal order (each "
            "Ready before the next), so a block takes about as long as its ordinals one by "
            "one; podManagementPolicy Parallel moves them at once"
        )
