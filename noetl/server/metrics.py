"""Prometheus metrics of the server (served at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

EVENTS = Counter("noetl_events_total", "Worker events accepted", ["event_type"])
COMMANDS_ISSUED = Counter("noetl_commands_issued_total", "Commands issued")
EXECUTIONS_STARTED = Counter("noetl_executions_started_total", "Executions started")
EXECUTIONS_FINISHED = Counter(
    "noetl_executions_finished_total", "Executions that reached a terminal status", ["status"]
)
HELD_STALE = Counter(
    "noetl_held_state_stale_total",
    "Reports decided from a held snapshot that was no longer current (decided again under locks)",
)
PUBLISH_FAILURES = Counter("noetl_publish_failures_total", "NATS publishes left to the relay")
RELAYED = Counter("noetl_relay_republished_total", "Commands republished by the relay")
RELEASED = Counter(
    "noetl_relay_released_total", "Claims released because their worker stopped heartbeating"
)
TIMED_OUT = Counter(
    "noetl_executions_timed_out_total", "Executions cancelled past their deadline (timeout)"
)
REQUEST_SECONDS = Histogram(
    "noetl_request_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
