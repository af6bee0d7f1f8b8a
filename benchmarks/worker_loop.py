"""The worker's share of a W1 step alone: its continuation loop (run the command, report it,
take the next command from the answer) against a canned server that answers every report at
once with the next W1 command, so no server, PostgreSQL or NATS CPU is in the figures. Prints
the CPU per step of the worker process and of its python child (µs; the child's from
/proc/<pid>/schedstat, in nanoseconds).

    .venv/bin/python benchmarks/worker_loop.py [--steps 3000]
    PYTHONPATH=<other checkout> .venv/bin/python benchmarks/worker_loop.py        # A/B

The instructions per step, which do not move with the machine's load (cachegrind, `S1` and
`S2` steps, the difference divided by `S2 - S1`; the child exits by itself at the end so
valgrind reports it):

    valgrind --tool=cachegrind --cache-sim=no --trace-children=yes \\
        --cachegrind-out-file=/dev/null .venv/bin/python benchmarks/worker_loop.py \\
        --steps S --graceful 2>&1 | grep -E "Command|I +refs"
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from noetl.config import Settings
from noetl.protocol.command import ClaimedCommand
from noetl.tools.python_pool import PythonPool
from noetl.worker.worker import Worker

CODE = "result = {'i': int(p) + 1, 'tag': 's'}"
SERVER = """
import asyncio, itertools, json, sys
steps = itertools.count(1)

def answer(n):
    command = {"execution_id": "385915331683090432", "event_id": str(385915340512100352 + n),
               "command_id": f"385915331683090432:s{n}", "step": f"s{n}", "iteration": None,
               "tool": {"code": CODE, "kind": "python"}, "input": {"p": n}, "attempt": 1,
               "worker_id": "w1", "lease_seconds": 60.0}
    body = {"status": "RUNNING", "issued": 1, "next": command}
    return json.dumps({"results": [{"status": 200, "body": body}]}).encode()

class Canned(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""

    def data_received(self, data):
        self.buffer += data
        while (end := self.buffer.find(b"\\r\\n\\r\\n")) >= 0:
            head = self.buffer[:end].decode("latin-1").lower()
            length = 0
            if "content-length:" in head:
                length = int(head.split("content-length:")[1].split("\\r\\n")[0])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length:]
            body = answer(next(steps))
            self.transport.write(b"HTTP/1.1 200 OK\\r\\ncontent-type: application/json\\r\\n"
                                 b"content-length: %d\\r\\n\\r\\n" % len(body) + body)

async def main():
    server = await asyncio.get_running_loop().create_server(Canned, "127.0.0.1", int(sys.argv[1]))
    print("ready", flush=True)
    await server.serve_forever()

asyncio.run(main())
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _on_cpu_ns(pid: int) -> int:
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


async def _measure(port: int, steps: int, graceful: bool) -> dict[str, float]:
    home = Path(tempfile.mkdtemp(prefix="noetl-worker-loop-"))
    settings = Settings.from_env().with_(
        home=home, server_url=f"http://127.0.0.1:{port}", worker_id="w1", worker_concurrency=50
    )
    worker = Worker(settings, subscriber=cast(Any, object()))  # never pulls from NATS
    first = ClaimedCommand(
        385915331683090432,
        385915331683090435,
        "385915331683090432:start",
        "start",
        {"code": CODE, "kind": "python"},
        {"p": "0"},
        1,
        "w1",
        None,
        60.0,
    )

    async def run(count: int) -> None:
        command = first
        for _ in range(count):
            _, following = await worker._work(command, None)
            command = following or first

    await run(300)  # warm: the child started, its code compiled, the connection open
    python = worker.tools.get("python")
    pool = cast(PythonPool, python.pool).pool  # type: ignore[attr-defined]
    assert pool is not None
    children = [child.pid for child in pool._children]
    worker_cpu, child_cpu = time.process_time(), sum(map(_on_cpu_ns, children))
    started = time.perf_counter()
    await run(steps)
    wall = time.perf_counter() - started
    worker_cpu = time.process_time() - worker_cpu
    child_cpu = sum(map(_on_cpu_ns, children)) - child_cpu
    if graceful:  # the children read the end of their request pipe and exit by themselves
        for child in list(pool._children):
            os.close(child.requests)
            child._fds.remove(child.requests)
            child.process.wait(120)
    await worker.tools.close()
    await worker.client.close()
    return {
        "worker_us_per_step": round(1e6 * worker_cpu / steps, 1),
        "child_us_per_step": round(child_cpu / 1e3 / steps, 1),
        "steps_per_s": round(steps / wall, 1),
        "load_average": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--graceful", action="store_true", help="let the children exit")
    args = parser.parse_args()
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", f"CODE = {CODE!r}\n{SERVER}", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert server.stdout is not None
        server.stdout.readline()
        import uvloop

        print(json.dumps(uvloop.run(_measure(port, args.steps, args.graceful))))
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
