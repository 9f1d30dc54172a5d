"""Dependencies compared, never trusted by name: what differs is named by key, never by
value (no cluster needed)."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest

from activities import sameness


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


SECRET_DATA = {"password": b64("hunter2"), "user": b64("app")}
SECRET: dict[str, Any] = {"type": "Opaque", "data": SECRET_DATA}
CONFIG = {"data": {"redis.conf": "cluster-enabled yes\n"}, "binaryData": {"blob": b64("\x00")}}
SERVICE = {
    "spec": {
        "clusterIP": "None",
        "selector": {"app": "db"},
        "ports": [{"name": "redis", "port": 6379, "targetPort": 6379, "protocol": "TCP"}],
    }
}


def changed(obj: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    at = obj
    for key in path[:-1]:
        at = at.setdefault(key, {})
    if value is None:
        at.pop(path[-1], None)
    else:
        at[path[-1]] = value
    return obj


@pytest.mark.parametrize(
    ("kind", "source", "destination", "expected"),
    [
        ("Secret", SECRET, SECRET, None),
        ("Secret", SECRET, {**SECRET, "metadata": {"labels": {"x": "y"}}}, None),
        (
            "Secret",
            SECRET,
            changed(SECRET, ["data", "password"], b64("other")),
            "its data differs (keys password)",
        ),
        (
            "Secret",
            SECRET,
            changed(changed(SECRET, ["data", "user"], None), ["data", "extra"], b64("e")),
            "its data differs (keys extra, user)",
        ),
        (
            "Secret",
            SECRET,
            {**SECRET, "type": "kubernetes.io/tls"},
            "its type differs (kubernetes.io/tls here, Opaque in the source)",
        ),
        ("Secret", {"data": {}}, {"type": "Opaque"}, None),
        (
            "Secret",
            {"type": sameness.TOKEN_SECRET, "data": {"token": "a"}},
            {"type": sameness.TOKEN_SECRET, "data": {"token": "b"}},
            None,
        ),
        ("ConfigMap", CONFIG, CONFIG, None),
        (
            "ConfigMap",
            CONFIG,
            changed(CONFIG, ["data", "redis.conf"], "cluster-enabled no\n"),
            "its data differs (keys redis.conf)",
        ),
        (
            "ConfigMap",
            CONFIG,
            changed(CONFIG, ["binaryData", "blob"], b64("\x01")),
            "its data differs (keys blob)",
        ),
        # The same value moved from binaryData to data is another ConfigMap.
        (
            "ConfigMap",
            CONFIG,
            changed(changed(CONFIG, ["binaryData"], None), ["data", "blob"], b64("\x00")),
            "its data differs (keys blob)",
        ),
        ("Service", SERVICE, SERVICE, None),
        # The API's defaults: protocol TCP, targetPort = port.
        (
            "Service",
            SERVICE,
            changed(SERVICE, ["spec", "ports"], [{"name": "redis", "port": 6379}]),
            None,
        ),
        (
            "Service",
            SERVICE,
            changed(SERVICE, ["spec", "selector"], {"app": "other"}),
            "its selector differs ({'app': 'other'} here, {'app': 'db'} in the source)",
        ),
        (
            "Service",
            SERVICE,
            changed(SERVICE, ["spec", "ports"], [{"name": "redis", "port": 6380}]),
            "its ports differ (redis 6380->6380/TCP here, redis 6379->6379/TCP in the source)",
        ),
        (
            "Service",
            SERVICE,
            changed(
                SERVICE, ["spec", "ports"], [{"name": "redis", "port": 6379, "protocol": "UDP"}]
            ),
            "its ports differ (redis 6379->6379/UDP here",
        ),
        (
            "Service",
            SERVICE,
            changed(SERVICE, ["spec", "clusterIP"], "10.0.0.7"),
            "its clusterIP is 10.0.0.7 here, None in the source",
        ),
        ("ServiceAccount", {"metadata": {"name": "a"}}, {"metadata": {"name": "b"}}, None),
    ],
)
def test_difference(
    kind: str, source: dict[str, Any], destination: dict[str, Any], expected: str | None
) -> None:
    got = sameness.difference(kind, source, destination)
    if expected is None:
        assert got is None
    else:
        assert got is not None and got.startswith(expected), got


def test_no_value_nor_digest_of_one_is_in_the_answer() -> None:
    other = changed(SECRET, ["data", "password"], b64("correct horse"))
    got = sameness.difference("Secret", SECRET, other) or ""
    values = [*SECRET_DATA.values(), *other["data"].values(), "hunter2", "correct horse"]
    digests = [
        sameness._digests(o, ("data",))[k] for o in (SECRET, other) for k in ("password", "user")
    ]
    assert got and not any(v in got for v in [*values, *digests])
