"""The one table of what the worker may do in each cluster, and why.

Every request the activities make is a row here: which side (the source or the
destination cluster), the API group and resource, the verbs, whether it is
namespaced (bound in the app's namespace only) and the paths that use it. Three
things come from this table and nothing else:

- preflight's SelfSubjectAccessReviews (``needed``): every verb of the side,
  rollback verbs included, since an operator can ask for a rollback at any time;
- ``deploy/rbac.yaml`` (``render_rbac``; a test keeps the file equal to it, and
  ``stsmigrate rbac`` prints it for other namespaces or one StatefulSet);
- the least-privilege test, which runs a whole migration as exactly these roles and
  compares the apiserver's audit log of that identity with this table: each request
  it made is here, and each verb here was used.

The paths: ``wiring`` (the DescribeClusters check of the README), ``preflight`` (the
read-only plan), ``move`` (one ordinal from the
source to the destination), ``rollback`` (an ordinal given back: the destination
gives, the source takes; also the undo of a blocked move and a health gate's
rollback), ``re-move`` (a rolled-back ordinal moved again), ``cleanup`` (the clean
finish, activities/cleanup.py) and ``hooks`` (the request's commands in pod k,
activities/hooks.py). Rules only the clean finish uses are checked by preflight only
for a request with ``cleanup`` (and by ``plan_cleanup`` itself); those only hooks use,
only for a request with hooks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Side = Literal["source", "destination"]
Path = Literal["wiring", "preflight", "move", "rollback", "re-move", "cleanup", "hooks"]

# The identity the shipped roles are bound to, in each cluster.
SERVICE_ACCOUNT = "stsmigrate"
SERVICE_ACCOUNT_NAMESPACE = "stsmigrate-system"
# Placeholders of deploy/rbac.yaml's RoleBindings (replaced with sed, see its header).
PLACEHOLDER = {"source": "APP_NAMESPACE", "destination": "DESTINATION_NAMESPACE"}
SIDE_LABEL = "stsmigrate.dev/side"


@dataclass(frozen=True)
class Rule:
    side: Side
    group: str
    resource: str
    verbs: tuple[str, ...]
    namespaced: bool
    paths: tuple[Path, ...]
    why: str
    # Narrowed to the migrated StatefulSet's name when one is given (stsmigrate rbac
    # --statefulset); only for verbs RBAC can scope by name (not create, not list).
    by_name: bool = False
    # Nice to have: without it the run goes on (preflight warns instead of refusing).
    optional: bool = False


def _events(side: Side) -> Rule:
    """The Events of each step written in ``side`` (best effort)."""
    return Rule(
        side,
        "events.k8s.io",
        "events",
        ("create",),
        True,
        ("move", "rollback", "cleanup"),
        "Kubernetes Events about each step (activities/events.py), for kubectl describe "
        "and kubectl events. Optional: without it no Events are written and preflight warns.",
        optional=True,
    )


def _autoscalers(side: Side) -> tuple[Rule, ...]:
    """Preflight's look for other writers of the StatefulSet's replicas in ``side``."""
    reads = [
        ("autoscaling", "horizontalpodautoscalers", "an HPA targeting the StatefulSet"),
        ("keda.sh", "scaledobjects", "a KEDA ScaledObject targeting the StatefulSet"),
        ("autoscaling.k8s.io", "verticalpodautoscalers", "a VPA updating its pods"),
    ]
    return tuple(
        Rule(
            side,
            group,
            resource,
            ("list",),
            True,
            ("preflight",),
            f"Preflight: {what} would fight the slices (none when it is not installed: "
            "the list answers 404).",
        )
        for group, resource, what in reads
    )


def _exec(side: Side) -> Rule:
    """The request's hooks in pod k (activities/hooks.py)."""
    return Rule(
        side,
        "",
        "pods/exec",
        ("get", "create"),
        True,
        ("hooks",),
        "Only for a request with hooks: run them in pod k through the exec API (a "
        "websocket GET, authorized as get, and since Kubernetes 1.31 as create too). It "
        "runs commands in the app's pods: leave it out where no request has hooks.",
    )


