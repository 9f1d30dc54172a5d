"""The plan preflight builds: every ordinal with its volumes, dependencies, problems."""

from __future__ import annotations

from pydantic import Field

from contract.base import Reply


class Problem(Reply):
    object: str = Field(description='what is wrong, e.g. "source StatefulSet shop/redis"')
    message: str
    fix: str


class VolumePlan(Reply):
    template: str
    claim: str
    volume: str  # PV name, the same in both clusters
    storage_class: str = ""
    destination_storage_class: str = ""
    storage: str = Field("", description='what the PV points at, e.g. "hostPath /srv/v1"')
    reclaim_policy: str = ""
    size: str = Field("", description="the claim's requested storage, e.g. 1Gi")


class OrdinalPlan(Reply):
    ordinal: int
    pod: str
    volumes: list[VolumePlan] = Field(default_factory=list)


class Dependency(Reply):
    kind: str  # Secret, ConfigMap, ServiceAccount, Service, PodDisruptionBudget
    name: str
    action: str = ""  # "copy" or "present" (plan); "copied" or "present" (result)


class Plan(Reply):
    migration_id: str
    source_context: str
    destination_context: str
    namespace: str
    destination_namespace: str
    statefulset: str
    source_version: str = ""
    destination_version: str = ""
    source_start: int = 0
    source_replicas: int = 0
    end: int = Field(0, description="one past the highest ordinal of the whole StatefulSet")
    destination_exists: bool = False
    destination_start: int = 0
    destination_replicas: int = 0
    claim_templates: list[str] = Field(default_factory=list)
    service_name: str = Field("", description="the StatefulSet's serviceName")
    destination_overrides: list[str] = Field(
        default_factory=list,
        description="what the request's destination_overrides change in the destination's "
        'pod template, as JSON patch operations (e.g. "replace /spec/containers/0/image ...")',
    )
    destination_template_digest: str = Field(
        "",
        description="sha256 of the canonical JSON (keys sorted) of the pod template "
        "preflight checked for the destination's pods: the source's overridden, or an "
        "existing destination StatefulSet's; the destination StatefulSet is created only "
        "with a template of this digest (empty: preflight checked none)",
    )
    ordinals: list[OrdinalPlan] = Field(default_factory=list, description="highest first")
    moved: list[OrdinalPlan] = Field(
        default_factory=list,
        description="ordinals the destination already owns on volumes this migration moved "
        "(an earlier run of the same id), in the order a rollback gives them back: lowest "
        "first",
    )
    dependencies: list[Dependency] = Field(default_factory=list)
    fix_retention_policy: bool = False
    warnings: list[str] = Field(default_factory=list)
    problems: list[Problem] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems
