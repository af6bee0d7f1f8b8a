"""When schedules fire: cron in a time zone, intervals, missed ticks, catch-up (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from noetl.errors import RequestError
from noetl.schedule import MAX_CATCH_UP, Timing, due, every_seconds, timing

NOON = datetime(2026, 1, 1, 12, tzinfo=UTC)


def test_cron_is_read_in_the_schedules_time_zone_across_daylight_saving() -> None:
    nine_in_berlin = timing("0 9 * * *", None, "Europe/Berlin")
    winter = nine_in_berlin.next_after(datetime(2026, 3, 28, 12, tzinfo=UTC))
    summer = nine_in_berlin.next_after(datetime(2026, 3, 29, 12, tzinfo=UTC))
    assert winter == datetime(2026, 3, 29, 7, tzinfo=UTC)  # 09:00 CEST, the switch day
    assert summer == datetime(2026, 3, 30, 7, tzinfo=UTC)
    assert timing("*/5 * * * *", None, None).next_after(NOON) == NOON + timedelta(minutes=5)


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("5m", 300), ("1h", 3600), ("2d", 172800), (90, 90)]
)
def test_intervals_take_units(text: str | int, seconds: float) -> None:
    assert every_seconds(text) == seconds
    assert Timing(every=seconds).next_after(NOON) == NOON + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("cron", "every", "zone", "message"),
    [
        ("nope", None, None, "cron:"),
        (None, "fast", None, "every:"),
        (None, "500ms", None, "at least 1 s"),
        (None, True, None, "every:"),
        ("* * * * *", "1m", None, "exactly one"),
        (None, None, None, "exactly one"),
        (None, "1m", "Nowhere/Town", "unknown time zone"),
    ],
)
def test_bad_timings_name_the_field(
    cron: str | None, every: str | bool | None, zone: str | None, message: str
) -> None:
    with pytest.raises(RequestError, match=message):
        timing(cron, every, zone)


def test_a_tick_that_just_came_fires_and_the_next_is_one_interval_on() -> None:
    plan = due(Timing(every=30), NOON, NOON + timedelta(seconds=2), grace=60, catch_up=False)
    assert plan.fire == (NOON,) and plan.skipped == 0
    assert plan.next_fire_at == NOON + timedelta(seconds=30)
    early = due(Timing(every=30), NOON, NOON - timedelta(seconds=1), grace=60, catch_up=False)
    assert early.fire == () and early.next_fire_at == NOON


def test_ticks_missed_while_no_server_ran_are_skipped_by_default() -> None:
    plan = due(Timing(every=60), NOON - timedelta(hours=2), NOON, grace=90, catch_up=False)
    assert plan.fire == (NOON - timedelta(seconds=60), NOON)  # the ones within the grace
    assert plan.skipped == 119
    assert plan.next_fire_at == NOON + timedelta(seconds=60)


def test_catch_up_fires_every_missed_tick_a_bounded_number_per_pass() -> None:
    start = NOON - timedelta(minutes=150)
    first = due(Timing(every=60), start, NOON, grace=5, catch_up=True)
    assert len(first.fire) == MAX_CATCH_UP and first.skipped == 0
    assert first.fire[0] == start and first.next_fire_at == start + timedelta(minutes=100)
    rest = due(Timing(every=60), first.next_fire_at, NOON, grace=5, catch_up=True)
    assert len(rest.fire) == 51 and rest.next_fire_at == NOON + timedelta(minutes=1)


def test_a_very_long_outage_jumps_to_the_present() -> None:
    plan = due(Timing(every=1), NOON - timedelta(days=30), NOON, grace=5, catch_up=False)
    assert plan.fire == () and plan.next_fire_at == NOON + timedelta(seconds=1)
