"""Browser fixtures: Debian's Chromium, headless, driven by Playwright.

Every page records JavaScript errors and any request that would leave 127.0.0.1 (those are
aborted); a test fails if either list is not empty at its end."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import pytest
from playwright.async_api import Browser, Page, Route, async_playwright, expect

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LOCAL_HOSTS = {"127.0.0.1"}

expect.set_options(timeout=30_000)  # a deadline for polling, not a limit on a run


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    assert CHROMIUM.exists(), "install Chromium: apt-get install -y chromium (.ci/run does)"
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield launched
        await launched.close()


@dataclass
class Watched:
    page: Page
    errors: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)

    def allow(self, text: str) -> None:
        """Console errors containing `text` are expected by this test."""
        self.allowed.append(text)

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(text in e for text in self.allowed)]


@pytest.fixture
async def watched(browser: Browser) -> AsyncIterator[Watched]:
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    found = Watched(page)

    async def guard(route: Route) -> None:
        url = route.request.url
        host = urlparse(url).hostname
        if url.startswith(("data:", "blob:")) or host in LOCAL_HOSTS:
            await route.continue_()
        else:
            found.outside.append(url)
            await route.abort()

    await context.route("**/*", guard)
    page.on("pageerror", lambda error: found.errors.append(f"pageerror: {error}"))
    page.on(
        "console",
        lambda message: (
            found.errors.append(f"console.{message.type}: {message.text}")
            if message.type == "error"
            else None
        ),
    )
    page.on("dialog", lambda dialog: dialog.accept())
    yield found
    await context.close()
    assert found.unexpected() == [], found.errors
    assert found.outside == [], found.outside
