"""Optional payload encryption: an AES-256-GCM payload codec for every worker and
client, and a small codec server so the Temporal UI and CLI can show the payloads
to people allowed to see them (``--codec-endpoint``).

The key comes from ``STSMIGRATE_CODEC_KEY`` (base64 of 32 bytes) or
``STSMIGRATE_CODEC_KEY_FILE`` (a file holding the same); with neither set, payloads
are not encrypted. ``stsmigrate codec-key`` prints a new key. Each encrypted payload
carries the key's id (first 8 bytes of its SHA-256, hex), so a wrong key is named
as such instead of failing as corrupt data.

The codec server decrypts for whoever reaches it, so it guards itself: with a token
configured (``STSMIGRATE_CODEC_SERVER_TOKEN`` or ``..._TOKEN_FILE``, never argv) every
POST needs ``Authorization: Bearer <token>`` (401 otherwise); a body over
``MAX_BODY`` is refused unread (413); and a Host header that names neither the
address it binds nor an allowed name is refused (421), so a web page whose DNS name
was rebound to 127.0.0.1 cannot use a browser to reach it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import hashlib
import hmac
import ipaddress
import os
import socket
import threading
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
TOKEN_ENV = "STSMIGRATE_CODEC_SERVER_TOKEN"  # noqa: S105 - a variable's name
TOKEN_FILE_ENV = "STSMIGRATE_CODEC_SERVER_TOKEN_FILE"  # noqa: S105 - a variable's name
# The largest request body decoded; a history page of payloads is far smaller.
MAX_BODY = 4 * 1024 * 1024
# What a refused request may still send, and how long it is waited for, before closing.
LINGER_BYTES, LINGER_SECONDS = 1024 * 1024, 2.0


class CodecKeyError(ValueError):
    """The key is missing, malformed, or not the one the payload was encrypted with."""


class AesGcmCodec(PayloadCodec):
    """Encrypts each whole payload (metadata and data) with AES-256-GCM, a fresh
    96-bit nonce per payload, the key id as associated data."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise CodecKeyError(f"the codec key must be 32 bytes (AES-256), not {len(key)}")
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(key).hexdigest()[:16]

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        out = []
        for payload in payloads:
            nonce = os.urandom(12)
            sealed = self._aead.encrypt(nonce, payload.SerializeToString(), self.key_id.encode())
            out.append(
                Payload(
                    metadata={"encoding": ENCODING, KEY_ID: self.key_id.encode()},
                    data=nonce + sealed,
                )
            )
        return out

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        out = []
        for payload in payloads:
            if payload.metadata.get("encoding") != ENCODING:
                out.append(payload)  # written without the codec: left as it is
                continue
            key_id = payload.metadata.get(KEY_ID, b"").decode()
            if key_id != self.key_id:
                raise CodecKeyError(
                    f"payload encrypted with key {key_id or '?'}, this codec has key {self.key_id}"
                )
            nonce, sealed = payload.data[:12], payload.data[12:]
            try:
                plain = self._aead.decrypt(nonce, sealed, key_id.encode())
            except InvalidTag:
                raise CodecKeyError("payload failed authentication (tampered or corrupt)") from None
            out.append(Payload.FromString(plain))
        return out


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def codec_from_env(env: Mapping[str, str] | None = None) -> AesGcmCodec | None:
    env = os.environ if env is None else env
    text = env.get("STSMIGRATE_CODEC_KEY", "")
    if not text and env.get("STSMIGRATE_CODEC_KEY_FILE"):
        path = Path(env["STSMIGRATE_CODEC_KEY_FILE"]).expanduser()
        try:
            text = path.read_text()
        except OSError as e:
            raise CodecKeyError(f"STSMIGRATE_CODEC_KEY_FILE: cannot read {path}: {e}") from None
    if not text.strip():
        return None
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except binascii.Error:
        raise CodecKeyError(
            "the codec key must be base64 of 32 bytes (make one: stsmigrate codec-key)"
        ) from None
    return AesGcmCodec(key)


def server_token_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """The codec server's bearer token, from the variable or the file it names."""
    env = os.environ if env is None else env
    text = env.get(TOKEN_ENV, "")
    if not text and env.get(TOKEN_FILE_ENV):
        path = Path(env[TOKEN_FILE_ENV]).expanduser()
        try:
            text = path.read_text()
        except OSError as e:
            raise CodecKeyError(f"{TOKEN_FILE_ENV}: cannot read {path}: {e}") from None
    return text.strip() or None


def data_converter(codec: PayloadCodec | None) -> DataConverter:
    """The pydantic converter, with the codec and encoded failure attributes when on
    (failure messages and stack traces then travel inside an encrypted payload too)."""
    if codec is None:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclasses.dataclass(frozen=True)
