"""Every case of shared/conformance/manifest.yaml through the real server and workers.

The runner follows the manifest header (read it): `register_first`, then per case its
`register` files, its `setup` runs (each to COMPLETED) and the case file through the catalog
API; POST /api/execute with the `payload` (placeholders substituted) merged over the workload;
wait for a terminal status (at most `timeout_s`); check `expect`. One server, two workers and
one database for the whole module, cases in manifest order. Postgres `credentials` and
`nats_credentials` are registered first; servers/paginated_api.py and servers/stub_api.py run on
free loopback ports.

Tiers: the DEFAULT tier (every `needs: local` case not tagged slow/heavy) runs by default. The
FULL tier (slow/heavy) is marked `conformance_full` and is only selected with
`-m conformance_full`. A DEFAULT-tier case `after` a FULL-tier case that has not run reads
tables only that case creates: the parent runs first as a prerequisite, with the reduced
workload of prerequisites.py (why and how much, per parent, with evidence from the
playbooks). External cases are run offline: they must register and end within `timeout_s`,
FAILED with an error naming the missing service (`offline.error_any`).
`destructive` cases are registered only. `upstream-internals` cases must register and reach a
terminal status; the rest of their expect is reported, not enforced. `flaky` cases get up to 4
attempts (a run and three retries).

Cases that do not pass yet are listed in known_failures.py (strict xfail).
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import psycopg
import pytest
from psycopg import sql

from noetl.embedded.runtime import running
from noetl.embedded.services import free_port
from tests.conformance import manifest as mf
from tests.conformance.known_failures import KNOWN_FAILURES
from tests.conformance.prerequisites import prerequisites
from tests.conformance.table import DETAILS
from tests.conftest import TERMINAL, Services, eventually, isolated_settings

MANIFEST = mf.load()
CASES = mf.cases(MANIFEST)
BY_ID = {case.id: case for case in CASES}
# Cases (and prerequisites) run so far in this session; a prerequisite that failed, by id.
RAN: set[str] = set()
PREREQUISITE_FAILED: dict[str, str] = {}


def _params() -> list[Any]:
    params = []
    for case in CASES:
        first = sum(parent.timeout_s for parent in prerequisites(case, BY_ID, set()))
        marks = [pytest.mark.timeout(case.timeout_s * case.attempts + first + 120)]
        if case.full_tier:
            marks.append(pytest.mark.conformance_full)
        if case.id in KNOWN_FAILURES:
            marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[case.id]))
        params.append(pytest.param(case, id=case.id, marks=marks))
    return params


# Manifest expectations the runner reads differently, each with upstream evidence (the header:
# "a case you believe is wrong gets a comment in the runner explaining why, with evidence from
# upstream, and still runs"). Merged over the case's `offline`.
OFFLINE_OVERRIDES: dict[str, dict[str, Any]] = {
    # intent-unclear. The manifest expects FAILED naming quantum-demo.example.com because
    # "fetch_problem ... fails by policy", but its policy is `when: output.status == 'error'
    # -> do: continue` with a fallback `ctx.problem_spec` and the note "Problem catalog
    # unavailable; using fallback problem spec"; publish_results (noetl-mesh.example.com) has
    # the same `do: continue` ("HTTP dispatch failed"). Upstream's task sequence executor
    # (noetl/noetl noetl/worker/task_sequence_executor.py) treats `continue` after an error as
    # going on and ends the sequence "ok", as DSL.md section 6 does here: the fixture tolerates
    # the missing hosts by design, which the header spells `status: COMPLETED_OR_FAILED`.
    "quantum_cudaq/quantum_cudaq.yaml": {"status": "COMPLETED_OR_FAILED"},
}


def test_known_failures_name_real_cases() -> None:
    """The to-do list names cases of the manifest, each with a reason."""
    ids = {case.id for case in CASES}
    assert not set(KNOWN_FAILURES) - ids, set(KNOWN_FAILURES) - ids
    assert all(reason.strip() for reason in KNOWN_FAILURES.values())
    assert not set(OFFLINE_OVERRIDES) - {case.id for case in CASES if case.external}


# -- the environment of the whole module --------------------------------------------------


@dataclass
class Env:
    api: httpx.AsyncClient
    database_url: str
    placeholders: dict[str, str]
    paginated_url: str


def _start_server(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, *args], stdout=out, stderr=subprocess.STDOUT, cwd=mf.ROOT
        )


@contextlib.contextmanager
def _helper_servers(logs: Path) -> Iterator[tuple[str, str]]:
    """servers/paginated_api.py and servers/stub_api.py on free ports; stopped afterwards."""
    paginated_port, stub_port = free_port(), free_port()
    procs = [
        _start_server(
            [str(mf.ROOT / "servers" / "paginated_api.py"), str(paginated_port)],
            logs / "paginated_api.log",
        ),
        _start_server(
            [
                str(mf.ROOT / "servers" / "stub_api.py"),
                str(stub_port),
                "--files-root",
                str(mf.ROOT),
            ],
            logs / "stub_api.log",
        ),
    ]
    try:
        yield f"http://127.0.0.1:{paginated_port}", f"http://127.0.0.1:{stub_port}"
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _wait_up(url: str, path: str) -> None:
    async with httpx.AsyncClient(timeout=2) as client:

        async def up() -> bool:
            try:
                return (await client.get(url + path)).status_code < 500
            except httpx.HTTPError:
                return False

        await eventually(up, timeout=60, interval=0.1)


def _pg_placeholders(database_url: str, user: str, password: str) -> dict[str, str]:
    parts = urlparse(database_url)
    conninfo = psycopg.conninfo.conninfo_to_dict(database_url)
    return {
        "PG_HOST": str(conninfo.get("host") or parts.hostname or "127.0.0.1"),
        "PG_PORT": str(conninfo.get("port") or parts.port or 5432),
        "PG_USER": user,
        "PG_PASSWORD": password,
        "PG_DATABASE": str(conninfo.get("dbname") or parts.path.lstrip("/")),
    }


@contextlib.asynccontextmanager
async def _login_role(admin_url: str) -> AsyncIterator[tuple[str, str]]:
    """A login role with a password for the ${PG_USER} / ${PG_PASSWORD} placeholders.

    Fixtures build a libpq conninfo by formatting, e.g. http_to_postgres_bulk_python's
    f"... user={pg_user} password={pg_password} dbname={pg_database}" (upstream's password is
    always `demo`). With an empty password, libpq reads `password= dbname=x` as the password
    "dbname=x" and connects to the default database, where the case's tables do not exist.
    So the placeholders name a role that has a password, like upstream's; it is a superuser
    (it reads and writes the tables the postgres credentials create) and dropped afterwards.
    """
    name, password = f"noetl_conformance_{secrets.token_hex(4)}", secrets.token_hex(12)
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        await conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                sql.Identifier(name), sql.Literal(password)
            )
        )
    try:
        yield name, password
    finally:
        async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
            await conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
async def env(services: Services, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    """One server and two workers on one database, the two helper servers, the credentials."""
    home = tmp_path_factory.mktemp("conformance")
    with _helper_servers(home) as (paginated_url, stub_url):
        async with (
            _login_role(services.admin_url) as (pg_user, pg_password),
            isolated_settings(services, home, relay_interval=0.5, lease_seconds=30.0) as settings,
            running(settings, workers=2) as runtime,
            httpx.AsyncClient(base_url=runtime.url, timeout=60) as client,
        ):
            await _wait_up(paginated_url, "/health")
            await _wait_up(stub_url, "/health")
            for name in MANIFEST.get("credentials", []):
                await _put_credential(client, name, "postgres", {"dsn": settings.database_url})
            for name in MANIFEST.get("nats_credentials", []):
                data = {"nats_url": settings.nats_url, "nats_user": "", "nats_password": ""}
                await _put_credential(client, name, "nats", data)
            for file in MANIFEST.get("register_first", []):
                response = await _register(client, file)
                assert response.status_code == 201, response.text
            database_url = settings.database_url
            assert database_url is not None
            stub = urlparse(stub_url)
            placeholders = {
                "SERVER_URL": runtime.url.rstrip("/"),
                "PAGINATED_API_URL": paginated_url,
                "STUB_API_URL": stub_url,
                "STUB_API_HOSTPORT": f"{stub.hostname}:{stub.port}",
                "CONFORMANCE_DIR": str(mf.ROOT),
                **_pg_placeholders(database_url, pg_user, pg_password),
            }
            yield Env(client, database_url, placeholders, paginated_url)


async def _put_credential(
    client: httpx.AsyncClient, name: str, kind: str, data: dict[str, Any]
) -> None:
    response = await client.post(
        "/api/credentials", json={"name": name, "type": kind, "data": data}
    )
    assert response.status_code == 201, response.text


async def _register(client: httpx.AsyncClient, file: str) -> httpx.Response:
    return await client.post("/api/catalog/register", content=(mf.PLAYBOOKS / file).read_text())


# -- one run ------------------------------------------------------------------------------


class CaseFailure(AssertionError):
    pass


async def _execute(
    env: Env, catalog_id: str, payload: dict[str, Any], timeout: float
) -> dict[str, Any]:
    started = await env.api.post(
        "/api/execute",
        json={"catalog_id": catalog_id, "payload": mf.substitute(payload, env.placeholders)},
    )
    if started.status_code != 201:
        raise CaseFailure(f"execute refused: {started.status_code} {started.text}")
    execution_id = started.json()["execution_id"]

    async def ended() -> dict[str, Any] | None:
        body: dict[str, Any] = (await env.api.get(f"/api/executions/{execution_id}")).json()
        return body if body.get("status") in TERMINAL else None

    try:
        result: dict[str, Any] = await eventually(ended, timeout=timeout, interval=0.2)
    except AssertionError:
        await env.api.post(
            f"/api/executions/{execution_id}/cancel", json={"reason": "conformance timeout"}
        )
        raise CaseFailure(f"not terminal within timeout_s={timeout:g}") from None
    return result


async def _events(env: Env, execution_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    after = 0
    while True:
        response = await env.api.get(
            f"/api/executions/{execution_id}/events", params={"after": after, "limit": 10000}
        )
        page = response.json()["items"]
        items.extend(page)
        if len(page) < 10000:
            return items
        after = int(page[-1]["event_id"])


def _check(expect: dict[str, Any], execution: dict[str, Any], events: list[dict[str, Any]]) -> None:
    """Raise CaseFailure naming the first unmet expectation."""
    status, error = execution["status"], execution.get("error") or ""
    wanted = expect.get("status", "COMPLETED")
    if wanted == "REJECTED_OR_FAILED":
        wanted = "FAILED"
    if wanted == "COMPLETED_OR_FAILED":
        wanted = status if status in {"COMPLETED", "FAILED"} else "COMPLETED or FAILED"
    if status != wanted:
        raise CaseFailure(f"status {status}, expected {wanted}; error: {error[:500]}")
    if "error_contains" in expect and not mf.mentions_any(error, [expect["error_contains"]]):
        raise CaseFailure(f"error lacks {expect['error_contains']!r}: {error[:500]}")
    if (
        status == "FAILED"
        and "error_any" in expect
        and not mf.mentions_any(error, expect["error_any"])
    ):
        raise CaseFailure(f"error names none of {expect['error_any']}: {error[:500]}")
    exits = [e for e in events if e["event_type"] == "step.exit"]
    completed = {e["step"] for e in exits if e["status"] == "completed"}
    failed = {e["step"] for e in exits if e["status"] == "failed"}
    entered = [e["step"] for e in events if e["event_type"] == "step.enter"]
    for step in expect.get("steps_completed", []):
        if step not in completed:
            raise CaseFailure(f"step {step} did not complete (completed: {sorted(completed)})")
    for step in expect.get("steps_failed", []):
        if step not in failed:
            raise CaseFailure(f"step {step} did not fail (failed: {sorted(failed)})")
    for step in expect.get("steps_skipped", []):
        if step in entered:
            raise CaseFailure(f"step {step} started but must be skipped")
    for step, count in expect.get("step_enter_count", {}).items():
        if entered.count(step) != count:
            raise CaseFailure(f"step {step} entered {entered.count(step)} times, not {count}")
    finished = [e["step"] for e in exits if e["status"] == "completed"]
    for step, before in expect.get("completed_after", {}).items():
        if step not in finished:
            raise CaseFailure(f"step {step} did not complete")
        at = len(finished) - 1 - finished[::-1].index(step)
        for other in before:
            if other not in finished[:at]:
                raise CaseFailure(f"step {step} completed before {other}")
    results = {e["step"]: e["result"] for e in exits if e["status"] == "completed"}
    for step, fields in expect.get("results", {}).items():
        if step not in results:
            raise CaseFailure(f"no result of step {step}")
        if not mf.results_match(results[step], fields):
            raise CaseFailure(f"result of {step} is {str(results[step])[:500]}, wanted {fields}")


LEFTOVER_WORK = """
SELECT count(*) FROM noetl.command
WHERE status IN ('PENDING', 'CLAIMED') OR (status = 'CANCELLED' AND lease_until > now())
"""
WORKERS_IDLE = """
SELECT count(*) FILTER (WHERE heartbeat_at > %(since)s AND running = 0)
     = count(*) FILTER (WHERE heartbeat_at > now() - interval '30 seconds')
