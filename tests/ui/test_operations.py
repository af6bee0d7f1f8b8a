"""The catalog's execute form, the token prompt, workers and credentials, keyboard use."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from playwright.async_api import expect

from noetl.embedded.runtime import Runtime, running
from tests.conftest import Services, isolated_settings, run_playbook
from tests.ui.conftest import Watched
from tests.ui.playbooks import TOUR

GREETER = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: greeter, path: tests/ui/greeter}
workload: {name: world}
workflow:
  - step: start
    tool: {kind: python, input: {name: "{{ name }}"}, code: "result = 'hello ' + name"}
"""


async def test_the_execute_form_refuses_invalid_json_and_starts_a_run_with_valid_json(
    runtime: Runtime, api: httpx.AsyncClient, watched: Watched
) -> None:
    assert (await api.post("/api/catalog/register", json={"content": GREETER})).status_code == 201
    page = watched.page
    await page.goto(f"{runtime.url}/ui/catalog")
    await page.get_by_role("link", name="tests/ui/greeter").click()
    await expect(page.locator("#yaml")).to_contain_text("name: greeter")
    await expect(page.locator("#graph a.step")).to_have_count(1)
    payload = page.locator("#payload")
    await payload.fill('{"name": ')
    await expect(page.locator("#payload-error")).to_contain_text("Not valid JSON")
    await expect(page.locator("#execute")).to_be_disabled()
    await payload.fill("[1, 2]")
    await expect(page.locator("#payload-error")).to_contain_text("must be a JSON object")
    await expect(page.locator("#execute")).to_be_disabled()
    await payload.fill('{"name": "browser"}')
    await expect(page.locator("#payload-error")).to_have_text("")
    await page.locator("#execute").click()
    await expect(page).to_have_url(re.compile(rf"{runtime.url}/ui/executions/\d+$"))
    await expect(page.locator("#x-status")).to_contain_text("completed")
    await expect(page.locator("#x-result")).to_contain_text("hello browser")


async def test_the_ui_asks_for_the_api_token_and_sends_it(
    services: Services, tmp_path: Path, watched: Watched
) -> None:
    watched.allow("status of 401")  # the refused requests before the token is given
    async with (
        isolated_settings(services, tmp_path / "home", api_token="s3cret-token") as settings,
        running(settings, workers=1) as runtime,
    ):
        headers = {"authorization": "Bearer s3cret-token"}
        async with httpx.AsyncClient(base_url=runtime.url, headers=headers, timeout=30) as api:
            done = await run_playbook(api, TOUR)
        async with httpx.AsyncClient(base_url=runtime.url, timeout=30) as anonymous:
            assert (await anonymous.get("/api/executions")).status_code == 401
            assert (
                await anonymous.get(f"/api/executions/{done['execution_id']}/live")
            ).status_code == 401
            assert (await anonymous.get("/")).status_code == 200  # the shell, no data in it
        page = watched.page
        await page.goto(f"{runtime.url}/")
        dialog = page.locator("#token-dialog")
        await expect(dialog).to_be_visible()
        await page.locator("#token-input").fill("wrong")
        await page.locator("#token-input").press("Enter")
        await expect(page.locator("#token-error")).to_be_visible()
        await page.locator("#token-input").fill("s3cret-token")
        await page.locator("#token-input").press("Enter")
        await expect(
            page.locator(f'#executions tr[data-id="{done["execution_id"]}"]')
        ).to_be_visible()
        await expect(dialog).to_be_hidden()


async def test_workers_and_credentials_pages_show_the_registry_and_no_secret(
    runtime: Runtime, api: httpx.AsyncClient, watched: Watched
) -> None:
    secret = {"user": "reporter", "password": "hunter2-not-shown"}
    response = await api.post(
        "/api/credentials", json={"name": "pg_reports", "type": "postgres", "data": secret}
    )
    assert response.status_code == 201, response.text
    page = watched.page
    await page.goto(f"{runtime.url}/ui/credentials")
    row = page.locator("#credentials tbody tr")
    await expect(row).to_have_count(1)
    await expect(row).to_contain_text("pg_reports")
    await expect(row).to_contain_text("postgres")
    assert "hunter2" not in await page.content()

    await page.get_by_role("link", name="Workers").click()
    worker = runtime.workers[0].settings.worker_id
    await expect(page.locator(f'#workers tr[data-worker="{worker}"]')).to_contain_text("ready")


async def test_steps_are_reachable_with_the_keyboard(
    runtime: Runtime, api: httpx.AsyncClient, watched: Watched
) -> None:
    done = await run_playbook(api, TOUR)
    page = watched.page
    await page.goto(f"{runtime.url}/ui/executions/{done['execution_id']}")
    await page.keyboard.press("Tab")
    await expect(page.locator(".skip")).to_be_focused()
    step = page.locator('#graph a.step[data-step="count"]')
    await expect(step).to_have_attribute("data-status", "completed")
    await step.focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("#step-body h3")).to_have_text("count")
    await expect(page.locator("#step-body")).to_contain_text("6")
    await expect(page).to_have_url(re.compile("#step-count$"))


async def test_a_parent_links_to_its_child_and_the_child_to_its_parent(
    runtime: Runtime, api: httpx.AsyncClient, watched: Watched
) -> None:
    root = Path(__file__).resolve().parents[2]
    child = (root / "examples/child.yaml").read_text()
    assert (await api.post("/api/catalog/register", json={"content": child})).status_code == 201
    parent = await run_playbook(api, (root / "examples/parent.yaml").read_text())
    assert parent["status"] == "COMPLETED", parent
    page = watched.page
    await page.goto(f"{runtime.url}/ui/executions/{parent['execution_id']}")
    await page.locator('#graph a.step[data-step="start"]').click()
    link = page.locator("#step-body li a")
    await expect(link).to_have_count(1)
    await expect(page.locator("#children li")).to_have_count(1)
    await link.click()
    await expect(page.locator("#x-path")).to_contain_text("examples/child")
    await page.locator("#x-links a").click()
    await expect(page).to_have_url(f"{runtime.url}/ui/executions/{parent['execution_id']}")
