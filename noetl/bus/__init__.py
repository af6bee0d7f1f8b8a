"""NATS JetStream: the wake-up signal. Postgres is the truth; this carries references."""

import sys

# nats-py imports aiohttp for its WebSocket transport (ws:// servers) only, and that import is
# ~0.15 s of CPU at every start of a server or worker (it builds two TLS contexts). NoETL's own
# NATS URLs are nats:// or tls:// (Settings), so the bus loads nats-py without it: aiohttp is
# marked absent while nats-py is first imported, and only then (an `import aiohttp` elsewhere
# works as before). The nats tool loads the transport's aiohttp when a credential names a ws://
# server (`noetl.tools.nats`).
if "nats" not in sys.modules and "aiohttp" not in sys.modules:
    sys.modules["aiohttp"] = None  # type: ignore[assignment]
    try:
        import nats.aio.transport  # noqa: F401
    finally:
        if sys.modules.get("aiohttp") is None:
            del sys.modules["aiohttp"]

from noetl.bus.nats_client import NATSCommandPublisher, NATSCommandSubscriber, Topology

__all__ = ["NATSCommandPublisher", "NATSCommandSubscriber", "Topology"]
