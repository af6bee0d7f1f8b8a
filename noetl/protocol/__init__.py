"""The wire vocabulary, typed, no I/O: event types and statuses (`events`), the NATS message
(`message`), the rows the engine decides (`records`), a claimed command and the answers about
commands (`command`), a worker's outcome and report (`outcome`)."""
