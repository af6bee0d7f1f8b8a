"""`kind: PlaybookTest`: a playbook, a payload, mocks and expectations (`noetl test`).

```yaml
apiVersion: noetl.io/v2
kind: PlaybookTest
metadata: {name: hello greets}
playbook: ../hello.yaml            # relative to this file
register: [../child.yaml]          # registered first: sub-playbooks it calls (files or folders)
payload: {message: hello}
mocks:                             # a step's tool replaced by a fixed result or an error
  fetch: {result: {rows: [1, 2]}}  # templates allowed: {{ item }} in a loop
  save: {error: "disk full"}
expect:
  status: COMPLETED                # COMPLETED (default), FAILED or CANCELLED
  result: {greeting: HELLO world}  # fields of the execution's result
  steps:                           # fields of each step's result (mappings match by field)
    start: {echo: HELLO}
  ran: [start, end]                # steps that ran (completed or failed)
  skipped: [cold]                  # steps skipped by routing
  not_ran: [cleanup]               # steps that did not run at all
  error: "disk full"               # text the execution's error contains
```

A file may hold several tests as YAML documents separated by `---`. Pure: parsing, applying
mocks to the playbook's data, and checking an ended execution are functions of their inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from noetl.documents import read_document

KIND = "PlaybookTest"
_KEYS = {"apiVersion", "kind", "metadata", "playbook", "register", "payload", "mocks", "expect"}
_EXPECT = {"status", "result", "steps", "ran", "skipped", "not_ran", "error"}
_STATUSES = {"COMPLETED", "FAILED", "CANCELLED"}


class BadTestFile(ValueError):
    """A test file that cannot be run; the message names the file and the field."""


@dataclass(frozen=True)
class PlaybookTest:
    name: str
    file: Path
    playbook: Path
    payload: Mapping[str, Any] = field(default_factory=dict)
    mocks: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    expect: Mapping[str, Any] = field(default_factory=dict)
    register: tuple[Path, ...] = ()  # playbook files registered before the run


def is_test_file(path: Path) -> bool:
    try:
        return any(
            isinstance(doc, dict) and doc.get("kind") == KIND
            for doc in yaml.safe_load_all(read_document(path))
        )
    except (OSError, yaml.YAMLError):
        return False


def find(paths: Iterable[Path]) -> list[Path]:
    """Test files: the files given, and the PlaybookTest YAML files under each folder."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            candidates = sorted({*path.rglob("*.yaml"), *path.rglob("*.yml")})
            found += [p for p in candidates if is_test_file(p)]
        else:
            found.append(path)
    return found


def playbook_files(paths: Iterable[Path]) -> list[Path]:
    """The files given, and in each folder (recursively) the YAML files of kind Playbook.
    A path that does not exist is a FileNotFoundError naming it."""
    found: list[Path] = []
    for path in paths:
        if not path.is_dir():
            if not path.exists():
                raise FileNotFoundError(f"{path} does not exist")
            found.append(path)
            continue
        for file in sorted({*path.rglob("*.yaml"), *path.rglob("*.yml")}):
            try:
                head = yaml.safe_load(read_document(file))
            except (OSError, yaml.YAMLError):
                head = None
            if isinstance(head, dict) and head.get("kind") == "Playbook":
                found.append(file)
    return found


