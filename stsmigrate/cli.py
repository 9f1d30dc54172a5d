"""The ``stsmigrate`` command: plan, start, follow and steer migrations.

Built on click (arguments, help, errors), PyYAML (request files) and rich (tables
and the live progress display). The Temporal connection comes from the
environment exactly as for the Temporal CLI (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
TEMPORAL_API_KEY, TEMPORAL_TLS_*, TEMPORAL_PROFILE and its config file).

The same commands run as the kubectl plugin ``kubectl stsmigrate`` (the executable
``kubectl-stsmigrate``, ``kubectl_main``), which takes the source context and namespace
from the kubeconfig as kubectl does when they are left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sys
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar, get_args

import click
import yaml
from pydantic import TypeAdapter, ValidationError
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowQueryFailedError,
)
from temporalio.exceptions import (
    ApplicationError,
    CancelledError,
    FailureError,
    WorkflowAlreadyStartedError,
)
from temporalio.service import RPCError

from activities.permissions import render_rbac
from contract import Phase, plan_ordinals, progress_rows
from contract.errors import PREFLIGHT_FAILED
from stsmigrate.api import (
    TASK_QUEUE,
    AbortRequest,
    ApprovalPolicy,
    ApproveRequest,
    Migration,
    MigrationRequest,
    MigrationResult,
    PauseRequest,
    Plan,
    Progress,
    Rejected,
    RollbackRequest,
    StillRunning,
    connect,
    default_migration_id,
    get_migration,
    run,
    start_cleanup,
    start_migration,
)
from stsmigrate.codec import (
    TOKEN_ENV,
    TOKEN_FILE_ENV,
    CodecKeyError,
    CodecServer,
    codec_from_env,
    is_loopback,
    new_key,
    server_token_from_env,
)
from stsmigrate.describe import (
    Listed,
    describe_migration,
    list_migrations,
    list_query,
    ui_link,
)
from stsmigrate.views import cleanup_table, describe_view, list_view

T = TypeVar("T")
# The name kubectl runs this command by: ``kubectl stsmigrate`` finds the executable
# ``kubectl-stsmigrate`` on PATH (https://kubernetes.io/docs/tasks/extend-kubectl/kubectl-plugins/).
KUBECTL_PLUGIN = "kubectl stsmigrate"
LISTED = TypeAdapter(list[Listed])
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def run_async(fn: Callable[..., Coroutine[Any, Any, int | None]]) -> Callable[..., None]:
    """Run an async command through ``stsmigrate.api.run`` (the process ends without
    the interpreter teardown that temporalio/sdk-python#300 breaks); turn the errors
    a user can act on into one clear line.

    What click itself handles goes back to click as usual: usage errors (e.g. a bad
    request found before connecting: its message, exit code 2) and a closed output
    pipe (exit code 1, no traceback).
    """

    async def guarded(*args: Any, **kwargs: Any) -> int:
        try:
            return await fn(*args, **kwargs) or 0
        except (Rejected, StillRunning) as e:
            err.print(f"[red]error:[/] {e}")
            return 2
        except WorkflowAlreadyStartedError as e:
            err.print(
                f"[red]error:[/] clean finish {e.workflow_id} is already running; see: "
                f"temporal workflow describe --workflow-id {e.workflow_id}"
                if e.workflow_id.endswith("/cleanup")
                else f"[red]error:[/] migration {e.workflow_id} is already running; "
                f"see: stsmigrate status {e.workflow_id}"
            )
            return 1
        except RPCError as e:
            err.print(f"[red]error:[/] Temporal: {e.message}")
            return 1
        except RuntimeError as e:  # e.g. connection refused while connecting
            err.print(f"[red]error:[/] {e}")
            return 1

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        run(guarded(*args, **kwargs), propagate=(click.ClickException, BrokenPipeError))

    return wrapper


# -- request from flags and/or a YAML file ---------------------------------------------


def request_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "-f",
            "--file",
            "file",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="YAML (or JSON) file with MigrationRequest fields; flags override it",
        ),
        click.option("-s", "--statefulset", help="the StatefulSet to move"),
        click.option(
            "-n",
            "--namespace",
            help="its namespace in the source (kubectl stsmigrate: default the context's)",
        ),
        click.option(
            "--from",
            "--context",
            "source_context",
            help="source kubeconfig context (kubectl stsmigrate: default the current one)",
        ),
        click.option("--to", "destination_context", help="destination kubeconfig context"),
        click.option(
            "--to-namespace",
            "destination_namespace",
            help="namespace in the destination (default: the same)",
        ),
        click.option(
            "--storage-class",
            "storage_class_mapping",
            multiple=True,
            metavar="SRC=DST",
            help="map a storage class (repeatable)",
        ),
        click.option("--stop-at-ordinal", type=int, help="lowest ordinal to move"),
        click.option(
            "--max-unavailable",
            type=int,
            help="ordinals moved at once, in blocks (default 1; within the app's PDB)",
        ),
        click.option(
            "--fix-retention-policy",
            is_flag=True,
            default=None,
            help="set whenScaled to Retain instead of refusing",
        ),
        click.option(
            "--approval",
            "approval_mode",
            type=click.Choice(["none", "first", "each", "ordinals"]),
            help="which ordinals wait for `stsmigrate approve`",
        ),
        click.option("--approve-ordinals", help='for --approval ordinals: e.g. "5,3"'),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def kubectl_defaults(kubeconfig: str | None = None) -> dict[str, str]:
    """What kubectl would take when --context and -n are left out: the kubeconfig's
    current context (KUBECONFIG, else ~/.kube/config) and that context's namespace
    ("default" when it names none). Only names are read, never credentials; nothing
    when there is no kubeconfig or no current context."""
    from kubernetes.config import ConfigException, list_kube_config_contexts

    path = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
    try:
        _, current = list_kube_config_contexts(config_file=path)
    except (ConfigException, OSError):
        return {}
    if not current:
        return {}
    namespace = (current.get("context") or {}).get("namespace") or "default"
    return {"source_context": current["name"], "namespace": namespace}


def as_kubectl_plugin() -> bool:
    """Run as ``kubectl stsmigrate`` (the kubectl-stsmigrate executable)."""
    ctx = click.get_current_context(silent=True)
    return ctx is not None and ctx.find_root().info_name == KUBECTL_PLUGIN


def build_request(
    file: Path | None, *, defaults: dict[str, str] | None = None, **flags: Any
) -> MigrationRequest:
    """The request of -f FILE and the flags (flags win); ``defaults`` fill what both
    leave out (kubectl's current context and namespace for the plugin)."""
    fields: dict[str, Any] = dict(defaults or {})
    if file is not None:
        try:
            loaded = yaml.safe_load(file.read_text())
        except yaml.YAMLError as e:
            raise click.BadParameter(f"{file} is not valid YAML: {e}", param_hint="-f") from None
        if not isinstance(loaded, dict):
            raise click.BadParameter(
                f"{file} must hold a mapping of request fields", param_hint="-f"
            )
        fields.update(loaded)
    mapping = flags.pop("storage_class_mapping")
    if mapping:
        pairs = [m.split("=", 1) for m in mapping]
        if any(len(p) != 2 or not all(p) for p in pairs):
            raise click.BadParameter("use SRC=DST", param_hint="--storage-class")
        fields["storage_class_mapping"] = {**fields.get("storage_class_mapping", {}), **dict(pairs)}
    mode, listed = flags.pop("approval_mode"), flags.pop("approve_ordinals")
    if mode or listed:
        try:
            ordinals = [int(k) for k in listed.split(",")] if listed else []
        except ValueError:
            raise click.BadParameter(
                "a comma-separated list of ordinals", param_hint="--approve-ordinals"
            ) from None
        fields["approval"] = {"mode": mode or "ordinals", "ordinals": ordinals}
    fields.update({k: v for k, v in flags.items() if v is not None})
    try:
        return MigrationRequest.model_validate(fields)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in x['loc']) or 'request'}: {x['msg']}" for x in e.errors()
        )
        raise click.UsageError(f"invalid request: {problems}") from None


