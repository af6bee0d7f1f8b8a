"""The NATS contract: stream and consumer configuration, and the exact message body."""

from __future__ import annotations

import asyncio
import json

import httpx
import nats
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, StorageType

from noetl.bus.nats_client import NATSCommandSubscriber, Topology
from noetl.config import Settings
from noetl.embedded.runtime import Runtime
from tests.conftest import event_log, run_playbook

ONE_STEP = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: one_step, path: tests/one_step}
workflow:
  - step: start
    tool: {kind: noop, result: {ok: true}}
"""


def test_default_names_are_the_contract() -> None:
    settings = Settings.from_env({})
    assert (settings.stream, settings.subject, settings.consumer) == (
        "NOETL_COMMANDS",
        "noetl.commands",
        "noetl-worker-pool",
    )


async def test_stream_and_consumer_have_the_contract_configuration(
    runtime: Runtime, settings: Settings
) -> None:
    nc = await nats.connect(settings.require_nats_url())
    try:
        js = nc.jetstream()
        stream = await js.stream_info(settings.stream)
        assert stream.config.storage == StorageType.FILE
        assert stream.config.max_age == 3600
        assert settings.subject in (stream.config.subjects or [])
        assert f"{settings.subject}.>" in (stream.config.subjects or [])
        consumer = await js.consumer_info(settings.stream, settings.consumer)
        assert consumer.config.durable_name == settings.consumer
        assert consumer.config.ack_policy == AckPolicy.EXPLICIT
        assert consumer.config.max_deliver == 3
        assert consumer.config.ack_wait == 30
    finally:
        await nc.close()


async def test_a_second_subscriber_reuses_the_consumer_without_recreating_it(
    runtime: Runtime, settings: Settings
) -> None:
    nc = await nats.connect(settings.require_nats_url())
    try:
        js = nc.jetstream()
        before = await js.consumer_info(settings.stream, settings.consumer)
        other = NATSCommandSubscriber(settings.require_nats_url(), Topology.from_settings(settings))
        await other.start()
        await other.close()
        after = await js.consumer_info(settings.stream, settings.consumer)
        assert after.created == before.created
    finally:
        await nc.close()


async def test_published_message_has_exactly_the_five_keys(
    api: httpx.AsyncClient, runtime: Runtime, settings: Settings
) -> None:
    nc = await nats.connect(settings.require_nats_url())
    captured: asyncio.Queue[bytes] = asyncio.Queue()

    async def capture(msg: Msg) -> None:
        await captured.put(msg.data)

    await nc.subscribe(settings.subject, cb=capture)
    await nc.flush()
    try:
        execution = await run_playbook(api, ONE_STEP)
        body = json.loads(await asyncio.wait_for(captured.get(), 10))
    finally:
        await nc.close()
    assert set(body) == {"execution_id", "event_id", "command_id", "step", "server_url"}
    assert isinstance(body["execution_id"], int) and isinstance(body["event_id"], int)
    assert str(body["execution_id"]) == execution["execution_id"]
    assert body["step"] == "start"
    assert body["command_id"] == f"{body['execution_id']}:start"
    assert body["server_url"] == runtime.url
    issued = [
        e
        for e in await event_log(api, execution["execution_id"])
        if e["event_type"] == "command.issued"
    ]
    assert [e["event_id"] for e in issued] == [str(body["event_id"])]
