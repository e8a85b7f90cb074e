"""Operational routes: health and model lifetimes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from groupqwen.api.services import Services

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    services: Services = request.app.state.services
    states = services.pool.states()
    return {
        "status": "ok",
        "models": {s.spec.id: s.status for s in states},
    }
