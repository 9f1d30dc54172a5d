"""What to move where: MigrationRequest and the options it carries.

A request names contexts of the worker's kubeconfig, never credentials. It is
validated in full before anything changes (invariant I6 of docs/design.md)."""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, JsonValue, model_validator

from contract.base import Payload

# A DNS-1123 label: namespaces, StatefulSet names (pods are "<name>-<ordinal>").
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# kubeconfig context names are free-form, but never empty or with control characters.
CONTEXT = r"^[^\x00-\x1f]+$"


def _dns_label(max_length: int) -> AfterValidator:
    def check(value: str) -> str:
        if len(value) > max_length or not re.fullmatch(DNS_LABEL, value):
            raise ValueError(
                f"{value!r} is not a valid Kubernetes name here: use 1 to {max_length} "
                "lowercase letters, digits and '-', starting and ending with a letter or digit"
            )
        return value

    return AfterValidator(check)


def _context(value: str) -> str:
    if not value or len(value) > 253 or not re.fullmatch(CONTEXT, value):
        raise ValueError(
            f"{value!r} is not a kubeconfig context name: name one of the worker's contexts "
            "(kubectl config get-contexts)"
        )
    return value


# A StatefulSet name leaves room for "-<ordinal>" and the controller-revision hash label.
StatefulSetName = Annotated[str, _dns_label(52)]
NamespaceName = Annotated[str, _dns_label(63)]
ContextName = Annotated[str, AfterValidator(_context)]


class WaitTimeouts(Payload):
    """Upper bounds for the waits of one ordinal, in seconds. The giver is the side
    that gives the ordinal up (the source in a move, the destination in a rollback),
    the taker the side that takes it."""

    healthy: int = Field(300, ge=1, description="both slices Ready before an ordinal moves")
    pod_gone: int = Field(600, ge=1, description="the giver's pod gone (its grace period included)")
    detach: int = Field(600, ge=1, description="no VolumeAttachment left for its volumes")
    bound: int = Field(300, ge=1, description="the taker's claims Bound")
    pod_ready: int = Field(900, ge=1, description="the taker's pod Running and Ready")


class ApprovalPolicy(Payload):
    """Which ordinals wait for a human's ``approve`` before they move."""

    mode: Literal["none", "first", "each", "ordinals"] = Field(
        "none",
        description="none; first (the first ordinal of the run); each; ordinals (those listed)",
    )
    ordinals: list[int] = Field(default_factory=list, description='for mode "ordinals"')

    @model_validator(mode="after")
    def _ordinals_only_for_their_mode(self) -> ApprovalPolicy:
        if self.mode == "ordinals" and not self.ordinals:
            raise ValueError('approval mode "ordinals" needs a non-empty list of ordinals')
        if self.mode != "ordinals" and self.ordinals:
            raise ValueError(f'approval mode "{self.mode}" takes no ordinals list')
        if any(k < 0 for k in self.ordinals):
            raise ValueError("ordinals are >= 0")
        return self

    def needs(self, ordinal: int, first: int | None) -> bool:
        if self.mode == "each":
            return True
        if self.mode == "first":
            return ordinal == first
        return ordinal in self.ordinals


# Placeholders a probe's or a hook's strings may use; e.g.
# "http://{pod}.{service}.{namespace}:8080/ok". ``pod_ip`` is the pod's IP in the cluster
# probed (status.podIP, read when the probe or hook runs): for a worker that cannot
# resolve that cluster's DNS names.
PROBE_PLACEHOLDERS = ("ordinal", "pod", "namespace", "service", "statefulset", "pod_ip")


def _check_placeholders(texts: list[str]) -> None:
    for text in texts:
        try:
            text.format_map({k: "x" for k in PROBE_PLACEHOLDERS})
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(
                f"{text!r}: unknown placeholder {e}; use {', '.join(PROBE_PLACEHOLDERS)} "
                "in braces ({pod}); double a literal brace ({{)"
            ) from None


ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
# The worker's credentials live in variables of these names (activities/health.py drops
# them from a probe's environment again).
CREDENTIAL_VARIABLES = (
    r"STSMIGRATE_.*|TEMPORAL_.*|KUBECONFIG|.*_TOKEN|.*_KEY|.*PASSWORD.*|.*SECRET.*"
)

# Names of env variables an override may not give a literal value: a guard against a
# credential in the request (it is kept in the workflow's history), not a guarantee.
CREDENTIAL_NAMES = f"{CREDENTIAL_VARIABLES}|.*PASS.*|.*AUTH.*|.*CREDENTIAL.*"


