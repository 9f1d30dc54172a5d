"""Payload models: the contract between workflows, activities, the CLI and callers.

Imports stdlib and pydantic only (an import-linter contract enforces it), so the
workflow sandbox, clients and tests can all load it. Every model is frozen, every
field added later has a default, and payloads carry names, counts and references,
never manifests, Kubernetes model objects, credentials or Secret data.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

TASK_QUEUE = "statefulset-migration"


class Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# -- wiring check: "can the worker reach every cluster it was given?" -----------------


class ReadClusterInfoInput(Payload):
    context: str = Field(min_length=1, description="kubeconfig context the worker holds")


class ClusterInfo(Payload):
    context: str
    server_version: str = Field(description="gitVersion reported by /version, e.g. v1.34.4")
    nodes: int = 0
    nodes_ready: int = 0


class DescribeClustersInput(Payload):
    contexts: list[str] = Field(min_length=1)


class DescribeClustersResult(Payload):
    clusters: list[ClusterInfo] = Field(default_factory=list)
