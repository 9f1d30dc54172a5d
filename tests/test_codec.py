"""The optional AES-GCM payload codec, its codec server, and what the Temporal
server stores when it is on: no readable payload, found by walking every message
of the raw history (with a client that has no key)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from google.protobuf import json_format
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from contract import DescribeClustersInput, DescribeClustersResult
from devenv.clusters import LocalClusters, free_port
from stsmigrate.api import MigrationRequest, start_migration
from stsmigrate.cli import main
from stsmigrate.codec import (
    ENCODING,
    MAX_BODY,
    AesGcmCodec,
    CodecKeyError,
    CodecServer,
    Guard,
    codec_from_env,
    data_converter,
    new_key,
    server_token_from_env,
)
from tests.support.commands import temporal_cli, temporal_cli_result
from tests.support.fakes import FakeClusters, fake_worker
from tests.support.processes import WorkerProcess
from workflows import PATCHES

KEY = base64.b64decode(new_key())


def plain(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(text).encode())


async def test_payloads_round_trip_and_carry_nothing_readable() -> None:
    codec = AesGcmCodec(KEY)
    original = [plain("hunter2-marker"), plain("second")]
    sealed = await codec.encode(original)
    for payload in sealed:
        assert payload.metadata["encoding"] == ENCODING
        assert payload.metadata["encryption-key-id"] == codec.key_id.encode()
        assert b"hunter2-marker" not in payload.SerializeToString()
        assert b"json/plain" not in payload.SerializeToString()
    assert sealed[0].data[:12] != sealed[1].data[:12]  # a fresh nonce each time
    assert await codec.decode(sealed) == original
    # Payloads written before the codec was switched on still decode.
    assert await codec.decode([original[0]]) == [original[0]]


async def test_a_wrong_key_or_tampering_is_named_as_such() -> None:
    sealed = await AesGcmCodec(KEY).encode([plain("x")])
    other = AesGcmCodec(bytes(32))
    with pytest.raises(CodecKeyError, match=f"encrypted with key {AesGcmCodec(KEY).key_id}"):
        await other.decode(sealed)
    tampered = Payload()
    tampered.CopyFrom(sealed[0])
    tampered.data = tampered.data[:-1] + bytes([tampered.data[-1] ^ 1])
    with pytest.raises(CodecKeyError, match="failed authentication"):
        await AesGcmCodec(KEY).decode([tampered])


def test_the_key_comes_from_the_environment_or_a_file(tmp_path: Path) -> None:
    assert codec_from_env({}) is None
    text = base64.b64encode(KEY).decode()
    from_env = codec_from_env({"STSMIGRATE_CODEC_KEY": text})
    key_file = tmp_path / "key"
    key_file.write_text(text + "\n")
    from_file = codec_from_env({"STSMIGRATE_CODEC_KEY_FILE": str(key_file)})
    assert from_env is not None and from_file is not None
    assert from_env.key_id == from_file.key_id == AesGcmCodec(KEY).key_id
    with pytest.raises(CodecKeyError, match="base64 of 32 bytes"):
        codec_from_env({"STSMIGRATE_CODEC_KEY": "not base64!"})
    with pytest.raises(CodecKeyError, match="must be 32 bytes"):
        codec_from_env({"STSMIGRATE_CODEC_KEY": base64.b64encode(b"short").decode()})
    with pytest.raises(CodecKeyError, match="cannot read"):
        codec_from_env({"STSMIGRATE_CODEC_KEY_FILE": str(tmp_path / "missing")})


@pytest.fixture
def codec_server() -> Iterator[CodecServer]:
    server = CodecServer(AesGcmCodec(KEY), port=free_port(), origins=["http://ui.example:8233"])
    server.start()
    yield server
    server.stop()


def post(url: str, body: bytes, origin: str = "") -> tuple[int, bytes, dict[str, str]]:
    headers = {"Content-Type": "application/json", **({"Origin": origin} if origin else {})}
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            return answer.status, answer.read(), dict(answer.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def test_the_codec_server_speaks_the_codec_protocol(codec_server: CodecServer) -> None:
    payloads = json_format.MessageToJson(Payloads(payloads=[plain("hello")])).encode()
    status, encoded, headers = post(
        f"{codec_server.url}/default/encode", payloads, "http://ui.example:8233"
    )
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == "http://ui.example:8233"
    sealed = json_format.Parse(encoded, Payloads())
    assert sealed.payloads[0].metadata["encoding"] == ENCODING
    status, decoded, headers = post(f"{codec_server.url}/decode", encoded, "http://evil.example")
    assert status == 200 and "Access-Control-Allow-Origin" not in headers
    assert json_format.Parse(decoded, Payloads()).payloads[0] == plain("hello")
    assert post(f"{codec_server.url}/other", payloads)[0] == 404
    assert post(f"{codec_server.url}/decode", b"{not json")[0] == 400


TOKEN = "codec-server-token-" + uuid.uuid4().hex


def raw_post(
    server: CodecServer, body: bytes, host: str | None = None, **headers: str
) -> tuple[int, bytes]:
    """POST .../decode with exactly the Host and headers given (http.client, which
    sends Content-Length for ``body`` and the Host only when told)."""
    address, port = server.url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(address, int(port), timeout=10)
    try:
        conn.putrequest("POST", "/default/decode", skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host if host is not None else f"127.0.0.1:{port}")
        given = {name.replace("_", "-"): value for name, value in headers.items()}
        for name, value in {"Content-Length": str(len(body)), **given}.items():
            conn.putheader(name, value)
        conn.endheaders()
        # Refused unread (413) the server stops reading: the answer is still there.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.send(body)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


@pytest.fixture
def guarded_server() -> Iterator[CodecServer]:
    server = CodecServer(
        AesGcmCodec(KEY),
        port=free_port(),
        origins=["http://ui.example:8233"],
        token=TOKEN,
        allowed_hosts=["codec.example.com", "Proxy.Example:8443"],
        max_body=64 * 1024,
    )
    server.start()
    yield server
    server.stop()


def test_with_a_token_the_codec_server_answers_only_its_bearer(
    guarded_server: CodecServer,
) -> None:
    sealed = asyncio.run(AesGcmCodec(KEY).encode([plain("hello")]))
    body = json_format.MessageToJson(Payloads(payloads=sealed)).encode()
    status, said = raw_post(guarded_server, body)
    assert status == 401 and b"hello" not in said
    assert raw_post(guarded_server, body, Authorization=f"Bearer {TOKEN}x")[0] == 401
    assert raw_post(guarded_server, body, Authorization=f"Basic {TOKEN}")[0] == 401
    assert raw_post(guarded_server, body, Authorization="Bearer")[0] == 401
    status, decoded = raw_post(guarded_server, body, Authorization=f"Bearer {TOKEN}")
    assert status == 200
    assert json_format.Parse(decoded, Payloads()).payloads[0] == plain("hello")
    # The Temporal CLI sends the header as given (--codec-auth 'bearer <token>').
    assert raw_post(guarded_server, body, Authorization=f"bearer {TOKEN}")[0] == 200
    # A CORS preflight carries no credentials and is answered.
    port = int(guarded_server.url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("OPTIONS", "/decode", headers={"Origin": "http://ui.example:8233"})
    answer = conn.getresponse()
    assert answer.status == 200
    assert "authorization" in answer.headers["Access-Control-Allow-Headers"]
    conn.close()


def test_the_codec_server_caps_the_body_and_checks_the_host(
    guarded_server: CodecServer,
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    port = int(guarded_server.url.rsplit(":", 1)[1])
    empty = json_format.MessageToJson(Payloads()).encode()
    assert raw_post(guarded_server, empty, **auth)[0] == 200
    big = b" " * (64 * 1024 + 1)
    status, said = raw_post(guarded_server, big, **auth)
    assert status == 413 and b"at most 65536 bytes" in said
    # A Content-Length beyond the cap is refused before its body is read or sent.
    assert raw_post(guarded_server, b"", Content_Length=str(10**12), **auth)[0] == 413
    assert raw_post(guarded_server, b"", Content_Length="-1", **auth)[0] == 400
    # DNS rebinding: a page's name now resolves to 127.0.0.1; its Host still says the name.
    for host in ["evil.example", f"evil.example:{port}", f"127.0.0.1:{port + 1}", ""]:
        assert raw_post(guarded_server, empty, host=host, **auth)[0] == 421, host
    allowed = ["codec.example.com", "codec.example.com:443", "proxy.example:80"]
    for host in [f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", *allowed]:
        assert raw_post(guarded_server, empty, host=host, **auth)[0] == 200, host
    # The Host is checked first: without it, not even a token is asked for.
    assert raw_post(guarded_server, empty, host="evil.example")[0] == 421


def test_without_a_token_the_codec_server_still_checks_host_and_size(
    codec_server: CodecServer,
) -> None:
    empty = json_format.MessageToJson(Payloads()).encode()
    assert raw_post(codec_server, empty)[0] == 200
    assert raw_post(codec_server, empty, host="rebound.example")[0] == 421
    assert raw_post(codec_server, b"", Content_Length=str(MAX_BODY + 1))[0] == 413


@pytest.mark.parametrize(
    ("bound", "host", "allowed"),
    [
        ("127.0.0.1", "127.0.0.1:8081", True),
        ("127.0.0.1", "localhost:8081", True),
        ("127.0.0.1", "[::1]:8081", True),
        ("127.0.0.1", "127.0.0.1:8082", False),
        ("127.0.0.1", "127.0.0.1", False),  # port 80
        ("127.0.0.1", "attacker.example:8081", False),
        ("127.0.0.1", "127.0.0.1.nip.io:8081", False),
        ("::1", "[::1]:8081", True),
        ("0.0.0.0", "10.1.2.3:8081", True),  # noqa: S104 - an IP literal cannot be rebound
        ("0.0.0.0", "codec.internal:8081", False),  # noqa: S104
        ("10.1.2.3", "10.1.2.3:8081", True),
        ("10.1.2.3", "localhost:8081", False),
        ("127.0.0.1", "", False),
        ("127.0.0.1", "127.0.0.1:80x", False),
    ],
)
def test_which_host_headers_the_codec_server_answers(bound: str, host: str, allowed: bool) -> None:
    assert Guard(token=None, bound=bound, port=8081).host_allowed(host) is allowed


def test_the_codec_server_token_comes_from_the_environment_or_a_file(tmp_path: Path) -> None:
    assert server_token_from_env({}) is None
    assert server_token_from_env({"STSMIGRATE_CODEC_SERVER_TOKEN": " t1\n"}) == "t1"
    file = tmp_path / "token"
    file.write_text("t2\n")
    assert server_token_from_env({"STSMIGRATE_CODEC_SERVER_TOKEN_FILE": str(file)}) == "t2"
    with pytest.raises(CodecKeyError, match="cannot read"):
        server_token_from_env({"STSMIGRATE_CODEC_SERVER_TOKEN_FILE": str(tmp_path / "none")})


def test_the_cli_will_not_serve_other_machines_without_a_token() -> None:
    env = {"STSMIGRATE_CODEC_KEY": base64.b64encode(KEY).decode()}
    result = CliRunner(env=env).invoke(main, ["codec-server", "--host", "0.0.0.0"])  # noqa: S104
    assert result.exit_code == 2
    assert "STSMIGRATE_CODEC_SERVER_TOKEN" in result.output


def payloads_in(message: Message, skip: tuple[str, ...]) -> Iterator[Payload]:
    """Every Payload anywhere inside ``message`` (maps and repeated fields included),
    except under the message types named in ``skip``."""
    if message.DESCRIPTOR.full_name in skip:
        return
    if isinstance(message, Payload):
        yield message
        return
    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        if field.message_type.GetOptions().map_entry:
            items: Any = value.values()
        elif field.is_repeated:
            items = value
        else:
            items = [value]
        for item in items:
            if isinstance(item, Message):
                yield from payloads_in(item, skip)


# Search attributes are indexed by the server and cannot be encrypted; they hold
# names (StatefulSet, namespace, contexts, phase), never payload data. README says so.
INDEXED = ("temporal.api.common.v1.SearchAttributes",)


def patch_marker(event: HistoryEvent) -> bool:
    """The marker of a `workflow.patched` call: the SDK's core writes it, outside the
    payload codec, and it holds the patch id only (a name of a code change, never
    data). Checked to hold nothing else."""
    if not event.HasField("marker_recorded_event_attributes"):
        return False
    marker = event.marker_recorded_event_attributes
    if marker.marker_name != "core_patch":
        return False
    details = [json.loads(p.data) for ps in marker.details.values() for p in ps.payloads]
    assert len(details) == 1 and details[0] in [{"id": p, "deprecated": False} for p in PATCHES]
    return True


async def test_with_the_codec_on_the_server_stores_no_readable_payload(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    target = temporal_env.client.service_client.config.target_host
    keyed = await Client.connect(target, data_converter=data_converter(AesGcmCodec(KEY)))
    clusters = FakeClusters([])
    task_queue = f"codec-{uuid.uuid4().hex[:8]}"
    marker = f"marker-{uuid.uuid4().hex}"
    request = MigrationRequest(
        statefulset="redis",
        namespace="shop",
        source_context="source",
        destination_context="destination",
        storage_class_mapping={"fast": marker},
    )
    async with fake_worker(keyed, task_queue, clusters.activities()):
        migration = await start_migration(
            keyed, request, migration_id=f"codec-{uuid.uuid4().hex[:8]}", task_queue=task_queue
        )
        result = await migration.result()
        progress = await migration.progress()  # queries decode through the codec too
    assert progress.phase == "done" and len(result.moved) == 3

    handles = [temporal_env.client.get_workflow_handle(migration.id)]  # no key
    handles += [
        temporal_env.client.get_workflow_handle(f"{migration.id}/ordinal-{k}") for k in (2, 1, 0)
    ]
    found = 0
    for handle in handles:
        history = await handle.fetch_history()
        raw = b"".join(event.SerializeToString() for event in history.events)
        assert marker.encode() not in raw
        assert b"source_context" not in raw  # no request field name either
        for event in history.events:
            if patch_marker(event):
                continue
            for payload in payloads_in(event, INDEXED):
                found += 1
                assert payload.metadata["encoding"] == ENCODING, event
    assert found > 50

    # The Temporal CLI shows the payloads through the codec server, and only so; with a
    # token on the server, only when the CLI sends it (--codec-auth).
    server = CodecServer(AesGcmCodec(KEY), port=free_port(), token=TOKEN)
    server.start()
    try:
        show = ["workflow", "show", "--workflow-id", migration.id]
        codec = ["--codec-endpoint", server.url]
        shown = await temporal_cli(target, *show, *codec, "--codec-auth", f"Bearer {TOKEN}")
        hidden = await temporal_cli(target, *show)
        # (The CLI retries a 401 until its deadline, then exits 1 with no history.)
        refused, out, _ = await temporal_cli_result(
            target, *show, *codec, "--codec-auth", "Bearer not-the-token"
        )
    finally:
        server.stop()
    assert marker.encode() in payload_data(shown)
    assert marker.encode() not in payload_data(hidden)
    assert refused != 0 and marker.encode() not in out.encode()


def payload_data(cli_json: str) -> bytes:
    """The payload bytes in the CLI's JSON output (base64 "data" fields), joined."""
    out: list[bytes] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "data" and isinstance(value, str):
                    out.append(base64.b64decode(value))
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads(cli_json))
    return b"\n".join(out)