# A Secret's name (DNS-1123 subdomain) and a key of its data.
DNS_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
DATA_KEY = r"[-._a-zA-Z0-9]+"


class SecretKeyRef(Payload):
    """A key of a Secret in the application's namespace of the cluster probed: the
    worker reads it when the probe runs, so the value is in no request, plan, history
    or log."""

    name: str = Field(min_length=1, max_length=253, pattern=f"^{DNS_SUBDOMAIN}$")
    key: str = Field(min_length=1, max_length=253, pattern=f"^{DATA_KEY}$")


class Probe(Payload):
    """One health check of a moved ordinal, run by the worker after the pod is Ready."""

    kind: Literal["ready", "http", "tcp", "redis_cluster", "command"]
    name: str = Field("", description="shown in progress and errors (default: the kind)")
    url: str = Field("", description="http: the URL to GET (templated)")
    expect_status: int = Field(200, ge=100, le=599, description="http: the expected status")
    insecure_skip_verify: bool = Field(False, description="http: do not verify TLS")
    host: str = Field("", description="tcp, redis_cluster: host (templated)")
    port: int = Field(0, ge=0, le=65535, description="tcp, redis_cluster: port")
    expected_nodes: int | None = Field(
        None, ge=1, description="redis_cluster: cluster_known_nodes must equal this"
    )
    password_secret: SecretKeyRef | None = Field(
        None,
        description="redis_cluster: AUTH with the password in this key of a Secret of the "
        "probed cluster's application namespace, read by the worker at probe time",
    )
    command: list[str] = Field(
        default_factory=list,
        description="command: argv run on the worker (templated); exit 0 is healthy. Needs "
        "STSMIGRATE_ALLOW_COMMAND_PROBES=1 on the worker",
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="command: variables it runs with (templated values), besides PATH, LANG, "
        "LC_ALL, TZ and HOME (its scratch directory); it sees no other variable of the worker. "
        "In the request and so in the history: never a secret",
    )
    soak: int = Field(0, ge=0, le=3600, description="ready: seconds the pod must stay Ready")
    timeout: int = Field(5, ge=1, le=300, description="seconds per attempt")
    retries: int = Field(3, ge=0, le=100, description="attempts after the first")
    interval: int = Field(2, ge=0, le=300, description="seconds between attempts")

    @model_validator(mode="after")
    def _complete(self) -> Probe:
        needs = {
            "http": ["url"],
            "tcp": ["host", "port"],
            "redis_cluster": ["host", "port"],
            "command": ["command"],
        }.get(self.kind, [])
        if missing := [f for f in needs if not getattr(self, f)]:
            raise ValueError(f"a {self.kind} probe needs {' and '.join(missing)}")
        if self.kind == "http" and "@" in urlsplit(self.url).netloc:
            raise ValueError(
                "an http probe's URL cannot carry credentials (user:password@): the request "
                "is kept in the workflow's history; probe an endpoint that needs none"
            )
        if self.env and self.kind != "command":
            raise ValueError(f"env is for command probes, not {self.kind}")
        if self.password_secret and self.kind != "redis_cluster":
            raise ValueError(f"password_secret is for redis_cluster probes, not {self.kind}")
        for var in self.env:
            if not re.fullmatch(ENV_NAME, var) or re.fullmatch(CREDENTIAL_VARIABLES, var, re.I):
                raise ValueError(
                    f"{var!r} cannot be set for a command probe: use a variable name "
                    "([A-Za-z_][A-Za-z0-9_]*) that names none of the worker's credentials "
                    "(STSMIGRATE_*, TEMPORAL_*, KUBECONFIG, *_TOKEN, *_KEY, *PASSWORD*, *SECRET*)"
                )
        _check_placeholders([self.url, self.host, *self.command, *self.env.values()])
        return self

    @property
    def label(self) -> str:
        return self.name or self.kind


class HealthGates(Payload):
    """Checks run on every moved ordinal, and what happens when one fails."""

    probes: list[Probe] = Field(default_factory=list)
    on_failure: Literal["pause", "rollback_ordinal", "rollback_all", "fail"] = Field(
        "pause",
        description="pause: wait for a human (resume accepts, rollback, abort ends); "
        "rollback_ordinal: give the ordinal back to the source, then pause; rollback_all: give "
        "back every ordinal this run moved and end; fail: end the run with the ordinal left "
        "wholly in the destination",
    )