class Guard:
    """Who may use the codec server: the bearer token (None: no token asked), and the
    Host headers it answers (``host_allowed``)."""

    token: str | None
    bound: str  # the address it binds, as given
    port: int
    names: frozenset[str] = frozenset()  # further names it is reached by (a proxy's)

    def host_allowed(self, header: str | None) -> bool:
        """The Host header names the bound address (or localhost when that is loopback;
        any IP literal when it binds every interface) with its port, or an allowed name.
        DNS rebinding needs a name that is none of these."""
        if not header:
            return False
        name, port = _split_host(header.strip().lower())
        if name in self.names:
            return True
        if port != self.port:
            return False
        bound = self.bound.lower().strip("[]")
        if name == bound or (is_loopback(bound) and is_loopback(name)):
            return True
        if bound in ("0.0.0.0", "::", ""):  # noqa: S104 - the wildcard is compared, not bound
            try:
                ipaddress.ip_address(name)
            except ValueError:
                return False
            return True
        return False

    def authorized(self, header: str | None) -> bool:
        if self.token is None:
            return True
        scheme, _, given = (header or "").strip().partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), self.token.encode()
        )


def _split_host(header: str) -> tuple[str, int | None]:
    """("name", port) of a Host header; IPv6 literals in brackets; port 80 if none."""
    if header.startswith("["):
        name, _, rest = header[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif header.count(":") == 1:
        name, port_text = header.split(":")
    else:
        name, port_text = header, ""
    if not port_text:
        return name, 80
    return name, int(port_text) if port_text.isdigit() else None


class CodecServer:
    """The codec HTTP protocol: POST .../encode and .../decode with Payloads as proto
    JSON. CORS for the given UI origins. Binds 127.0.0.1 unless told otherwise; with
    ``token`` every POST must carry it as a bearer token; Host headers are checked
    (``Guard``); bodies are capped at ``max_body`` bytes."""

    def __init__(
        self,
        codec: PayloadCodec,
        host: str = "127.0.0.1",
        port: int = 8081,
        origins: Sequence[str] = (),
        token: str | None = None,
        allowed_hosts: Sequence[str] = (),
        max_body: int = MAX_BODY,
    ) -> None:
        self._server = ThreadingHTTPServer((host, port), BaseHTTPRequestHandler)
        guard = Guard(
            token=token,
            bound=host,
            port=int(self._server.server_address[1]),
            names=frozenset(_split_host(h.strip().lower())[0] for h in allowed_hosts),
        )
        self._server.RequestHandlerClass = _handler(
            codec, tuple(o.rstrip("/") for o in origins), guard, max_body
        )
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join()


def _handler(
    codec: PayloadCodec, origins: tuple[str, ...], guard: Guard, max_body: int
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _cors(self) -> None:
            origin = self.headers.get("Origin", "")
            if origin and origin.rstrip("/") in origins:
                self.send_header("Access-Control-Allow-Origin", origin)
                self.send_header("Access-Control-Allow-Methods", "POST")
                self.send_header(
                    "Access-Control-Allow-Headers", "content-type,x-namespace,authorization"
                )
                self.send_header("Access-Control-Allow-Credentials", "true")

        def _reply(self, status: int, body: bytes = b"", kind: str = "text/plain") -> None:
            self.send_response(status)
            self._cors()
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _refuse(self, status: int, reason: bytes, *headers: tuple[str, str]) -> None:
            # The body is left unread: close, so it is not taken for the next request.
            self.close_connection = True
            self.send_response(status)
            self._cors()
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(reason)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(reason)
            self._linger()

        def _linger(self) -> None:
            """Closing with the body unread would reset the connection, and the client
            could lose the answer: stop writing, then drain a bounded amount first."""
            self.wfile.flush()
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_WR)
                self.connection.settimeout(LINGER_SECONDS)
                left = LINGER_BYTES
                while left > 0 and (chunk := self.connection.recv(min(65536, left))):
                    left -= len(chunk)

        def _host_ok(self) -> bool:
            if guard.host_allowed(self.headers.get("Host")):
                return True
            self._refuse(421, b"this codec server does not answer for that Host")
            return False

        def do_OPTIONS(self) -> None:
            # A CORS preflight carries no Authorization header; the POST after it does.
            if self._host_ok():
                self._reply(200)

        def do_POST(self) -> None:
            if not self._host_ok():
                return
            if not guard.authorized(self.headers.get("Authorization")):
                self._refuse(
                    401,
                    b"send Authorization: Bearer <the codec server's token>",
                    ("WWW-Authenticate", 'Bearer realm="stsmigrate codec"'),
                )
                return
            operation = self.path.rstrip("/").rsplit("/", 1)[-1]
            if operation not in ("encode", "decode"):
                self._refuse(404, b"POST .../encode or .../decode")
                return
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                self._refuse(411, b"send Content-Length")
                return
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                length = -1
            if length < 0:
                self._refuse(400, b"bad Content-Length")
                return
            if length > max_body:
                self._refuse(413, f"at most {max_body} bytes".encode())
                return
            try:
                payloads = json_format.Parse(self.rfile.read(length), Payloads())
                work = codec.encode if operation == "encode" else codec.decode
                done = asyncio.run(work(payloads.payloads))
            except (json_format.ParseError, ValueError) as e:
                self._reply(400, str(e).encode())
                return
            body = json_format.MessageToJson(Payloads(payloads=done)).encode()
            self._reply(200, body, "application/json")

        def log_message(self, format: str, *args: object) -> None:
            pass  # no access log: request lines name nothing secret, but stay quiet

    return Handler