# -- rendering -------------------------------------------------------------------------


def plan_view(plan: Plan) -> Group:
    head = Text.assemble(
        ("plan ", "bold"),
        f"{plan.namespace}/{plan.statefulset}: {plan.source_context} (ordinals "
        f"[{plan.source_start}, {plan.source_start + plan.source_replicas})) -> "
        f"{plan.destination_context}/{plan.destination_namespace}",
    )
    steps = Table("#", "step", "detail", title="steps", title_justify="left")
    n = 0

    def step(name: str, detail: str) -> None:
        nonlocal n
        n += 1
        steps.add_row(str(n), name, detail)

    if plan.fix_retention_policy:
        step("retention policy", "source whenScaled Delete -> Retain")
    step(
        "destination StatefulSet",
        "exists; takes ordinals one by one"
        if plan.destination_exists
        else f"create owning the empty slice [{plan.end}, {plan.end})",
    )
    for change in plan.destination_overrides:
        step("pod template override", change)
    copies = [f"{d.kind} {d.name}" for d in plan.dependencies if d.action == "copy"]
    step("dependencies", "copy " + ", ".join(copies) if copies else "all present")
    for o in plan.ordinals:
        vols = ", ".join(f"{v.claim} ({v.size or '?'}, {v.storage or v.volume})" for v in o.volumes)
        step(f"move {o.pod}", vols or "no volumes")
    parts: list[Any] = [head, steps]
    if plan.warnings:
        parts.append(Text("warnings:", style="yellow bold"))
        parts += [Text(f"  - {w}", style="yellow") for w in plan.warnings]
    if plan.problems:
        parts.append(Text(f"{len(plan.problems)} blocking problem(s):", style="red bold"))
        for p in plan.problems:
            parts.append(Text(f"  - {p.object}: {p.message}\n    fix: {p.fix}", style="red"))
    return Group(*parts)


