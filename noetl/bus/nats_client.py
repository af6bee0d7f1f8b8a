"""NATSCommandPublisher (server side) and NATSCommandSubscriber (worker side).

Topology is created or updated idempotently; nothing here ever deletes or recreates a shared
stream or consumer. Both sides reconnect forever: a NATS outage delays work, it never loses
it (the server's relay republishes what was not delivered).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from noetl.config import Settings
from noetl.protocol.message import CommandMessage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Topology:
    stream: str = "NOETL_COMMANDS"
    subject: str = "noetl.commands"
    consumer: str = "noetl-worker-pool"
    max_age: float = 3600.0
    max_deliver: int = 3
    ack_wait: float = 30.0
    duplicate_window: float = 120.0
    replicas: int = 1  # copies of the stream and consumer in a JetStream cluster

    @classmethod
    def from_settings(cls, settings: Settings) -> Topology:
        return cls(
            stream=settings.stream,
            subject=settings.subject,
            consumer=settings.consumer,
            replicas=settings.nats_replicas,
        )

    def stream_config(self) -> api.StreamConfig:
        return api.StreamConfig(
            name=self.stream,
            subjects=[self.subject, f"{self.subject}.>"],
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE,
            max_age=self.max_age,
            duplicate_window=self.duplicate_window,
            num_replicas=self.replicas,
        )

    def consumer_config(self) -> api.ConsumerConfig:
        return api.ConsumerConfig(
            durable_name=self.consumer,
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
            max_deliver=self.max_deliver,
            ack_wait=self.ack_wait,
            filter_subject=self.subject,
            max_ack_pending=10_000,
            num_replicas=self.replicas,
        )


async def connect(url: str, name: str, *, first_timeout: float = 5.0) -> Client:
    """Connect, reconnecting forever after the first success. The first connection is
    given up after `first_timeout` s (raises ConnectionError): nats-py, told to reconnect
    forever, also retries a first connection forever, and its caller would never get to
    fall back (the server serves and connects in the background) or to see that it was
    told to stop (a worker's SIGTERM)."""
    nc = Client()

    async def on_error(exc: Exception) -> None:
        log.warning("NATS error (%s): %s", name, exc)

    async def on_disconnected() -> None:
        if not (nc.is_closed or nc.is_draining):
            log.warning("NATS disconnected (%s); reconnecting", name)

    async def on_reconnected() -> None:
        log.info("NATS reconnected (%s)", name)

    try:
        await asyncio.wait_for(
            nc.connect(
                [server.strip() for server in url.split(",") if server.strip()],  # a cluster
                name=name,
                connect_timeout=2,
                reconnect_time_wait=0.5,  # type: ignore[arg-type]  # seconds, floats work
                max_reconnect_attempts=-1,
                allow_reconnect=True,
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
            ),
            first_timeout,
        )
    except TimeoutError:
        last = nc.last_error
        with contextlib.suppress(Exception):
            await nc.close()
        raise ConnectionError(
            f"no NATS server answered within {first_timeout:g} s (last error: {last})"
        ) from None
    except BaseException:
        with contextlib.suppress(Exception):
            await nc.close()
        raise
    return nc


async def ensure_stream(js: JetStreamContext, topology: Topology) -> None:
    wanted = topology.stream_config()
    try:
        info = await js.stream_info(topology.stream)
    except NotFoundError:
        await js.add_stream(wanted)
        log.info("created stream %s", topology.stream)
        return
    have = info.config
    if (
        set(have.subjects or []) != set(wanted.subjects or [])
        or have.max_age != wanted.max_age
        or have.duplicate_window != wanted.duplicate_window
        or (have.num_replicas or 1) != wanted.num_replicas
    ):
        await js.update_stream(wanted)
        log.info("updated stream %s", topology.stream)


async def ensure_consumer(js: JetStreamContext, topology: Topology) -> None:
    wanted = topology.consumer_config()
    try:
        info = await js.consumer_info(topology.stream, topology.consumer)
    except NotFoundError:
        await js.add_consumer(topology.stream, wanted)
        log.info("created consumer %s on %s", topology.consumer, topology.stream)
        return
    have = info.config
    if (have.max_deliver, have.ack_wait) != (wanted.max_deliver, wanted.ack_wait):
        await js.add_consumer(topology.stream, wanted)  # JetStream updates editable fields
        log.info("updated consumer %s", topology.consumer)


class NATSCommandPublisher:
    """Publishes command references; `publish` fails fast when NATS is unreachable."""

    def __init__(self, url: str, topology: Topology, *, timeout: float = 2.0) -> None:
        self._url = url
        self._topology = topology
        self._timeout = timeout
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._connecting: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected and self._js is not None

    async def start(self, *, wait: bool = True) -> None:
        """Connect and ensure the stream; with wait=False keep trying in the background."""
        if wait:
            await self._connect()
        else:
            self._connecting = asyncio.create_task(self._connect_forever())

    async def _connect(self) -> None:
        nc = await connect(self._url, "noetl-server")
        js = nc.jetstream(timeout=self._timeout)
        await ensure_stream(js, self._topology)
        self._nc, self._js = nc, js
        log.info("publisher connected to NATS, stream %s", self._topology.stream)

    async def _connect_forever(self) -> None:
        delay = 0.2
        while self._js is None:
            try:
                await self._connect()
            except Exception as exc:
                log.warning("NATS not reachable (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def publish(self, message: CommandMessage, msg_id: str) -> None:
        """Publish one reference; `Nats-Msg-Id` makes a republish of it a duplicate."""
        if self._js is None or self._nc is None or not self._nc.is_connected:
            raise ConnectionError("NATS is not connected")
        await self._js.publish(
            self._topology.subject,
            message.encode(),
            timeout=self._timeout,
            headers={"Nats-Msg-Id": msg_id},
        )

    async def close(self) -> None:
        if self._connecting:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()
        self._nc = self._js = None


class NATSCommandSubscriber:
    """Binds to the durable pull consumer of the worker pool and fetches messages."""

    def __init__(self, url: str, topology: Topology, *, name: str = "noetl-worker") -> None:
        self._url = url
        self._topology = topology
        self._name = name
        self._nc: Client | None = None
        self._sub: JetStreamContext.PullSubscription | None = None

    async def start(self) -> None:
        self._nc = await connect(self._url, self._name)
        js = self._nc.jetstream()
        await ensure_stream(js, self._topology)
        await ensure_consumer(js, self._topology)
        self._sub = await js.pull_subscribe_bind(
            durable=self._topology.consumer, stream=self._topology.stream
        )
        log.info(
            "Subscribed to %s (stream %s, consumer %s)",
            self._topology.subject,
            self._topology.stream,
            self._topology.consumer,
        )

    async def fetch(self, batch: int, wait: float) -> list[Msg]:
        """Up to `batch` messages; [] when none arrived within `wait` s or NATS is down."""
        if self._sub is None:
            raise RuntimeError("subscriber not started")
        try:
            return await self._sub.fetch(batch, timeout=wait)
        except (TimeoutError, nats.errors.TimeoutError):
            return []
        except nats.errors.Error as exc:
            # NATS down, or a cluster electing a new leader for the stream or the consumer
            # (no responders, 503): wait and fetch again; the messages are still there
            log.warning("fetch failed: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(wait)
            return []

    async def close(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
        self._nc = self._sub = None
