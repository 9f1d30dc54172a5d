"""How ``stsmigrate describe`` and ``stsmigrate list`` print (rich renderables); the
data comes from stsmigrate/describe.py, which ``--json`` prints as it is."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from contract import CleanupResult
from stsmigrate.describe import Child, Description, Listed


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC") if at is not None else "-"


def _seconds(child: Child) -> str:
    if child.result is not None:
        return f"{child.result.seconds:.1f}"
    if child.started is not None and child.closed is not None:
        return f"{(child.closed - child.started).total_seconds():.1f}"
    return "-"


def _steps(child: Child) -> str:
    if child.result is not None and child.result.steps:
        return "\n".join(f"{s.step} {s.seconds:.1f}" for s in child.result.steps)
    if child.step:
        return f"now: {child.step}"
    return child.failure or "-"


def _fields(rows: list[tuple[str, Any]]) -> Table:
    table = Table.grid(padding=(0, 2))
    for name, value in rows:
        table.add_row(Text(f"  {name}:", style="bold"), str(value))
    return table


def describe_view(d: Description) -> Group:
    parts: list[Any] = []
    phase = d.progress.phase if d.progress is not None else None
    state = d.status + (f" (phase {phase})" if phase else "")
    parts.append(
        _fields(
            [
                ("Migration", d.migration_id),
                ("Status", state),
                ("Started", _when(d.started)),
                ("Ended", _when(d.closed)),
                ("Runs", d.runs),
                ("UI", d.ui),
            ]
        )
    )
    if d.error:
        parts.append(Text(f"  Error: {d.error}", style="red"))
    r = d.request
    if r is not None:
        gates = r.health.probes
        parts += [
            Text("Request:", style="bold"),
            _fields(
                [
                    ("StatefulSet", f"{r.namespace}/{r.statefulset}"),
                    ("From", r.source_context),
                    ("To", f"{r.destination_context} (namespace {r.target_namespace})"),
                    (
                        "Approval",
                        r.approval.mode
                        + (f" {r.approval.ordinals}" if r.approval.ordinals else ""),
                    ),
                    ("Max unavailable", r.max_unavailable),
                    ("Stop at ordinal", "none" if r.stop_at_ordinal is None else r.stop_at_ordinal),
                    (
                        "Storage classes",
                        ", ".join(f"{a} -> {b}" for a, b in r.storage_class_mapping.items())
                        or "unchanged",
                    ),
                    (
                        "Health gates",
                        f"{len(gates)} probe(s), on failure {r.health.on_failure}"
                        if gates
                        else "pod readiness only",
                    ),
                    (
                        "Destination overrides",
                        ", ".join(o.type for o in r.destination_overrides) or "none",
                    ),
                    ("Dry run", "yes" if r.dry_run else "no"),
                ]
            ),
        ]
    p = d.plan
    if p is not None:
        destination = (
            f"owns [{p.destination_start}, {p.destination_start + p.destination_replicas})"
            if p.destination_exists
            else "created, owning nothing"
        )
        rows: list[tuple[str, Any]] = [
            ("Source", f"owns [{p.source_start}, {p.source_start + p.source_replicas})"),
            ("Destination", destination),
            ("Ordinals to move", ", ".join(str(o.ordinal) for o in p.ordinals) or "none"),
            (
                "Copied",
                ", ".join(f"{x.kind} {x.name}" for x in p.dependencies if x.action == "copy")
                or "nothing",
            ),
        ]
        rows += [("Pod template override", c) for c in p.destination_overrides]
        rows += [("Warning", w) for w in p.warnings]
        rows += [("Problem", f"{x.object}: {x.message} (fix: {x.fix})") for x in p.problems]
        parts += [Text("Plan:", style="bold"), _fields(rows)]
    if d.progress is not None and d.status == "running":
        now = d.progress
        rows = [("Phase", now.phase)]
        if now.current_ordinal is not None:
            rows.append(("Current ordinal", now.current_ordinal))
        if now.waiting_for_approval is not None:
            rows.append(("Waiting for approval of", now.waiting_for_approval))
        if now.pause_reason:
            rows.append(("Paused", now.pause_reason))
        parts += [Text("Now:", style="bold"), _fields(rows)]
    children = Table(
        "child", "ordinals", "status", "started", "seconds", "step seconds", title_justify="left"
    )
    for c in d.children:
        children.add_row(
            f"{c.kind} {c.ordinals[0]}",
            ", ".join(map(str, c.ordinals)),
            c.status + (" (undone)" if c.result is not None and c.result.undone else ""),
            _when(c.started),
            _seconds(c),
            _steps(c),
        )
    parts += [Text("Children (one per block moved or ordinal given back):", style="bold"), children]
    parts += [Text(f"  {c.kind} {c.ordinals[0]}: {c.ui}") for c in d.children if c.ui]
    if d.blocked:
        parts.append(Text("Blocked steps:", style="bold"))
        parts += [
            Text(f"  {_when(b.at)}  ordinal {b.ordinal} {b.step}: {b.detail}", style="yellow")
            for b in d.blocked
        ]
    if d.rolled_back:
        parts.append(Text(f"Rolled back: {', '.join(map(str, d.rolled_back))}", style="bold"))
    placement = Table("ordinal", "runs in", title="Where each ordinal runs", title_justify="left")
    for k, side in d.placement.items():
        placement.add_row(k, side)
    parts.append(placement)
    if d.result is not None:
        res = d.result
        state = "aborted" if res.aborted else ("dry run" if res.dry_run else "done")
        reason = f" ({res.abort_reason})" if res.abort_reason else ""
        parts.append(
            Text(
                f"Result: {state}{reason}, {len(res.moved)} ordinal(s) moved in "
                f"{res.seconds:.1f} s",
                style="bold",
            )
        )
        if res.cleanup is not None:
            parts.append(cleanup_table(res.cleanup))
        if res.cleanup_skipped:
            parts.append(Text(f"No clean finish: {res.cleanup_skipped}", style="yellow"))
    return Group(*parts)


def cleanup_table(result: CleanupResult) -> Table:
    """What each step of a clean finish did."""
    done = Table("object", "done", "detail", title="Clean finish", title_justify="left")
    for step in result.steps:
        done.add_row(step.object, step.action, step.detail)
    return done


def list_view(found: list[Listed]) -> Table | Text:
    if not found:
        return Text("no migrations found")
    table = Table("migration", "status", "phase", "ordinal", "statefulset", "from", "to", "started")
    for m in found:
        table.add_row(
            m.migration_id,
            m.status,
            m.phase or "-",
            "-" if m.ordinal is None else str(m.ordinal),
            f"{m.namespace}/{m.statefulset}" if m.statefulset else "-",
            m.source_context or "-",
            m.destination_context or "-",
            _when(m.started),
        )
    return table
