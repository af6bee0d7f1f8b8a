"""The UI's HTML pages: shells with no data in them (the data comes from `/api` with the
token), so they are open like the static files they load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.routing import Match

HERE = Path(__file__).parent
PAGES = ("catalog", "workers", "credentials", "schedules")
# Nothing but this server: no CDN, no inline script, no framing.
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

# Optional parts of the API the pages use when this server has them: name → a request.
FEATURES = {
    "rerun": ("POST", "/api/executions/0/rerun"),
    "logs": ("GET", "/api/executions/0/logs"),
    "schedules": ("GET", "/api/schedules"),
}

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"])
)
router = APIRouter(include_in_schema=False)


def features(app: Starlette) -> list[str]:
    """The optional API parts this app routes (asked of the router, so included routers
    count), computed once per app."""
    known: list[str] | None = getattr(app.state, "ui_features", None)
    if known is None:
        known = []
        for name, (method, path) in FEATURES.items():
            scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}
            if any(route.matches(scope)[0] is Match.FULL for route in app.router.routes):
                known.append(name)
        app.state.ui_features = known
    return known


def _page(request: Request, name: str, **values: Any) -> HTMLResponse:
    html = templates.get_template(f"{name}.html").render(
        page=name, features=" ".join(features(request.app)), **values
    )
    return HTMLResponse(
        html,
        headers={
            "Content-Security-Policy": POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        },
    )


@router.get("/")
async def executions_page(request: Request) -> HTMLResponse:
    return _page(request, "executions")


@router.get("/ui/executions/{execution_id}")
async def execution_page(request: Request, execution_id: str) -> HTMLResponse:
    return _page(request, "execution", execution_id=execution_id)


def _static_page(name: str) -> Any:
    async def show(request: Request) -> HTMLResponse:
        return _page(request, name)

    show.__name__ = f"{name}_page"
    return show


for _name in PAGES:
    router.add_api_route(f"/ui/{_name}", _static_page(_name), methods=["GET"])
