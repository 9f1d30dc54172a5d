"""A fault-injecting proxy in front of a local kube-apiserver, for the fault tests.

It terminates TLS with the apiserver's own certificate (so clients keep trusting
the cluster CA), and for each HTTP/1.1 request either injects a fault, at ``rate``,
or forwards it upstream as the cluster admin (one forwarded request per client
connection, ``Connection: close``, so watch streams pass through untouched).

Faults: ``500`` and ``503`` (a Kubernetes Status body), ``429`` with
``Retry-After: 1``, ``reset`` (the connection dropped without an answer) and
``hang`` (no answer for ``hang_seconds``, then the connection closed). With
``version`` it also plays an older server (``/version`` answers it). Binds
127.0.0.1; ``stop()`` ends it. Imports no product code.
"""

from __future__ import annotations

import asyncio
import json
import random
import ssl
import threading
from collections import Counter
from collections.abc import Sequence

from devenv.clusters import Cluster, free_port

FAULTS = ("500", "503", "429", "reset", "hang")


class FaultProxy:
    def __init__(
        self,
        cluster: Cluster,
        rate: float,
        faults: Sequence[str] = FAULTS,
        hang_seconds: float = 20,
        seed: int = 0,
        version: str | None = None,
    ) -> None:
        self.cluster, self.rate, self.faults = cluster, rate, tuple(faults)
        self.version = version  # e.g. "v1.26.0": /version answers that instead
        self.hang_seconds = hang_seconds
        self.port = free_port()
        self.injected: Counter[str] = Counter()
        self.forwarded = 0
        self._random = random.Random(seed)  # noqa: S311 - fault choice, not security
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> None:
        pki = self.cluster.pki
        inbound = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        inbound.load_cert_chain(pki.server_cert, pki.server_key)
        self._upstream = ssl.create_default_context(cafile=str(pki.ca_cert))
        self._upstream.load_cert_chain(pki.admin_cert, pki.admin_key)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=inbound), self._loop
        ).result(10)

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            tasks = asyncio.all_tasks() - {asyncio.current_task()}
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _pick(self) -> str | None:
        if self._random.random() >= self.rate:
            return None
        return self._random.choice(self.faults)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                length = next(
                    (
                        int(ln.split(":", 1)[1])
                        for ln in lines
                        if ln.lower().startswith("content-length:")
                    ),
                    0,
                )
                body = await reader.readexactly(length) if length else b""
                path = lines[0].split(" ")[1] if " " in lines[0] else ""
                if self.version and path.split("?")[0].rstrip("/") == "/version":
                    await self._version(writer)
                    continue
                fault = self._pick()
                if fault is None:
                    await self._forward(lines, body, writer)
                    return
                self.injected[fault] += 1
                if fault == "reset":
                    writer.transport.abort()
                    return
                if fault == "hang":
                    await asyncio.sleep(self.hang_seconds)
                    return
                await self._status(writer, int(fault))
        except (ConnectionError, asyncio.CancelledError, ssl.SSLError):
            return
        finally:
            writer.close()

    async def _version(self, writer: asyncio.StreamWriter) -> None:
        assert self.version is not None
        major, minor = self.version.lstrip("v").split(".")[:2]
        body = json.dumps(
            {
                "major": major,
                "minor": minor,
                "gitVersion": self.version,
                "gitCommit": "0" * 40,
                "gitTreeState": "clean",
                "buildDate": "2023-01-01T00:00:00Z",
                "goVersion": "go1.20",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        ).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()

    async def _status(self, writer: asyncio.StreamWriter, code: int) -> None:
        reason = {
            500: "Internal Server Error",
            503: "Service Unavailable",
            429: "Too Many Requests",
        }[code]
        body = json.dumps(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "message": f"injected by the fault proxy: {reason}",
                "reason": reason.replace(" ", ""),
                "code": code,
            }
        ).encode()
        extra = "Retry-After: 1\r\n" if code == 429 else ""
        writer.write(
            f"HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()

    async def _forward(self, lines: list[str], body: bytes, writer: asyncio.StreamWriter) -> None:
        kept = [ln for ln in lines[1:] if ln and not ln.lower().startswith("connection:")]
        head = "\r\n".join([lines[0], *kept, "Connection: close", "", ""]).encode("latin-1")
        up_reader, up_writer = await asyncio.open_connection(
            "127.0.0.1", self.cluster.api_port, ssl=self._upstream
        )
        self.forwarded += 1
        try:
            up_writer.write(head + body)
            await up_writer.drain()
            while chunk := await up_reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        finally:
            up_writer.close()