def progress_view(migration_id: str, progress: Progress, plan: Plan | None) -> Group:
    total = len(plan_ordinals(progress, plan))
    moved = [r for r in progress.finished if r.moved]
    head = Text.assemble(
        (f"{migration_id}", "bold"),
        "  phase: ",
        (progress.phase, "cyan bold"),
        f"  ordinals moved: {len(moved)}/{total}",
        f"  (run {progress.run})" if progress.run > 1 else "",
    )
    parts: list[Any] = [head]
    if progress.current_ordinal is not None:
        parts.append(
            Text(
                f"current: ordinal {progress.current_ordinal}"
                + (f" (with {progress.moving_together})" if progress.moving_together else "")
                + f", step: {progress.step or '-'}"
            )
        )
    if progress.waiting_for_approval is not None:
        parts.append(
            Text(
                f"waiting for approval of ordinal {progress.waiting_for_approval}: "
                f"stsmigrate approve {migration_id}",
                style="yellow bold",
            )
        )
    if progress.phase == "paused":
        reason = f" ({progress.pause_reason})" if progress.pause_reason else ""
        parts.append(Text(f"paused{reason}: stsmigrate resume {migration_id}", style="yellow bold"))
    elif progress.paused:
        parts.append(Text("pause asked: stops at the next safe point", style="yellow"))
    if progress.aborting and progress.phase != "aborted":
        parts.append(Text("aborting at the next safe point", style="red"))
    table = Table("ordinal", "status", "seconds / step")
    for row in progress_rows(progress, plan_ordinals(progress, plan)):
        detail = f"{row.seconds:.1f}" if row.seconds is not None else row.step
        table.add_row(str(row.ordinal), row.status, detail)
    parts.append(table)
    parts += [Text(f"warning: {w}", style="yellow") for w in progress.warnings]
    return Group(*parts)


def result_view(result: MigrationResult) -> Group:
    state = "aborted" if result.aborted else ("dry run" if result.dry_run else "done")
    reason = f" ({result.abort_reason})" if result.abort_reason else ""
    table = Table("ordinal", "runs in")
    for k, side in result.placement.items():
        table.add_row(k, side)
    parts: list[Any] = [
        Text(
            f"{result.migration_id}: {state}{reason}, {len(result.moved)} ordinal(s) moved "
            f"in {result.seconds:.1f} s",
            style="bold",
        ),
        table,
    ]
    if result.cleanup is not None:
        parts.append(cleanup_table(result.cleanup))
    if result.cleanup_skipped:
        parts.append(Text(f"no clean finish: {result.cleanup_skipped}", style="yellow"))
    return Group(*parts)