FROM noetl.worker
"""


async def _one_case_at_a_time(env: Env, case: mf.Case) -> None:
    """Cases run one at a time: nothing an earlier case left behind may hold worker slots.

    A run that ended FAILED or timed out can leave commands in flight (iterations of a
    failed parallel loop, a cancelled run's steps) until their worker learns of it at its next
    lease renewal; a case that measures concurrency (pagination/basic counts overlapping
    requests) then runs on fewer slots. Cancel what still runs and wait until the workers'
    heartbeats say they are idle.
    """
    async with await psycopg.AsyncConnection.connect(env.database_url, autocommit=True) as conn:
        running = await conn.execute(
            "SELECT execution_id FROM noetl.execution WHERE status = 'RUNNING'"
        )
        for (execution_id,) in await running.fetchall():
            await env.api.post(
                f"/api/executions/{execution_id}/cancel",
                json={"reason": f"conformance: still running when {case.id} starts"},
            )
        since = (await (await conn.execute("SELECT now()")).fetchone() or [None])[0]

        async def idle() -> bool:
            leftover = (await (await conn.execute(LEFTOVER_WORK)).fetchone() or [0])[0]
            if not leftover:
                return True
            quiet = await (await conn.execute(WORKERS_IDLE, {"since": since})).fetchone()
            return bool(quiet and quiet[0])

        await eventually(idle, timeout=120, interval=0.2)


async def _prepare(env: Env, case: mf.Case) -> None:
    await _one_case_at_a_time(env, case)
    if case.drop_before:
        async with await psycopg.AsyncConnection.connect(env.database_url, autocommit=True) as c:
            for table in case.drop_before:
                await c.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
    if case.stateful_server:
        async with httpx.AsyncClient(base_url=env.paginated_url, timeout=10) as client:
            for path in ("/api/v1/flaky/reset", "/api/v1/concurrency/reset"):
                response = await client.post(path)
                assert response.status_code == 200, response.text


async def _run(env: Env, case: mf.Case) -> str:
    """One attempt at a case; returns a one-line detail, raises CaseFailure."""
    for file in case.register:
        response = await _register(env.api, file)
        if response.status_code != 201:
            raise CaseFailure(f"register {file}: {response.status_code} {response.text[:300]}")
    setups = []
    for entry in case.setup:
        response = await _register(env.api, entry["file"])
        if response.status_code != 201:
            raise CaseFailure(f"register setup {entry['file']}: {response.text[:300]}")
        setups.append((entry, response.json()["catalog_id"]))
    registered = await _register(env.api, case.file)
    expect = case.expect
    if registered.status_code == 422:
        message = registered.json().get("message", registered.text)
        if case.destructive and case.file == "deployment/deploy_gateway_kind.yaml":
            return f"rejected at registration (allowed by the header): {message[:200]}"
        if not case.external and expect.get("status") == "REJECTED_OR_FAILED":
            needles = expect.get("error_any") or [expect.get("error_contains", "")]
            if not mf.mentions_any(message, needles):
                raise CaseFailure(f"rejected, but the message names none of {needles}: {message}")
            return f"rejected at registration: {message[:200]}"
        raise CaseFailure(f"registration rejected: {message[:500]}")
    if registered.status_code != 201:
        raise CaseFailure(f"registration: {registered.status_code} {registered.text[:300]}")
    if case.destructive:
        return "registered (destructive: registration only)"
    for entry, catalog_id in setups:
        done = await _execute(env, catalog_id, entry.get("payload") or {}, case.timeout_s)
        if done["status"] != "COMPLETED":
            raise CaseFailure(f"setup {entry['file']} ended {done['status']}: {done['error']}")
    began = time.monotonic()
    execution = await _execute(env, registered.json()["catalog_id"], case.payload, case.timeout_s)
    took = time.monotonic() - began
    events = await _events(env, execution["execution_id"])
    summary = f"{execution['status']} in {took:.1f}s"
    if case.external:
        offline = {"status": "FAILED", **case.offline, **OFFLINE_OVERRIDES.get(case.id, {})}
        _check(offline, execution, events)
        return f"offline: {summary}; error: {(execution.get('error') or '')[:120]}"
    if case.internals:
        try:
            _check(expect, execution, events)
        except CaseFailure as unmet:
            return f"{summary}; reported, not enforced (upstream-internals): {unmet}"
        return summary
    _check(expect, execution, events)
    return summary


async def _run_prerequisites(env: Env, case: mf.Case) -> str:
    """The FULL-tier parents the case is `after`, reduced (prerequisites.py); a detail line."""
    done = []
    for parent_id in case.after:
        if parent_id in PREREQUISITE_FAILED:
            raise CaseFailure(f"prerequisite {parent_id} failed: {PREREQUISITE_FAILED[parent_id]}")
    for parent in prerequisites(case, BY_ID, RAN):
        RAN.add(parent.id)
        await _prepare(env, parent)
        began = time.monotonic()
        try:
            await _run(env, parent)
        except CaseFailure as failure:
            PREREQUISITE_FAILED[parent.id] = str(failure)
            raise CaseFailure(f"prerequisite {parent.id} (reduced) failed: {failure}") from None
        done.append(f"{parent.id} (reduced) in {time.monotonic() - began:.1f}s")
    return f"; after prerequisite {', '.join(done)}" if done else ""


@pytest.mark.parametrize("case", _params())
async def test_conformance_case(env: Env, case: mf.Case) -> None:
    RAN.add(case.id)
    try:
        first = await _run_prerequisites(env, case)
    except CaseFailure as failure:
        DETAILS[case.id] = str(failure)
        raise
    failures: list[str] = []
    for attempt in range(1, case.attempts + 1):
        await _prepare(env, case)
        try:
            detail = await _run(env, case)
        except CaseFailure as failure:
            failures.append(f"attempt {attempt}: {failure}")
            DETAILS[case.id] = str(failure) + first
            continue
        DETAILS[case.id] = detail + (f" (attempt {attempt})" if attempt > 1 else "") + first
        return
    raise CaseFailure("; ".join(failures))


async def test_helper_servers_answer(env: Env) -> None:
    """The placeholders point at live servers (a broken rig must not look like failing cases)."""
    async with httpx.AsyncClient(timeout=10) as client:
        posts = await client.get(env.placeholders["STUB_API_URL"] + "/posts")
        assert len(posts.json()) == 100
        flaky = await client.get(env.placeholders["PAGINATED_API_URL"] + "/health")
        assert flaky.status_code == 200
