"""Contract module path from the seed document (`noetl.core.messaging.nats_client`)."""