# -- commands --------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--task-queue",
    envvar="STSMIGRATE_TASK_QUEUE",
    default=TASK_QUEUE,
    show_default=True,
    help="task queue of the workers (env STSMIGRATE_TASK_QUEUE)",
)
@click.option(
    "--ui",
    "ui_url",
    envvar="STSMIGRATE_UI_URL",
    default="http://localhost:8233",
    show_default=True,
    help="Temporal Web UI base URL for links (env STSMIGRATE_UI_URL)",
)
@click.pass_context
def main(ctx: click.Context, task_queue: str, ui_url: str) -> None:
    """Move a Kubernetes StatefulSet between clusters, one ordinal at a time.

    The Temporal connection comes from the environment like the Temporal CLI's:
    TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS_*,
    TEMPORAL_PROFILE.
    """
    ctx.obj = {"task_queue": task_queue, "ui": ui_url}


@main.command()
@request_options
@click.option("--json", "as_json", is_flag=True, help="print the plan as JSON")
@click.pass_obj
@run_async
async def plan(obj: dict[str, Any], as_json: bool, file: Path | None, **flags: Any) -> int:
    """Dry run: check both clusters and print the plan. Exit 1 on blocking problems."""
    defaults = kubectl_defaults() if as_kubectl_plugin() else {}
    request = build_request(file, defaults=defaults, **flags).model_copy(update={"dry_run": True})
    client = await connect()
    plan_id = f"{default_migration_id(request)}/plan-{uuid.uuid4().hex[:8]}"
    migration = await start_migration(
        client, request, migration_id=plan_id, task_queue=obj["task_queue"]
    )
    try:
        the_plan = (await migration.result()).plan
    except WorkflowFailureError as e:
        cause = e.cause
        if not (isinstance(cause, ApplicationError) and cause.type == PREFLIGHT_FAILED):
            raise
        the_plan = Plan.model_validate(cause.details[0])
    assert the_plan is not None
    if as_json:
        click.echo(the_plan.model_dump_json(indent=2))
    else:
        out.print(plan_view(the_plan))
    return 1 if the_plan.problems else 0


@main.command()
@request_options
@click.option("--id", "migration_id", help="workflow id (default stsmigrate/<from>/<ns>/<name>)")
@click.option("--wait", is_flag=True, help="follow it with the live display until it ends")
@click.pass_obj
@run_async
async def start(
    obj: dict[str, Any], migration_id: str | None, wait: bool, file: Path | None, **flags: Any
) -> int:
    """Start a migration; print its id and the Temporal UI link."""
    request = build_request(
        file, defaults=kubectl_defaults() if as_kubectl_plugin() else {}, **flags
    )
    client = await connect()
    migration = await start_migration(
        client, request, migration_id=migration_id, task_queue=obj["task_queue"]
    )
    out.print(f"started {migration.id}")
    out.print(f"UI: {ui_link(obj['ui'], client.namespace, migration.id)}")
    if wait:
        return await follow(client, migration)
    return 0


async def follow(client: Client, migration: Migration) -> int:
    """The live display, until the workflow closes. Not on a terminal (a pipe, CI's
    log), rich's Live prints only its last frame and no newline after it
    (Textualize/rich#4192), so the next line ran into it: there the last progress is
    printed as any other output instead."""
    live = Live(Text("waiting for the first progress ..."), console=out, refresh_per_second=4)
    view: Any = None
    with live if out.is_terminal else contextlib.nullcontext():
        while True:
            status = await migration.status()
            if status != WorkflowExecutionStatus.RUNNING:
                break
            try:
                progress, the_plan = await migration.progress(), await migration.plan()
                view = progress_view(migration.id, progress, the_plan)
            except RPCError:
                view = Text("no worker answers the progress query yet ...")
            live.update(view)
            await asyncio.sleep(1)
    if view is not None and not out.is_terminal:
        out.print(view)
    return await final(migration)


