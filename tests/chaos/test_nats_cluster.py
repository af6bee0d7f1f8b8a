"""Scale-out on a real cluster: a 3-node NATS JetStream cluster on loopback (stream replicas 3),
two servers and two workers; the stream's leader node is SIGKILLed mid-run. Nothing is lost
(every execution completes) and nothing runs twice (one side effect per step)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import nats
import pytest
from nats.js.errors import APIError

from noetl.config import Settings
from noetl.embedded.runtime import running
from noetl.embedded.services import find_nats_server, free_port
from noetl.worker.worker import Worker
from tests.conftest import eventually, wait_for_end

STEPS = 4


def _playbook(marks: Path) -> str:
    lines = [
        "apiVersion: noetl.io/v2",
        "kind: Playbook",
        "metadata: {name: clustered, path: tests/clustered}",
        "workflow:",
    ]
    for index in range(STEPS):
        name = "start" if index == 0 else f"s{index}"
        lines += [
            f"  - step: {name}",
            "    tool:",
            "      kind: python",
            '      input: {eid: "{{ execution_id }}"}',
            "      code: |",
            "        import time",
            f"        with open('{marks}/' + str(eid) + '.{name}', 'a') as f:",
            "            f.write('ran\\n')",
            "        time.sleep(0.3)",
            "        result = 1",
        ]
        if index < STEPS - 1:
            lines.append(f"    next: [s{index + 1}]")
    return "\n".join(lines) + "\n"


class NatsCluster:
    """Three `nats-server -js` processes clustered on 127.0.0.1."""

    def __init__(self, root: Path) -> None:
        self.binary = find_nats_server()
        self.root = root
        self.ports = [free_port() for _ in range(3)]
        self.routes = [free_port() for _ in range(3)]
        self.names = [f"n{i}" for i in range(3)]
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def servers(self) -> list[str]:
        return [f"nats://127.0.0.1:{port}" for port in self.ports]

    @property
    def url(self) -> str:
        """As NATS_URL takes a cluster: comma-separated."""
        return ",".join(self.servers)

    def start(self) -> None:
        routes = ",".join(f"nats-route://127.0.0.1:{port}" for port in self.routes)
        for name, port, route in zip(self.names, self.ports, self.routes, strict=True):
            store = self.root / name
            store.mkdir(parents=True, exist_ok=True)
            log = (store / "nats.log").open("ab")
            self.processes[name] = subprocess.Popen(
                [
                    str(self.binary),
                    "-js",
                    "-a",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-n",
                    name,
                    "-sd",
                    str(store),
                    "--cluster_name",
                    "noetl-test",
                    "--cluster",
                    f"nats://127.0.0.1:{route}",
                    "--routes",
                    routes,
                ],
                stdout=log,
                stderr=log,
            )

    def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()


@contextlib.asynccontextmanager
async def nats_cluster(root: Path) -> AsyncIterator[NatsCluster]:
    cluster = NatsCluster(root)
    cluster.start()
    try:

        async def jetstream_ready() -> bool:
            try:
                nc = await nats.connect(
                    cluster.servers, connect_timeout=1, max_reconnect_attempts=0
                )
            except Exception:
                return False
            try:
                await nc.jetstream().account_info()  # answers once a meta leader is elected
                return True
            except (APIError, nats.errors.Error, TimeoutError):
                return False
            finally:
                await nc.close()

        await eventually(jetstream_ready, timeout=60, interval=0.2)
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.timeout(300)
async def test_a_nats_node_killed_mid_run_loses_nothing_and_runs_nothing_twice(
    settings: Settings, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    async with nats_cluster(tmp_path / "nats") as cluster:
        clustered = settings.with_(nats_url=cluster.url, nats_replicas=3)
        async with (
            running(clustered, workers=0) as one,
            running(clustered.with_(worker_id="second"), workers=0) as two,
        ):
            workers = [
                Worker(clustered.with_(server_url=one.url, worker_id="w-one")),
                Worker(clustered.with_(server_url=two.url, worker_id="w-two")),
            ]
            tasks = [asyncio.create_task(w.run()) for w in workers]
            try:
                await asyncio.wait_for(
                    asyncio.gather(*(w.ready.wait() for w in workers)), timeout=60
                )
                text = _playbook(marks)
                ids: list[str] = []
                async with (
                    httpx.AsyncClient(base_url=one.url, timeout=30) as api_one,
                    httpx.AsyncClient(base_url=two.url, timeout=30) as api_two,
                ):
                    for index in range(12):
                        api = api_one if index % 2 else api_two
                        started = await api.post("/api/execute", json={"playbook": text})
                        assert started.status_code == 201, started.text
                        ids.append(started.json()["execution_id"])

                    async def some_steps_ran() -> bool:
                        if len(list(marks.iterdir())) >= 6:
                            return True
                        first = (await api_one.get(f"/api/executions/{ids[0]}")).json()
                        assert first["status"] == "RUNNING", first  # not failed early
                        return False

                    await eventually(some_steps_ran, timeout=120)
                    nc = await nats.connect(cluster.servers)
                    try:
                        info = await nc.jetstream().stream_info(clustered.stream)
                    finally:
                        await nc.close()
                    assert info.config.num_replicas == 3
                    leader = info.cluster.leader if info.cluster else None
                    assert leader in cluster.names, info.cluster
                    cluster.kill(leader)  # the stream's leader, mid-run
                    ended = [await wait_for_end(api_one, i, timeout=180) for i in ids]
            finally:
                for worker in workers:
                    worker.stop()
                await asyncio.gather(*tasks, return_exceptions=True)
    assert [e["status"] for e in ended] == ["COMPLETED"] * len(ids)
    runs = {path.name: path.read_text().count("ran") for path in marks.iterdir()}
    assert len(runs) == len(ids) * STEPS  # nothing lost
    assert set(runs.values()) == {1}  # nothing run twice
