"""What a namespace holds, said when a wait fails."""

from __future__ import annotations

from kubernetes import client


def describe(api: client.ApiClient, namespace: str) -> str:
    """What a namespace holds, for a failed wait: pods with their conditions, claims,
    and the latest events."""
    core = client.CoreV1Api(api)
    lines = []
    for p in core.list_namespaced_pod(namespace).items:
        conditions = [
            f"{c.type}={c.status}{f' ({c.reason})' if c.reason else ''}"
            for c in p.status.conditions or []
        ]
        lines.append(
            f"pod {p.metadata.name} {p.status.phase} on {p.spec.node_name}: {', '.join(conditions)}"
        )
    for c in core.list_namespaced_persistent_volume_claim(namespace).items:
        lines.append(f"claim {c.metadata.name} {c.status.phase} -> {c.spec.volume_name}")
    events = core.list_namespaced_event(namespace).items
    events.sort(key=lambda e: str(e.last_timestamp or e.event_time or ""))
    for e in events[-15:]:
        lines.append(
            f"event {e.involved_object.kind}/{e.involved_object.name}: {e.reason}: {e.message}"
        )
    return "\n".join(lines)
