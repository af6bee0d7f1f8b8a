"""One codec rule everywhere: what the API accepts, every component reads back.

JSON numbers are 64-bit integers (-2**63 .. 2**64-1) and finite doubles. The API answers 422
naming the field for anything else; a row that holds such a value anyway (written before the
rule, or by hand) is read back, shown, cancelled, and never stops the relay for the others.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from noetl import jsonfast
from noetl.config import Settings
from noetl.embedded.runtime import Runtime, running
from noetl.server.relay import Relay
from noetl.server.service import Orchestrator
from tests.conftest import event_log, eventually

HUGE = "1" + "0" * 400


def _orchestrator(rt: Runtime) -> Orchestrator:
    app: Any = rt.server.config.app
    orchestrator: Orchestrator = app.state.orchestrator
    return orchestrator


SLEEPER = """apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: sleeper, path: tests/sleeper}
workload: {n: 1}
workflow:
  - step: start
    tool: {kind: python, input: {n: "{{ n }}"}, code: "result = n"}
"""


def test_unportable_finds_the_path_of_every_kind_of_bad_number() -> None:
    assert jsonfast.unportable({"a": [1, 2.5, -(2**63), 2**64 - 1, "x", None]}) is None
    assert jsonfast.unportable({"a": [1, {"b": 2**64}]}) == ("a[1].b", "integer out of range")
    assert jsonfast.unportable([-(2**63) - 1]) == ("[0]", "integer out of range")
    assert jsonfast.unportable({"f": float("nan")}) == ("f", "not a finite number")
    assert jsonfast.unportable({"f": float("inf")}) == ("f", "not a finite number")
    deep: object = 1
    for _ in range(jsonfast.MAX_DEPTH + 1):
        deep = [deep]
    where = jsonfast.unportable({"d": deep})
    assert where is not None and where[1].startswith("nested deeper than")


def test_loads_reads_what_orjson_cannot() -> None:
    assert jsonfast.loads(f'{{"n": {HUGE}}}'.encode()) == {"n": int(HUGE)}
    assert jsonfast.loads(b"[18446744073709551616]") == [2**64]
    # and what is read can be written again, readable by every component
    again = jsonfast.dumps({"n": int(HUGE), "f": float("inf")})
    assert jsonfast.loads(again) == {"n": HUGE, "f": None}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"path": "p", "payload": {"n": ' + HUGE + "}}", "payload.n"),
        ('{"path": "p", "payload": {"a": [1, 18446744073709551616]}}', "payload.a[1]"),
        ('{"path": "p", "payload": {"f": NaN}}', "payload.f"),
        ('{"path": "p", "payload": {"f": 1e400}}', "payload.f"),
    ],
)
async def test_execute_refuses_numbers_the_codec_cannot_round_trip(
    api: httpx.AsyncClient, body: str, field: str
) -> None:
    response = await api.post(
        "/api/execute", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert field in response.json()["message"]


async def test_a_worker_report_with_a_bad_number_is_422(api: httpx.AsyncClient) -> None:
    body = (
        '{"execution_id": "1", "event_type": "command.completed", "command_id": "c",'
        ' "attempt": 1, "worker_id": "w", "result": {"x": ' + HUGE + "}}"
    )
    response = await api.post(
        "/api/events", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422 and "result.x" in response.json()["message"]


async def test_a_python_result_with_a_bad_number_fails_its_step_naming_the_field(
    api: httpx.AsyncClient,
) -> None:
    playbook = SLEEPER.replace('code: "result = n"', "code: \"result = {'big': 10 ** 30}\"")
    started = await api.post("/api/execute", json={"playbook": playbook})
    execution_id = started.json()["execution_id"]

    async def ended() -> dict[str, object] | None:
        body = (await api.get(f"/api/executions/{execution_id}")).json()
        return body if body["status"] != "RUNNING" else None

    execution = await eventually(ended)
    assert execution["status"] == "FAILED"
    assert "big" in execution["error"] and "out of range" in execution["error"]


async def test_a_poisoned_row_stops_nothing_and_stays_readable(
    settings: Settings, tmp_path: Path
) -> None:
    """Rows holding a 400-digit number (written before the rule): the relay still republishes
    every other lost command, and the poisoned execution can be read, listed and cancelled."""
    async with running(settings, workers=0) as rt, httpx.AsyncClient(base_url=rt.url) as api:
        poisoned = (await api.post("/api/execute", json={"playbook": SLEEPER})).json()
        healthy = (await api.post("/api/execute", json={"playbook": SLEEPER})).json()
        with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
            poison_id = int(poisoned["execution_id"])
            conn.execute(
                f"UPDATE noetl.command SET input = '{{\"n\": {HUGE}}}'::jsonb,"
                " notified_at = now() - interval '1 hour' WHERE execution_id = %s",
                (poison_id,),
            )
            conn.execute(
                "UPDATE noetl.execution"
                f" SET state = jsonb_set(state::jsonb, '{{poison}}', '{HUGE}')::json,"
                f" result = '{HUGE}'::jsonb WHERE execution_id = %s",
                (poison_id,),
            )
            conn.execute(
                f"UPDATE noetl.event SET payload = '{{\"n\": {HUGE}}}'::jsonb"
                " WHERE execution_id = %s",
                (poison_id,),
            )
            conn.execute(
                "UPDATE noetl.command SET notified_at = now() - interval '1 hour'"
                " WHERE execution_id = %s",
                (int(healthy["execution_id"]),),
            )
        relay = Relay(_orchestrator(rt))
        assert await relay.once() >= 1  # the healthy command at least

        async def republished() -> bool:
            with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
                row = conn.execute(
                    "SELECT publish_count FROM noetl.command WHERE execution_id = %s",
                    (int(healthy["execution_id"]),),
                ).fetchone()
            return row is not None and row[0] >= 2

        await eventually(republished)
        got = await api.get(f"/api/executions/{poisoned['execution_id']}")
        assert got.status_code == 200, got.text
        assert got.json()["result"] == HUGE or got.json()["result"] == int(HUGE)
        listed = await api.get("/api/executions")
        assert listed.status_code == 200
        events = await event_log(api, poisoned["execution_id"])
        assert events and json.dumps(events)
        cancelled = await api.post(f"/api/executions/{poisoned['execution_id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "CANCELLED"


async def test_a_row_the_engine_cannot_process_fails_its_own_execution_only(
    settings: Settings,
) -> None:
    """A lost command whose playbook no longer parses (its catalog row damaged): the reaper
    fails that execution with the reason and still republishes the others' lost commands."""
    async with running(settings, workers=0) as rt, httpx.AsyncClient(base_url=rt.url) as api:
        broken = (await api.post("/api/execute", json={"playbook": SLEEPER})).json()
        other = SLEEPER.replace("tests/sleeper", "tests/other")
        healthy = (await api.post("/api/execute", json={"playbook": other})).json()
        with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
            conn.execute(
                "UPDATE noetl.command SET status = 'CLAIMED', attempt = %s, worker_id = 'gone',"
                " lease_until = now() - interval '1 hour', notified_at = now() - interval '1 hour'"
                " WHERE execution_id = %s",
                (settings.max_attempts, int(broken["execution_id"])),
            )
            conn.execute(
                "UPDATE noetl.catalog SET content = 'workflow: [' WHERE catalog_id = %s",
                (int(broken["catalog_id"]),),
            )
            conn.execute(
                "UPDATE noetl.command SET notified_at = now() - interval '1 hour'"
                " WHERE execution_id = %s",
                (int(healthy["execution_id"]),),
            )
        orchestrator = _orchestrator(rt)
        orchestrator.playbooks._parsed.clear()
        relay = Relay(orchestrator)
        relay.healthy_since = 0.0  # it has run for long: heartbeats (none from 'gone') count
        assert await relay.once() == 1
        failed = (await api.get(f"/api/executions/{broken['execution_id']}")).json()
        assert failed["status"] == "FAILED"
        assert "PlaybookError" in failed["error"] and "start" in failed["error"]
        kinds = [e["event_type"] for e in await event_log(api, broken["execution_id"])]
        assert kinds[-1] == "playbook.failed"
        assert (await api.get(f"/api/executions/{healthy['execution_id']}")).json()[
            "status"
        ] == "RUNNING"


