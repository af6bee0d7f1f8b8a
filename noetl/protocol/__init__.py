"""The wire vocabulary: event types, statuses, the NATS message. Typed, no I/O."""
