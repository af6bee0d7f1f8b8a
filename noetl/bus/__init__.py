"""NATS JetStream: the wake-up signal. Postgres is the truth; this carries references."""

from noetl.bus.nats_client import NATSCommandPublisher, NATSCommandSubscriber, Topology

__all__ = ["NATSCommandPublisher", "NATSCommandSubscriber", "Topology"]
