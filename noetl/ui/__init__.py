"""The operators' web UI, served by the NoETL server itself: Jinja2 page shells, a small
hand-written script per page, and JSON from `/api`. No CDN, no build step, no Node."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from noetl.ui import api, pages
from noetl.ui.snapshots import Snapshots

PROGRESS_MAX_AGE = 1.0  # seconds an execution's progress is shared between open pages
TIMELINE_MAX_AGE = 2.0


def install(app: FastAPI) -> None:
    """Add the UI's routes, its static files and the caches its polling reads through."""
    app.state.ui_progress = Snapshots[int, object](PROGRESS_MAX_AGE)
    app.state.ui_timeline = Snapshots[int, object](TIMELINE_MAX_AGE)
    app.state.ui_events = Snapshots[tuple[int, int, int], object](PROGRESS_MAX_AGE, size=1024)
    app.include_router(api.router)
    app.include_router(pages.router)
    app.mount("/ui/static", StaticFiles(directory=pages.HERE / "static"), name="ui-static")
