"""The one place that turns Kubernetes API failures into Temporal errors.

Temporal owns retries, so this only decides *whether* a failure is retryable and
under which stable ``type``. Messages come from the Status object's ``message``,
truncated; never from ``str(ApiException)``, which holds the response headers and
body and so can carry Secret data or tokens.
"""

from __future__ import annotations

import ast
import json
import re
from datetime import timedelta
from typing import Any

import pydantic
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException
from temporalio.exceptions import ApplicationError

# The stable error types, spelled once in contract.errors; workflows and callers match on them.
from contract.errors import (
    CONFLICT,
    FORBIDDEN,
    INVALID,
    NOT_FOUND,
    THROTTLED,
    UNAVAILABLE,
)

MAX_MESSAGE = 300

# What an API call can raise that ``classify`` turns into a Temporal error.
API_FAILURES = (ApiException, urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)

_NON_RETRYABLE = {400: INVALID, 422: INVALID, 401: FORBIDDEN, 403: FORBIDDEN}


# Who refused, in a Status message: an admission webhook or a ValidatingAdmissionPolicy.
_REFUSER = re.compile(
    r'admission webhook "[^"]+"|ValidatingAdmissionPolicy \'[^\']+\'( with binding \'[^\']+\')?'
)


def _status(exc: ApiException) -> dict[str, Any]:
    body = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if isinstance(body, str) and body:
        try:
            parsed = json.loads(body)
        except ValueError:
            return {}
        if isinstance(parsed, dict):
            return parsed
    return {}


def withheld_message(exc: ApiException) -> str:
    """For a request whose body holds Secret data or storage credentials (a Secret, a
    PersistentVolume): the Status reason, who refused and the fields named, never the
    message itself, which an admission webhook or a policy's messageExpression writes
    and may fill with the object's data (docs/design.md, invariant I5)."""
    status = _status(exc)
    reason = status.get("reason") if isinstance(status.get("reason"), str) else ""
    text = reason or str(exc.reason or "refused")
    refuser = _REFUSER.search(str(status.get("message") or ""))
    if refuser:
        text += f" by {refuser.group(0)}"
    causes = (status.get("details") or {}).get("causes") or []
    fields = sorted({str(c["field"]) for c in causes if isinstance(c, dict) and c.get("field")})
    if fields:
        text += f" on {', '.join(fields)}"
    return text + " (the server's message is withheld: the object holds Secret data)"


def status_message(exc: ApiException, withhold: bool = False) -> str:
    """The Status ``message`` of an API error, truncated; the reason if there is none.
    ``withhold``: the request carried Secret data, so only ``withheld_message``."""
    found = withheld_message(exc) if withhold else _status(exc).get("message")
    message = found if isinstance(found, str) else ""
    if not message:
        message = str(exc.reason or "no message")
    message = " ".join(message.split())
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."


def _retry_after(exc: ApiException) -> timedelta | None:
    headers = exc.headers or {}
    value = headers.get("Retry-After") or headers.get("retry-after")
    try:
        seconds = int(value) if value is not None else None
    except ValueError:
        return None
    return timedelta(seconds=max(1, seconds)) if seconds is not None else None


_HANDSHAKE = re.compile(r"Handshake status (\d{3})")


def handshake_status(exc: ApiException) -> ApiException:
    """The kubernetes client's websocket calls (exec) raise ApiException(status=0) with
    the handshake's whole text as its reason (headers, body): the HTTP status and the
    Status body back in their places, so ``classify`` treats a 403 as a 403; any other
    failure is a connection that did not open (its text is dropped)."""
    text = str(exc.reason or "")
    found = _HANDSHAKE.search(text)
    if not found:
        return ApiException(status=0, reason="the websocket connection did not open")
    out = ApiException(status=int(found.group(1)), reason="websocket handshake refused")
    # websocket-client's text: "Handshake status N REASON -+-+- {headers} -+-+- b'body'".
    body = text.split("-+-+-")[-1].strip() if text.count("-+-+-") >= 2 else ""
    try:
        raw = ast.literal_eval(body) if body.startswith(("b'", 'b"')) else None
    except (ValueError, SyntaxError):
        raw = None
    out.body = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else None
    return out


def classify(exc: BaseException, action: str, withhold: bool = False) -> ApplicationError:
    """A typed ApplicationError for a failed API call; ``action`` says what we tried.

    404 is the call site's decision (absence is success for a delete, a problem for
    a read) and arrives here only when it was unexpected; it stays retryable since
    another actor may be about to create the object. ``withhold``: see ``status_message``.
    """
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        text = f"{action}: {status} {status_message(exc, withhold)}"
        if status in _NON_RETRYABLE:
            return ApplicationError(text, type=_NON_RETRYABLE[status], non_retryable=True)
        if status == 404:
            return ApplicationError(text, type=NOT_FOUND)
        if status == 409:
            return ApplicationError(text, type=CONFLICT)
        if status == 429:
            return ApplicationError(text, type=THROTTLED, next_retry_delay=_retry_after(exc))
        if status >= 500 or status == 0:
            return ApplicationError(text, type=UNAVAILABLE)
        return ApplicationError(text, type=INVALID, non_retryable=True)
    if isinstance(exc, API_FAILURES):
        # Class name only: urllib3 messages can embed the full request URL.
        return ApplicationError(f"{action}: {type(exc).__name__}", type=UNAVAILABLE)
    raise TypeError(f"not an API failure: {type(exc).__name__}") from exc


# pydantic error types whose ``msg`` is a validator's own text, which may quote the value.
_OWN_TEXT = ("value_error", "assertion_error")


def invalid_body(exc: pydantic.ValidationError, action: str) -> ApplicationError:
    """The kubernetes client's models refused a request body before it was sent (they
    forbid unknown fields and check types): final, as a 422 would be. Each error's place
    and reason only, never its ``input``, which is the body's value (a Secret's data)."""
    said = [
        f"{'.'.join(str(p) for p in e['loc'])}: "
        + (e["type"] if e["type"] in _OWN_TEXT else f"{e['msg']} ({e['type']})")
        for e in exc.errors(include_url=False, include_input=False, include_context=False)
    ]
    text = f"{action}: the kubernetes client refused the body: {'; '.join(said[:5])}"
    if len(said) > 5:
        text += f" (and {len(said) - 5} more)"
    text = text if len(text) <= MAX_MESSAGE * 2 else text[: MAX_MESSAGE * 2 - 3] + "..."
    return ApplicationError(text, type=INVALID, non_retryable=True)
