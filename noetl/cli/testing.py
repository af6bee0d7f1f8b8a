"""`noetl test`: run PlaybookTest files on the embedded (or configured) services, or through
the `noetl ui` that serves the same NOETL_HOME."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx

from noetl.cli.playbook_test import BadTestFile, PlaybookTest, check, mocked
from noetl.cli.progress import follow
from noetl.config import Settings
from noetl.documents import read_document

TIMEOUT = 300.0  # seconds one test's execution may run before it fails as timed out


@dataclass(frozen=True)
class Outcome:
    test: PlaybookTest
    problems: list[str]
    seconds: float
    execution_id: str | None = None

    @property
    def passed(self) -> bool:
        return not self.problems


async def run_all(
    settings: Settings, tests: list[PlaybookTest], *, limit: float = TIMEOUT
) -> list[Outcome]:
    from noetl.cli.ui import serving_ui
    from noetl.embedded.runtime import embedded_services, preload, running

    serving = serving_ui(settings)
    if serving is not None:  # a `noetl ui` serves this home: the tests run there (`noetl run`)
        from noetl.cli.connection import async_client

        async with async_client(settings.with_(server_url=serving)) as api:
            return [await _one(api, test, limit) for test in tests]
    async with (
        embedded_services(settings, meanwhile=preload) as live,
        running(live, ui=False, warm=True) as runtime,
        runtime.client(timeout=30) as client,
    ):
        return [await _one(client, test, limit) for test in tests]


async def _one(client: httpx.AsyncClient, test: PlaybookTest, limit: float) -> Outcome:
    started = time.perf_counter()
    try:
        content = mocked(read_document(test.playbook), test.mocks)
    except OSError as exc:
        return Outcome(test, [f"playbook {test.playbook}: {exc.strerror}"], 0.0)
    except BadTestFile as exc:
        return Outcome(test, [str(exc)], 0.0)
    for file in test.register:  # sub-playbooks the playbook calls, by their catalog path
        try:
            text = read_document(file)
        except OSError as exc:
            return Outcome(test, [f"register {file}: {exc.strerror}"], 0.0)
        registered = await client.post("/api/catalog/register", json={"content": text})
        if registered.status_code >= 400:
            return Outcome(test, [f"register {file}: {_message(registered)}"], 0.0)
    response = await client.post(
        "/api/execute", json={"playbook": content, "payload": dict(test.payload)}
    )
    if response.status_code >= 400:
        return Outcome(test, [f"playbook refused: {_message(response)}"], 0.0)
    execution_id = str(response.json()["execution_id"])
    try:
        execution = await asyncio.wait_for(follow(client, execution_id, None), limit)
    except TimeoutError:
        await client.post(f"/api/executions/{execution_id}/cancel")
        seconds = time.perf_counter() - started
        return Outcome(test, [f"still running after {limit:g} s"], seconds, execution_id)
    events: list[Any] = await _events(client, execution_id)
    problems = check(test, execution, events)
    return Outcome(test, problems, time.perf_counter() - started, execution_id)


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:500]}"
    if not isinstance(body, dict):
        return str(body)
    lines = [str(body.get("message", body))]
    lines += [
        f"line {p.get('line')}: {p.get('field')}: {p.get('message')}"
        for p in body.get("problems") or []
        if isinstance(p, dict)
    ]
    return "\n".join(lines)


async def _events(client: httpx.AsyncClient, execution_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    after = 0
    while True:
        response = await client.get(
            f"/api/executions/{execution_id}/events", params={"after": after, "limit": 1000}
        )
        items: list[dict[str, Any]] = response.json()["items"]
        found += items
        if len(items) < 1000:
            return found
        after = int(items[-1]["event_id"])
