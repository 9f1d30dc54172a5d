"""Is the destination's object of a dependency's name the source's? Pure, no I/O.

Names lie: a Secret of the right name may hold another value. A Secret or ConfigMap
is compared by a sha256 digest of each key's value, a headless Service by its
selector, ports and clusterIP. The digests never leave this module: the answer is
words that name the keys that differ, never a value nor a digest of one (a digest
of a low-entropy password can be guessed offline).
"""

from __future__ import annotations

import hashlib
from typing import Any

Obj = dict[str, Any]

# Minted per cluster by the token controller: never the same in two clusters.
TOKEN_SECRET = "kubernetes.io/service-account-token"  # noqa: S105 (a type, not a secret)
# The fields a kind keeps its values in (``stringData`` is write-only: never served).
_DATA_FIELDS = {"Secret": ("data",), "ConfigMap": ("data", "binaryData")}


def _digests(obj: Obj, fields: tuple[str, ...]) -> dict[str, str]:
    """key -> digest of its value; the field is part of the digest, so a key moved from
    ``data`` to ``binaryData`` differs."""
    out = {}
    for field in fields:
        for key, value in sorted((obj.get(field) or {}).items()):
            out[key] = hashlib.sha256(f"{field}\0{value}".encode()).hexdigest()
    return out


def differing_keys(kind: str, source: Obj, destination: Obj) -> list[str]:
    """The keys whose values differ or that only one side has, sorted."""
    fields = _DATA_FIELDS[kind]
    a, b = _digests(source, fields), _digests(destination, fields)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def _ports(service: Obj) -> list[tuple[str, str, str, str]]:
    """(name, port, targetPort, protocol) with the API's defaults filled in, sorted."""
    out = []
    for p in (service.get("spec") or {}).get("ports") or []:
        port = str(p.get("port", ""))
        target = str(p.get("targetPort") or port)
        out.append((str(p.get("name") or ""), port, target, str(p.get("protocol") or "TCP")))
    return sorted(out)


def _shown_ports(ports: list[tuple[str, str, str, str]]) -> str:
    shown = [
        f"{name + ' ' if name else ''}{port}->{target}/{proto}"
        for name, port, target, proto in ports
    ]
    return ", ".join(shown) or "none"


def _service_difference(source: Obj, destination: Obj) -> list[str]:
    """Selector, ports and headlessness: what makes pods of both slices one app's
    endpoints with stable DNS names. None of it is secret, so both sides are shown."""
    parts = []
    a, b = source.get("spec") or {}, destination.get("spec") or {}
    if (a.get("selector") or {}) != (b.get("selector") or {}):
        parts.append(
            f"its selector differs ({b.get('selector') or {}} here, "
            f"{a.get('selector') or {}} in the source)"
        )
    if _ports(source) != _ports(destination):
        parts.append(
            f"its ports differ ({_shown_ports(_ports(destination))} here, "
            f"{_shown_ports(_ports(source))} in the source)"
        )
    if (a.get("clusterIP") == "None") != (b.get("clusterIP") == "None"):
        parts.append(
            f"its clusterIP is {b.get('clusterIP') or 'unset'} here, "
            f"{a.get('clusterIP') or 'unset'} in the source (a StatefulSet's Service is "
            "headless: clusterIP None)"
        )
    return parts


def difference(kind: str, source: Obj, destination: Obj) -> str | None:
    """How the destination's object differs from the source's, in words holding no
    value; ``None`` when it is the same (or the kind is not compared)."""
    if kind == "Service":
        parts = _service_difference(source, destination)
    elif kind in _DATA_FIELDS:
        if TOKEN_SECRET in (source.get("type"), destination.get("type")):
            return None
        parts = []
        if kind == "Secret":
            a, b = source.get("type") or "Opaque", destination.get("type") or "Opaque"
            if a != b:
                parts.append(f"its type differs ({b} here, {a} in the source)")
        if keys := differing_keys(kind, source, destination):
            parts.append(f"its data differs (keys {', '.join(keys)})")
    else:
        return None
    return "; ".join(parts) or None
