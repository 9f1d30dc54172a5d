"""Activity inputs and outputs, and the input of the per-ordinal children."""

from __future__ import annotations

from pydantic import Field

from contract.base import Payload, Reply
from contract.operator import Control
from contract.plan import Dependency, OrdinalPlan
from contract.request import Hook, MigrationRequest, Probe

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


class HookInput(Payload):
    """One hook run in pod k of one cluster (activities/hooks.py)."""

    hook: Hook
    phase: str = Field(description="before_give_up or after_take")
    context: str
    namespace: str
    statefulset: str
    service: str
    ordinal: int
    migration_id: str = ""
    skip_unless_ready: bool = Field(
        False, description="a pod k that is not Ready is skipped, not waited for (a rollback)"
    )


class HookResult(Reply):
    hook: str
    pod: str
    exit_code: int
    seconds: float
    skipped: str = Field("", description="why the hook did not run (skip_unless_ready)")


class HealthReport(Reply):
    results: list[ProbeResult] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def failures(self) -> str:
        return "; ".join(f"{r.probe}: {r.detail}" for r in self.results if not r.ok)


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


class OrdinalMove(Payload):
    """The slice arithmetic of handing ordinal k over, named once.

    The source owns [s, k + 1) before ordinal k moves and the destination (k, end):
    ordinals move highest first, so the source keeps the low ones and the destination
    grows downwards from ``end`` (one past the highest ordinal). A rollback of k is
    the same hand-over from the other side. Pure, so it is tested as a table.
    """

    source_start: int  # s: the lowest ordinal the StatefulSet has (spec.ordinals.start)
    ordinal: int  # k
    end: int
    count: int = 1  # a block: ordinals (k - count, k] handed over together

    @property
    def lowest(self) -> int:
        """The block's lowest ordinal (k when one ordinal moves)."""
        return self.ordinal + 1 - self.count

    def source_with_k(self) -> tuple[int, int]:
        """(start, replicas) of the source owning [s, k]."""
        return self.source_start, self.ordinal + 1 - self.source_start

    def source_without_k(self) -> tuple[int, int]:
        """(start, replicas) of the source owning [s, k) (a block: below its lowest)."""
        return self.source_start, self.lowest - self.source_start

    def destination_without_k(self) -> tuple[int, int]:
        """(start, replicas) of the destination owning (k, end)."""
        return self.ordinal + 1, self.end - self.ordinal - 1

    def destination_with_k(self) -> tuple[int, int]:
        """(start, replicas) of the destination owning [k, end) (a block: from its lowest)."""
        return self.lowest, self.end - self.lowest


def slice_change(
    ref: SliceRef, to: tuple[int, int], from_: tuple[int, int] | None = None
) -> SetSliceInput:
    """Converge ``ref`` to the slice ``to`` from ``from_``; without ``from_`` a no-op
    change that only checks ``ref`` still owns ``to`` (the slice guard)."""
    expected = to if from_ is None else from_
    return SetSliceInput(
        ref=ref, start=to[0], replicas=to[1], from_start=expected[0], from_replicas=expected[1]
    )


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
    """Release the giving side's claims of one ordinal (or of a block): ``claims[i]`` is
    released only while it is bound (or, if ours, pre-bound) to ``volumes[i]`` and that
    volume is Retain. With ``fence``, each released claim is replaced by a fence: a claim of the
    same name pre-bound to the released volume, which the PV controller never binds
    (the volume's claimRef holds the old claim's uid), so a foreign scale-up of the
    giver gets a Pending pod, never a pod on new, empty storage."""

    context: str
    namespace: str
    claims: list[str]
    volumes: list[str]
    migration_id: str = ""
    ordinal: int = -1
    fence: bool = False
    ordinals: list[int] = Field(
        default_factory=list,
        description="the ordinal of each claim (a block's claims released at once); "
        "empty: ``ordinal`` for every claim",
    )

    def ordinal_of(self, i: int) -> int:
        """The ordinal whose claim is ``claims[i]``."""
        return self.ordinals[i] if self.ordinals else self.ordinal


class TakeInput(Payload):
    """The taker takes ordinal k only while the giver owns exactly its slice without k:
    one activity checks the giver, changes the taker, and re-reads the giver; if the
    giver grew meanwhile the take is reverted at once (ConflictingChange)."""

    giver: SetSliceInput = Field(description="the giver's slice without k (a no-op change)")
    taker: SetSliceInput = Field(description="the taker's slice, without k -> with k")