RULES: tuple[Rule, ...] = (
    # -- source, in the application's namespace ------------------------------------
    Rule(
        "source",
        "apps",
        "statefulsets",
        ("get", "patch"),
        True,
        ("preflight", "move", "rollback", "cleanup"),
        "Read the StatefulSet; give up one ordinal at a time (patch replicas); take a "
        "rolled-back ordinal again; lock it against a second migration (an annotation).",
        by_name=True,
    ),
    Rule(
        "source",
        "apps",
        "statefulsets",
        ("delete",),
        True,
        ("cleanup",),
        "The clean finish: delete the empty source StatefulSet, held by the finalizer "
        "stsmigrate.dev/fence (added with patch), so no later sync can recreate it or "
        "start its pods here.",
        by_name=True,
    ),
    Rule(
        "source",
        "",
        "pods",
        ("get", "list", "watch"),
        True,
        ("preflight", "move", "rollback", "cleanup"),
        "Check the slice is healthy and wait for pod k to terminate (by UID; never "
        "deleted by us); after a rollback, wait for pod k Ready here again.",
    ),
    Rule(
        "source",
        "",
        "persistentvolumeclaims",
        ("get", "list", "watch", "create", "patch", "delete"),
        True,
        ("preflight", "move", "rollback"),
        "Read the claims; release (delete) a moved ordinal's claims once its pod is gone "
        "(their volumes are Retain, so no storage is deleted); create a fence in their "
        "place (a claim pre-bound to the released volume that never binds, so a foreign "
        "scale-up gets a Pending pod, never empty storage); a rollback adopts the fence "
        "(patch) and waits until it is Bound (list/watch).",
    ),
    Rule(
        "source",
        "",
        "secrets",
        ("get",),
        True,
        ("preflight", "move"),
        "Read what the pods need, to copy it to the destination (values stay in the "
        "worker; only names reach the plan).",
    ),
    Rule(
        "source",
        "",
        "configmaps",
        ("get",),
        True,
        ("preflight", "move"),
        "Read what the pods need, to copy it to the destination.",
    ),
    Rule(
        "source",
        "",
        "services",
        ("get",),
        True,
        ("preflight", "move"),
        "Read the headless Service, to copy it to the destination.",
    ),
    Rule(
        "source",
        "",
        "serviceaccounts",
        ("get",),
        True,
        ("preflight", "move"),
        "Read the pods' ServiceAccount, to copy it to the destination.",
    ),
    Rule(
        "source",
        "policy",
        "poddisruptionbudgets",
        ("get", "list", "patch"),
        True,
        ("preflight", "move", "rollback"),
        "Find the PodDisruptionBudgets that select the app's pods, to copy them; while "
        "the app moves, share its budget with the destination (patch maxUnavailable, the "
        "PDB's own spec kept in an annotation) and restore it at the end.",
    ),
    *_autoscalers("source"),
    _events("source"),
    # -- source, cluster-scoped ----------------------------------------------------
    Rule(
        "source",
        "",
        "persistentvolumes",
        ("get", "list", "watch", "patch"),
        False,
        ("preflight", "move", "rollback", "cleanup"),
        "Read the volumes of the moving ordinals; set their reclaim policy to Retain "
        "(patch) before anything is scaled down, so no step can delete storage; a "
        "rollback binds a released volume to the claim made again (patch the claimRef's "
        "uid) and waits until it is Bound (list/watch). deploy/admission.yaml narrows the "
        "patch to the app's volumes and these fields.",
    ),
    Rule(
        "source",
        "",
        "persistentvolumes",
        ("delete",),
        False,
        ("cleanup",),
        "The clean finish: remove each moved volume's Released source PV object once it "
        "is Retain (the object only: its storage is what the destination's PV describes). "
        "deploy/admission.yaml allows deleting only Retain volumes that are not Bound.",
    ),
    Rule(
        "source",
        "storage.k8s.io",
        "volumeattachments",
        ("list", "watch"),
        False,
        ("move",),
        "Wait until no VolumeAttachment references a moving volume (detach finished).",
    ),
    Rule(
        "source",
        "",
        "nodes",
        ("list",),
        False,
        ("wiring",),
        "DescribeClusters (the README's wiring check) counts each cluster's nodes.",
    ),
    # -- destination, in the destination namespace ---------------------------------
    Rule(
        "destination",
        "apps",
        "statefulsets",
        ("get", "create", "patch"),
        True,
        ("preflight", "move", "rollback", "re-move", "cleanup"),
        "Create the destination StatefulSet (an empty slice), take ordinals (patch "
        "ordinals.start and replicas in one request), give one back on a rollback.",
        by_name=True,
    ),
    Rule(
        "destination",
        "",
        "pods",
        ("get", "list", "watch", "create"),
        True,
        ("preflight", "move", "rollback"),
        "Wait for both slices healthy and for pod k Ready; on a rollback, for pod k gone. "
        "create: only preflight's dry run (dryRun=All) of the ordinal's Pod, so PodSecurity, "
        "LimitRange, quotas and webhooks judge it before anything changes (no more power "
        "than create statefulsets gives).",
    ),
    Rule(
        "destination",
        "",
        "persistentvolumeclaims",
        ("get", "list", "watch", "create", "patch", "delete"),
        True,
        ("preflight", "move", "rollback", "re-move", "cleanup"),
        "Create each moved claim with volumeName and wait until Bound (once its volume "
        "is bound to it, the claim is annotated bind-completed; a bind nudge annotates "
        "it: patch); moving an ordinal again adopts the fence a rollback left "
        "here (patch); a rollback releases the claims here (delete: their volumes are "
        "Retain, so no storage is deleted) and leaves a fence (create).",
    ),
    Rule(
        "destination",
        "",
        "secrets",
        ("get", "create"),
        True,
        ("preflight", "move"),
        "Copy the Secrets the pods need (only when absent; never overwritten); read a "
        "redis_cluster probe's password_secret at probe time (the value stays in the worker).",
    ),
    Rule(
        "destination",
        "",
        "configmaps",
        ("get", "create"),
        True,
        ("preflight", "move"),
        "Copy the ConfigMaps the pods need (only when absent; never overwritten).",
    ),
    Rule(
        "destination",
        "",
        "services",
        ("get", "create"),
        True,
        ("preflight", "move"),
        "Copy the headless Service (only when absent; never overwritten).",
    ),
    Rule(
        "destination",
        "",
        "serviceaccounts",
        ("get", "create"),
        True,
        ("preflight", "move"),
        "Copy the pods' ServiceAccount (only when absent; never overwritten).",
    ),
    Rule(
        "destination",
        "policy",
        "poddisruptionbudgets",
        ("get", "create", "patch"),
        True,
        ("preflight", "move", "rollback"),
        "Copy the PodDisruptionBudgets that select the app's pods; while the app moves, "
        "hold the destination's share of the app's budget (patch), restored at the end.",
    ),
    Rule(
        "destination",
        "",
        "resourcequotas",
        ("list",),
        True,
        ("preflight",),
        "Preflight: room in the namespace's quotas for the moved pods and claims.",
    ),
    *_autoscalers("destination"),
    _events("destination"),
    # -- destination, cluster-scoped -----------------------------------------------
    Rule(
        "destination",
        "",
        "persistentvolumes",
        ("get", "list", "watch", "create", "patch"),
        False,
        ("preflight", "move", "rollback", "re-move", "cleanup"),
        "Import each volume: a PV with the same storage, bound to its claim (by uid), and "
        "wait until it is Bound; a rollback marks it released and moving the ordinal "
        "again binds it to the new claim (patch the claimRef's uid). "
        "deploy/admission.yaml narrows create and patch to the app's volumes, these "
        "fields, and no hostPath/local volumes unless the operator opts in.",
    ),
    Rule(
        "destination",
        "storage.k8s.io",
        "volumeattachments",
        ("list", "watch"),
        False,
        ("rollback",),
        "A rollback (or the undo of a blocked move) waits until no VolumeAttachment "
        "references the ordinal's volumes before it releases the claims here.",
    ),
    Rule(
        "destination",
        "storage.k8s.io",
        "storageclasses",
        ("get",),
        False,
        ("preflight", "cleanup"),
        "Preflight: the (mapped) storage classes exist.",
    ),
    Rule(
        "destination",
        "storage.k8s.io",
        "csidrivers",
        ("get",),
        False,
        ("preflight",),
        "Preflight: the CSI driver of each moved volume is installed in the destination.",
    ),
    Rule(
        "destination",
        "",
        "namespaces",
        ("get",),
        False,
        ("preflight",),
        "Preflight: the destination namespace exists.",
    ),
    Rule(
        "destination",
        "",
        "nodes",
        ("list",),
        False,
        ("wiring", "preflight"),
        "Preflight: volumes pinned to nodes fit the destination's nodes; DescribeClusters "
        "counts them.",
    ),
)


