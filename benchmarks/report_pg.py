"""PostgreSQL's CPU per step of W1's report path, without HTTP or workers: the server's own
`Flow` in this process, driven like a worker that runs each step at once (claim the first
command, then report each outcome and take the next command from the answer), against a
scratch database of a running PostgreSQL. CPU is read from /proc/<pid>/schedstat of the
database's backends (nanoseconds, not the 10 ms ticks of `cpu_times`), so a few hundred steps
give a figure that moves by a few percent, where the full stack (`peers/step_cost.py`) moves
by 10-15 % on a shared machine. Commits are real (WAL flushed), so is the growing snapshot.

    .venv/bin/python benchmarks/report_pg.py postgresql://postgres@127.0.0.1:5432/postgres \\
        nats://127.0.0.1:4222 [--executions 4] [--rounds 3]
    PYTHONPATH=<other checkout> .venv/bin/python benchmarks/report_pg.py ...   # A/B

Prints per round: PostgreSQL µs of CPU per step and steps/s; then WAL bytes per step and the
HOT share of the updates of `noetl.execution` and `noetl.command`. Linux only (schedstat).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from noetl.config import Settings
from noetl.embedded.runtime import running
from noetl.protocol.outcome import Outcome, Report


def w1(steps: int = 100) -> str:
    """The yardstick's W1 (shared/bench/ours.py): step k returns {i: previous i + 1}."""
    lines = ["apiVersion: noetl.io/v2", "kind: Playbook", "metadata: {name: w1, path: bench/w1}"]
    lines.append("workflow:")
    for k in range(steps):
        name = "start" if k == 0 else f"s{k}"
        previous = "0" if k == 0 else "{{ " + ("start" if k == 1 else f"s{k - 1}") + ".i }}"
        lines.append(f"  - step: {name}")
        lines.append(
            f'    tool: {{kind: python, input: {{p: "{previous}"}},'
            f" code: \"result = {{'i': int(p) + 1, 'tag': 's'}}\"}}"
        )
        if k < steps - 1:
            lines.append(f"    next: {{spec: {{mode: exclusive}}, arcs: [{{step: s{k + 1}}}]}}")
    return "\n".join(lines) + "\n"


def _cpu_ns(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    except FileNotFoundError:  # a backend that exited
        return 0


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("postgres", help="URL of a database with the right to CREATE DATABASE")
    parser.add_argument("nats")
    parser.add_argument("--executions", type=int, default=4, help="W1 runs per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    suffix = uuid.uuid4().hex[:10]
    name = f"noetl_report_pg_{suffix}"
    with psycopg.connect(args.postgres, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = psycopg.conninfo.make_conninfo(args.postgres, dbname=name)
    try:
        with tempfile.TemporaryDirectory(prefix="noetl-report-pg-") as home:
            settings = Settings.from_env(
                {},
                database_url=url,
                nats_url=args.nats,
                stream=f"NOETL_REPORT_PG_{suffix}",
                subject=f"noetl_report_pg.{suffix}",
                consumer=f"noetl-report-pg-{suffix}",
                worker_id=f"report-pg-{suffix}",
                relay_interval=30.0,
                home=Path(home),
            )
            await _measure(settings, args.executions, args.rounds)
    finally:
        with psycopg.connect(args.postgres, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _measure(settings: Settings, executions: int, rounds: int) -> None:
    import nats

    async with running(settings, workers=0, ui=False) as runtime, runtime.client() as api:
        app: Any = runtime.server.config.app
        orchestrator = app.state.orchestrator
        registered = await api.post("/api/catalog/register", json={"content": w1()})
        assert registered.status_code == 201, registered.text
        db = psycopg.connect(str(settings.database_url), autocommit=True)

        async def one() -> int:
            started = await api.post("/api/execute", json={"path": "bench/w1"})
            execution_id = int(started.json()["execution_id"])
            [(event_id,)] = db.execute(
                "SELECT event_id FROM noetl.command WHERE execution_id = %s", (execution_id,)
            ).fetchall()
            command = await orchestrator.workers.claim(event_id, "report-pg")
            steps = 0
            while command is not None:
                result = {"i": int(command.input["p"]) + 1, "tag": "s"}
                reply = await orchestrator.flow.report(
                    Report(
                        execution_id,
                        command.command_id,
                        command.attempt,
                        "report-pg",
                        Outcome.success(result),
                    )
                )
                steps += 1
                command = reply.next
            return steps

        def backends() -> dict[int, int]:
            rows = db.execute(
                "SELECT pid FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
            return {pid: _cpu_ns(pid) for (pid,) in rows}

        await one()  # warm-up: statements prepared, plans made
        for _ in range(rounds):
            start, steps, began = backends(), 0, time.perf_counter()
            for _ in range(executions):
                steps += await one()
            seconds = time.perf_counter() - began
            used = sum(cpu - start.get(pid, 0) for pid, cpu in backends().items())
            print(
                f"PostgreSQL {used / steps / 1000:.0f} us CPU per step, {steps / seconds:.0f}"
                f" steps/s (load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
        lsn = db.execute("SELECT pg_current_wal_lsn()").fetchone()  # one more run, for the WAL
        steps = await one()
        [(wal,)] = db.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", lsn).fetchall()
        hot = db.execute(
            "SELECT relname, n_tup_hot_upd, n_tup_upd FROM pg_stat_user_tables"
            " WHERE schemaname = 'noetl' AND relname IN ('execution', 'command') ORDER BY 1"
        ).fetchall()
        shares = ", ".join(f"{table} {hot_}/{all_}" for table, hot_, all_ in hot)
        print(f"WAL {float(wal) / steps:.0f} bytes per step; HOT updates: {shares}")
        db.close()
    connection = await nats.connect(str(settings.nats_url))
    try:
        await connection.jetstream().delete_stream(settings.stream)
    finally:
        await connection.close()


if __name__ == "__main__":
    asyncio.run(main())
