"""The stable error type names: what activities raise, workflows and callers match.

Temporal carries an error's ``type`` across processes as a string, so each name is
spelled once, here, and imported on both sides.
"""

from __future__ import annotations

# Kubernetes API failures (activities.errors.classify turns an ApiException into one).
INVALID = "KubernetesInvalid"  # 400, 422: the request itself is wrong
FORBIDDEN = "KubernetesForbidden"  # 401, 403: credentials or RBAC
NOT_FOUND = "KubernetesNotFound"  # 404 when the call site did not expect it
CONFLICT = "KubernetesConflict"  # 409: re-read and try again
THROTTLED = "KubernetesThrottled"  # 429
UNAVAILABLE = "KubernetesUnavailable"  # 5xx, timeouts, connection errors
UNKNOWN_CONTEXT = "UnknownContext"  # the worker holds no such kubeconfig context

# The world is not as a step needs it (not a bug): the ordinal pauses for a human
# instead of failing half-moved (docs/design.md, invariant I4).
CONFLICTING_CHANGE = "ConflictingChange"  # somebody else changed the StatefulSet's slice
NOT_OURS = "NotOurs"  # a claim, volume or dependency of that name is somebody else's
WAIT_TIMEOUT = "WaitTimeout"  # a bounded wait ended without its condition
HOOK_FAILED = "HookFailed"  # a hook's command failed in pod k (its last attempt pauses)
BLOCKING = frozenset({CONFLICTING_CHANGE, WAIT_TIMEOUT, NOT_OURS})

# How a migration ends when it cannot go on.
PREFLIGHT_FAILED = "PreflightFailed"  # the plan has problems; nothing was changed
# The source's pod template changed between preflight and the destination's creation.
TEMPLATE_CHANGED = "TemplateChangedSincePreflight"
HEALTH_GATE_FAILED = "HealthGateFailed"  # on_failure "fail"
REJECTED = "Rejected"  # an update's validator refused the operator's message
RUNS_IN_BOTH = "RunsInBothClusters"  # the final placement has an ordinal in both clusters
ORDINAL_STILL_RUNNING = "OrdinalStillRunning"  # a terminated run's child still moves it
CLEANUP_REFUSED = "CleanupRefused"  # the source still runs something: nothing was changed
