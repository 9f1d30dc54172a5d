"""A thin layer over the kubernetes client for one context, used by every activity.

- Objects come back as the API's JSON (dicts), so copies lose no field the client
  model does not know.
- Every request has a timeout; every failure goes through ``errors.classify``.
- ``None`` means 404 where absence is an answer (reads, delete).
- The ``wait_for_*`` methods follow a watch (re-listing every few seconds and after
  a 410) and heartbeat, so a step reacts within a fraction of a second of the change
  and a dead worker is noticed by its heartbeat timeout.
- The typed API clients are private: activities reach the API only through the
  named methods here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pydantic
import websocket
from kubernetes import client, stream, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.stream.ws_client import ERROR_CHANNEL, STDERR_CHANNEL, STDOUT_CHANNEL
from temporalio import activity
from temporalio.exceptions import ApplicationError, CancelledError

from activities import errors
from contract.errors import UNAVAILABLE, UNKNOWN_CONTEXT, WAIT_TIMEOUT

Obj = dict[str, Any]
# (connect, read) seconds for one API request.
REQUEST_TIMEOUT = (5, 15)
MERGE_PATCH = "application/merge-patch+json"
# Kinds whose body can hold Secret data or storage credentials (a Secret's data; a PV's
# flexVolume options, CSI volumeAttributes): an admission webhook or a policy may echo
# the object in its refusal, so its message is withheld (docs/design.md, invariant I5).
WITHHELD_KINDS = frozenset({"Secret", "PersistentVolume"})
# Bytes of each output stream an exec keeps: the end of it, where the reason usually is.
EXEC_TAIL = 4096
# Seconds between two pings of an exec's websocket, and a stalled read's bound (set as
# websocket-client's default timeout: only the exec uses websocket-client).
EXEC_PING = 20
EXEC_SOCKET_TIMEOUT = 30
websocket.setdefaulttimeout(EXEC_SOCKET_TIMEOUT)
# Items per page of a list that can be long (every PV of a cluster).
LIST_PAGE = 500
# A watch window: how long a wait goes without re-listing (and at most without heartbeat).
WATCH_WINDOW = 5
# ``done`` of a wait: the watched objects by name -> finished (or raises to stop the wait).
Done = Callable[[dict[str, Obj]], bool]


@dataclass(frozen=True)
class ExecOutcome:
    """How a command run through the exec API ended."""

    exit_code: int | None  # None: it did not end within the timeout
    failure: str  # the runtime's reason when it did not run (no such executable)
    output: bytes


def _tail(buf: bytes, cut: bool) -> bytes:
    """The kept end of one output stream; when its start was cut off, from its first
    whole line on (a Secret's value cut in half would not be recognised to mask)."""
    if cut:
        newline = buf.find(b"\n")
        if newline < 0:
            return f"(one line longer than {EXEC_TAIL} bytes: withheld)".encode()
        return buf[newline + 1 :]
    return buf


def _exit_status(error_channel: str) -> tuple[int | None, str]:
    """The exit code in the exec API's status (its error channel) and, when the command
    did not run at all, the runtime's reason. No status: the connection closed before
    the command ended (exit code None)."""
    if not error_channel.strip():
        return None, "the connection closed without the command's exit status"
    try:
        status = json.loads(error_channel)
    except ValueError:
        return -1, "the exec API sent no status"
    if status.get("status") == "Success":
        return 0, ""
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            try:
                return int(cause.get("message", "")), ""
            except ValueError:
                break
    return -1, str(status.get("message") or "the exec API reported a failure")[:300]


@dataclass(frozen=True)
class Refusal:
    """What the API server answered a request it refused (4xx): status, reason, and the
    Status message (truncated, as ``errors.status_message`` makes it)."""

    status: int
    reason: str
    message: str


def is_ready(obj: Obj) -> bool:
    """The object's Ready condition is True (pods and nodes)."""
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


# -- StatefulSet helpers ----------------------------------------------------------------
def slice_of(sts: Obj) -> tuple[int, int]:
    """(ordinals.start, replicas) of a StatefulSet, with the API's defaults (0, 1)."""
    spec = sts.get("spec") or {}
    start = int((spec.get("ordinals") or {}).get("start") or 0)
    replicas = spec.get("replicas")
    return start, int(1 if replicas is None else replicas)


def selector_string(sts: Obj) -> str:
    """The StatefulSet's matchLabels as a label selector for a list or watch."""
    labels = ((sts.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def kube_for(clients: Mapping[str, client.ApiClient], context: str) -> Kube:
    """The Kube of a context the worker holds; a typed, non-retryable error otherwise."""
    if context not in clients:
        known = ", ".join(sorted(clients)) or "none"
        raise ApplicationError(
            f"this worker holds no kubeconfig context {context!r} (it holds: {known}); "
            "add it to the worker's kubeconfig or fix the request",
            type=UNKNOWN_CONTEXT,
            non_retryable=True,
        )
    return Kube(clients[context], context)


class Kube:
    def __init__(self, api: client.ApiClient, context: str) -> None:
        self._api = api
        self.context = context
        self._core = client.CoreV1Api(api)
        self._apps = client.AppsV1Api(api)
        self._storage = client.StorageV1Api(api)
        self._policy = client.PolicyV1Api(api)
        self._authz = client.AuthorizationV1Api(api)
        self._autoscaling = client.AutoscalingV2Api(api)
        self._custom = client.CustomObjectsApi(api)
        self._events = client.EventsV1Api(api)

    # -- plumbing ----------------------------------------------------------------------
    @staticmethod
    def _alive() -> None:
        # Every request is a sign of life: an activity that makes many reads (preflight)
        # is noticed dead by its heartbeat timeout, not its much longer run timeout.
        if activity.in_activity():
            activity.heartbeat()

    def _request(
        self,
        action: str,
        fn: Callable[..., Any],
        *args: Any,
        answer: int | None,
        withhold: bool = False,
        **kwargs: Any,
    ) -> Obj | None:
        """One API request; the HTTP status ``answer`` (404, 409) is returned as ``None``.
        ``withhold``: the body holds Secret data, so a refusal's message is not passed on
        (``errors.withheld_message``)."""
        self._alive()
        try:
            resp = fn(*args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT, **kwargs)
        except ApiException as exc:
            if answer is not None and exc.status == answer:
                return None
            raise errors.classify(exc, f"{action} in {self.context}", withhold) from None
        except errors.API_FAILURES as exc:
            raise errors.classify(exc, f"{action} in {self.context}") from None
        except pydantic.ValidationError as exc:
            raise errors.invalid_body(exc, f"{action} in {self.context}") from None
        return dict(json.loads(resp.data)) if resp.data else {}

    def _call(self, action: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Obj:
        return self._request(action, fn, *args, answer=None, **kwargs) or {}

    def _maybe(self, action: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Obj | None:
        return self._request(action, fn, *args, answer=404, **kwargs)

    # -- reads ------------------------------------------------------------------------
    def version(self) -> str:
        try:
            info = client.VersionApi(self._api).get_code(_request_timeout=REQUEST_TIMEOUT)
        except errors.API_FAILURES as exc:
            raise errors.classify(exc, f"read server version of {self.context}") from None
        return str(info.git_version)

    def statefulset(self, ns: str, name: str) -> Obj | None:
        return self._maybe(
            f"read StatefulSet {ns}/{name}", self._apps.read_namespaced_stateful_set, name, ns
        )

    def pod(self, ns: str, name: str) -> Obj | None:
        return self._maybe(f"read Pod {ns}/{name}", self._core.read_namespaced_pod, name, ns)

    def exec_in_pod(
        self, ns: str, pod: str, container: str, argv: list[str], timeout: float
    ) -> ExecOutcome:
        """Run ``argv`` in a container of a pod through the exec API (a websocket, as
        ``kubectl exec`` without a tty): its exit code (None: none within ``timeout``, or
        the connection lost, ``failure`` says which; the connection is then closed) and
        the end of its output, stdout then stderr, each cut at a line start (``_tail``).
        The stream is read on an ApiClient of its own: the kubernetes client's ``stream``
        swaps its client's transport while it runs. The websocket is pinged every
        ``EXEC_PING`` seconds (a load balancer cuts a silent one) and a read that stalls
        fails after websocket-client's default timeout (``EXEC_SOCKET_TIMEOUT``)."""
        self._alive()
        api = client.ApiClient(configuration=self._api.configuration)
        api.default_headers.update(self._api.default_headers)
        where = f"exec in Pod {ns}/{pod} container {container} in {self.context}"
        try:
            resp = stream.stream(
                client.CoreV1Api(api).connect_get_namespaced_pod_exec,
                pod,
                ns,
                container=container,
                command=argv,
                stdin=False,
                stdout=True,
                stderr=True,
                tty=False,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
        except ApiException as exc:  # the websocket handshake's refusal
            api.close()
            raise errors.classify(errors.handshake_status(exc), where) from None
        except (websocket.WebSocketException, OSError) as exc:  # TLS, a timeout, a reset
            api.close()
            raise ApplicationError(
                f"{where}: the websocket connection did not open ({type(exc).__name__})",
                type=UNAVAILABLE,
            ) from None
        out = {STDOUT_CHANNEL: bytearray(), STDERR_CHANNEL: bytearray()}
        cut = {STDOUT_CHANNEL: False, STDERR_CHANNEL: False}

        def drain() -> None:
            for channel, buf in out.items():
                if resp.peek_channel(channel):
                    buf += resp.read_channel(channel).encode(errors="replace")
                if len(buf) > EXEC_TAIL:
                    del buf[:-EXEC_TAIL]
                    cut[channel] = True

        def output() -> bytes:
            return b"\n".join(_tail(bytes(out[c]), cut[c]) for c in out if out[c])

        begun = time.monotonic()
        deadline, pinged = begun + timeout, begun
        try:
            while resp.is_open() and time.monotonic() < deadline:
                if activity.in_activity() and activity.is_cancelled():
                    raise CancelledError("the hook's activity was cancelled")
                resp.update(timeout=min(1.0, max(0.0, deadline - time.monotonic())))
                drain()
                if time.monotonic() - pinged >= EXEC_PING and resp.is_open():
                    resp.sock.ping()
                    pinged = time.monotonic()
                self._alive()
            if resp.is_open():
                return ExecOutcome(exit_code=None, failure="", output=output())
            drain()
            code, failure = _exit_status(resp.read_channel(ERROR_CHANNEL))
            return ExecOutcome(code, failure, output())
        except (websocket.WebSocketException, OSError) as exc:  # a ping or a read
            lost = (
                f"the connection was lost after {time.monotonic() - begun:.0f} s "
                f"({type(exc).__name__}); the command may still run in the pod"
            )
            return ExecOutcome(exit_code=None, failure=lost, output=output())
        except errors.API_FAILURES as exc:
            raise errors.classify(exc, where) from None
        finally:
            resp.close()
            api.close()

    def pods(self, ns: str, selector: str | None = None) -> list[Obj]:
        """The namespace's pods, or those matching the label ``selector``."""
        return list(
            self._call(
                f"list Pods in {ns}",
                self._core.list_namespaced_pod,
                ns,
                label_selector=selector,  # None: not sent
            )["items"]
        )

    def pvc(self, ns: str, name: str) -> Obj | None:
        return self._maybe(
            f"read PersistentVolumeClaim {ns}/{name}",
            self._core.read_namespaced_persistent_volume_claim,
            name,
            ns,
        )

    def pv(self, name: str) -> Obj | None:
        return self._maybe(f"read PersistentVolume {name}", self._core.read_persistent_volume, name)

    def pvcs(self, ns: str) -> list[Obj]:
        """Every claim of the namespace, in pages (preflight indexes them)."""
        return self._list_all(
            f"list PersistentVolumeClaims in {ns}",
            self._core.list_namespaced_persistent_volume_claim,
            ns,
        )

    def pvs(self) -> list[Obj]:
        """Every PersistentVolume of the cluster, in pages (preflight indexes them)."""
        return self._list_all("list PersistentVolumes", self._core.list_persistent_volume)

    def _list_all(self, action: str, fn: Callable[..., Any], *args: Any) -> list[Obj]:
        # Pages keep each response (and its read timeout) small on a cluster of many
        # thousands of volumes; a page is one request however many items it holds.
        items: list[Obj] = []
        token: str | None = None
        while True:
            page = self._call(action, fn, *args, limit=LIST_PAGE, _continue=token)
            items += page.get("items") or []
            token = (page.get("metadata") or {}).get("continue") or None
            if token is None:
                return items

    def storage_class(self, name: str) -> Obj | None:
        return self._maybe(f"read StorageClass {name}", self._storage.read_storage_class, name)

    def namespace(self, name: str) -> Obj | None:
        return self._maybe(f"read Namespace {name}", self._core.read_namespace, name)

    def nodes(self) -> list[Obj]:
        return list(self._call("list Nodes", self._core.list_node)["items"])

    def node_names(self) -> set[str]:
        return {n["metadata"]["name"] for n in self.nodes()}

    def volume_attachments(self) -> list[Obj]:
        return list(
            self._call("list VolumeAttachments", self._storage.list_volume_attachment)["items"]
        )

    def quotas(self, ns: str) -> list[Obj]:
        return list(
            self._call(
                f"list ResourceQuotas in {ns}", self._core.list_namespaced_resource_quota, ns
            )["items"]
        )

    def pdbs(self, ns: str) -> list[Obj]:
        return list(
            self._call(
                f"list PodDisruptionBudgets in {ns}",
                self._policy.list_namespaced_pod_disruption_budget,
                ns,
            )["items"]
        )

    def autoscalers(self, ns: str) -> list[Obj]:
        """The namespace's HorizontalPodAutoscalers (autoscaling/v2)."""
        return list(
            self._call(
                f"list HorizontalPodAutoscalers in {ns}",
                self._autoscaling.list_namespaced_horizontal_pod_autoscaler,
                ns,
            )["items"]
        )

    def custom_objects(self, group: str, version: str, plural: str, ns: str) -> list[Obj]:
        """The namespace's objects of a CRD-backed kind; ``[]`` when the server does not
        serve ``group/version`` or ``plural`` (404: the CRD is not installed)."""
        listed = self._maybe(
            f"list {plural}.{group} in {ns}",
            self._custom.list_namespaced_custom_object,
            group,
            version,
            ns,
            plural,
        )
        return list((listed or {}).get("items") or [])

    def dependency(self, kind: str, ns: str, name: str) -> Obj | None:
        read = {
            "Secret": self._core.read_namespaced_secret,
            "ConfigMap": self._core.read_namespaced_config_map,
            "ServiceAccount": self._core.read_namespaced_service_account,
            "Service": self._core.read_namespaced_service,
            "PodDisruptionBudget": self._policy.read_namespaced_pod_disruption_budget,
        }[kind]
        return self._maybe(f"read {kind} {ns}/{name}", read, name, ns)

    def can(
        self,
        verb: str,
        resource: str,
        group: str = "",
        namespace: str | None = None,
        name: str | None = None,
    ) -> bool:
        """A SelfSubjectAccessReview; ``name`` for a role narrowed by resourceNames;
        a subresource after a slash (``pods/exec``)."""
        resource, _, subresource = resource.partition("/")
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {
                    "verb": verb,
                    "resource": resource,
                    **({"subresource": subresource} if subresource else {}),
                    "group": group,
                    **({"namespace": namespace} if namespace else {}),
                    **({"name": name} if name else {}),
                }
            },
        }
        out = self._call(
            f"review access to {verb} {resource}",
            self._authz.create_self_subject_access_review,
            review,
        )
        return bool((out.get("status") or {}).get("allowed"))

    def csi_driver(self, name: str) -> Obj | None:
        return self._maybe(f"read CSIDriver {name}", self._storage.read_csi_driver, name)

    def dry_run(self, kind: str, ns: str | None, body: Obj) -> Obj | Refusal:
        """Create with ``dryRun=All``: every admission step runs (PodSecurity, quotas,
        LimitRanges, webhooks, policies), nothing is stored. The object as the server
        would store it, or the server's refusal (a 4xx); 5xx and timeouts raise."""
        name = body["metadata"]["name"]
        action = f"dry-run create {kind} {name}"
        create: Callable[..., Any] = (
            self._core.create_persistent_volume
            if kind == "PersistentVolume"
            else self._creators()[kind]
        )
        args: tuple[Any, ...] = (body,) if kind == "PersistentVolume" else (ns, body)
        self._alive()
        try:
            resp = create(
                *args, dry_run="All", _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as exc:
            status = int(exc.status or 0)
            withhold = kind in WITHHELD_KINDS
            if 400 <= status < 500 and status != 429:
                message = errors.status_message(exc, withhold)
                return Refusal(status, str(exc.reason or ""), message)
            raise errors.classify(exc, f"{action} in {self.context}", withhold) from None
        except errors.API_FAILURES as exc:
            raise errors.classify(exc, f"{action} in {self.context}") from None
        except pydantic.ValidationError as exc:
            raise errors.invalid_body(exc, f"{action} in {self.context}") from None
        return dict(json.loads(resp.data)) if resp.data else {}

    # -- writes -----------------------------------------------------------------------
    def _creators(self) -> dict[str, Callable[..., Any]]:
        return {
            "StatefulSet": self._apps.create_namespaced_stateful_set,
            "Pod": self._core.create_namespaced_pod,
            "PersistentVolumeClaim": self._core.create_namespaced_persistent_volume_claim,
            "Secret": self._core.create_namespaced_secret,
            "ConfigMap": self._core.create_namespaced_config_map,
            "ServiceAccount": self._core.create_namespaced_service_account,
            "Service": self._core.create_namespaced_service,
            "PodDisruptionBudget": self._policy.create_namespaced_pod_disruption_budget,
        }

    def create(self, kind: str, ns: str | None, body: Obj) -> Obj | None:
        """Create; ``None`` if it already exists (the caller decides whether that is ours)."""
        create = self._creators()
        name = body["metadata"]["name"]
        action, withhold = f"create {kind} {name}", kind in WITHHELD_KINDS
        if kind == "PersistentVolume":
            return self._request(
                action, self._core.create_persistent_volume, body, answer=409, withhold=withhold
            )
        return self._request(action, create[kind], ns, body, answer=409, withhold=withhold)

    def create_event(self, ns: str, body: Obj) -> Obj:
        """An events.k8s.io/v1 Event (activities/events.py writes them, best effort)."""
        action = f"create Event about {body['regarding']['kind']} {body['regarding']['name']}"
        return self._call(action, self._events.create_namespaced_event, ns, body)

    def patch_statefulset(self, ns: str, name: str, patch: Obj) -> Obj:
        return self._call(
            f"patch StatefulSet {ns}/{name}",
            self._apps.patch_namespaced_stateful_set,
            name,
            ns,
            patch,
            _content_type=MERGE_PATCH,
        )

    def patch_pv(self, name: str, patch: Obj) -> Obj:
        return (
            self._request(
                f"patch PersistentVolume {name}",
                self._core.patch_persistent_volume,
                name,
                patch,
                answer=None,
                withhold=True,
                _content_type=MERGE_PATCH,
            )
            or {}
        )

    def patch_pdb(self, ns: str, name: str, patch: Obj) -> Obj:
        return self._call(
            f"patch PodDisruptionBudget {ns}/{name}",
            self._policy.patch_namespaced_pod_disruption_budget,
            name,
            ns,
            patch,
            _content_type=MERGE_PATCH,
        )

    def annotate_pvc(self, ns: str, name: str, annotations: dict[str, str]) -> Obj:
        return self._call(
            f"annotate PersistentVolumeClaim {name}",
            self._core.patch_namespaced_persistent_volume_claim,
            name,
            ns,
            {"metadata": {"annotations": annotations}},
            _content_type=MERGE_PATCH,
        )

    def patch_pvc(self, ns: str, name: str, patch: Obj) -> Obj:
        return self._call(
            f"patch PersistentVolumeClaim {ns}/{name}",
            self._core.patch_namespaced_persistent_volume_claim,
            name,
            ns,
            patch,
            _content_type=MERGE_PATCH,
        )

    def delete_pvc(
        self, ns: str, name: str, uid: str | None = None, resource_version: str | None = None
    ) -> None:
        """Delete a claim; absent is success. With ``uid``/``resource_version``, only the
        claim that was read: a claim replaced or changed since is a 409 (``CONFLICT``,
        retryable), so the retry reads it again and judges what is there now."""
        body = None
        if uid is not None or resource_version is not None:
            body = _preconditions(uid, resource_version)
        self._maybe(
            f"delete PersistentVolumeClaim {ns}/{name}",
            self._core.delete_namespaced_persistent_volume_claim,
            name,
            ns,
            body=body,
        )

    def delete_statefulset(self, ns: str, name: str, uid: str, resource_version: str) -> None:
        """Delete exactly the StatefulSet read (uid and resourceVersion: a change since is
        a 409, retried); absent is success. Its dependents are orphaned, never deleted
        with it (a claim a ``whenDeleted: Delete`` policy made its dependent keeps its
        data)."""
        body = _preconditions(uid, resource_version)
        body.propagation_policy = "Orphan"
        self._maybe(
            f"delete StatefulSet {ns}/{name}",
            self._apps.delete_namespaced_stateful_set,
            name,
            ns,
            body=body,
        )

    def delete_pv(self, name: str, uid: str, resource_version: str) -> None:
        """Delete exactly the PV object read; absent is success. Only the object: a
        Retain PV's storage stays where it is."""
        self._maybe(
            f"delete PersistentVolume {name}",
            self._core.delete_persistent_volume,
            name,
            body=_preconditions(uid, resource_version),
        )

    # -- waiting ----------------------------------------------------------------------
    # Each returns once ``done(objects by name)`` holds and raises WaitTimeout after
    # ``timeout`` s; ``what`` names the wait in heartbeats and messages.
    def wait_for_pods(self, ns: str, selector: str, what: str, done: Done, timeout: float) -> None:
        """Pods of the namespace matching the label ``selector``."""
        self._wait(
            what, self._core.list_namespaced_pod, (ns,), done, timeout, label_selector=selector
        )

    def wait_for_pod(self, ns: str, name: str, what: str, done: Done, timeout: float) -> None:
        """The one pod ``name`` (absent from the dict while it does not exist)."""
        selector = f"metadata.name={name}"
        self._wait(
            what, self._core.list_namespaced_pod, (ns,), done, timeout, field_selector=selector
        )

    def wait_for_claims(self, ns: str, what: str, done: Done, timeout: float) -> None:
        """PersistentVolumeClaims of the namespace."""
        self._wait(what, self._core.list_namespaced_persistent_volume_claim, (ns,), done, timeout)

    def wait_for_volumes(self, what: str, done: Done, timeout: float) -> None:
        """PersistentVolumes."""
        self._wait(what, self._core.list_persistent_volume, (), done, timeout)

    def wait_for_attachments(self, what: str, done: Done, timeout: float) -> None:
        """VolumeAttachments."""
        self._wait(what, self._storage.list_volume_attachment, (), done, timeout)

    def _wait(
        self,
        what: str,
        list_fn: Callable[..., Any],
        args: tuple[Any, ...],
        done: Done,
        timeout: float,
        **selectors: Any,
    ) -> None:
        """The one watch loop behind every wait.

        ``items`` is kept current from watch events between re-lists; ``done`` may also
        raise (e.g. on a conflicting change) to stop the wait.
        """
        deadline = time.monotonic() + timeout
        while True:
            listed = self._call(f"list for {what}", list_fn, *args, **selectors)
            items = {i["metadata"]["name"]: i for i in listed.get("items") or []}
            activity.heartbeat(what)
            if done(items):
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ApplicationError(
                    f"timed out after {timeout:.0f} s waiting for {what} in {self.context}",
                    type=WAIT_TIMEOUT,
                    non_retryable=True,
                )
            window = max(1, int(min(WATCH_WINDOW, remaining)))
            try:
                for event in watch.Watch().stream(
                    list_fn,
                    *args,
                    resource_version=listed["metadata"].get("resourceVersion"),
                    timeout_seconds=window,
                    _request_timeout=(REQUEST_TIMEOUT[0], window + 5),
                    **selectors,
                ):
                    obj = self._api.sanitize_for_serialization(event["object"])
                    name = (obj.get("metadata") or {}).get("name")
                    if event["type"] == "DELETED":
                        items.pop(name, None)
                    elif event["type"] in ("ADDED", "MODIFIED") and name:
                        items[name] = obj
                    if done(items):
                        return
            except ApiException as exc:
                if exc.status != 410:  # 410 Gone: our resourceVersion expired; re-list
                    raise errors.classify(exc, f"watch for {what} in {self.context}") from None
            except errors.API_FAILURES as exc:
                # A broken watch is no failure of the wait: re-list and go on.
                activity.logger.info("watch interrupted (%s), re-listing", type(exc).__name__)


def _preconditions(uid: str | None, resource_version: str | None) -> client.V1DeleteOptions:
    return client.V1DeleteOptions(
        preconditions=client.V1Preconditions(uid=uid, resource_version=resource_version)
    )
