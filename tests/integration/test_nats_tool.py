"""The nats tool on the real NATS server: key/value, publish, request, and a playbook that uses
it through a stored NATS credential (upstream's nats_url / nats_user / nats_password)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from noetl.embedded.services import find_nats_server, free_port
from noetl.tools import ToolCall, ToolError
from noetl.tools.nats import NatsTool
from tests.conftest import Services, run_playbook

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def tool() -> AsyncIterator[NatsTool]:
    value = NatsTool()
    yield value
    await value.close()


@pytest.fixture
async def bucket(services: Services) -> AsyncIterator[str]:
    name = f"test_{uuid.uuid4().hex[:10]}"
    yield name
    nc = await nats.connect(services.nats_url)
    with contextlib.suppress(Exception):  # a test that failed early may not have created it
        await nc.jetstream().delete_key_value(name)
    await nc.close()


def _call(auth: dict[str, Any] | None, **config: Any) -> ToolCall:
    return ToolCall("nats", config, {}, 1, "step", auth)


async def test_kv_put_get_delete_round_trip(
    tool: NatsTool, services: Services, bucket: str
) -> None:
    auth = {"nats_url": services.nats_url, "nats_user": "", "nats_password": ""}
    value = {"session_token": "s-1", "user_id": 1, "is_active": True}
    put = await tool.run(_call(auth, operation="kv_put", bucket=bucket, key="k1", value=value))
    assert (put["status"], put["bucket"], put["key"]) == ("ok", bucket, "k1")
    got = await tool.run(_call(auth, operation="kv_get", bucket=bucket, key="k1"))
    assert (got["found"], got["value"], got["revision"]) == (True, value, put["revision"])
    await tool.run(_call(auth, operation="kv_put", bucket=bucket, key="k2", value="plain text"))
    text = await tool.run(_call(auth, operation="kv_get", bucket=bucket, key="k2"))
    assert text["value"] == "plain text"
    keys = await tool.run(_call(auth, operation="kv_keys", bucket=bucket))
    assert keys["keys"] == ["k1", "k2"]
    deleted = await tool.run(_call(auth, operation="kv_delete", bucket=bucket, key="k1"))
    assert deleted["deleted"] is True
    gone = await tool.run(_call(auth, operation="kv_get", bucket=bucket, key="k1"))
    assert (gone["found"], gone["value"]) == (False, None)


async def test_publish_and_request_reach_a_subscriber(tool: NatsTool, services: Services) -> None:
    auth = {"nats_url": services.nats_url}
    subject = f"test.tool.{uuid.uuid4().hex[:8]}"
    nc = await nats.connect(services.nats_url)
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_message(msg: Any) -> None:
        await received.put(msg.data)
        if msg.reply:
            await msg.respond(b'{"pong": true}')

    await nc.subscribe(subject, cb=on_message)
    await nc.flush()
    try:
        sent = await tool.run(_call(auth, operation="publish", subject=subject, data={"a": 1}))
        assert sent == {"status": "ok", "subject": subject}
        assert await asyncio.wait_for(received.get(), 10) == b'{"a":1}'
        reply = await tool.run(_call(auth, operation="request", subject=subject, data="ping"))
        assert reply["data"] == {"pong": True}
        assert await asyncio.wait_for(received.get(), 10) == b"ping"
    finally:
        await nc.close()


@pytest.mark.parametrize(
    ("auth", "config", "message"),
    [
        (None, {"operation": "kv_get", "bucket": "b", "key": "k"}, "needs a server"),
        ({"nats_url": "nats://127.0.0.1:1"}, {"operation": "kv_get"}, "cannot connect"),
        ({}, {"operation": "explode"}, "operation must be one of"),
    ],
)
async def test_bad_calls_fail_with_a_clear_error(
    tool: NatsTool, auth: dict[str, Any] | None, config: dict[str, Any], message: str
) -> None:
    with pytest.raises(ToolError, match=message):
        await tool.run(_call(auth, **config))


async def test_missing_bucket_and_missing_fields(tool: NatsTool, services: Services) -> None:
    auth = {"nats_url": services.nats_url}
    missing = f"absent_{uuid.uuid4().hex[:8]}"
    with pytest.raises(ToolError, match=f"bucket '{missing}' does not exist"):
        await tool.run(_call(auth, operation="kv_get", bucket=missing, key="k"))
    with pytest.raises(ToolError, match="needs `key`"):
        await tool.run(_call(auth, operation="kv_put", bucket=missing))
    with pytest.raises(ToolError, match="invalid key"):
        await tool.run(_call(auth, operation="kv_put", bucket=missing, key="a b", value=1))
    with pytest.raises(ToolError, match=f"bucket '{missing}' does not exist"):  # none created
        await tool.run(_call(auth, operation="kv_get", bucket=missing, key="k"))
    with pytest.raises(ToolError, match="no responders"):
        await tool.run(_call(auth, operation="request", subject=f"nobody.{missing}", data="x"))


async def test_a_playbook_uses_kv_through_a_nats_credential(
    api: httpx.AsyncClient, services: Services, bucket: str
) -> None:
    credential = {
        "name": "nats_credential",
        "type": "nats",
        "data": {"nats_url": services.nats_url, "nats_user": "", "nats_password": ""},
    }
    assert (await api.post("/api/credentials", json=credential)).status_code == 201
    playbook = f"""