def ended_view(migration_id: str, progress: Progress) -> Group:
    """A run that failed or was cancelled: why, and where each ordinal runs."""
    why = f": {progress.error}" if progress.error else ""
    if progress.phase == "cancelled" and progress.abort_reason:
        why = f" ({progress.abort_reason})"
    parts: list[Any] = [Text(f"{migration_id} {progress.phase}{why}", style="red bold")]
    if progress.placement:
        table = Table("ordinal", "runs in")
        for k, side in progress.placement.items():
            table.add_row(k, side)
        parts.append(table)
    return Group(*parts)


async def final(migration: Migration) -> int:
    try:
        result = await migration.result()
    except WorkflowFailureError as e:
        try:  # a worker answers the query of a closed run: its phase, error, placement
            progress = await migration.progress()
        except RPCError:
            progress = None
        if progress is not None and progress.phase in ("failed", "cancelled"):
            err.print(ended_view(migration.id, progress))
        else:
            err.print(f"[red]{migration.id} failed:[/] {e.cause}")
        return 1
    out.print(result_view(result))
    return 0


@main.command()
@click.argument("migration_id")
@click.option("--json", "as_json", is_flag=True, help="print the progress query as JSON")
@run_async
async def status(migration_id: str, as_json: bool) -> int:
    """Where a migration is now (exit 1 when it failed or was cancelled)."""
    migration = get_migration(await connect(), migration_id)
    running = await migration.status() == WorkflowExecutionStatus.RUNNING
    if not as_json:
        if not running:
            return await final(migration)
        out.print(progress_view(migration_id, await migration.progress(), await migration.plan()))
        return 0
    progress = await migration.progress() if running else await ended_progress(migration)
    click.echo(progress.model_dump_json(indent=2))
    return 1 if progress.phase in ("failed", "cancelled") else 0


async def ended_progress(migration: Migration) -> Progress:
    """The progress of a migration that has ended: its query (a worker replays the
    closed run to answer), else what its result or failure says."""
    with contextlib.suppress(RPCError, WorkflowQueryFailedError):
        return await migration.progress(rpc_timeout=timedelta(seconds=5))
    try:
        result = await migration.result()
    except WorkflowFailureError as e:
        cancelled = isinstance(e.cause, CancelledError)
        return Progress(phase="cancelled" if cancelled else "failed", error=str(e.cause))
    return Progress(
        phase="aborted" if result.aborted else "done",
        abort_reason=result.abort_reason,
        finished=result.moved,
        rolled_back=result.rolled_back,
        placement=result.placement,
    )


@main.command()
@click.argument("migration_id")
@click.option("--json", "as_json", is_flag=True, help="print it as JSON")
@click.pass_obj
@run_async
async def describe(obj: dict[str, Any], migration_id: str, as_json: bool) -> int:
    """What a migration asked and did, from its history: request, plan, each block's
    and rollback's step timings, blocked steps, where each ordinal runs, UI links."""
    described = await describe_migration(await connect(), migration_id, obj["ui"])
    if as_json:
        click.echo(described.model_dump_json(indent=2))
    else:
        out.print(describe_view(described))
    return 0


@main.command()
@click.argument("migration_id")
@click.option("--wait/--no-wait", default=True, show_default=True, help="wait for its result")
@click.pass_obj
@run_async
async def cleanup(obj: dict[str, Any], migration_id: str, wait: bool) -> int:
    """The clean finish of a migration that has ended with every ordinal in the
    destination: the source StatefulSet deleted and held by a finalizer (no sync can
    recreate it or its pods), the source's Released PV objects removed (never their
    storage), each destination PV its original reclaim policy back. Refused, changing
    nothing, while anything still runs in the source; running it again is safe."""
    client = await connect()
    handle = await start_cleanup(client, migration_id, task_queue=obj["task_queue"])
    out.print(f"started {handle.id}")
    out.print(f"UI: {ui_link(obj['ui'], client.namespace, handle.id)}")
    if not wait:
        return 0
    try:
        result = await handle.result()
    except WorkflowFailureError as e:
        cause = e.cause  # the activity that refused, and under it why
        while isinstance(cause, FailureError) and cause.cause is not None:
            cause = cause.cause
        err.print(f"[red]{handle.id} failed:[/] {cause}")
        return 1
    out.print(cleanup_table(result))
    return 0


