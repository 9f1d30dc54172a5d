"""Typed Python API: start a migration and drive it from your own code.

    from stsmigrate.api import MigrationRequest, connect, run, start_migration

    async def main() -> None:
        client = await connect()  # TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, ... like the CLI
        migration = await start_migration(
            client,
            MigrationRequest(statefulset="redis", namespace="shop",
                             source_context="prod-a", destination_context="prod-b"),
        )
        print((await migration.progress()).phase)
        print((await migration.result()).placement)

    run(main())  # asyncio.run(main()), then exit without the SDK's teardown crash

Every function speaks the payload models of ``contract``; operator
messages are Temporal updates, so a call returns once the workflow accepted it, and
raises ``Rejected`` (with the workflow's reason) when its validator refused it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Coroutine, Mapping
from datetime import timedelta
from typing import Any, NoReturn

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.envconfig import ClientConfig
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from contract import (
    TASK_QUEUE,
    AbortRequest,
    Ack,
    ApprovalPolicy,
    ApproveRequest,
    CleanupInput,
    CleanupResult,
    MigrationRequest,
    MigrationResult,
    PauseRequest,
    Plan,
    Progress,
    RollbackRequest,
    WaitTimeouts,
    cleanup_workflow_id,
    default_migration_id,
)
from stsmigrate.codec import codec_from_env, data_converter
from stsmigrate.describe import request_of

__all__ = [
    "TASK_QUEUE",
    "AbortRequest",
    "Ack",
    "ApprovalPolicy",
    "ApproveRequest",
    "CleanupResult",
    "Migration",
    "MigrationRequest",
    "MigrationResult",
    "PauseRequest",
    "Plan",
    "Progress",
    "Rejected",
    "RollbackRequest",
    "StillRunning",
    "WaitTimeouts",
    "connect",
    "default_migration_id",
    "exit_now",
    "get_migration",
    "run",
    "start_migration",
]

WORKFLOW = "MigrateStatefulSet"
CLEANUP_WORKFLOW = "CleanupMigration"


class Rejected(Exception):
    """The workflow refused an operator message: its update validator said why (an
    ApplicationError of type ``contract.errors.REJECTED``)."""


class StillRunning(Exception):
    """The migration still runs: its clean finish waits until it has ended."""


async def connect(env: Mapping[str, str] | None = None, **overrides: Any) -> Client:
    """A client configured like the Temporal CLI (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
    TEMPORAL_API_KEY, TEMPORAL_TLS_*, TEMPORAL_PROFILE, the CLI's config file), with
    the pydantic data converter every migration payload needs, encrypting payloads
    when STSMIGRATE_CODEC_KEY or STSMIGRATE_CODEC_KEY_FILE is set."""
    env = dict(os.environ if env is None else env)
    config = ClientConfig.load_client_connect_config(override_env_vars=env)
    converter = data_converter(codec_from_env(env))
    return await Client.connect(**{**config, **overrides, "data_converter": converter})


def run(
    main: Coroutine[Any, Any, int | None], *, propagate: tuple[type[BaseException], ...] = ()
) -> NoReturn:
    """Run ``main`` like ``asyncio.run`` and end the process with its exit code
    (None: 0; an exception: its traceback and 1; Ctrl-C: 130). An exception of a
    type in ``propagate`` is raised instead, and the process goes on (the
    ``stsmigrate`` command hands usage errors back to click that way).

    Make it the last line of a script that talks to Temporal. When the interpreter
    tears down, the SDK's Rust threads can still be calling into Python; that aborts
    a script that has finished its work with SIGABRT ("PyGILState_Release: thread
    state ... must be current", temporalio/sdk-python#300) or SIGSEGV.
    ``devenv/exit_check.py`` measures how often. ``run`` ends the process with
    ``exit_now`` instead: output and logging are flushed, atexit handlers do not run.
    """
    try:
        code = asyncio.run(main) or 0
    except propagate:
        raise
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
        if not isinstance(stop.code, int | None):
            print(stop.code, file=sys.stderr)
    except KeyboardInterrupt:
        code = 130
    except BaseException:
        traceback.print_exc()
        code = 1
    exit_now(code)


def exit_now(code: int) -> NoReturn:
    """Flush standard output, standard error and logging, then ``os._exit(code)``:
    the process ends without the interpreter teardown that sdk-python#300 breaks."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed or broken pipe
            stream.flush()
    os._exit(code)


def summary(request: MigrationRequest) -> str:
    """The one-line static summary the Temporal UI shows for a migration."""
    return (
        f"move StatefulSet {request.namespace}/{request.statefulset} from "
        f"{request.source_context} to {request.destination_context}/{request.target_namespace}"
    )


def details(request: MigrationRequest) -> str:
    """The static details (markdown) shown under the summary."""
    approval = request.approval
    classes = ", ".join(f"{a} → {b}" for a, b in request.storage_class_mapping.items())
    rows = [
        ("StatefulSet", f"{request.namespace}/{request.statefulset}"),
        ("from", request.source_context),
        ("to", f"{request.destination_context} (namespace {request.target_namespace})"),
        ("approval", approval.mode + (f" {approval.ordinals}" if approval.ordinals else "")),
        ("stop at ordinal", "none" if request.stop_at_ordinal is None else request.stop_at_ordinal),
        ("storage classes", classes or "unchanged"),
        ("dry run", "yes" if request.dry_run else "no"),
    ]
    return "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


async def start_migration(
    client: Client,
    request: MigrationRequest,
    *,
    migration_id: str | None = None,
    task_queue: str | None = None,
) -> Migration:
    """Start ``request``; the id defaults to ``stsmigrate/<source>/<namespace>/<name>``,
    so a second start for a StatefulSet that is still migrating fails at once. The
    task queue defaults to $STSMIGRATE_TASK_QUEUE, then ``statefulset-migration``."""
    handle = await client.start_workflow(
        WORKFLOW,
        request,
        id=migration_id or default_migration_id(request),
        task_queue=task_queue or os.environ.get("STSMIGRATE_TASK_QUEUE", TASK_QUEUE),
        result_type=MigrationResult,
        static_summary=summary(request),
        static_details=details(request),
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
    )
    # Not bound to the first run: a migration continues as new between ordinals, and
    # queries, signals and updates go to its newest run; bound to this migration's first
    # run, so a result or cancel never reaches a later migration of the same id.
    chain = client.get_workflow_handle(
        handle.id,
        first_execution_run_id=handle.first_execution_run_id,
        result_type=MigrationResult,
    )
    return Migration(chain, client)


async def start_cleanup(
    client: Client, migration_id: str, *, task_queue: str | None = None
) -> WorkflowHandle[Any, CleanupResult]:
    """Start the clean finish (CleanupMigration, ``<migration id>/cleanup``) of a
    migration that has ended, with the request it was started with. The workflow
    itself refuses, changing nothing, while anything still runs in the source."""
    described = await client.get_workflow_handle(migration_id).describe()
    if described.status == WorkflowExecutionStatus.RUNNING:
        raise StillRunning(
            f"migration {migration_id} is still running: its clean finish waits until it has "
            "ended (a request with cleanup: true runs it as its last step)"
        )
    request = await request_of(client, migration_id)
    return await client.start_workflow(
        CLEANUP_WORKFLOW,
        CleanupInput(request=request, migration_id=migration_id),
        id=cleanup_workflow_id(migration_id),
        task_queue=task_queue or os.environ.get("STSMIGRATE_TASK_QUEUE", TASK_QUEUE),
        result_type=CleanupResult,
        static_summary=f"clean finish of {migration_id}",
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
    )


def get_migration(client: Client, migration_id: str) -> Migration:
    """A handle on a migration started earlier (by anyone: CLI, UI, this API)."""
    handle = client.get_workflow_handle(migration_id, result_type=MigrationResult)
    return Migration(handle, client)


class Migration:
    """One migration (a MigrateStatefulSet workflow and the runs it continues as)."""

    def __init__(self, handle: WorkflowHandle[Any, MigrationResult], client: Client) -> None:
        self.handle = handle
        self.client = client

    @property
    def id(self) -> str:
        return self.handle.id

    async def progress(self, *, rpc_timeout: timedelta | None = None) -> Progress:
        """The parent's progress; the step of the ordinal in flight from its child (a
        lean history has no report per step), when the child answers."""
        progress = await self.handle.query(
            "progress", result_type=Progress, rpc_timeout=rpc_timeout
        )
        if progress.child is None:
            return progress
        child = self.client.get_workflow_handle(progress.child)
        with contextlib.suppress(RPCError, WorkflowQueryFailedError):
            step = await child.query(
                "step",
                result_type=str | None,  # type: ignore[arg-type]
                rpc_timeout=timedelta(seconds=5),
            )
            if step is not None:
                progress = progress.model_copy(update={"step": step})
        return progress

    async def plan(self) -> Plan | None:
        return await self.handle.query("plan", result_type=Plan | None)  # type: ignore[arg-type]

    async def status(self) -> WorkflowExecutionStatus | None:
        return (await self.handle.describe()).status

    async def result(self) -> MigrationResult:
        return await self.handle.result()

    async def pause(self, reason: str = "") -> Ack:
        return await self.update("pause", PauseRequest(reason=reason))

    async def resume(self) -> Ack:
        return await self.update("resume")

    async def approve(self, ordinal: int | None = None, *, all: bool = False) -> Ack:
        """Approve the next ordinal; ``ordinal`` insists on which one; ``all`` approves
        every ordinal that remains."""
        return await self.update("approve", ApproveRequest(ordinal=ordinal, all=all))

    async def abort(self, reason: str = "") -> Ack:
        return await self.update("abort", AbortRequest(reason=reason))

    async def rollback(self, *, all: bool = False, reason: str = "") -> Ack:
        """Give the last moved ordinal (``all``: every ordinal this run moved) back to
        the source at the next safe point; the run then pauses (``all``: ends)."""
        return await self.update("rollback", RollbackRequest(all=all, reason=reason))

    async def set_approval(self, policy: ApprovalPolicy) -> Ack:
        return await self.update("set_approval", policy)

    async def wait_until(
        self, condition: Callable[[Progress], bool], *, within: float = 600, poll: float = 0.5
    ) -> Progress:
        """Poll ``progress`` until ``condition`` holds; TimeoutError after ``within`` s."""
        deadline = time.monotonic() + within
        while True:
            try:
                progress = await self.progress()
            except (RPCError, WorkflowQueryFailedError):
                # A run that just continued as new answers once its first task is done.
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(poll)
                continue
            if condition(progress):
                return progress
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.id}: still {progress.phase} after {within} s")
            await asyncio.sleep(poll)

    async def signal(self, name: str, arg: Any = None) -> None:
        """Send an operator message as a signal: no answer, queued while no worker runs;
        a message that makes no sense is logged and ignored by the workflow."""
        await self.handle.signal(name, *([] if arg is None else [arg]))

    async def update(self, name: str, arg: Any = None) -> Ack:
        """Send an operator message (pause, resume, approve, abort, set_approval,
        rollback) as an update; returns its acknowledgement (phase, pause and abort,
        the approval) once accepted, raises Rejected otherwise; ``progress()`` has the
        detail."""
        try:
            args = [] if arg is None else [arg]
            return await self.handle.execute_update(name, args=args, result_type=Ack)
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError):
                raise Rejected(f"{name} rejected: {cause.message}") from None
            raise
        except RPCError as err:
            if "already completed" in err.message:
                raise Rejected(f"{name} rejected: the migration {self.id} has ended") from None
            raise
