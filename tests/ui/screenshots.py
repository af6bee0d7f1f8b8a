"""Screenshots of the UI for the README: `python -m tests.ui.screenshots docs/img`.

Starts a server and a worker on the embedded PostgreSQL and NATS (a fresh NOETL_HOME in a
temporary folder), runs a few playbooks (completed, failed, one still running, a parent with
a child), and photographs the executions list and an execution page in light and dark."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import httpx
from playwright.async_api import async_playwright, expect

from noetl.config import Settings
from noetl.embedded.runtime import embedded_services, running
from tests.conftest import run_playbook, slow_chain
from tests.ui.conftest import CHROMIUM, FLAGS
from tests.ui.playbooks import FAILING, TOUR

ROOT = Path(__file__).resolve().parents[2]


async def main(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as home:
        settings = Settings.from_env({}, home=Path(home), worker_concurrency=4)
        async with (
            embedded_services(settings) as live,
            running(live) as runtime,
            httpx.AsyncClient(base_url=runtime.url, timeout=30) as api,
        ):
            for path in ("examples/child.yaml",):
                text = (ROOT / path).read_text()
                await api.post("/api/catalog/register", json={"content": text})
            await run_playbook(api, (ROOT / "examples/parent.yaml").read_text())
            await run_playbook(api, (ROOT / "examples/hello.yaml").read_text())
            failed = await run_playbook(api, FAILING)
            tour = await run_playbook(api, TOUR)
            await run_playbook(api, (ROOT / "examples/fanout.yaml").read_text())
            slow = (await api.post("/api/execute", json={"playbook": slow_chain(15)})).json()
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=str(CHROMIUM), args=FLAGS
                )
                for scheme in ("light", "dark"):
                    context = await browser.new_context(
                        viewport={"width": 1280, "height": 720}, color_scheme=scheme
                    )
                    page = await context.new_page()
                    await page.goto(f"{runtime.url}/")
                    await expect(page.locator("#executions tbody tr")).to_have_count(7)
                    await page.screenshot(path=folder / f"executions-{scheme}.png")
                    await page.set_viewport_size({"width": 1280, "height": 1100})
                    await page.goto(f"{runtime.url}/ui/executions/{tour['execution_id']}")
                    step = page.locator('#graph a.step[data-step="square"]')
                    await expect(step).to_have_attribute("data-status", "completed")
                    await step.click()
                    await expect(page.locator("#step-body pre")).to_have_count(1)
                    await expect(page.locator("#timeline .row")).to_have_count(6)
                    await page.screenshot(path=folder / f"execution-{scheme}.png")
                    if scheme == "light":
                        await page.goto(f"{runtime.url}/ui/executions/{failed['execution_id']}")
                        await page.locator('#graph a.step[data-step="start"]').click()
                        await expect(page.locator("#step-body .error-text")).to_be_visible()
                        await page.screenshot(path=folder / "failed-light.png")
                        await page.goto(f"{runtime.url}/ui/catalog?path=examples/fanout")
                        await expect(page.locator("#graph a.step")).to_have_count(4)
                        await page.screenshot(path=folder / "catalog-light.png")
                    await context.close()
                await browser.close()
            await api.post(f"/api/executions/{slow['execution_id']}/cancel")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img")))
