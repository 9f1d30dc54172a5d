"""A migration's progress everywhere: the query, the UI's current details, search
attributes; and where every ordinal runs at the end (placement)."""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeKey, SearchAttributeUpdate

with workflow.unsafe.imports_passed_through():
    from contract import (
        SEARCH_ATTRIBUTES,
        Plan,
        Progress,
        StatefulSetState,
        plan_ordinals,
        progress_rows,
    )

# Our own workflow code is imported inside the sandbox, so its checks apply to it.
from workflows.options import LEAN_HISTORY


def progress_table(progress: Progress, plan: Plan | None) -> str:
    """The markdown shown as the workflow's current details in the Temporal UI."""
    lines = [f"**phase:** {progress.phase}"]
    if plan is not None:
        lines[0] += (
            f" · {plan.statefulset}: {plan.source_context}/{plan.namespace} → "
            f"{plan.destination_context}/{plan.destination_namespace}"
        )
    if progress.waiting_for_approval is not None:
        lines.append(
            f"\n**waiting for approval of ordinal {progress.waiting_for_approval}** "
            "(signal or update `approve`)"
        )
    if progress.phase == "paused" or (progress.paused and progress.phase != "done"):
        held = (
            "paused" if progress.phase == "paused" else "pause asked, stops at the next safe point"
        )
        lines.append(f"\n**{held}**{': ' + progress.pause_reason if progress.pause_reason else ''}")
    if progress.aborting and progress.phase != "aborted":
        lines.append("\n**aborting** at the next safe point")
    if plan is not None:
        lines += ["", "| ordinal | status | step / seconds |", "|---|---|---|"]
        for row in progress_rows(progress, plan_ordinals(progress, plan)):
            if row.seconds is not None:
                lines.append(f"| {row.ordinal} | {row.status} | {row.seconds:.1f} s |")
            elif row.status == "waiting":
                lines.append(f"| {row.ordinal} | waiting | |")
            else:
                lines.append(f"| {row.ordinal} | {row.status} | {row.step} |")
    return "\n".join(lines)


def placement(source: StatefulSetState, destination: StatefulSetState) -> dict[str, str]:
    """Where every ordinal runs, highest first, from the two StatefulSets' slices."""
    where: dict[int, str] = {}
    for side, state in (("source", source), ("destination", destination)):
        if state.exists:
            for k in range(state.start, state.start + state.replicas):
                where[k] = "both" if k in where else side
    return {str(k): where[k] for k in sorted(where, reverse=True)}


def _key(name: str) -> SearchAttributeKey[Any]:
    kind = SEARCH_ATTRIBUTES[name]
    return (
        SearchAttributeKey.for_int(name) if kind == "Int" else SearchAttributeKey.for_keyword(name)
    )


class ProgressKeeper:
    """Keeps ``progress`` current in the query, the UI's details and the search
    attributes the namespace has registered (the others are left out)."""

    _progress: Progress
    _plan: Plan | None
    _search_attributes: set[str]

    def _update_progress(self, **changes: Any) -> None:
        before = self._progress
        self._progress = before.model_copy(update=changes)
        workflow.set_current_details(progress_table(self._progress, self._plan))
        after = self._progress
        if (before.phase, before.current_ordinal) != (after.phase, after.current_ordinal):
            between = before.phase == after.phase and after.current_ordinal is None
            if between and workflow.patched(LEAN_HISTORY):
                return  # between two ordinals: the next one's upsert says it (one each)
            ordinal = after.current_ordinal
            self._upsert_search_attributes(
                StsmigratePhase=after.phase,
                StsmigrateOrdinal=-1 if ordinal is None else ordinal,
            )

    def _upsert_search_attributes(self, **values: Any) -> None:
        pairs: list[SearchAttributeUpdate[Any]] = [
            _key(name).value_set(value)
            for name, value in values.items()
            if name in self._search_attributes
        ]
        if pairs:
            workflow.upsert_search_attributes(pairs)
