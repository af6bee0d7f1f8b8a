"""What the worker does with a NATS message once it is handled: ack, nak (with a delay) or
term. Every path through the worker ends in one of these, decided here from what happened.

    2xx            ack   done
    409            ack   another live attempt holds the command, or it has ended
    404            term  no such command: nothing to do, ever
    anything else  nak   try again later (NATS redelivers; the relay covers the rest)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from nats.aio.msg import Msg

log = logging.getLogger(__name__)

NAK_DELAY = 2.0  # seconds before NATS redelivers a nak'ed message


@dataclass(frozen=True)
class Ack:
    reason: str = "done"


@dataclass(frozen=True)
class Nak:
    reason: str
    delay: float = NAK_DELAY


@dataclass(frozen=True)
class Term:
    reason: str


Disposition = Ack | Nak | Term


def for_status(status: int, message: str = "") -> Disposition:
    """The disposition of a message whose claim or report got HTTP `status`."""
    if status < 300:
        return Ack(message or "done")
    if status == 409:
        return Ack(message or "conflict")
    if status == 404:
        return Term(message or "not found")
    return Nak(message or f"HTTP {status}")


async def settle(msg: Msg, disposition: Disposition) -> None:
    """Tell NATS; when NATS is away the message is redelivered after the ack wait anyway."""
    try:
        match disposition:
            case Ack():
                await msg.ack()
            case Nak(delay=delay):
                await msg.nak(delay=delay)
            case Term(reason=reason):
                log.warning("terminating message: %s", reason)
                await msg.term()
    except Exception as exc:
        log.warning("could not answer NATS: %s", exc)