RULES = (*RULES, _exec("source"), _exec("destination"))


def rules(side: Side) -> list[Rule]:
    return [r for r in RULES if r.side == side]


def cleanup_only(rule: Rule) -> bool:
    return rule.paths == ("cleanup",)


def hooks_only(rule: Rule) -> bool:
    return rule.paths == ("hooks",)


def needed(
    side: Side, cleanup: bool = True, hooks: bool = True
) -> list[tuple[str, str, str, bool]]:
    """(verb, resource, group, namespaced) preflight checks for ``side``: all of them,
    those only the clean finish uses when ``cleanup``, those only hooks use when
    ``hooks`` (``optional`` tells the ones whose absence is only a warning)."""
    return [
        (v, r.resource, r.group, r.namespaced)
        for r in rules(side)
        if (cleanup or not cleanup_only(r)) and (hooks or not hooks_only(r))
        for v in r.verbs
    ]


def for_cleanup(side: Side) -> list[tuple[str, str, str, bool]]:
    """The checks of the rules only the clean finish uses."""
    return [
        (v, r.resource, r.group, r.namespaced)
        for r in rules(side)
        if cleanup_only(r)
        for v in r.verbs
    ]


def optional(verb: str, resource: str, group: str) -> bool:
    """Whether the run goes on without this permission (preflight warns)."""
    return any(
        r.optional and r.resource == resource and r.group == group and verb in r.verbs
        for r in RULES
    )


