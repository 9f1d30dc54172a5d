"""What the preflight checks record (``Findings``) and the typed parts of a plan they
return; pure, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

from activities.kube import Obj
from contract import Problem


@dataclass
class Findings:
    """Problems (each blocks the run) and warnings, in the order the checks found them."""

    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def problem(self, obj: str, message: str, fix: str) -> None:
        self.problems.append(Problem(object=obj, message=message, fix=fix))


@dataclass(frozen=True)
class Versions:
    source: str = ""
    destination: str = ""


@dataclass(frozen=True)
class SourceSlice:
    """The source StatefulSet and the ordinals it owns: [start, start + replicas)."""

    sts: Obj = field(default_factory=dict)
    start: int = 0
    replicas: int = 0
    templates: dict[str, str | None] = field(default_factory=dict)  # claim template -> class

    @property
    def service_name(self) -> str:
        return str((self.sts.get("spec") or {}).get("serviceName") or "")


@dataclass(frozen=True)
class DestinationSlice:
    exists: bool = False
    start: int = 0
    replicas: int = 0
    end: int = 0  # one past the highest ordinal of the whole StatefulSet
    template: Obj | None = None  # an existing destination StatefulSet's pod template


# What a plan holds of the checks it never reached (Plan's own defaults).
NO_VERSIONS, NO_SOURCE, NO_DESTINATION = Versions(), SourceSlice(), DestinationSlice()
