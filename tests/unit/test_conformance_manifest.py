"""The conformance runner's reading of the manifest header (pure helpers)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conformance import manifest as mf


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
    assert a.full_tier and not b1.full_tier and b1.external and b1.attempts == 3
    assert b2.destructive and b2.attempts == 1
    manifest["cases"].append({"file": "a.yaml"})
    with pytest.raises(ValueError, match="not unique"):
        mf.cases(manifest)


@pytest.mark.skipif(not mf.MANIFEST.exists(), reason="no conformance manifest here")
def test_the_shared_manifest_reads_cleanly() -> None:
    cases = mf.cases(mf.load())
    assert len(cases) == len({case.id for case in cases})
    assert all((mf.PLAYBOOKS / case.file).exists() for case in cases)
