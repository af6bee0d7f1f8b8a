"""The conformance runner's reading of the manifest header (pure helpers)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conformance import manifest as mf
from tests.conformance import prerequisites as pre


def test_placeholders_are_substituted_everywhere_in_a_payload() -> None:
    payload = {"a": "${X}/p", "b": ["${Y}", {"c": "${X}${Y}"}], "n": 1}
    assert mf.substitute(payload, {"X": "x", "Y": "y"}) == {
        "a": "x/p",
        "b": ["y", {"c": "xy"}],
        "n": 1,
    }


def test_results_compare_only_listed_fields_and_numbers_numerically() -> None:
    assert mf.results_match({"a": 1.0, "b": 2, "c": {"d": "x", "e": 0}}, {"a": 1, "c": {"d": "x"}})
    assert mf.results_match({"n": "35"}, {"n": 35})
    assert not mf.results_match({"a": 1}, {"a": 2})
    assert not mf.results_match({"a": 1}, {"b": 1})
    assert not mf.results_match({"ok": 1}, {"ok": True})
    assert not mf.results_match("text", {"a": 1})


def test_error_any_is_case_insensitive() -> None:
    assert mf.mentions_any("GET https://API.openai.com failed", ["api.openai.com"])
    assert not mf.mentions_any(None, ["x"])


def test_ids_default_to_the_file_and_must_be_unique() -> None:
    manifest: dict[str, Any] = {
        "defaults": {"needs": "local", "timeout_s": 300, "expect": {"status": "COMPLETED"}},
        "cases": [
            {"file": "a.yaml", "tags": ["slow"]},
            {"file": "b.yaml", "id": "b1", "needs": "external:x", "tags": ["flaky"]},
            {"file": "b.yaml", "id": "b2", "tags": ["destructive"]},
        ],
    }
    a, b1, b2 = mf.cases(manifest)
    assert (a.id, b1.id, b2.id) == ("a.yaml", "b1", "b2")
    assert a.full_tier and not b1.full_tier and b1.external and b1.attempts == 4
    assert b2.destructive and b2.attempts == 1
    manifest["cases"].append({"file": "a.yaml"})
    with pytest.raises(ValueError, match="not unique"):
        mf.cases(manifest)


def test_the_shared_manifest_reads_cleanly() -> None:
    cases = mf.cases(mf.load())
    assert len(cases) == len({case.id for case in cases})
    assert all((mf.PLAYBOOKS / case.file).exists() for case in cases)


def _two_tiers() -> list[mf.Case]:
    return mf.cases(
        {
            "cases": [
                {"file": "parent.yaml", "tags": ["slow"], "timeout_s": 7200, "payload": {"u": 1}},
                {"file": "quick.yaml"},
                {"file": "child.yaml", "after": ["parent.yaml", "quick.yaml"]},
                {"file": "slow_child.yaml", "tags": ["heavy"], "after": ["parent.yaml"]},
            ]
        }
    )


def test_a_default_case_runs_its_full_tier_parent_first_reduced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reduced = pre.Reduced(payload={"n": 2}, expect={"status": "COMPLETED"}, why="n sizes it")
    monkeypatch.setitem(pre.REDUCED, "parent.yaml", reduced)
    parent, quick, child, slow_child = _two_tiers()
    by_id = {case.id: case for case in (parent, quick, child, slow_child)}
    assert child.after == ("parent.yaml", "quick.yaml")
    [first] = pre.prerequisites(child, by_id, ran=set())
    assert first.id == "parent.yaml" and first.payload == {"u": 1, "n": 2}
    assert first.expect == {"status": "COMPLETED"}
    assert first.timeout_s == pre.PREREQUISITE_TIMEOUT_S
    # Already run (the FULL tier runs it as a case, in manifest order): not again.
    assert pre.prerequisites(child, by_id, ran={"parent.yaml"}) == []
    # A FULL-tier case's parents run as cases of the FULL tier.
    assert pre.prerequisites(slow_child, by_id, ran=set()) == []


def test_a_full_tier_parent_without_a_reduced_workload_is_an_error() -> None:
    parent, quick, child, _ = _two_tiers()
    by_id = {case.id: case for case in (parent, quick, child)}
    with pytest.raises(KeyError, match="no REDUCED entry"):
        pre.prerequisites(child, by_id, ran=set())


def test_the_reduced_parents_of_the_shared_manifest_scale_their_own_workload() -> None:
    """Every FULL-tier parent of a DEFAULT-tier case has a reduced workload, made of keys of the
    parent playbook's own workload (nothing the playbook does not read)."""
    cases = mf.cases(mf.load())
    by_id = {case.id: case for case in cases}
    needed = {
        parent
        for case in cases
        if not case.full_tier and not case.external
        for parent in case.after
        if by_id[parent].full_tier
    }
    assert needed == set(pre.REDUCED)
    for parent_id, reduced in pre.REDUCED.items():
        playbook = yaml.safe_load((mf.PLAYBOOKS / by_id[parent_id].file).read_text())
        assert set(reduced.payload) <= set(playbook["workload"]), parent_id
        assert reduced.expect["status"] == by_id[parent_id].expect["status"]
        assert reduced.why.strip()


def _vocabulary(header: str) -> set[str]:
    """The header's `constructs vocabulary:` list, `a:b|c` expanded, notes in () dropped."""
    text = header.split("constructs vocabulary:", 1)[1].split("\n\n", 1)[0]
    text = re.sub(r"\([^)]+\)", "", text.replace("#", " ")).rstrip(" .\n")
    out = set()
    for entry in (e.strip() for e in text.split(",")):
        head, _, alternatives = entry.rpartition(":")
        for alternative in alternatives.split("|"):
            out.add(f"{head}:{alternative}" if head else alternative)
    return {e for e in out if e and "<" not in e}


def test_the_compatibility_section_covers_every_construct_of_the_manifest() -> None:
    """docs/dsl.md says, for each construct of the manifest's vocabulary and of its cases,
    whether it is supported here and how it differs from upstream."""
    header = mf.MANIFEST.read_text().split("\ncases:", 1)[0]
    constructs = _vocabulary(header)
    assert {"task_pipeline", "loop:cursor", "policy:jump", "env_template"} <= constructs
    for case in mf.load()["cases"]:
        constructs.update(case.get("constructs") or ())
    docs = (Path(__file__).parents[2] / "docs" / "dsl.md").read_text()
    section = docs.split("## Compatibility with upstream NoETL", 1)[1].split("\n## ", 1)[0]
    missing = sorted(c for c in constructs if f"| `{c}` |" not in section)
    assert not missing, missing


def test_every_external_case_runs_by_default_and_names_its_missing_service() -> None:
    """The runner runs every external case offline in the default run and, when it ends FAILED,
    checks that the error names the missing service: each one must say which."""
    external = [case for case in mf.cases(mf.load()) if case.external]
    assert len(external) >= 48
    for case in external:
        assert not case.full_tier, case.id
        assert case.offline.get("error_any"), case.id
