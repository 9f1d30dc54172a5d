"""Activity options and patch ids the migration workflows share.

Temporal owns retries (docs/design.md, invariant I3): retryable errors (API
unavailable, throttled, conflicts) are retried without a count limit, so a
migration stuck on an unreachable cluster waits for it rather than failing
half-way. Non-retryable errors (bad input, conflicting changes, wait timeouts)
fail the activity at once and the workflow decides (a blocked step pauses).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from contract import Hook, Probe, waits_queue

RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))

# Patch id of the check that the giving side still owns its slice before the taking
# side scales up (histories recorded before it have no such activity). Move it to
# workflow.deprecate_patch once no run started before it can still be open (the
# longest migration's retention after the release that added it), then drop it.
SLICE_GUARD = "slice-guard"

# Patch id of keeping the operator's approval policy set before preflight: the request's
# state is set by @workflow.init, and runs started before it reset the policy to the
# request's once the first activity returned (dropping a set_approval sent meanwhile).
KEEP_EARLY_APPROVAL = "keep-early-approval"

# "Never half-moved" (docs/design.md, I4). Patch id of the guarded take: the giver's check,
# the taker's change and the giver's re-read in ONE activity (take_ordinal), in place
# of the two activities of SLICE_GUARD.
GUARDED_TAKE = "guarded-take"

# Patch id of child-to-parent reports that are never lost: the parent applies a report
# that arrives before it has the child's handle, and a blocked child reports again
# (a timer) until the parent acknowledges it by pausing; reports go to the parent's
# workflow id, whatever its run.
LOSSLESS_REPORTS = "lossless-reports"

# Patch id of children that outlive their parent (ParentClosePolicy.ABANDON): a
# terminated, reset or history-limited parent no longer cuts a child mid-step.
CHILDREN_OUTLIVE_PARENT = "children-outlive-parent"

# Patch id of the one-migration-per-StatefulSet lock (lock before the first change,
# unlock at the end).
STATEFULSET_LOCK = "statefulset-lock"

# Patch id of "a request with nothing to move changes nothing": no dependency copy,
# no destination StatefulSet, no retention fix.
NOTHING_TO_MOVE = "nothing-to-move"

# Patch id of abort and rollback of a blocked ordinal: it is put back where it was
# (before, abort was refused and rollback waited for the move to finish).
UNDO_BLOCKED = "undo-blocked"

# Patch id of preflight's look for children a terminated (or reset) run of the same
# migration left running: they still move their ordinal, so the run refuses to start.
ORPHAN_CHECK = "orphan-check"

# Patch id of the app's disruption budget shared by the two clusters: set before each
# ordinal moves or is given back, restored when the run ends.
SHARED_BUDGET = "shared-budget"

# Patch id of an abort (or cancel) that ends the wait for the budget's share (which
# retries while a cluster is unreachable) instead of waiting for it to succeed.
ABORTABLE_SHARE = "abortable-share"

# Patch id of a lean parent history (issue "A thousand ordinals"): the children no
# longer signal every step (the parent's progress names the child, whose ``step`` query
# says where it is; a pause at the child's safe point and a block are still reported),
# each child shares the disruption budget itself as its first step (no activity in the
# parent per ordinal), and the parent upserts its search attributes once per ordinal.
LEAN_HISTORY = "lean-history"

# Patch id of continue-as-new between ordinals: once the run's history passes its bound
# (or the server suggests it), the parent starts afresh with what it must carry.
CONTINUE_AS_NEW = "continue-as-new"

# Patch id of the long steps (waits, health gates, preflight) on a task queue of their
# own (contract.waits_queue), served with slots of their own: a step of one round trip
# never queues behind waits (worker.py). The queue is an attribute of the activity's
# command, not a command of its own; the patch keeps every step a history recorded
# before it scheduled on the queue it used there, and the marker says why it differs.
WAITS_QUEUE = "waits-queue"

# Every patch id in use: a history's patch markers name only these.
# Patch id of parallel moves: with max_unavailable d > 1, up to d ordinals, highest
# first, are handed over together by one child (a block), within the app's budget.
PARALLEL_MOVES = "parallel-moves"
# Patch id of the clean finish: a request with cleanup runs CleanupMigration as the
# run's last child (no request recorded before the field existed asks for it).
CLEAN_FINISH = "clean-finish"

# Patch id of the request's hooks (before_give_up, after_take): reached only by a request
# with hooks, which no history recorded before the field existed can hold.
HOOKS = "hooks"

PATCHES = (
    SLICE_GUARD,
    KEEP_EARLY_APPROVAL,
    GUARDED_TAKE,
    LOSSLESS_REPORTS,
    CHILDREN_OUTLIVE_PARENT,
    STATEFULSET_LOCK,
    NOTHING_TO_MOVE,
    UNDO_BLOCKED,
    ORPHAN_CHECK,
    SHARED_BUDGET,
    ABORTABLE_SHARE,
    LEAN_HISTORY,
    CONTINUE_AS_NEW,
    WAITS_QUEUE,
    PARALLEL_MOVES,
    CLEAN_FINISH,
    HOOKS,
)

# A dead worker is noticed after this long without a heartbeat, and another worker
# retries the step (after RETRY's first interval, 1 s): the cost of a worker crash to
# an identity that is down. Every running activity heartbeats every second from the
# worker's event loop (activities/liveness.py), so 4 s leaves three beats to a
# loaded worker or server before a false timeout. Timeouts are attributes of an
# activity's command, not commands: replay compares the commands' kinds, activity
# ids and types, so changing them needs no workflow.patched (tests/test_replay.py).
HEARTBEAT = timedelta(seconds=4)

# Every option set takes the activity's summary (shown in the UI's timeline): it is
# part of workflow.ActivityConfig, so it travels with the options.


def quick(summary: str) -> workflow.ActivityConfig:
    """A single API round trip (or a few). The heartbeat timeout, not the run's, notices
    a dead worker, so the retry starts a few seconds after a crash."""
    return {
        "start_to_close_timeout": timedelta(seconds=30),
        "heartbeat_timeout": HEARTBEAT,
        "retry_policy": RETRY,
        "summary": summary,
    }


def sweep(summary: str) -> workflow.ActivityConfig:
    """A step over every moved volume (a few requests each): quick's, with time for a
    thousand of them; it heartbeats, so a dead worker is still noticed in seconds."""
    return {**quick(summary), "start_to_close_timeout": timedelta(minutes=10)}


def _on_waits_queue(options: workflow.ActivityConfig) -> workflow.ActivityConfig:
    """A long step, on the waits' task queue (patch WAITS_QUEUE): it holds a slot of
    the waits for its whole run, never one of the quick steps'."""
    if workflow.patched(WAITS_QUEUE):
        return {**options, "task_queue": waits_queue(workflow.info().task_queue)}
    return options


