"""The worker: pulls references from NATS, claims and fetches through the API, runs tools."""

import noetl.bus  # noqa: F401  # first: it loads nats-py without aiohttp (see there)
