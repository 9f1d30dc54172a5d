"""Where a migration is and what it did: progress, step timings, results."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, NamedTuple, get_args

from pydantic import Field

from contract.activity_io import CleanupResult, HealthReport, StatefulSetState
from contract.base import Payload, Reply
from contract.operator import Control
from contract.plan import Dependency, Plan
from contract.request import ApprovalPolicy

# The steps of one ordinal, in the order they run: the one list the workflow, the
# activity reports, the CLI, the UI table and the tests name. A move runs MOVE_STEPS
# (health_gates only when probes are configured, before_give_up and after_take only
# with hooks); a rollback runs ROLLBACK_STEPS:
# the same hand-over with the two sides swapped (docs/design.md, "The hand-over").
# Payload fields hold them as plain strings, so a client older than the worker
# still reads a progress with a step added since.
Step = Literal[
    "slices_healthy",
    "before_give_up",
    "volumes_retained",
    "source_scaled_down",
    "source_pod_gone",
    "source_claims_released",
    "volumes_imported",
    "claims_bound",
    "destination_scaled_up",
    "destination_pod_ready",
    "after_take",
    "health_gates",
    "destination_scaled_down",
    "destination_pod_gone",
    "destination_claims_released",
    "volumes_reclaimed",
    "source_scaled_up",
    "source_pod_ready",
]
STEPS: tuple[Step, ...] = get_args(Step)
MOVE_STEPS: tuple[Step, ...] = STEPS[:12]
ROLLBACK_STEPS: tuple[Step, ...] = (
    "before_give_up",
    "destination_scaled_down",
    "destination_pod_gone",
    "destination_claims_released",
    "volumes_reclaimed",
    "claims_bound",
    "source_scaled_up",
    "source_pod_ready",
    "after_take",
)
# Reported in place of a step while the child waits out a pause at its safe point.
PAUSED_AT_SAFE_POINT = "paused"


class StepTiming(Reply):
    step: str
    seconds: float


class OrdinalResult(Reply):
    ordinal: int
    moved: bool = Field(True, description="false: aborted before the source gave it up, or undone")
    undone: bool = Field(
        False, description="blocked after the giver gave it up, then put back where it was"
    )
    health: HealthReport | None = Field(None, description="the health gates, when any ran")
    steps: list[StepTiming] = Field(default_factory=list)
    volumes: list[str] = Field(default_factory=list)
    original_reclaim_policies: dict[str, str] = Field(default_factory=dict)
    seconds: float = 0.0
    together: list[OrdinalResult] = Field(
        default_factory=list,
        description="the ordinals below this one handed over in the same block "
        "(max_unavailable > 1), highest first; the block's step timings are this one's",
    )

    def block(self) -> list[OrdinalResult]:
        """This ordinal and those moved with it, highest first."""
        return [self.model_copy(update={"together": []}), *self.together]


class MigrationResult(Reply):
    migration_id: str
    dry_run: bool = False
    plan: Plan | None = Field(None, description="a dry run's plan (a run's: its plan query)")
    moved: list[OrdinalResult] = Field(
        default_factory=list, description="without step timings (each child's result has them)"
    )
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
    cleanup: CleanupResult | None = Field(None, description="the clean finish, when it ran")
    cleanup_skipped: str = Field(
        "", description="why the requested clean finish did not run (an abort, say)"
    )


Phase = Literal[
    "starting",
    "preflight",
    "preparing",
    "moving",
    "paused",
    "awaiting_approval",
    "rolling_back",
    "cleaning_up",
    "done",
    "aborted",
    "cancelled",
    "failed",
]


class Progress(Reply):
    """Where a migration is (the ``progress`` query of MigrateStatefulSet)."""

    phase: Phase = "starting"
    run: int = Field(1, description="which run of the migration (it continues as new)")
    current_ordinal: int | None = None
    moving_together: list[int] = Field(
        default_factory=list,
        description="the ordinals below current_ordinal in flight in the same block "
        "(max_unavailable > 1)",
    )
    step: str | None = Field(
        None,
        description="step of the current ordinal (the API and CLI ask the child when the "
        "parent does not know it)",
    )
    child: str | None = Field(None, description="workflow id of the child moving current_ordinal")
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
    error: str = Field("", description="why the run failed (phase failed)")
    placement: dict[str, str] = Field(
        default_factory=dict, description="where every ordinal runs, read when the run ended"
    )


class Ack(Reply):
    """The reply of an accepted operator update: small and of constant size, as each
    reply is kept in the history (the ``progress`` query has the detail). Its fields
    are named as the progress's, so a client that reads it as a Progress still can."""

    message: str = Field(description="the operator message accepted")
    phase: Phase
    current_ordinal: int | None = None
    waiting_for_approval: int | None = None
    approval: ApprovalPolicy = ApprovalPolicy()
    approved_ordinal: int | None = Field(None, description="the ordinal this approve let go")
    approve_all: bool = False
    paused: bool = False
    pause_reason: str = ""
    aborting: bool = False
    abort_reason: str = ""
    rollback: Literal["", "ordinal", "all"] = ""
    blocked: str = ""

    @classmethod
    def of(cls, message: str, progress: Progress, approved: int | None = None) -> Ack:
        fields = set(cls.model_fields) - {"message", "approved_ordinal"}
        return cls(
            message=message,
            approved_ordinal=approved,
            **{name: getattr(progress, name) for name in fields},
        )


class Carried(Payload):
    """What a run of a migration hands the next when it continues as new (between two
    ordinals, nothing in flight). The plan is not carried: the next run plans again from
    the clusters, which say what is moved and what remains."""

    run: int = Field(description="the number of the run that continued")
    begun: datetime
    first: int | None = Field(description="the migration's first ordinal (approval 'first')")
    control: Control
    approval: ApprovalPolicy
    approved: list[int] = Field(default_factory=list)
    approve_all: bool = False
    rolled_back: list[int] = Field(default_factory=list)
    finished: list[OrdinalResult] = Field(default_factory=list, description="without step timings")
    moved: list[int] = Field(
        default_factory=list, description="moved by earlier runs of this migration, in order"
    )
    stack: list[int] = Field(
        default_factory=list,
        description="the rollback stack, newest last (what this migration moved, and what "
        "the destination held from an earlier migration run when it began)",
    )
    remaining: list[int] = Field(default_factory=list, description="highest first")
    dependencies: list[Dependency] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


class ProgressRow(NamedTuple):
    """One ordinal's line in the progress table (the UI's details and the CLI's)."""

    ordinal: int
    status: str  # moved, stayed, waiting, or the phase of the ordinal being moved
    seconds: float | None  # how long it took, once finished
    step: str  # the step of the ordinal being moved


def plan_ordinals(progress: Progress, plan: Plan | None) -> list[int]:
    """The ordinals of the migration, highest first: the plan's, with those finished and
    remaining (a run that continued an earlier one plans only what is left to move)."""
    planned = {o.ordinal for o in plan.ordinals} if plan is not None else set()
    done = {r.ordinal for r in progress.finished}
    return sorted({*planned, *done, *progress.remaining}, reverse=True)


def progress_rows(progress: Progress, ordinals: list[int]) -> list[ProgressRow]:
    done = {r.ordinal: r for r in progress.finished}
    rows = []
    for k in ordinals:
        if k in done:
            rows.append(ProgressRow(k, "moved" if done[k].moved else "stayed", done[k].seconds, ""))
        elif k == progress.current_ordinal or k in progress.moving_together:
            rows.append(ProgressRow(k, progress.phase, None, progress.step or ""))
        else:
            rows.append(ProgressRow(k, "waiting", None, ""))
    return rows