def load(path: Path) -> list[PlaybookTest]:
    try:
        documents = list(yaml.safe_load_all(read_document(path)))
    except OSError as exc:
        raise BadTestFile(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise BadTestFile(f"{path}: invalid YAML: {exc}") from None
    tests = [_test(path, index, doc) for index, doc in enumerate(documents) if doc is not None]
    if not tests:
        raise BadTestFile(f"{path}: no test in the file")
    return tests


def _test(path: Path, index: int, doc: Any) -> PlaybookTest:
    where = f"{path} (test {index + 1})"
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise BadTestFile(f"{where}: kind: expected {KIND}")
    unknown = sorted(set(doc) - _KEYS)
    if unknown:
        raise BadTestFile(f"{where}: unknown key(s) {', '.join(unknown)}")
    name = str((doc.get("metadata") or {}).get("name") or f"{path.stem}#{index + 1}")
    playbook = doc.get("playbook")
    if not isinstance(playbook, str) or not playbook:
        raise BadTestFile(f"{where}: playbook: the path of the playbook file is required")
    payload, mocks, expect = (doc.get(key) or {} for key in ("payload", "mocks", "expect"))
    for key, value in (("payload", payload), ("mocks", mocks), ("expect", expect)):
        if not isinstance(value, dict):
            raise BadTestFile(f"{where}: {key}: expected a mapping")
    for step, mock in mocks.items():
        if not isinstance(mock, dict) or len(set(mock) & {"result", "error"}) != 1:
            raise BadTestFile(f"{where}: mocks.{step}: give `result` or `error`")
    unknown = sorted(set(expect) - _EXPECT)
    if unknown:
        raise BadTestFile(f"{where}: expect: unknown key(s) {', '.join(unknown)}")
    status = str(expect.get("status", "COMPLETED")).upper()
    if status not in _STATUSES:
        raise BadTestFile(f"{where}: expect.status: one of {', '.join(sorted(_STATUSES))}")
    for key in ("ran", "skipped", "not_ran"):
        if not isinstance(expect.get(key, []), list):
            raise BadTestFile(f"{where}: expect.{key}: expected a list of step names")
    return PlaybookTest(
        name,
        path,
        (path.parent / playbook),
        payload,
        mocks,
        {**expect, "status": status},
        _registered(where, path, doc.get("register")),
    )


def _registered(where: str, path: Path, register: Any) -> tuple[Path, ...]:
    """`register`: a path or a list of paths (files, or folders searched for playbooks),
    relative to the test file."""
    given = [register] if isinstance(register, str) else register
    if given is None:
        return ()
    if not isinstance(given, list) or not all(isinstance(p, str) and p for p in given):
        raise BadTestFile(f"{where}: register: expected a list of playbook files or folders")
    try:
        files = playbook_files(path.parent / p for p in given)
    except FileNotFoundError as exc:
        raise BadTestFile(f"{where}: register: {exc}") from None
    if not files:
        raise BadTestFile(f"{where}: register: no playbook (kind: Playbook) in {', '.join(given)}")
    return tuple(files)


def mocked(content: str, mocks: Mapping[str, Mapping[str, Any]]) -> str:
    """The playbook text with each mocked step's tool replaced; an unknown step is an error."""
    data = yaml.safe_load(content)
    steps = {s.get("step"): s for s in data.get("workflow") or [] if isinstance(s, dict)}
    missing = sorted(set(mocks) - set(steps))
    if missing:
        raise BadTestFile(f"mocks: no step named {', '.join(missing)} in the playbook")
    for name, mock in mocks.items():
        if "error" in mock:
            steps[name]["tool"] = {
                "kind": "python",
                "isolated": False,
                "input": {"message": str(mock["error"])},
                "code": "from noetl.tools.base import ToolError\nraise ToolError(message)\n",
            }
        else:
            steps[name]["tool"] = {"kind": "noop", "result": mock["result"]}
    return yaml.safe_dump(data, sort_keys=False)


def check(
    test: PlaybookTest, execution: Mapping[str, Any], events: list[Mapping[str, Any]]
) -> list[str]:
    """What did not go as the test expects (empty: it passed)."""
    expect = test.expect
    problems: list[str] = []
    if execution["status"] != expect["status"]:
        problems.append(
            f"status {execution['status']}, expected {expect['status']}"
            + (f" ({execution['error']})" if execution.get("error") else "")
        )
    if "result" in expect:
        problems += [f"result{p}" for p in _mismatch(expect["result"], execution.get("result"))]
    if "error" in expect and str(expect["error"]) not in str(execution.get("error") or ""):
        problems.append(f"error {execution.get('error')!r} does not contain {expect['error']!r}")
    results: dict[str, Any] = {}
    ran: set[str] = set()
    skipped: set[str] = set()
    for event in events:
        if event["event_type"] == "step.exit":
            ran.add(event["step"])
            results[event["step"]] = event["result"]
        elif event["event_type"] == "step.skipped":
            skipped.add(event["step"])
    for step, wanted in (expect.get("steps") or {}).items():
        if step not in results:
            problems.append(f"steps.{step}: did not run")
            continue
        problems += [f"steps.{step}{p}" for p in _mismatch(wanted, results[step])]
    for key, seen, verb in (("ran", ran, "did not run"), ("skipped", skipped, "was not skipped")):
        problems += [f"{key}: {step} {verb}" for step in expect.get(key, []) if step not in seen]
    problems += [f"not_ran: {step} ran" for step in expect.get("not_ran", []) if step in ran]
    return problems


def _mismatch(wanted: Any, actual: Any, path: str = "") -> list[str]:
    """Mappings match by field (extra fields are fine); anything else must be equal."""
    if isinstance(wanted, Mapping):
        if not isinstance(actual, Mapping):
            return [f"{path}: expected a mapping, got {actual!r}"]
        found = []
        for key, value in wanted.items():
            if key not in actual:
                found.append(f"{path}.{key}: missing")
            else:
                found += _mismatch(value, actual[key], f"{path}.{key}")
        return found
    if wanted != actual:
        return [f"{path or ''}: {actual!r}, expected {wanted!r}"]
    return []
