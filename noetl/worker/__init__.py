"""The worker: pulls references from NATS, claims and fetches through the API, runs tools."""
