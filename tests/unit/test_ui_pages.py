"""The page shells name the optional API parts the server has, so the UI shows only the
buttons that work."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from noetl.ui.pages import features


def test_features_are_found_through_included_routers() -> None:
    router = APIRouter()

    @router.post("/api/executions/{execution_id}/rerun")
    async def rerun(execution_id: str) -> None: ...

    @router.get("/api/executions/{execution_id}/events")
    async def events(execution_id: str) -> None: ...

    app = FastAPI()
    app.include_router(router)
    assert features(app) == ["rerun"]


def test_a_route_with_another_method_is_not_the_feature() -> None:
    app = FastAPI()

    @app.get("/api/executions/{execution_id}/rerun")
    async def rerun(execution_id: str) -> None: ...

    @app.get("/api/schedules")
    async def schedules() -> None: ...

    @app.get("/api/executions/{execution_id}/logs")
    async def logs(execution_id: str) -> None: ...

    assert features(app) == ["logs", "schedules"]