class Hook(Payload):
    """A command run inside pod k through the Kubernetes exec API (``kubectl exec``),
    as the container's own user, with the container's own environment: a password is
    taken from there (a variable from a Secret), never written in the command, which
    the request keeps in the workflow's history. Exit 0 is success; any other exit, or
    no exit within ``timeout``, is a failed attempt, tried again ``retries`` times. An
    attempt may run again after a worker crash or a timeout (whose command may still
    be running in the pod): a hook must be safe to run twice."""

    name: str = Field(
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="shown in progress, the pause reason and Events",
    )
    command: list[str] = Field(
        min_length=1,
        description="argv run in the container (templated like a probe: {ordinal}, {pod}, "
        "{namespace}, {service}, {statefulset}, {pod_ip}); a shell needs ['sh', '-c', '...']",
    )
    container: str = Field(
        "", max_length=63, description="the container to run in (default: the pod's first)"
    )
    timeout: int = Field(60, ge=1, le=3600, description="seconds per attempt")
    retries: int = Field(2, ge=0, le=100, description="attempts after the first")
    interval: int = Field(5, ge=1, le=600, description="seconds between attempts")

    @model_validator(mode="after")
    def _templated(self) -> Hook:
        _check_placeholders(self.command)
        return self


class Hooks(Payload):
    """Commands run inside the application's pods around each hand-over. The giver is
    the side giving ordinal k up (the source in a move, the destination when k is rolled
    back), the taker the side taking it. A failure before the giver gives k up pauses
    the run with k still running on the giver (resume runs the hook again, abort leaves
    k there); a failure after the take pauses it with k running on the taker (resume
    runs it again; rollback or abort puts k back). Needs ``pods/exec`` (get, create) in
    both clusters."""

    before_give_up: list[Hook] = Field(
        default_factory=list,
        description="in the giver's pod k, Running and Ready, before it gives k up (e.g. a "
        "Redis Cluster failover when k is a master), in order",
    )
    after_take: list[Hook] = Field(
        default_factory=list,
        description="in the taker's pod k once it is Ready, before the health gates (e.g. "
        "wait until k's replica has caught up), in order",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> Hooks:
        for phase in (self.before_give_up, self.after_take):
            names = [h.name for h in phase]
            if dup := sorted({n for n in names if names.count(n) > 1}):
                raise ValueError(f"hook name {dup[0]!r} is used twice in one phase")
        return self

    @property
    def configured(self) -> bool:
        return bool(self.before_give_up or self.after_take)


# The fields of a StatefulSet's own spec: a patch naming one under "spec" was written
# for the StatefulSet, which destination_overrides never patches (its selector,
# serviceName and volumeClaimTemplates stay the source's: both slices are one app).
STATEFULSET_SPEC_FIELDS = (
    "selector",
    "serviceName",
    "volumeClaimTemplates",
    "template",
    "replicas",
    "ordinals",
    "podManagementPolicy",
    "updateStrategy",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
    "revisionHistoryLimit",
)
# Lists of a pod spec a merge patch would replace whole, dropping what it leaves out.
WHOLE_LISTS = ("containers", "initContainers", "volumes")
# Where in the pod template an override may write (RFC 6901 pointers).
OVERRIDABLE = ("/metadata/labels", "/metadata/annotations", "/spec")
JSON_PATCH_OPS = ("add", "remove", "replace", "move", "copy", "test")
_NOT_A_MAP = '{} is a map of names to strings ({{"name": "value"}}), not a string or a list'
# Fields whose values a plan line withholds (activities/manifests.py override_changes):
# they may carry a credential (env, a command's arguments) or text copied from the
# source (annotations). A move takes no value out of them.
WITHHELD_FIELDS = frozenset({"env", "args", "command", "annotations"})
# Pointers whose value must be such a map.
_MAPS = ("/metadata/labels", "/metadata/annotations")
_NOT_IN_HISTORY = (
    "the request is kept in the workflow's history, so it can carry no secret: take the "
    "value from a Secret with valueFrom.secretKeyRef"
)


def _pointer(path: object, i: int) -> list[str]:
    """An RFC 6901 pointer's tokens, refused unless it is inside OVERRIDABLE."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"operation {i}: path {path!r} is not a JSON pointer (/spec/...)")
    if not any(path == root or path.startswith(root + "/") for root in OVERRIDABLE):
        raise ValueError(
            f"operation {i}: {path} is outside what an override may change: the pod "
            "template's spec and its metadata's labels and annotations (/spec/..., "
            "/metadata/labels/..., /metadata/annotations/...)"
        )
    return [t.replace("~1", "/").replace("~0", "~") for t in path.split("/")[1:]]


def _root(path: object) -> str | None:
    """The OVERRIDABLE root a pointer is in (None: none)."""
    if not isinstance(path, str):
        return None
    return next((r for r in OVERRIDABLE if path == r or path.startswith(r + "/")), None)


def _withheld(path: object) -> bool:
    """Whether a pointer names a place in one of WITHHELD_FIELDS."""
    return isinstance(path, str) and bool(WITHHELD_FIELDS & set(path.split("/")))


def _not_statefulset_fields(spec_keys: list[str]) -> None:
    if wrong := [k for k in spec_keys if k in STATEFULSET_SPEC_FIELDS]:
        raise ValueError(
            f"spec.{wrong[0]} is a field of the StatefulSet, not of its pod template: "
            "destination_overrides patches only the pod template (spec.template of the "
            "StatefulSet; write its paths from there, e.g. /spec/nodeSelector), and the "
            "destination keeps the source's selector, serviceName and volumeClaimTemplates"
        )


def _no_credential_values(value: object) -> None:
    """No env entry {name, value} whose name is a credential's (I5)."""
    if isinstance(value, list):
        for item in value:
            _no_credential_values(item)
    elif isinstance(value, dict):
        name = value.get("name")
        if (
            "value" in value
            and isinstance(name, str)
            and re.fullmatch(CREDENTIAL_NAMES, name, re.I)
        ):
            raise ValueError(f"env {name} has a value: {_NOT_IN_HISTORY}")
        for item in value.values():
            _no_credential_values(item)


class PodTemplatePatch(Payload):
    """One patch of the destination StatefulSet's pod template (the source's
    ``spec.template``: its ``metadata`` and ``spec``), applied when the destination
    StatefulSet is created. ``merge``: an RFC 7386 JSON merge patch (an object; lists
    are replaced whole, null removes a key): for maps such as nodeSelector or
    annotations, and lists given whole such as tolerations. ``json``: an RFC 6902 JSON
    patch (a list of operations): for one element of a list, such as a container's
    image, env or resources (``/spec/containers/0/image``; a ``test`` of
    ``/spec/containers/0/name`` makes sure it is the container meant)."""

    type: Literal["merge", "json"]
    patch: JsonValue

    @model_validator(mode="after")
    def _only_the_pod_template(self) -> PodTemplatePatch:
        if self.type == "merge":
            self._check_merge(self.patch)
        else:
            self._check_json(self.patch)
        _no_credential_values(self.patch)
        return self

    @staticmethod
    def _check_merge(patch: JsonValue) -> None:
        if not isinstance(patch, dict):
            raise ValueError('a merge patch is an object ({"spec": {...}})')
        if wrong := sorted(set(patch) - {"metadata", "spec"}):
            raise ValueError(
                f"{wrong[0]!r}: a merge patch of the pod template has only metadata and spec"
            )
        meta = patch.get("metadata", {})
        if not isinstance(meta, dict) or set(meta) - {"labels", "annotations"}:
            raise ValueError(
                "an override changes only the pod template's metadata.labels and "
                "metadata.annotations (its name and namespace are the StatefulSet's)"
            )
        for key, value in meta.items():
            if value is not None and not isinstance(value, dict):
                raise ValueError(_NOT_A_MAP.format(f"metadata.{key}"))
        spec = patch.get("spec", {})
        if not isinstance(spec, dict):
            raise ValueError("the spec of a merge patch is an object: a pod template keeps one")
        _not_statefulset_fields(list(spec))
        if whole := [k for k in WHOLE_LISTS if k in spec]:
            raise ValueError(
                f"a merge patch replaces spec.{whole[0]} whole (RFC 7386), dropping what it "
                "leaves out (env, volumeMounts, probes): change one element with a json "
                f"patch (/spec/{whole[0]}/0/image; a test of /spec/{whole[0]}/0/name makes "
                "sure it is the one meant)"
            )

    @staticmethod
    def _check_json(patch: JsonValue) -> None:
        if not isinstance(patch, list) or not patch:
            raise ValueError('a json patch is a non-empty list of operations ({"op": ...})')
        for i, op in enumerate(patch):
            if not isinstance(op, dict) or op.get("op") not in JSON_PATCH_OPS:
                raise ValueError(f"operation {i}: op is one of {', '.join(JSON_PATCH_OPS)}")
            if op["op"] == "copy":
                raise ValueError(
                    f"operation {i}: copy is refused (the plan would show the value it "
                    "copies): add the value itself, or a valueFrom reference"
                )
            pointers = [op.get("path")] + ([op.get("from")] if op["op"] == "move" else [])
            if op["op"] == "move" and _root(op.get("from")) != _root(op.get("path")):
                raise ValueError(
                    f"operation {i}: a move from {op.get('from')} to {op.get('path')} is "
                    "refused: a move stays in /spec, /metadata/labels or "
                    "/metadata/annotations (the plan would show the value it moves out of "
                    "one; an env value as a label): add the value itself"
                )
            if op["op"] == "move" and _withheld(op.get("from")) and not _withheld(op.get("path")):
                raise ValueError(
                    f"operation {i}: a move out of env, args, command or annotations is "
                    "refused (the plan would show the value it moves): add the value itself"
                )
            if op.get("path") in _MAPS and (
                op["op"] == "move"
                or (op["op"] in ("add", "replace") and not isinstance(op.get("value"), dict))
            ):
                raise ValueError(f"operation {i}: " + _NOT_A_MAP.format(op["path"]))
            for path in pointers:
                tokens = _pointer(path, i)
                if tokens[0] == "spec":
                    _not_statefulset_fields(tokens[1:2])
                # The entry's name is not in the patch: it could not be checked.
                if len(tokens) >= 3 and tokens[-3] == "env" and tokens[-1] == "value":
                    raise ValueError(
                        f"operation {i}: set an env variable as a whole entry "
                        f'({{"name": ..., "value": ...}} at /{"/".join(tokens[:-1])}) '
                        "so its name can be checked for a credential"
                    )


# The most ordinals one child hands over at once (max_unavailable's bound).
MAX_BLOCK = 100


class MigrationRequest(Payload):
    """What to move where. Names contexts of the worker's kubeconfig, never credentials."""

    statefulset: StatefulSetName
    namespace: NamespaceName
    source_context: ContextName
    destination_context: ContextName
    destination_namespace: NamespaceName | None = None
    storage_class_mapping: dict[str, str] = Field(
        default_factory=dict, description="source storage class -> destination storage class"
    )
    destination_overrides: list[PodTemplatePatch] = Field(
        default_factory=list,
        description="patches of the destination StatefulSet's pod template, applied in order "
        "when it is created (env, image, nodeSelector, tolerations, resources); shown in the "
        "plan and dry-run by preflight. Never the selector's labels, serviceName or "
        "volumeClaimTemplates; in the history, so never a secret",
    )
    stop_at_ordinal: int | None = Field(
        None, ge=0, description="lowest ordinal to move; lower ones stay in the source"
    )
    dry_run: bool = False
    fix_retention_policy: bool = Field(
        False, description="set persistentVolumeClaimRetentionPolicy.whenScaled to Retain"
    )
    owner_paused: bool = Field(
        False,
        description="the operator that controls the StatefulSet (its controller "
        "ownerReference) is paused for the migration; without it such a StatefulSet is refused",
    )
    timeouts: WaitTimeouts = WaitTimeouts()
    approval: ApprovalPolicy = ApprovalPolicy()
    health: HealthGates = HealthGates()
    hooks: Hooks = Field(
        default_factory=Hooks,
        description="commands run inside pod k through the exec API: before_give_up (before "
        "the giver gives k up) and after_take (once the taker's pod k is Ready)",
    )
    max_unavailable: int = Field(
        1,
        ge=1,
        le=MAX_BLOCK,
        description="ordinals moved at once: a block of up to this many, highest first, "
        "handed over together (one slice patch on each side); preflight refuses more than "
        "the app's PodDisruptionBudget allows",
    )
    continue_as_new_events: int = Field(
        2000,
        ge=1,
        description="between two ordinals, a run whose history has this many events (or "
        "whose server suggests it) continues as new, so no history nears Temporal's limits",
    )

    cleanup: bool = Field(
        False,
        description="once every ordinal runs in the destination, finish cleanly: the source "
        "StatefulSet deleted and held by a finalizer (no sync can recreate it or its pods), "
        "the source's Released PV objects removed (never their storage), each destination "
        "PV given its original reclaim policy back (stsmigrate cleanup does it later)",
    )

    @model_validator(mode="after")
    def _cleanup_needs_all(self) -> MigrationRequest:
        if self.cleanup and self.stop_at_ordinal:
            raise ValueError(
                f"cleanup empties the source for good, but stop_at_ordinal {self.stop_at_ordinal} "
                "keeps ordinals below it there: drop one of them (stsmigrate cleanup can run "
                "once a later run has moved the rest)"
            )
        return self

    @property
    def target_namespace(self) -> str:
        return self.destination_namespace or self.namespace

    def mapped_class(self, storage_class: str | None) -> str | None:
        if storage_class is None:
            return None
        return self.storage_class_mapping.get(storage_class, storage_class)


def default_migration_id(request: MigrationRequest) -> str:
    """The workflow id used when the caller picks none: one migration per StatefulSet."""
    return f"stsmigrate/{request.source_context}/{request.namespace}/{request.statefulset}"