# Verbs RBAC can scope by resourceNames (create and list cannot).
NAMED_VERBS = ("get", "patch", "update", "delete")


def by_name(resource: str, group: str, verb: str) -> bool:
    """Whether a rule for this may be narrowed to the migrated StatefulSet's name."""
    return verb in NAMED_VERBS and any(
        r.by_name and r.resource == resource and r.group == group for r in RULES
    )


def grants(side: Side, verb: str, resource: str, group: str) -> bool:
    return any(r.resource == resource and r.group == group and verb in r.verbs for r in rules(side))


# -- deploy/rbac.yaml ---------------------------------------------------------------


def role_name(side: Side, namespaced: bool, hooks: bool = False) -> str:
    if hooks:
        return f"stsmigrate-{side}-hooks"
    return f"stsmigrate-{side}-{'namespaced' if namespaced else 'cluster'}"


# The label of the objects that grant what only hooks use (pods/exec): apply them only
# where a request has hooks (kubectl apply -l ...,stsmigrate.dev/hooks!=true leaves
# them out; the chart renders them with rbac.hooks).
HOOKS_LABEL = "stsmigrate.dev/hooks"


def _comment(text: str, indent: str) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        if len(indent) + 2 + len(line) + 1 + len(word) > 88 and line:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    return [f"{indent}# {x}" for x in lines]