apiVersion: noetl.io/v2
kind: Playbook
metadata: {{name: nats_kv, path: tests/nats_kv}}
workload: {{bucket: {bucket}, value: {{user: 7}}}}
workflow:
  - step: start
    tool: {{kind: nats, auth: nats_credential, operation: kv_put, bucket: "{{{{ bucket }}}}",
           key: k, value: "{{{{ value }}}}"}}
    next: [read]
  - step: read
    tool: {{kind: nats, auth: nats_credential, operation: kv_get,
           bucket: "{{{{ bucket }}}}", key: k}}
"""
    execution = await run_playbook(api, playbook)
    assert execution["status"] == "COMPLETED", execution["error"]
    assert execution["result"]["value"] == {"user": 7}


# a worker's process: the bus loaded nats-py without aiohttp (noetl.bus), then a step's nats
# tool talks to a server over WebSocket
OVER_WEBSOCKET = """
import asyncio, sys

import noetl.bus
import nats
import nats.aio.transport

from noetl.tools import ToolCall
from noetl.tools.nats import NatsTool

assert nats.aio.transport.aiohttp is None, "the bus loaded aiohttp"


async def main(ws_url: str, nats_url: str) -> None:
    listener = await nats.connect(nats_url)
    received = await listener.subscribe("over.websocket")
    tool = NatsTool()
    call = ToolCall("nats", {"operation": "publish", "subject": "over.websocket", "data": "hi"},
                    {}, 1, "step", {"nats_url": ws_url})
    result = await tool.run(call)
    message = await received.next_msg(timeout=30)
    print(result["status"], message.data.decode())
    await tool.close()
    await listener.close()


asyncio.run(main(*sys.argv[1:]))
"""


@pytest.mark.timeout(120)
def test_the_tool_reaches_a_websocket_server_where_the_bus_loaded_nats_without_aiohttp(
    tmp_path: Path,
) -> None:
    port, ws_port = free_port(), free_port()
    config = tmp_path / "nats.conf"
    config.write_text(
        f"listen: 127.0.0.1:{port}\nwebsocket {{ listen: 127.0.0.1:{ws_port}, no_tls: true }}\n"
    )
    server = subprocess.Popen([str(find_nats_server()), "-c", str(config)])
    try:
        for _ in range(2000):  # until it listens on both
            with socket.socket() as a, socket.socket() as b:
                if (
                    a.connect_ex(("127.0.0.1", port)) == 0
                    and b.connect_ex(("127.0.0.1", ws_port)) == 0
                ):
                    break
            time.sleep(0.01)
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                OVER_WEBSOCKET,
                f"ws://127.0.0.1:{ws_port}",
                f"nats://127.0.0.1:{port}",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=100,
            check=False,
        )
    finally:
        server.terminate()
        server.wait()
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok", "hi"]