@pytest.mark.cluster
async def test_a_worker_process_with_the_key_encrypts_everything(
    clusters: LocalClusters, temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    target = temporal_env.client.service_client.config.target_host
    worker = WorkerProcess(
        target, clusters.kubeconfig, tmp_path / "worker.log", f"codec-{uuid.uuid4().hex[:8]}"
    )
    worker.env["STSMIGRATE_CODEC_KEY"] = base64.b64encode(KEY).decode()
    worker.start()
    try:
        keyed = await Client.connect(target, data_converter=data_converter(AesGcmCodec(KEY)))
        workflow_id = f"describe-{uuid.uuid4().hex[:8]}"
        result = await keyed.execute_workflow(
            "DescribeClusters",
            DescribeClustersInput(contexts=["source", "destination"]),
            id=workflow_id,
            task_queue=worker.task_queue,
            result_type=DescribeClustersResult,
        )
    finally:
        worker.stop()
    assert [c.context for c in result.clusters] == ["source", "destination"]
    history = await temporal_env.client.get_workflow_handle(workflow_id).fetch_history()
    payloads = [p for e in history.events for p in payloads_in(e, INDEXED)]
    assert payloads and all(p.metadata["encoding"] == ENCODING for p in payloads)
    raw = b"".join(e.SerializeToString() for e in history.events)
    assert b"server_version" not in raw and b"v1.34" not in raw