def _list(items: tuple[str, ...] | list[str]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


def _labels(side: Side, hooks: bool) -> str:
    return f"{{{SIDE_LABEL}: {side}" + (f', {HOOKS_LABEL}: "true"' if hooks else "") + "}"


def _role(side: Side, namespaced: bool, statefulset: str | None, hooks: bool = False) -> list[str]:
    where = "in the application's namespace (bound with a RoleBinding)"
    what = where if namespaced else "cluster-scoped objects"
    if hooks:
        what = f"hooks only, {where}"
    out = [
        "---",
        f"# {side.capitalize()} cluster, {what}.",
        "apiVersion: rbac.authorization.k8s.io/v1",
        "kind: ClusterRole",
        "metadata:",
        f"  name: {role_name(side, namespaced, hooks)}",
        f"  labels: {_labels(side, hooks)}",
        "rules:",
    ]
    for rule in (r for r in rules(side) if r.namespaced == namespaced and hooks_only(r) == hooks):
        out += _comment(rule.why, "  ")
        names = [statefulset] if statefulset is not None and rule.by_name else []
        verbs = [v for v in rule.verbs if not names or v in NAMED_VERBS]
        rest = [v for v in rule.verbs if v not in verbs]
        chunks: list[tuple[list[str], list[str]]] = [(verbs, names), (rest, [])]
        for chunk, names in chunks:
            if not chunk:
                continue
            out += [
                f'  - apiGroups: ["{rule.group}"]',
                f"    resources: {_list([rule.resource])}",
                f"    verbs: {_list(chunk)}",
            ]
            if names:
                out.append(f"    resourceNames: {_list(names)}")
    return out


def _bindings(side: Side, namespace: str) -> list[str]:
    subject = [
        "subjects:",
        "  - kind: ServiceAccount",
        f"    name: {SERVICE_ACCOUNT}",
        f"    namespace: {SERVICE_ACCOUNT_NAMESPACE}",
    ]
    out: list[str] = []
    for namespaced, hooks in ((False, False), (True, False), (True, True)):
        name = role_name(side, namespaced, hooks)
        out += [
            "---",
            "apiVersion: rbac.authorization.k8s.io/v1",
            f"kind: {'RoleBinding' if namespaced else 'ClusterRoleBinding'}",
            "metadata:",
            f"  name: {name}",
            *([f"  namespace: {namespace}"] if namespaced else []),
            f"  labels: {_labels(side, hooks)}",
            "roleRef:",
            "  apiGroup: rbac.authorization.k8s.io",
            "  kind: ClusterRole",
            f"  name: {name}",
            *subject,
        ]
    return out


HEADER = f"""\
# Least-privilege RBAC for the identity the worker uses in each cluster.
# GENERATED from activities/permissions.py (the one table of what the worker does and
# why): do not edit by hand; run `stsmigrate rbac > deploy/rbac.yaml`.
#
# Each object carries the label {SIDE_LABEL}: apply the source part in the source
# cluster and the destination part in the destination cluster, with your namespaces:
#
#   sed -e s/APP_NAMESPACE/shop/ -e s/DESTINATION_NAMESPACE/shop/ deploy/rbac.yaml |
#     kubectl --context source apply -l {SIDE_LABEL}=source -f -
#   sed -e s/APP_NAMESPACE/shop/ -e s/DESTINATION_NAMESPACE/shop/ deploy/rbac.yaml |
#     kubectl --context destination apply -l {SIDE_LABEL}=destination -f -
#
# The worker then uses the ServiceAccount {SERVICE_ACCOUNT_NAMESPACE}/{SERVICE_ACCOUNT} of
# each cluster (README, "Credentials for the worker", makes a kubeconfig from them).
# `stsmigrate rbac --statefulset NAME` narrows the StatefulSet rules to that one name.
# The objects labelled {HOOKS_LABEL}=true let the worker exec into the app's pods,
# which only a request with hooks needs: leave them out where none has any (kubectl
# apply -l {SIDE_LABEL}=source,{HOOKS_LABEL}!=true; the chart's rbac.hooks).
# Preflight checks every permission below with a SelfSubjectAccessReview before it
# changes anything. SelfSubjectAccessReviews and /version are allowed to every
# authenticated user by the default roles system:basic-user and
# system:public-info-viewer. PersistentVolumes are cluster-scoped, so RBAC cannot
# keep a patch to the app's own volumes: deploy/admission.yaml does.
"""


def render_rbac(
    source_namespace: str | None = None,
    destination_namespace: str | None = None,
    statefulset: str | None = None,
) -> str:
    """deploy/rbac.yaml, or the same roles for the given namespaces and StatefulSet."""
    out = [HEADER.rstrip("\n")]
    namespaces = {
        "source": source_namespace or PLACEHOLDER["source"],
        "destination": destination_namespace or source_namespace or PLACEHOLDER["destination"],
    }
    side: Side
    for side in ("source", "destination"):
        out += [
            "---",
            f"# The worker's identity in the {side} cluster.",
            "apiVersion: v1",
            "kind: Namespace",
            "metadata:",
            f"  name: {SERVICE_ACCOUNT_NAMESPACE}",
            f"  labels: {{{SIDE_LABEL}: {side}}}",
            "---",
            "apiVersion: v1",
            "kind: ServiceAccount",
            "metadata:",
            f"  name: {SERVICE_ACCOUNT}",
            f"  namespace: {SERVICE_ACCOUNT_NAMESPACE}",
            f"  labels: {{{SIDE_LABEL}: {side}}}",
        ]
        out += _role(side, False, statefulset) + _role(side, True, statefulset)
        out += _role(side, True, statefulset, hooks=True)
        out += _bindings(side, namespaces[side])
    return "\n".join(out) + "\n"
