"""Re-run buttons and step output on the execution page (the operator-features API)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from playwright.async_api import Page, expect

from noetl.embedded.runtime import Runtime
from tests.conftest import run_playbook, wait_for_end
from tests.ui.conftest import Watched


async def _another_execution(page: Page, execution_id: str) -> str:
    """The id of the execution page the browser goes to next (not `execution_id`'s)."""
    pattern = re.compile(r"/ui/executions/(\d+)$")

    def elsewhere(url: str) -> bool:
        found = pattern.search(url)
        return bool(found) and found is not None and found[1] != execution_id

    await page.wait_for_url(elsewhere)
    found = pattern.search(page.url)
    assert found is not None
    return found[1]


def flaky(marker: Path) -> str:
    """prepare → flaky (fails while `marker` is missing, and creates it) → report."""
    return f"""
apiVersion: noetl.io/v2
kind: Playbook
metadata: {{name: flaky, path: tests/ui/flaky}}
workflow:
  - step: prepare
    tool: {{kind: python, code: "result = 20"}}
    next: [flaky]
  - step: flaky
    tool:
      kind: python
      input: {{base: "{{{{ prepare }}}}"}}
      code: |
        import os
        marker = {str(marker)!r}
        print("checking", marker)
        if not os.path.exists(marker):
            open(marker, "w").close()
            raise ValueError("not ready the first time")
        result = base + 1
    next: [report]
  - step: report
    tool: {{kind: python, input: {{x: "{{{{ flaky }}}}"}}, code: "result = x * 2"}}
"""


async def test_re_run_from_the_failed_step_starts_a_linked_execution_that_completes(
    runtime: Runtime, api: httpx.AsyncClient, watched: Watched, tmp_path: Path
) -> None:
    failed = await run_playbook(api, flaky(tmp_path / "ready"))
    assert failed["status"] == "FAILED", failed
    page = watched.page
    await page.goto(f"{runtime.url}/ui/executions/{failed['execution_id']}")
    await page.locator('#graph a.step[data-step="flaky"]').click()
    output = page.locator("#step-body pre.log")
    await expect(output).to_contain_text("checking")
    await expect(output).to_contain_text("Traceback")
    await expect(output).to_contain_text("ValueError: not ready the first time")

    await page.locator("#rerun-failed").click()
    new_id = await _another_execution(page, failed["execution_id"])
    await expect(page.locator("#x-links")).to_contain_text(f"Re-run of: {failed['execution_id']}")
    await expect(page.locator("#x-status")).to_contain_text("completed")
    await expect(page.locator("#x-result")).to_contain_text("42")
    ended = await wait_for_end(api, new_id)
    assert ended["status"] == "COMPLETED" and ended["result"] == 42
    assert ended["rerun_of"] == failed["execution_id"]
    await page.locator("#x-links a").click()
    await expect(page).to_have_url(f"{runtime.url}/ui/executions/{failed['execution_id']}")


async def test_re_run_from_a_chosen_step(
    runtime: Runtime, api: httpx.AsyncClient, watched: Watched, tmp_path: Path
) -> None:
    marker = tmp_path / "ready"
    marker.touch()
    done = await run_playbook(api, flaky(marker))
    assert done["status"] == "COMPLETED", done
    page = watched.page
    await page.goto(f"{runtime.url}/ui/executions/{done['execution_id']}")
    await expect(page.locator("#rerun-failed")).to_be_hidden()
    await expect(page.locator("#cancel")).to_be_hidden()
    await page.locator("#rerun-step").select_option("report")
    await page.locator("#rerun-step-button").click()
    new_id = await _another_execution(page, done["execution_id"])
    await expect(page.locator("#x-links")).to_contain_text(f"Re-run of: {done['execution_id']}")
    await expect(page.locator("#x-status")).to_contain_text("completed")
    events = (await api.get(f"/api/executions/{new_id}/events")).json()["items"]
    ran = {e["step"] for e in events if e["event_type"] == "command.completed"}
    assert ran == {"report"}, ran  # prepare and flaky were reused, not run again
