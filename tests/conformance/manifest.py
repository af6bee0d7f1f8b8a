"""The conformance manifest (shared/conformance/manifest.yaml) read exactly as its header says.

Pure: loading, case ids, tiers, placeholder substitution. The runner (test_conformance.py)
does the I/O.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


def _find_root() -> Path:
    """NOETL_CONFORMANCE_DIR, else the nearest `shared/conformance` above this checkout."""
    if os.environ.get("NOETL_CONFORMANCE_DIR"):
        return Path(os.environ["NOETL_CONFORMANCE_DIR"])
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "shared" / "conformance" / "manifest.yaml").exists():
            return parent / "shared" / "conformance"
    return here.parents[3] / "shared" / "conformance"


ROOT = _find_root()
MANIFEST = ROOT / "manifest.yaml"
PLAYBOOKS = ROOT / "playbooks"

# The tiers of the header: DEFAULT = needs local, not slow/heavy; FULL adds slow/heavy.
FULL_TIER_TAGS = frozenset({"slow", "heavy"})
# the header: "the runner may retry up to 3 times": a run and three retries. The flaky-by-design
# retry case exhausts its own retries in ~16 % of runs: three runs all failed 0.4 % of the
# time (it happened once in a session's runs), four 0.06 %.
MAX_FLAKY_ATTEMPTS = 4


@dataclass(frozen=True)
class Case:
    id: str
    file: str
    needs: str
    expect: dict[str, Any]
    offline: dict[str, Any]
    timeout_s: float
    tags: frozenset[str] = frozenset()
    payload: dict[str, Any] = field(default_factory=dict)
    register: tuple[str, ...] = ()
    setup: tuple[dict[str, Any], ...] = ()
    drop_before: tuple[str, ...] = ()
    python_modules: tuple[str, ...] = ()
    after: tuple[str, ...] = ()

    @property
    def external(self) -> bool:
        return self.needs.startswith("external:")

    @property
    def full_tier(self) -> bool:
        """slow/heavy local cases: the FULL tier, not run by default."""
        return not self.external and bool(self.tags & FULL_TIER_TAGS)

    @property
    def destructive(self) -> bool:
        return "destructive" in self.tags

    @property
    def internals(self) -> bool:
        return "upstream-internals" in self.tags

    @property
    def attempts(self) -> int:
        return MAX_FLAKY_ATTEMPTS if "flaky" in self.tags else 1

    @property
    def stateful_server(self) -> bool:
        return "stateful-server" in self.tags


def load(path: Path = MANIFEST) -> dict[str, Any]:
    """The manifest; a missing one is an error, never an empty (silently passing) suite."""
    if not path.exists():
        raise FileNotFoundError(
            f"no conformance manifest at {path}: put the shared `conformance` folder at"
            " shared/conformance beside this checkout or set NOETL_CONFORMANCE_DIR"
        )
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def cases(manifest: dict[str, Any]) -> list[Case]:
    """Every case in manifest order, defaults applied; ids are unique (`id`, else `file`)."""
    defaults = manifest.get("defaults", {})
    out: list[Case] = []
    seen: set[str] = set()
    for raw in manifest.get("cases", []):
        entry = {**defaults, **raw}
        case_id = str(entry.get("id") or entry["file"])
        if case_id in seen:
            raise ValueError(f"conformance case id {case_id!r} is not unique")
        seen.add(case_id)
        out.append(
            Case(
                id=case_id,
                file=entry["file"],
                needs=str(entry.get("needs", "local")),
                expect=dict(entry.get("expect") or {"status": "COMPLETED"}),
                offline=dict(entry.get("offline") or {}),
                timeout_s=float(entry.get("timeout_s", 300)),
                tags=frozenset(entry.get("tags") or ()),
                payload=dict(entry.get("payload") or {}),
                register=tuple(entry.get("register") or ()),
                setup=tuple(entry.get("setup") or ()),
                drop_before=tuple(entry.get("drop_before") or ()),
                python_modules=tuple(entry.get("python_modules") or ()),
                after=tuple(entry.get("after") or ()),
            )
        )
    return out


def substitute(value: Any, placeholders: dict[str, str]) -> Any:
    """`${NAME}` placeholders replaced in every string of a payload (recursively)."""
    if isinstance(value, str):
        for name, replacement in placeholders.items():
            value = value.replace("${" + name + "}", replacement)
        return value
    if isinstance(value, dict):
        return {k: substitute(v, placeholders) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, placeholders) for v in value]
    return value


def mentions_any(text: str | None, needles: list[str]) -> bool:
    """The header's error_any: the text contains at least one needle (case-insensitive)."""
    haystack = (text or "").lower()
    return any(str(needle).lower() in haystack for needle in needles)


def results_match(actual: Any, wanted: Any) -> bool:
    """Only the listed fields are compared; nested mappings nest; numbers compare numerically."""
    if isinstance(wanted, dict):
        if not isinstance(actual, dict):
            return False
        return all(key in actual and results_match(actual[key], v) for key, v in wanted.items())
    if isinstance(wanted, bool) or isinstance(actual, bool):
        return isinstance(actual, bool) and isinstance(wanted, bool) and actual is wanted
    if isinstance(wanted, (int, float)):
        try:
            return float(actual) == float(wanted)
        except (TypeError, ValueError):
            return False
    return bool(actual == wanted)
