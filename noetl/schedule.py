"""When a schedule fires: cron expressions (croniter) or a fixed interval, in a time zone.

Pure: the current time is an argument. A schedule's `next_fire_at` is the next tick it has not
handled; at a pass, `due(...)` says which ticks to fire now and what the next one is:

- ticks due within `grace` seconds are fired (the normal case: a tick just came);
- ticks older than that were missed (every server was down): they are skipped, unless the
  schedule asks to `catch_up`, then each is fired (at most `MAX_CATCH_UP` per pass; the rest
  at the next passes).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from noetl.errors import RequestError

MAX_CATCH_UP = 100
_EVERY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
MIN_EVERY = 1.0
MAX_EVERY = 366 * 86400.0  # rarer than yearly: a cron expression says it better


@dataclass(frozen=True)
class Timing:
    """A cron expression or an interval in seconds, and the zone cron is read in."""

    cron: str | None = None
    every: float | None = None
    timezone: str = "UTC"

    def next_after(self, moment: datetime) -> datetime:
        """The first tick strictly after `moment` (aware, returned in UTC)."""
        if self.every is not None:
            return moment.astimezone(UTC) + timedelta(seconds=self.every)
        assert self.cron is not None
        from croniter import croniter  # only schedules need it: servers import this module

        local = moment.astimezone(ZoneInfo(self.timezone))
        found: datetime = croniter(self.cron, local).get_next(datetime)
        return found.astimezone(UTC)


def timing(cron: str | None, every: str | float | None, timezone: str | None) -> Timing:
    """Validate what a request gave; RequestError names the field."""
    if (cron is None) == (every is None):
        raise RequestError("give exactly one of `cron` or `every`")
    zone = timezone or "UTC"
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise RequestError(f"timezone: unknown time zone {zone!r}") from None
    if cron is not None:
        from croniter import croniter

        if not croniter.is_valid(cron):
            raise RequestError(f"cron: {cron!r} is not a cron expression (e.g. '*/5 * * * *')")
        found = Timing(cron=cron.strip(), timezone=zone)
        try:
            found.next_after(datetime.now(UTC))
        except (ValueError, OverflowError):  # croniter's CroniterBadDateError is a ValueError
            raise RequestError(
                f"cron: {cron!r} never fires (e.g. a day the month has not)"
            ) from None
        return found
    return Timing(every=every_seconds(every), timezone=zone)


def every_seconds(value: str | float | None) -> float:
    if isinstance(value, bool) or value is None:
        raise RequestError(f"every: expected e.g. '30s', '5m', '1h' or seconds, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
        if not math.isfinite(seconds):
            raise RequestError(f"every: expected a finite number of seconds, got {value!r}")
    else:
        match = _EVERY.match(value)
        if match is None:
            raise RequestError(f"every: expected e.g. '30s', '5m', '1h' or seconds, got {value!r}")
        seconds = float(match[1]) * _UNIT[match[2]]
    if seconds < MIN_EVERY:
        raise RequestError(f"every: at least {MIN_EVERY:g} s, got {value!r}")
    if seconds > MAX_EVERY:
        raise RequestError(f"every: at most {MAX_EVERY / 86400:g} days (use cron), got {value!r}")
    return seconds


@dataclass(frozen=True)
class Due:
    fire: tuple[datetime, ...]  # ticks to fire now, oldest first
    skipped: int  # missed ticks not fired
    next_fire_at: datetime  # the next tick not handled yet


def due(
    timing_: Timing, next_fire_at: datetime, now: datetime, *, grace: float, catch_up: bool
) -> Due:
    """Which ticks up to `now` to fire, starting at `next_fire_at`."""
    fire: list[datetime] = []
    skipped = 0
    tick = next_fire_at
    recent = now - timedelta(seconds=grace)
    while tick <= now:
        if len(fire) >= MAX_CATCH_UP:  # the rest at the next pass
            break
        if tick >= recent or catch_up:
            fire.append(tick)
        else:
            skipped += 1
            if skipped > 10_000 and not catch_up:  # a long outage: jump to the present
                tick = timing_.next_after(now)
                break
        tick = timing_.next_after(tick)
    return Due(tuple(fire), skipped, tick)
