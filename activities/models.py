"""Payload models: the contract between workflows, activities, the CLI and callers.

Imports stdlib and pydantic only (an import-linter contract enforces it), so the
workflow sandbox, clients and tests can all load it. Every model is frozen, every
field added later has a default, and payloads carry names, counts and references,
never manifests, Kubernetes model objects, credentials or Secret data.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

TASK_QUEUE = "statefulset-migration"

# Custom search attributes a migration keeps current (name -> Temporal type). A dev
# server gets them from devenv; production: `temporal operator search-attribute create`.
SEARCH_ATTRIBUTES: dict[str, str] = {
    "StsmigrateStatefulSet": "Keyword",
    "StsmigrateNamespace": "Keyword",
    "StsmigrateSourceContext": "Keyword",
    "StsmigrateDestinationContext": "Keyword",
    "StsmigratePhase": "Keyword",
    "StsmigrateOrdinal": "Int",
}


class Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Reply(BaseModel):
    """What a migration answers (results, progress, plans). Unknown fields are ignored,
    so a client older than the worker still reads a reply with fields added since."""

    model_config = ConfigDict(frozen=True, extra="ignore")


# -- wiring check: "can the worker reach every cluster it was given?" -----------------


class ReadClusterInfoInput(Payload):
    context: str = Field(min_length=1, description="kubeconfig context the worker holds")


class ClusterInfo(Payload):
    context: str
    server_version: str = Field(description="gitVersion reported by /version, e.g. v1.34.4")
    nodes: int = 0
    nodes_ready: int = 0


class DescribeClustersInput(Payload):
    contexts: list[str] = Field(min_length=1)


class DescribeClustersResult(Payload):
    clusters: list[ClusterInfo] = Field(default_factory=list)


# -- migration ------------------------------------------------------------------------

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

MANAGED_BY = "statefulset-migrator"
LABEL_MIGRATION = "stsmigrate.dev/migration"  # short hash of the migration id (label-safe)
LABEL_ORDINAL = "stsmigrate.dev/ordinal"
ANNOTATION_MIGRATION_ID = "stsmigrate.dev/migration-id"
ANNOTATION_SOURCE = "stsmigrate.dev/source"  # "<context>/<namespace>/<name>"


class WaitTimeouts(Payload):
    """Upper bounds for the waits of one ordinal, in seconds."""

    healthy: int = Field(300, ge=1, description="both slices Ready before an ordinal moves")
    pod_gone: int = Field(600, ge=1, description="source pod gone (its grace period included)")
    detach: int = Field(600, ge=1, description="no VolumeAttachment left for its volumes")
    bound: int = Field(300, ge=1, description="destination claims Bound")
    pod_ready: int = Field(900, ge=1, description="destination pod Running and Ready")


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


# Placeholders a probe's strings may use; e.g. "http://{pod}.{service}.{namespace}:8080/ok".
PROBE_PLACEHOLDERS = ("ordinal", "pod", "namespace", "service", "statefulset")


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
    command: list[str] = Field(
        default_factory=list,
        description="command: argv run on the worker (templated); exit 0 is healthy. Needs "
        "STSMIGRATE_ALLOW_COMMAND_PROBES=1 on the worker",
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
        for text in [self.url, self.host, *self.command]:
            try:
                text.format_map({k: "x" for k in PROBE_PLACEHOLDERS})
            except (KeyError, IndexError, ValueError) as e:
                raise ValueError(
                    f"{text!r}: unknown placeholder {e}; use {', '.join(PROBE_PLACEHOLDERS)} "
                    "in braces ({pod}); double a literal brace ({{)"
                ) from None
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


class ProbeInput(Payload):
    probes: list[Probe]
    context: str
    namespace: str
    statefulset: str
    service: str
    ordinal: int


class ProbeResult(Reply):
    probe: str
    ok: bool
    attempts: int
    detail: str = ""


class HealthReport(Reply):
    results: list[ProbeResult] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def failures(self) -> str:
        return "; ".join(f"{r.probe}: {r.detail}" for r in self.results if not r.ok)


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
    stop_at_ordinal: int | None = Field(
        None, ge=0, description="lowest ordinal to move; lower ones stay in the source"
    )
    dry_run: bool = False
    fix_retention_policy: bool = Field(
        False, description="set persistentVolumeClaimRetentionPolicy.whenScaled to Retain"
    )
    timeouts: WaitTimeouts = WaitTimeouts()
    approval: ApprovalPolicy = ApprovalPolicy()
    health: HealthGates = HealthGates()

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


def ordinal_workflow_id(migration_id: str, ordinal: int) -> str:
    return f"{migration_id}/ordinal-{ordinal}"


class Problem(Reply):
    object: str = Field(description='what is wrong, e.g. "source StatefulSet shop/redis"')
    message: str
    fix: str


class VolumePlan(Reply):
    template: str
    claim: str
    volume: str  # PV name, the same in both clusters
    storage_class: str = ""
    destination_storage_class: str = ""
    storage: str = Field("", description='what the PV points at, e.g. "hostPath /srv/v1"')
    reclaim_policy: str = ""
    size: str = Field("", description="the claim's requested storage, e.g. 1Gi")


class OrdinalPlan(Reply):
    ordinal: int
    pod: str
    volumes: list[VolumePlan] = Field(default_factory=list)


class Dependency(Reply):
    kind: str  # Secret, ConfigMap, ServiceAccount, Service, PodDisruptionBudget
    name: str
    action: str = ""  # "copy" or "present" (plan); "copied" or "present" (result)


class Plan(Reply):
    migration_id: str
    source_context: str
    destination_context: str
    namespace: str
    destination_namespace: str
    statefulset: str
    source_version: str = ""
    destination_version: str = ""
    source_start: int = 0
    source_replicas: int = 0
    end: int = Field(0, description="one past the highest ordinal of the whole StatefulSet")
    destination_exists: bool = False
    destination_start: int = 0
    destination_replicas: int = 0
    claim_templates: list[str] = Field(default_factory=list)
    service_name: str = Field("", description="the StatefulSet's serviceName")
    ordinals: list[OrdinalPlan] = Field(default_factory=list, description="highest first")
    dependencies: list[Dependency] = Field(default_factory=list)
    fix_retention_policy: bool = False
    warnings: list[str] = Field(default_factory=list)
    problems: list[Problem] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class PlanInput(Payload):
    request: MigrationRequest
    migration_id: str


class SliceRef(Payload):
    """One side of the move: a StatefulSet in a cluster."""

    context: str
    namespace: str
    statefulset: str


class SetSliceInput(Payload):
    """Converge a StatefulSet to owning [start, start + replicas).

    ``from_*`` is the slice we expect to find if the change is still to be made; any
    third state means somebody else changed the StatefulSet, which is refused.
    """

    ref: SliceRef
    start: int
    replicas: int
    from_start: int
    from_replicas: int


class SliceReadyInput(Payload):
    ref: SliceRef
    start: int
    replicas: int
    timeout: int = 300


class PodRef(Payload):
    ref: SliceRef
    ordinal: int

    @property
    def pod(self) -> str:
        return f"{self.ref.statefulset}-{self.ordinal}"


class PodState(Payload):
    name: str
    exists: bool
    uid: str = ""
    ready: bool = False


class WaitPodGoneInput(Payload):
    pod: PodRef
    uid: str
    volumes: list[str] = Field(default_factory=list)
    pod_timeout: int = 600
    detach_timeout: int = 600


class RetainInput(Payload):
    context: str
    volumes: list[str]
    migration_id: str


class RetainResult(Payload):
    original_policies: dict[str, str] = Field(default_factory=dict)


class ReleaseClaimsInput(Payload):
    context: str
    namespace: str
    claims: list[str]
    volumes: list[str]


class ImportInput(Payload):
    request: MigrationRequest
    migration_id: str
    ordinal: OrdinalPlan


class ClaimsBoundInput(Payload):
    context: str
    namespace: str
    claims: list[str]
    timeout: int = 300


class PodReadyInput(Payload):
    pod: PodRef
    timeout: int = 900


class EnsureDestinationInput(Payload):
    request: MigrationRequest
    migration_id: str
    start: int


class StatefulSetState(Reply):
    exists: bool
    start: int = 0
    replicas: int = 0
    ready_replicas: int = 0


class DependenciesResult(Payload):
    dependencies: list[Dependency] = Field(default_factory=list)


class Control(Payload):
    """What the operator asked of a running migration; the parent forwards it to the
    ordinal being moved (signal ``control`` of MigrateOrdinal), latest wins."""

    paused: bool = False
    aborting: bool = False
    resumes: int = Field(0, description="how many times the operator resumed")


class OrdinalInput(Payload):
    request: MigrationRequest
    migration_id: str
    ordinal: OrdinalPlan
    source_start: int
    end: int
    control: Control = Control()
    service: str = Field("", description="the StatefulSet's serviceName, for probe templates")


class StepReport(Payload):
    """MigrateOrdinal tells its parent which step it is in (signal ``ordinal_step``)."""

    ordinal: int
    step: str
    detail: str = Field("", description="why the step is blocked (signal ordinal_blocked)")


# -- operator messages (signals and updates of MigrateStatefulSet, same names) ----------


class PauseRequest(Payload):
    reason: str = Field("", max_length=500)


class ApproveRequest(Payload):
    """Approve the next ordinal (no fields), that ordinal only if it is next, or all."""

    ordinal: int | None = Field(None, ge=0, description="must be the next ordinal to move")
    all: bool = Field(False, description="approve every ordinal that remains")

    @model_validator(mode="after")
    def _one_target(self) -> ApproveRequest:
        if self.all and self.ordinal is not None:
            raise ValueError("approve either one ordinal or all, not both")
        return self


class AbortRequest(Payload):
    reason: str = Field("", max_length=500)


class RollbackRequest(Payload):
    """Give moved ordinals back to the source: the last one moved, or all this run moved."""

    all: bool = Field(False, description="every ordinal this run moved, then end the run")
    reason: str = Field("", max_length=500)


class StepTiming(Reply):
    step: str
    seconds: float


class OrdinalResult(Reply):
    ordinal: int
    moved: bool = Field(True, description="false: aborted before the source gave it up")
    health: HealthReport | None = Field(None, description="the health gates, when any ran")
    steps: list[StepTiming] = Field(default_factory=list)
    volumes: list[str] = Field(default_factory=list)
    original_reclaim_policies: dict[str, str] = Field(default_factory=dict)
    seconds: float = 0.0


class MigrationResult(Reply):
    migration_id: str
    dry_run: bool = False
    plan: Plan | None = None
    moved: list[OrdinalResult] = Field(default_factory=list)
    dependencies: list[Dependency] = Field(default_factory=list)
    source: StatefulSetState | None = None
    destination: StatefulSetState | None = None
    seconds: float = 0.0
    aborted: bool = False
    abort_reason: str = ""
    rolled_back: list[int] = Field(default_factory=list, description="given back to the source")
    placement: dict[str, str] = Field(
        default_factory=dict,
        description='where every ordinal runs at the end, read from both clusters: {"5": '
        '"destination", "4": "source"}',
    )


Phase = Literal[
    "starting", "preflight", "preparing", "moving", "paused", "awaiting_approval", "rolling_back",
    "done", "aborted",
]  # fmt: skip


class Progress(Reply):
    """Where a migration is (the ``progress`` query of MigrateStatefulSet)."""

    phase: Phase = "starting"
    current_ordinal: int | None = None
    step: str | None = Field(None, description="step of the current ordinal, as it reported")
    paused: bool = Field(False, description="a pause was asked for (phase says if it holds)")
    pause_reason: str = ""
    waiting_for_approval: int | None = None
    approval: ApprovalPolicy = ApprovalPolicy()
    approved: list[int] = Field(default_factory=list)
    approve_all: bool = False
    aborting: bool = False
    abort_reason: str = ""
    rollback: Literal["", "ordinal", "all"] = Field("", description="a rollback asked, not done")
    blocked: str = Field("", description="why the moving ordinal cannot go on (until resumed)")
    rolled_back: list[int] = Field(default_factory=list, description="in the order done")
    finished: list[OrdinalResult] = Field(default_factory=list)
    remaining: list[int] = Field(default_factory=list, description="highest first")
    warnings: list[str] = Field(default_factory=list)
