"""Operational routes: health and model lifetimes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from groupqwen.api.schemas import model_json
from groupqwen.api.services import Services
from groupqwen.errors import ModelNotFound

router = APIRouter()


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    states = _services(request).pool.states()
    return {"status": "ok", "models": {s.spec.id: s.status for s in states}}


def _known(services: Services, model_id: str) -> None:
    if model_id not in services.pool:
        raise ModelNotFound(f"The model {model_id!r} is not served here", param="model")


@router.post("/v1/models/{model_id:path}/load")
async def load_model(request: Request, model_id: str) -> dict[str, Any]:
    """Load a model now (it then idles out after its keep_alive)."""
    services = _services(request)
    _known(services, model_id)
    return model_json(await services.pool.load(model_id), services.started)


@router.post("/v1/models/{model_id:path}/unload")
async def unload_model(request: Request, model_id: str) -> dict[str, Any]:
    """Unload a model now; 409 while it serves requests."""
    services = _services(request)
    _known(services, model_id)
    await services.pool.unload(model_id)
    state = next(s for s in services.pool.states() if s.spec.id == model_id)
    return model_json(state, services.started)