def best_effort(summary: str, tries: int = 3) -> workflow.ActivityConfig:
    """A step on the way out of a run (a read when it fails, the unlock): a few tries, so
    the run still ends when a cluster is unreachable."""
    return {
        "start_to_close_timeout": timedelta(seconds=30),
        "retry_policy": RetryPolicy(
            initial_interval=timedelta(seconds=1),
            maximum_interval=timedelta(seconds=30),
            maximum_attempts=tries,
        ),
        "summary": summary,
    }


def preflight(summary: str) -> workflow.ActivityConfig:
    """Preflight reads both clusters and heartbeats while it does."""
    return _on_waits_queue(
        {
            "start_to_close_timeout": timedelta(minutes=2),
            "heartbeat_timeout": timedelta(seconds=15),
            "retry_policy": RETRY,
            "summary": summary,
        }
    )


def wait_options(seconds: int, summary: str) -> workflow.ActivityConfig:
    """A watch-based wait of at most ``seconds``, on the waits' queue: a dead worker
    is noticed after the heartbeat timeout, not the wait's."""
    return _on_waits_queue(
        {
            "start_to_close_timeout": timedelta(seconds=seconds + 60),
            "heartbeat_timeout": HEARTBEAT,
            "retry_policy": RETRY,
            "summary": summary,
        }
    )


def probe_options(probes: list[Probe], summary: str) -> workflow.ActivityConfig:
    """The health gates: every attempt of every probe fits in the timeout, and the
    heartbeat allows the slowest single attempt twice over."""
    budget = sum((p.timeout + p.interval) * (p.retries + 1) + p.soak for p in probes)
    slowest = max(p.timeout + p.interval for p in probes)
    return _on_waits_queue(
        {
            "start_to_close_timeout": timedelta(seconds=budget + 60),
            "heartbeat_timeout": timedelta(seconds=max(30, 2 * slowest)),
            "retry_policy": RETRY,
            "summary": summary,
        }
    )


def hook_options(hook: Hook, summary: str, wait_cancel: bool = False) -> workflow.ActivityConfig:
    """One hook: each attempt within the hook's timeout (and a minute for the exec's
    set-up), ``retries`` more attempts ``interval`` apart; the last failure pauses the
    run (workflows/handover.py). The heartbeat notices a dead worker in seconds.
    ``wait_cancel``: a cancel (an abort) waits until the attempt has stopped, so the
    run does not end while the worker still runs it."""
    extra: workflow.ActivityConfig = (
        {"cancellation_type": ActivityCancellationType.WAIT_CANCELLATION_COMPLETED}
        if wait_cancel
        else {}
    )
    return _on_waits_queue(
        {
            **extra,
            "start_to_close_timeout": timedelta(seconds=hook.timeout + 60),
            "heartbeat_timeout": HEARTBEAT,
            "retry_policy": RetryPolicy(
                initial_interval=timedelta(seconds=hook.interval),
                backoff_coefficient=1.0,
                maximum_attempts=hook.retries + 1,
            ),
            "summary": summary,
        }
    )
