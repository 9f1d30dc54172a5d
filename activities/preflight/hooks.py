"""Preflight of the request's hooks: each runs in a container that both the source's
pods and the destination's (the source's template, overridden) have, since a hook runs
on the giver and the taker of a move and of a rollback alike."""

from __future__ import annotations

from activities.kube import Obj
from activities.preflight.findings import Findings
from contract import MigrationRequest


def _containers(sts: Obj) -> list[str]:
    spec = ((sts.get("spec") or {}).get("template") or {}).get("spec") or {}
    return [str(c.get("name", "")) for c in spec.get("containers") or []]


def check_hooks(source: Obj, destination: Obj, request: MigrationRequest, f: Findings) -> None:
    hooks = request.hooks
    if not hooks.configured:
        return
    sides = (("source", _containers(source)), ("destination", _containers(destination)))
    for phase in ("before_give_up", "after_take"):
        for hook in getattr(hooks, phase):
            for side, names in sides:
                wanted = hook.container or (names[0] if names else "")
                if wanted and wanted in names:
                    continue
                f.problem(
                    f"request hooks.{phase} {hook.name}",
                    f"the {side} StatefulSet's pods have no container {wanted!r} (they have: "
                    f"{', '.join(names) or 'none'})",
                    "name one of their containers in the hook's container",
                )