class BudgetInput(Payload):
    """The app's disruption budget shared between the clusters (``in_flight``: the
    ordinals about to move or be given back, each one disruption of the app's)."""

    request: MigrationRequest
    migration_id: str
    in_flight: int = 1


class SharedBudget(Payload):
    """One PodDisruptionBudget of the app: the voluntary disruptions its own spec allows
    across all ordinals, and the maxUnavailable each cluster now has (never more than
    that PDB's own spec allows there)."""

    name: str
    allowed: int
    source: int | None = None  # None: left alone (absent, or owned by an operator)
    destination: int | None = None


class BudgetShare(Payload):
    budgets: list[SharedBudget] = Field(default_factory=list)


class LockInput(Payload):
    """The one-migration-per-StatefulSet lock: an annotation on the source StatefulSet
    naming the migration that holds it."""

    ref: SliceRef
    migration_id: str


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
    template_digest: str = Field(
        "",
        description="the plan's destination_template_digest: a destination StatefulSet "
        "created with another pod template is refused (empty: not compared)",
    )


class StatefulSetState(Reply):
    exists: bool
    start: int = 0
    replicas: int = 0
    ready_replicas: int = 0


class DependenciesResult(Payload):
    dependencies: list[Dependency] = Field(default_factory=list)


class OrdinalInput(Payload):
    request: MigrationRequest
    migration_id: str
    ordinal: OrdinalPlan
    source_start: int
    end: int
    control: Control = Control()
    service: str = Field("", description="the StatefulSet's serviceName, for probe templates")
    share_budget: bool = Field(
        False, description="share the app's disruption budget first (a lean parent's child)"
    )
    report_steps: bool = Field(
        True, description="signal every step to the parent (a lean parent asks the child)"
    )
    together: list[OrdinalPlan] = Field(
        default_factory=list,
        description="the ordinals just below ``ordinal`` handed over with it in one block "
        "(max_unavailable > 1), highest first",
    )

    @property
    def block(self) -> list[OrdinalPlan]:
        """The ordinals this hand-over moves, highest first."""
        return [self.ordinal, *self.together]

    @property
    def move(self) -> OrdinalMove:
        """The slices of this ordinal's hand-over."""
        return OrdinalMove(
            source_start=self.source_start,
            ordinal=self.ordinal.ordinal,
            end=self.end,
            count=1 + len(self.together),
        )


# -- the clean finish: the source emptied for good, the destination's volumes its own --


class CleanupVolume(Payload):
    """One moved volume: its PV (same name in both clusters), the destination claim it
    is bound to and what the destination's provisioner needs to own it again."""

    volume: str
    claim: str = Field(description="the destination claim it is bound to")
    original_policy: str = Field(description="its reclaim policy before the migration")
    provisioned_by: str = Field(
        "", description="the source PV's pv.kubernetes.io/provisioned-by (the storage's driver)"
    )
    deletion_secret: dict[str, str] = Field(
        default_factory=dict,
        description="the source PV's provisioner-deletion-secret annotations (names only)",
    )


class CleanupInput(Payload):
    """A finished migration's clean finish (workflows/cleanup.py)."""

    request: MigrationRequest
    migration_id: str
    volumes: list[CleanupVolume] = Field(
        default_factory=list, description="the plan's volumes (plan_cleanup's answer)"
    )


class CleanupPlan(Reply):
    """What the clean finish changes, read before it changes anything."""

    volumes: list[CleanupVolume] = Field(default_factory=list)
    source_statefulset: bool = Field(True, description="the source StatefulSet still exists")
    end: int = Field(0, description="one past the destination's highest ordinal")


class ChildrenInput(Payload):
    """The children of a migration that may exist: ordinal-k and rollback-k, k < end."""

    migration_id: str
    end: int = Field(ge=0)


class CleanupStep(Reply):
    """What one step of the clean finish did to one object."""

    object: str
    action: str = Field(description="e.g. fenced, removed, restored Delete, kept Retain")
    detail: str = ""


class CleanupResult(Reply):
    migration_id: str
    steps: list[CleanupStep] = Field(default_factory=list)
