"""The seed document's module path; the implementation lives in `noetl.bus.nats_client`."""

from noetl.bus.nats_client import NATSCommandPublisher, NATSCommandSubscriber, Topology

__all__ = ["NATSCommandPublisher", "NATSCommandSubscriber", "Topology"]
