"""The schedules page lists schedules and pauses and resumes them."""

from __future__ import annotations

import httpx
from playwright.async_api import expect

from noetl.embedded.runtime import Runtime
from tests.ui.conftest import Watched
from tests.ui.playbooks import TOUR


async def test_the_schedules_page_lists_and_pauses_and_resumes_a_schedule(
    runtime: Runtime, api: httpx.AsyncClient, watched: Watched
) -> None:
    assert (await api.post("/api/catalog/register", json={"content": TOUR})).status_code == 201
    created = await api.post(
        "/api/schedules", json={"path": "tests/ui/tour", "cron": "0 3 * * *", "timezone": "UTC"}
    )
    assert created.status_code == 201, created.text
    schedule_id = created.json()["schedule_id"]
    page = watched.page
    await page.goto(f"{runtime.url}/ui/schedules")
    row = page.locator(f'#schedules tr[data-schedule="{schedule_id}"]')
    await expect(row).to_contain_text("tests/ui/tour")
    await expect(row).to_contain_text("0 3 * * * (UTC)")
    await expect(row).to_contain_text("active")
    await row.get_by_role("button", name="Pause").click()
    await expect(row).to_contain_text("paused")
    assert (await api.get(f"/api/schedules/{schedule_id}")).json()["enabled"] is False
    await row.get_by_role("button", name="Resume").click()
    await expect(row).to_contain_text("active")
    assert (await api.get(f"/api/schedules/{schedule_id}")).json()["enabled"] is True
