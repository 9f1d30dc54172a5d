"""Optional payload encryption: an AES-256-GCM payload codec for every worker and
client, and a small codec server so the Temporal UI and CLI can show the payloads
to people allowed to see them (``--codec-endpoint``).

The key comes from ``STSMIGRATE_CODEC_KEY`` (base64 of 32 bytes) or
``STSMIGRATE_CODEC_KEY_FILE`` (a file holding the same); with neither set, payloads
are not encrypted. ``stsmigrate codec-key`` prints a new key. Each encrypted payload
carries the key's id (first 8 bytes of its SHA-256, hex), so a wrong key is named
as such instead of failing as corrupt data.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import hashlib
import os
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


class CodecServer:
    """The codec HTTP protocol: POST .../encode and .../decode with Payloads as proto
    JSON. CORS for the given UI origins. Binds 127.0.0.1 unless told otherwise;
    anyone who reaches it can decrypt, so keep it behind your own authentication."""

    def __init__(
        self,
        codec: PayloadCodec,
        host: str = "127.0.0.1",
        port: int = 8081,
        origins: Sequence[str] = (),
    ) -> None:
        handler = _handler(codec, tuple(o.rstrip("/") for o in origins))
        self._server = ThreadingHTTPServer((host, port), handler)
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


def _handler(codec: PayloadCodec, origins: tuple[str, ...]) -> type[BaseHTTPRequestHandler]:
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

        def do_OPTIONS(self) -> None:
            self._reply(200)

        def do_POST(self) -> None:
            operation = self.path.rstrip("/").rsplit("/", 1)[-1]
            if operation not in ("encode", "decode"):
                self._reply(404, b"POST .../encode or .../decode")
                return
            try:
                length = int(self.headers.get("Content-Length", "0"))
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