async def test_an_execution_the_engine_cannot_process_can_still_be_cancelled(
    settings: Settings,
) -> None:
    async with running(settings, workers=0) as rt, httpx.AsyncClient(base_url=rt.url) as api:
        started = (await api.post("/api/execute", json={"playbook": SLEEPER})).json()
        with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
            conn.execute(
                "UPDATE noetl.catalog SET content = 'workflow: [' WHERE catalog_id = %s",
                (int(started["catalog_id"]),),
            )
        _orchestrator(rt).playbooks._parsed.clear()
        cancelled = await api.post(f"/api/executions/{started['execution_id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "CANCELLED"
        got = (await api.get(f"/api/executions/{started['execution_id']}")).json()
        assert got["status"] == "CANCELLED" and "PlaybookError" in got["error"]
        kinds = [e["event_type"] for e in await event_log(api, started["execution_id"])]
        assert kinds[-1] == "playbook.cancelled"
        again = await api.post(f"/api/executions/{started['execution_id']}/cancel")
        assert again.status_code == 409


def _first_bad(value: object, max_depth: int) -> tuple[str, str] | None:
    """The rule as first written (iterative, paths built for every value): `unportable`
    must answer as it does."""
    stack: list[tuple[object, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        if isinstance(item, dict | list | tuple):
            if len(path) >= max_depth:
                return jsonfast._path(path), f"nested deeper than {max_depth} levels"
            children = item.items() if isinstance(item, dict) else enumerate(item)
            stack.extend((child, (*path, key)) for key, child in reversed(list(children)))
        elif isinstance(item, bool) or item is None or isinstance(item, str):
            continue
        elif isinstance(item, int):
            if not jsonfast.MIN_INT <= item <= jsonfast.MAX_INT:
                return jsonfast._path(path), "integer out of range"
        elif isinstance(item, float) and not math.isfinite(item):
            return jsonfast._path(path), "not a finite number"
    return None


class _Int(int):
    pass


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=3),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70).map(_Int),
    st.binary(max_size=2),
)
_values = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(st.one_of(st.text(max_size=2), st.integers(0, 3)), children, max_size=3),
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(value=_values, max_depth=st.sampled_from([0, 1, 2, 3, jsonfast.MAX_DEPTH]))
def test_unportable_answers_as_the_rule_was_first_written(value: object, max_depth: int) -> None:
    assert jsonfast.unportable(value, max_depth) == _first_bad(value, max_depth)