@main.command("list")
@click.option("-s", "--statefulset", help="only migrations of this StatefulSet")
@click.option("-n", "--namespace", help="only those of this source namespace")
@click.option("--phase", type=click.Choice(get_args(Phase)), help="only those in this phase")
@click.option("--from", "--context", "source_context", help="only those from this context")
@click.option("--limit", default=100, show_default=True, help="at most this many, newest first")
@click.option("--json", "as_json", is_flag=True, help="print them as JSON")
@click.pass_obj
@run_async
async def list_command(
    obj: dict[str, Any],
    statefulset: str | None,
    namespace: str | None,
    phase: str | None,
    source_context: str | None,
    limit: int,
    as_json: bool,
) -> int:
    """Migrations with their phase, ordinal and contexts (from the search attributes;
    dry runs of `plan` too)."""
    filters = {
        "statefulset": statefulset,
        "namespace": namespace,
        "phase": phase,
        "source_context": source_context,
    }
    try:
        list_query(**filters)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    found = await list_migrations(await connect(), obj["ui"], limit=limit, **filters)
    if as_json:
        click.echo(LISTED.dump_json(found, indent=2).decode())
    else:
        out.print(list_view(found))
    return 0


@main.command()
@click.argument("migration_id")
@run_async
async def watch(migration_id: str) -> int:
    """Live progress until the migration ends (Ctrl-C stops watching, not the migration)."""
    client = await connect()
    return await follow(client, get_migration(client, migration_id))


def control(fn: Callable[..., Awaitable[tuple[str, Any]]]) -> Callable[..., Any]:
    """An operator message: an update (acknowledged, validated) or with --signal a
    signal (fire-and-forget; queued even while no worker runs)."""

    @click.argument("migration_id")
    @click.option(
        "--signal",
        "as_signal",
        is_flag=True,
        help="send as a signal: no answer, works while workers are down",
    )
    @functools.wraps(fn)
    @run_async
    async def command(migration_id: str, as_signal: bool, **kwargs: Any) -> int:
        name, arg = await fn(**kwargs)
        migration = get_migration(await connect(), migration_id)
        if as_signal:
            await migration.signal(name, arg)
            out.print(f"{name} signalled to {migration_id}")
            return 0
        progress = await migration.update(name, arg)
        out.print(f"{name} accepted by {migration_id}: phase {progress.phase}")
        if progress.waiting_for_approval is not None and name != "approve":
            out.print(f"waiting for approval of ordinal {progress.waiting_for_approval}")
        return 0

    return command


@main.command()
@click.option("--reason", default="", help="shown in the progress")
@control
async def pause(reason: str) -> tuple[str, Any]:
    """Stop at the next safe point (before an ordinal's first change, or between ordinals)."""
    return "pause", PauseRequest(reason=reason)


@main.command()
@control
async def resume() -> tuple[str, Any]:
    """Go on after a pause."""
    return "resume", None


@main.command()
@click.option("--ordinal", type=int, help="insist on this ordinal (it must be next)")
@click.option("--all", "approve_all", is_flag=True, help="approve every ordinal that remains")
@control
async def approve(ordinal: int | None, approve_all: bool) -> tuple[str, Any]:
    """Approve the next ordinal (or the one given, or all)."""
    if ordinal is not None and approve_all:
        raise click.UsageError("--ordinal and --all exclude each other")
    return "approve", ApproveRequest(ordinal=ordinal, all=approve_all)


@main.command()
@click.option("--reason", default="", help="kept in the result")
@control
async def abort(reason: str) -> tuple[str, Any]:
    """End the migration with every ordinal wholly in one cluster."""
    return "abort", AbortRequest(reason=reason)


@main.command()
@click.option(
    "--all", "everything", is_flag=True, help="every ordinal this run moved, then end the run"
)
@click.option("--reason", default="", help="shown in the progress and the log")
@control
async def rollback(everything: bool, reason: str) -> tuple[str, Any]:
    """Give the last moved ordinal back to the source (then pause), or --all of them."""
    return "rollback", RollbackRequest(all=everything, reason=reason)


