"""Hooks: the request's commands run inside pod k through the Kubernetes exec API.

One activity runs one hook in one pod (``before_give_up`` in the giver's pod k before
it gives k up, ``after_take`` in the taker's once it is Ready; workflows/handover.py).
Each attempt checks that pod k is Running and Ready, runs the command in the chosen
container and waits at most the hook's timeout for its exit; Temporal retries a failed
attempt (the hook's retries and interval), and the workflow pauses when the last one
fails (invariant I4: never half-moved).

What it says (invariant I5): on success only the exit code and the time; on a failure
the end of the command's output, with every value of every Secret the pod refers to
(env, envFrom, secret and projected volumes) replaced by ``***``; when those Secrets
cannot be read, the output is withheld. The command itself is in the request, so in the
history: a hook takes a password from the pod's own environment, never from its argv.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Mapping
from typing import Any

from kubernetes import client
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.kube import Kube, is_ready, kube_for
from contract import HookInput, HookResult
from contract.errors import HOOK_FAILED, INVALID

Obj = dict[str, Any]
# Characters of the output's end a failure message quotes.
QUOTED = 300
# Secret values shorter than this are not looked for (they would mask ordinary words).
SHORTEST_REDACTED = 4


def secret_names(pod: Obj) -> set[str]:
    """Every Secret a pod's spec refers to: env and envFrom of every container, secret
    and projected volumes."""
    spec = pod.get("spec") or {}
    names: set[str] = set()
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for env in c.get("env") or []:
            ref = ((env.get("valueFrom") or {}).get("secretKeyRef")) or {}
            if ref.get("name"):
                names.add(ref["name"])
        for source in c.get("envFrom") or []:
            if (source.get("secretRef") or {}).get("name"):
                names.add(source["secretRef"]["name"])
    for volume in spec.get("volumes") or []:
        if (volume.get("secret") or {}).get("secretName"):
            names.add(volume["secret"]["secretName"])
        for source in (volume.get("projected") or {}).get("sources") or []:
            if (source.get("secret") or {}).get("name"):
                names.add(source["secret"]["name"])
    return names


def redact(text: str, values: list[str]) -> str:
    """``text`` with each of ``values`` replaced by ``***`` (the longest first, so a value
    that contains another is masked whole)."""
    for value in sorted(values, key=len, reverse=True):
        if len(value) >= SHORTEST_REDACTED:
            text = text.replace(value, "***")
    return text


def quoted_tail(output: bytes, values: list[str] | None) -> str:
    """The end of a command's output for a failure message: one line, redacted;
    withheld when the Secrets to redact could not be read (``values`` None)."""
    if not output.strip():
        return "no output"
    if values is None:
        return "its output is withheld: the pod's Secrets could not be read to redact it"
    # Redacted before it is cut, so no part of a value survives at the cut.
    text = redact(output.decode("utf-8", errors="replace"), values)
    text = " ".join(re.sub(r"[\x00-\x1f\x7f]", " ", text).split())
    if len(text) > QUOTED:
        text = "..." + text[-QUOTED:]
    return f"it said: {text}"


class HookActivities:
    def __init__(self, clients: Mapping[str, client.ApiClient]) -> None:
        self._clients = clients

    # Cancellation is seen by exec_in_pod's own check (an abort): no exception is thrown
    # into the thread, which could land in a ``finally`` and skip closing the exec.
    @activity.defn(no_thread_cancel_exception=True)
    def run_hook(self, task: HookInput) -> HookResult:
        kube = kube_for(self._clients, task.context)
        pod_name = f"{task.statefulset}-{task.ordinal}"
        where = (
            f"hook {task.hook.name} ({task.phase}) in pod {task.namespace}/{pod_name} "
            f"of {task.context}"
        )
        pod = kube.pod(task.namespace, pod_name)
        if pod is None or not is_ready(pod) or (pod.get("metadata") or {}).get("deletionTimestamp"):
            if task.skip_unless_ready:
                activity.logger.warning("%s: skipped, the pod is not Ready", where)
                return HookResult(
                    hook=task.hook.name,
                    pod=pod_name,
                    exit_code=-1,
                    seconds=0.0,
                    skipped="the pod is not Running and Ready",
                )
            # Retried: pod k may be about to be Ready (or a human is to make it so).
            raise ApplicationError(f"{where}: the pod is not Running and Ready", type=HOOK_FAILED)
        containers = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or []]
        container = task.hook.container or (containers[0] if containers else "")
        if container not in containers:
            raise ApplicationError(
                f"{where}: the pod has no container {container!r} (it has: "
                f"{', '.join(containers) or 'none'}); fix the hook's container",
                type=INVALID,
                non_retryable=True,
            )
        values = {
            "ordinal": str(task.ordinal),
            "pod": pod_name,
            "namespace": task.namespace,
            "service": task.service,
            "statefulset": task.statefulset,
            "pod_ip": str((pod.get("status") or {}).get("podIP") or ""),
        }
        argv = [word.format_map(values) for word in task.hook.command]
        begun = time.monotonic()
        outcome = kube.exec_in_pod(
            task.namespace, pod_name, container, argv, timeout=task.hook.timeout
        )
        seconds = round(time.monotonic() - begun, 3)
        if outcome.exit_code == 0:
            activity.logger.info("%s: exit 0 in %.1f s", where, seconds)
            return HookResult(hook=task.hook.name, pod=pod_name, exit_code=0, seconds=seconds)
        said = quoted_tail(outcome.output, self._secret_values(kube, task.namespace, pod))
        if outcome.exit_code is None and outcome.failure:
            ended = outcome.failure
        elif outcome.exit_code is None:
            ended = (
                f"no exit within {task.hook.timeout} s (the connection was closed; the "
                "command may still run in the pod)"
            )
        elif outcome.failure:
            ended = f"did not run: {outcome.failure}"
        else:
            ended = f"exit {outcome.exit_code} after {seconds:.1f} s"
        activity.logger.warning("%s: %s", where, ended)
        raise ApplicationError(f"{where}: {ended}; {said}", type=HOOK_FAILED)

    @staticmethod
    def _secret_values(kube: Kube, namespace: str, pod: Obj) -> list[str] | None:
        """The decoded values of every Secret the pod refers to (None: one could not be
        read, so nothing may be quoted). A Secret that does not exist holds none."""
        found: list[str] = []
        for name in sorted(secret_names(pod)):
            try:
                secret = kube.dependency("Secret", namespace, name)
            except ApplicationError:
                return None
            for encoded in ((secret or {}).get("data") or {}).values():
                try:
                    raw = base64.b64decode(encoded, validate=True)
                except (binascii.Error, ValueError):
                    return None
                found.append(raw.decode("utf-8", errors="replace"))
                found.extend(line for line in found[-1].splitlines() if line.strip())
        return found
