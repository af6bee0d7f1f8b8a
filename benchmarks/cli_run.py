"""Wall time and CPU time of `noetl run` on a one-step playbook, cold (a fresh NOETL_HOME:
initdb of the embedded PostgreSQL) and warm (the second and later runs in one NOETL_HOME),
with the embedded PostgreSQL and NATS started and stopped by each run.

    python -m benchmarks.cli_run [--repeats 5] [--phases] [--source DIR] [--against DIR]

Prints medians (and ranges) of wall seconds and of CPU seconds (user + system of the
`noetl` process and of the child processes it waited for: nats-server, postgres where the
run started it, initdb), and the load average before and after, since other work on the
machine shows up in wall time but hardly in CPU time; and the CPU seconds of the `noetl`
process alone, the part this benchmark's changes act on. `--phases` adds one warm run with a
timestamp at each phase (benchmarks/cli_phases.py). `--source DIR` runs the noetl package of
another checkout (e.g. an older commit, to compare); `--against DIR` alternates runs of the
two checkouts, so that both see the same load. The sources are compiled first: with
PYTHONDONTWRITEBYTECODE set, as on some machines, every run would compile them again."""

from __future__ import annotations

import argparse
import compileall
import os
import resource
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

ROOT = Path(__file__).resolve().parents[1]


def _env(home: Path, source: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"NOETL_DATABASE_URL", "NATS_URL"}}
    env["NOETL_HOME"] = str(home)
    env["PYTHONPATH"] = str(source)
    return env


def timed(home: Path, playbook: Path, source: Path) -> tuple[float, float, float]:
    """Wall and CPU seconds of one `noetl run`, and the CPU seconds of the `noetl` process
    alone (read from /proc while it is a zombie, before it is reaped: the children it waited
    for are not in it). Its own CPU is what the other engineers' load changes least."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(
            [sys.executable, "-m", _command(source), "run", str(playbook), "--json"],
            env=_env(home, source),
            cwd=source,
            stdout=output,
            stderr=output,
        )
        os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)
        wall = time.perf_counter() - started
        own = _own_cpu(process.pid)
        if process.wait() != 0:
            output.seek(0)
            raise RuntimeError(f"noetl run failed:\n{output.read().decode(errors='replace')}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, own


def _command(source: Path) -> str:
    """The module of the `noetl` command (a checkout before 2026-12 has no noetl.cli.__main__:
    the command's entry was noetl.cli.main then)."""
    return "noetl.cli" if (source / "noetl" / "cli" / "__main__.py").exists() else "noetl.cli.main"


def _own_cpu(pid: int) -> float:
    """User + system seconds of a process itself (not of its children), from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime and stime: fields 14 and 15 of stat
    return ticks / os.sysconf("SC_CLK_TCK")


def summary(name: str, runs: list[tuple[float, float, float]]) -> str:
    walls = [wall for wall, _, _ in runs]
    cpus = [cpu for _, cpu, _ in runs]
    owns = [own for _, _, own in runs]
    return (
        f"{name}: wall median {statistics.median(walls):.2f} s"
        f" ({min(walls):.2f}-{max(walls):.2f}), CPU median {statistics.median(cpus):.2f} s"
        f" ({min(cpus):.2f}-{max(cpus):.2f}), noetl's own CPU median"
        f" {statistics.median(owns):.2f} s ({min(owns):.2f}-{max(owns):.2f}), n={len(runs)}"
    )


def phases(home: Path, playbook: Path, source: Path) -> str:
    env = {**_env(home, source), "T0": repr(time.time())}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "cli_phases.py"), str(playbook)],
        env=env,
        cwd=source,
        check=True,
        capture_output=True,
        text=True,
    )
    return "\n".join(line for line in done.stderr.splitlines() if line.startswith("PHASE"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--phases", action="store_true", help="add one warm run's phases")
    parser.add_argument("--source", type=Path, default=ROOT, help="checkout to run noetl from")
    parser.add_argument(
        "--against",
        type=Path,
        help="another checkout (e.g. the one before a change): runs of the two alternate, one"
        " cold and two warm of each per round, --repeats rounds",
    )
    args = parser.parse_args()
    sources = {"": args.source.resolve()}
    if args.against is not None:
        sources = {"this ": sources[""], "against ": args.against.resolve()}
    for source in sources.values():
        compileall.compile_dir(source / "noetl", quiet=1)
    compileall.compile_dir(ROOT / "benchmarks", quiet=1)
    load_before = os.getloadavg()
    cold: dict[str, list[tuple[float, float, float]]] = {name: [] for name in sources}
    warm: dict[str, list[tuple[float, float, float]]] = {name: [] for name in sources}
    with tempfile.TemporaryDirectory(prefix="noetl-cli-bench-") as tmp:
        playbook = Path(tmp) / "one.yaml"
        playbook.write_text(ONE_STEP)
        homes = {name: Path(tmp) / f"warm-{index}" for index, name in enumerate(sources)}
        if args.against is None:
            source = sources[""]
            cold[""] = [
                timed(Path(tmp) / f"cold-{i}", playbook, source) for i in range(args.repeats)
            ]
            timed(homes[""], playbook, source)  # initialises it
            warm[""] = [timed(homes[""], playbook, source) for _ in range(args.repeats)]
        else:
            for name, source in sources.items():
                timed(homes[name], playbook, source)
            for i in range(args.repeats):
                for index, (name, source) in enumerate(sources.items()):
                    cold[name].append(timed(Path(tmp) / f"cold-{index}-{i}", playbook, source))
                    warm[name] += [timed(homes[name], playbook, source) for _ in range(2)]
        first = next(iter(sources))  # --source's
        trace = phases(homes[first], playbook, sources[first]) if args.phases else ""
    load_after = os.getloadavg()
    for name in sources:
        print(summary(f"{name}cold (fresh NOETL_HOME)", cold[name]))
        print(summary(f"{name}warm (same NOETL_HOME) ", warm[name]))
    print(
        "load average (1, 5, 15 min): before "
        + " ".join(f"{x:.2f}" for x in load_before)
        + ", after "
        + " ".join(f"{x:.2f}" for x in load_after)
    )
    if trace:
        print(trace)


if __name__ == "__main__":
    main()
