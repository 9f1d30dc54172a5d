"""Retry classification of Kubernetes API failures, as a table of cases."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from temporalio.exceptions import ApplicationError

from activities import errors
from activities.kube import Kube
from contract import errors as types


def api_exception(
    status: int,
    message: str | None = "boom",
    headers: dict[str, str] | None = None,
    body: str | None = None,
) -> ApiException:
    exc = ApiException(status=status, reason="Reason")
    exc.body = (
        body
        if body is not None
        else json.dumps(
            {"kind": "Status", "message": message} if message is not None else {"kind": "Status"}
        )
    )
    exc.headers = headers or {}
    return exc


@pytest.mark.parametrize(
    ("status", "error_type", "retryable"),
    [
        (400, types.INVALID, False),
        (401, types.FORBIDDEN, False),
        (403, types.FORBIDDEN, False),
        (404, types.NOT_FOUND, True),
        (405, types.INVALID, False),
        (409, types.CONFLICT, True),
        (422, types.INVALID, False),
        (429, types.THROTTLED, True),
        (500, types.UNAVAILABLE, True),
        (502, types.UNAVAILABLE, True),
        (503, types.UNAVAILABLE, True),
        (504, types.UNAVAILABLE, True),
    ],
)
def test_status_codes(status: int, error_type: str, retryable: bool) -> None:
    err = errors.classify(api_exception(status), "patch statefulset db")
    assert err.type == error_type
    assert err.non_retryable is (not retryable)
    assert err.message == f"patch statefulset db: {status} boom"


def test_throttling_honours_retry_after() -> None:
    err = errors.classify(api_exception(429, headers={"Retry-After": "7"}), "list pods")
    assert err.next_retry_delay == timedelta(seconds=7)
    assert errors.classify(api_exception(429), "list pods").next_retry_delay is None
    bad = errors.classify(api_exception(429, headers={"Retry-After": "soon"}), "list pods")
    assert bad.next_retry_delay is None


@pytest.mark.parametrize(
    "exc",
    [
        urllib3.exceptions.ReadTimeoutError(None, "https://127.0.0.1:6443/api?token=s3cr3t", "x"),
        urllib3.exceptions.MaxRetryError(None, "https://127.0.0.1:6443/api?token=s3cr3t"),
        ConnectionResetError("reset by peer"),
        TimeoutError(),
    ],
)
def test_transport_failures_are_retryable_and_keep_urls_out(exc: BaseException) -> None:
    err = errors.classify(exc, "read node list")
    assert err.type == types.UNAVAILABLE
    assert not err.non_retryable
    assert "s3cr3t" not in err.message and "127.0.0.1" not in err.message


def test_message_never_includes_headers_or_body() -> None:
    secret_body = json.dumps({"kind": "Secret", "data": {"password": "aHVudGVyMg=="}})
    exc = api_exception(500, body=secret_body, headers={"Authorization": "Bearer t0ken"})
    err = errors.classify(exc, "read secret")
    assert "aHVudGVyMg" not in err.message and "t0ken" not in err.message
    assert err.message == "read secret: 500 Reason"


def test_long_messages_are_truncated_and_flattened() -> None:
    err = errors.classify(api_exception(422, message="bad\nfield " * 200), "create pvc")
    assert "\n" not in err.message
    assert len(err.message) <= len("create pvc: 422 ") + errors.MAX_MESSAGE
    assert err.message.endswith("...")


def test_non_api_errors_are_bugs_not_retries() -> None:
    with pytest.raises(TypeError):
        errors.classify(KeyError("x"), "anything")


def test_a_refusal_of_a_secret_names_who_refused_and_which_fields_never_the_message() -> None:
    status = {
        "kind": "Status",
        "reason": "BadRequest",
        "message": 'admission webhook "vault.example.com" denied the request: '
        "value hunter2 is weak",
        "details": {"causes": [{"field": "data[password]", "message": "hunter2 is weak"}]},
    }
    err = errors.classify(api_exception(400, body=json.dumps(status)), "create Secret s", True)
    assert err.message == (
        'create Secret s: 400 BadRequest by admission webhook "vault.example.com" on '
        "data[password] (the server's message is withheld: the object holds Secret data)"
    )
    assert "hunter2" not in errors.status_message(api_exception(403, body="not json"), True)


@pytest.mark.parametrize("how", ["dry_run", "create"])
def test_a_body_the_client_refuses_is_final_and_quotes_no_value(how: str) -> None:
    """kubernetes client 37 checks every body against its models before it sends it: the
    refusal is final (never retried for ever) and names places, not the values there."""
    # Nothing listens there: an error that is not the client's own check would be a
    # retryable UNAVAILABLE, not INVALID.
    api = client.ApiClient(client.Configuration(host="http://127.0.0.1:9"))
    kube = Kube(api, "b")
    pod = {
        "metadata": {"name": "redis-2", "labels": "app=s3cr3t-label"},
        "spec": {
            "containers": [
                {"name": "r", "env": [{"name": "MODE", "value": "s3cr3t-value", "bogus": "s3cr3t"}]}
            ]
        },
    }
    with pytest.raises(ApplicationError) as e:
        getattr(kube, how)("Pod", "shop", pod)
    assert e.value.type == types.INVALID and e.value.non_retryable
    message = str(e.value)
    assert "s3cr3t" not in message
    assert f"{'dry-run create' if how == 'dry_run' else 'create'} Pod redis-2 in b" in message
    assert "metadata.labels: Input should be a valid dictionary (dict_type)" in message
    assert "spec.containers.0.env.0.bogus: Extra inputs are not permitted" in message
