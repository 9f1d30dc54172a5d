"""Operator messages (signals and updates of MigrateStatefulSet, one name each) and
the control the parent forwards to the moving child."""

from __future__ import annotations

from pydantic import Field, model_validator

from contract.base import Payload


class Control(Payload):
    """What the operator asked of a running migration; the parent forwards it to the
    ordinal being moved (signal ``control`` of MigrateOrdinal), latest wins."""

    paused: bool = False
    aborting: bool = False
    resumes: int = Field(0, description="how many times the operator resumed")
    undo: bool = Field(
        False,
        description="put the blocked ordinal back where it was (abort or rollback of a "
        "blocked step, or a cancel): the reverse of exactly the steps already done",
    )


class StepReport(Payload):
    """MigrateOrdinal tells its parent which step it is in (signal ``ordinal_step``)."""

    ordinal: int
    step: str
    detail: str = Field("", description="why the step is blocked (signal ordinal_blocked)")
    resumes: int | None = Field(
        None, description="the resumes the child had seen when it blocked (stale if fewer)"
    )


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
