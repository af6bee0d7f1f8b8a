"""Every playbook in examples/ (the ones the README points at) runs to COMPLETED."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import run_playbook

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))
EXPECTED = {
    "hello.yaml": {"greeting": "HELLO world", "route": "greeted"},
    "fanout.yaml": {"cities": 4, "longest": "Reykjavik"},
    "retry.yaml": {"answer": 42},
    "child.yaml": {"squares": [0, 1, 4]},
    "parent.yaml": {"sum_of_squares": 30},
}


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
async def test_example_completes_with_its_documented_result(
    api: httpx.AsyncClient, example: Path, tmp_path: Path
) -> None:
    payload = {"marker": str(tmp_path / "marker")} if example.name == "retry.yaml" else {}
    if example.name == "parent.yaml":  # as `noetl run parent.yaml --register child.yaml`
        child = (example.parent / "child.yaml").read_text()
        assert (await api.post("/api/catalog/register", content=child)).status_code == 201
    execution = await run_playbook(api, example.read_text(), payload)
    assert execution["status"] == "COMPLETED", execution["error"]
    assert execution["result"] == EXPECTED[example.name]
