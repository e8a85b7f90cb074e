"""``GET /v1/models`` on the wire: one served model and its state in the pool.

``groupqwen.context_length`` is the limit requests are held to (the context the pool allocates, ``n_ctx``);
``groupqwen.native_context_length`` the model's own (what it was trained for)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from groupqwen.catalog import ModelSpec
from groupqwen.messages import ModelState


def model_json(state: ModelState, created: int) -> dict[str, Any]:
    spec: ModelSpec = state.spec
    return {
        "id": spec.id,
        "object": "model",
        "created": created,
        "owned_by": "groupqwen",
        "groupqwen": {
            "status": state.status,
            "error": state.error,
            "backend": spec.backend,
            "size_bytes": spec.size_bytes,
            "family": spec.family,
            "parameters": spec.parameters,
            "quantization": spec.quantization,
            "context_length": spec.n_ctx or spec.context_length,
            "native_context_length": spec.context_length,
            "capabilities": {"thinking": spec.thinking, "vision": spec.vision, "tools": spec.tools},
            "memory": {"estimated_bytes": state.estimated_bytes, "measured_bytes": state.measured_bytes},
            "active_requests": state.active,
            "queued_requests": state.queued,
            "last_used": state.last_used,
            "keep_alive": spec.keep_alive,
            "pinned": spec.pinned,
            "max_parallel": spec.max_parallel,
            "replicas": [asdict(r) for r in state.replicas] or None,
            "base_model": spec.base_model,
        },
    }
