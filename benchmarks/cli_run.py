"""Wall time of `noetl run` on a one-step playbook: first run (fresh NOETL_HOME: initdb) and
repeats (the embedded PostgreSQL data folder already exists)."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ONE_STEP = """apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: one}
workflow:
  - step: start
    tool: {kind: python, code: "result = {'ok': True}"}
"""


def timed(home: Path, playbook: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k not in {"NOETL_DATABASE_URL", "NATS_URL"}}
    env["NOETL_HOME"] = str(home)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "noetl.cli.main", "run", str(playbook), "--json"],
        env=env,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="noetl-cli-bench-") as tmp:
        playbook = Path(tmp) / "one.yaml"
        playbook.write_text(ONE_STEP)
        home = Path(tmp) / "home"
        first = timed(home, playbook)
        repeats = [timed(home, playbook) for _ in range(args.repeats)]
    print(f"first run (fresh NOETL_HOME): {first:.2f} s")
    print(
        f"repeat runs: median {statistics.median(repeats):.2f} s"
        f" (min {min(repeats):.2f}, max {max(repeats):.2f}, n={len(repeats)})"
    )
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import noetl.cli.main"], check=True)
    print(f"of which importing the CLI: {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()