@main.command()
@click.argument("mode", type=click.Choice(["none", "first", "each", "ordinals"]))
@click.option("--ordinals", "listed", help='for mode ordinals: e.g. "3,1"')
@control
async def approval(mode: str, listed: str | None) -> tuple[str, Any]:
    """Change the approval mode of a running migration."""
    try:
        ordinals = [int(k) for k in listed.split(",")] if listed else []
        policy = ApprovalPolicy.model_validate({"mode": mode, "ordinals": ordinals})
    except (ValueError, ValidationError) as e:
        raise click.UsageError(f"invalid approval mode: {e}") from None
    return "set_approval", policy


@main.command()
@click.option("-n", "--namespace", help="the app's source namespace (default: a placeholder)")
@click.option("--destination-namespace", help="its namespace in the destination (default: -n)")
@click.option("-s", "--statefulset", help="narrow the StatefulSet rules to this name")
def rbac(namespace: str | None, destination_namespace: str | None, statefulset: str | None) -> None:
    """Print the worker's roles for both clusters (deploy/rbac.yaml, from one table of
    what the worker does and why); apply each side's part with -l stsmigrate.dev/side=."""
    click.echo(render_rbac(namespace, destination_namespace or namespace, statefulset), nl=False)


@main.command("codec-key")
def codec_key() -> None:
    """Print a new random AES-256 key for STSMIGRATE_CODEC_KEY (keep it secret)."""
    click.echo(new_key())


@main.command("codec-server")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to bind")
@click.option("--port", default=8081, show_default=True, help="port to listen on")
@click.option(
    "--ui-origin",
    "origins",
    multiple=True,
    help="allow this Temporal UI origin (CORS; repeatable; default: the --ui URL)",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    help="also answer requests whose Host header is this name (a proxy's; repeatable)",
)
@click.pass_obj
def codec_server(
    obj: dict[str, Any],
    host: str,
    port: int,
    origins: tuple[str, ...],
    allowed_hosts: tuple[str, ...],
) -> None:
    """Serve .../encode and .../decode for the Temporal UI and CLI (--codec-endpoint),
    with the key of STSMIGRATE_CODEC_KEY or STSMIGRATE_CODEC_KEY_FILE. With
    STSMIGRATE_CODEC_SERVER_TOKEN (or ..._TOKEN_FILE) set, every request needs
    Authorization: Bearer <token>; a non-loopback --host needs one."""
    try:
        codec = codec_from_env()
        token = server_token_from_env()
    except CodecKeyError as e:
        raise click.UsageError(str(e)) from None
    if codec is None:
        raise click.UsageError("set STSMIGRATE_CODEC_KEY or STSMIGRATE_CODEC_KEY_FILE")
    if token is None and not is_loopback(host):
        raise click.UsageError(
            f"--host {host} lets other machines decrypt: set {TOKEN_ENV} or {TOKEN_FILE_ENV} "
            "to a token the clients send (temporal --codec-auth 'Bearer <token>')"
        )
    server = CodecServer(codec, host, port, origins or (obj["ui"],), token, allowed_hosts)
    guarded = "a bearer token" if token else "no token"
    err.print(f"codec server for key {codec.key_id} on {server.url}, {guarded} (Ctrl-C stops it)")
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


@main.command()
def worker() -> None:
    """Run the worker (the same as `python worker.py`; settings from the environment)."""
    # The worker is the top-level module ``worker``, which imports this package (the
    # codec, ``run``); the client side does not import it back. This process becomes
    # ``python -m worker`` instead, as the image (deploy/chart) runs it: exec keeps the pid,
    # the environment, the standard streams and ignored signals. -P: the current
    # directory does not go first on sys.path, as for this command.
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.execv(sys.executable, [sys.executable, "-P", "-m", "worker"])  # noqa: S606 (our argv)


def kubectl_main() -> None:
    """``kubectl stsmigrate``: the same commands, named and defaulted as kubectl does
    (--context is the source context, -n its namespace, both from the kubeconfig when
    left out)."""
    main(prog_name=KUBECTL_PLUGIN)


if __name__ == "__main__":
    main()
