"""``models:``: a catalog override or a new model, one entry per model id."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from groupqwen.catalog import BackendKind
from groupqwen.config.fields import BearerToken


class ModelConfig(BaseModel):
    """A catalog override or a new model. A new id needs ``path`` (or ``backend: fake``)."""

    model_config = ConfigDict(extra="forbid")

    path: Path | None = Field(None, description="Local GGUF file")
    backend: BackendKind = Field(
        "llamacpp",
        description="llamacpp (in-process) | openai_http (vLLM, llama-server, Ollama) | fake (tests)",
    )
    n_ctx: int | None = Field(None, ge=64, description="Context window to allocate (tokens); null: n_ctx")
    context_length: int | None = Field(None, ge=64, description="The model's trained context length")
    thinking: bool | None = Field(None, description="Whether the model understands enable_thinking")
    vision: bool | None = Field(None, description="Whether the model takes images (image_url parts)")
    family: str | None = Field(
        None,
        description="The model's family (qwen2-vl, qwen2.5-vl, qwen3-vl … ): a vision model's box format "
        "and image patch size follow it",
    )
    mmproj: Path | None = Field(
        None,
        description="backend 'llamacpp': the multimodal projector GGUF (mmproj) beside the model's GGUF; "
        "with it the model takes images in-process",
    )
    min_pixels: int | None = Field(
        None, ge=1, description="A vision model's smallest image in pixels; null: images.min_pixels"
    )
    max_pixels: int | None = Field(
        None, ge=784, description="A vision model's largest image in pixels; null: images.max_pixels"
    )
    translation: bool | None = Field(
        None,
        description="Whether the model takes Qwen-MT's translation_options itself (an OpenAI-compatible "
        "Qwen-MT endpoint): they are passed through; otherwise they are compiled into its prompt",
    )
    fake_reply: str | None = Field(None, description="backend 'fake' only: the reply it streams")
    fake_delay_s: float | None = Field(
        None, ge=0, le=10, description="backend 'fake' only: seconds between the tokens it streams"
    )
    urls: list[str] | None = Field(None, description="backend 'openai_http': replica base URLs (…/v1)")
    remote_model: str | None = Field(None, description="backend 'openai_http': the server's model name")
    api_key: BearerToken | None = Field(None, description="backend 'openai_http': bearer token")
    answer_timeout_s: float | None = Field(
        None,
        gt=0,
        description="backend 'openai_http': seconds a client that does not stream waits for the server's "
        "whole answer (asked for without streaming); null: 600",
    )
    keep_alive: float | None = Field(
        None, ge=-1, description="Seconds idle before unload (-1 never, 0 right away); null: keep_alive"
    )
    pinned: bool | None = Field(None, description="Never evicted to make room for another model")
    max_parallel: int | None = Field(None, ge=1, le=1024, description="Requests served at once")

    @field_validator("urls")
    @classmethod
    def _urls_are_http(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError("needs at least one URL")
            for url in value:
                if not url.startswith(("http://", "https://")):
                    raise ValueError(f"{url!r} is not an http(s) URL")
        return value

    @model_validator(mode="after")
    def _backend_needs(self) -> ModelConfig:
        if self.backend == "openai_http" and not self.urls:
            raise ValueError("backend 'openai_http' needs 'urls'")
        if self.mmproj is not None and self.backend != "llamacpp":
            raise ValueError("mmproj: only a model run in-process (backend 'llamacpp') takes a projector")
        if self.mmproj is not None and self.vision is False:
            raise ValueError("mmproj is set, so the model takes images: drop 'vision: false'")
        return self

    @field_validator("path", "mmproj")
    @classmethod
    def _path_is_file(cls, value: Path | None) -> Path | None:
        if value is not None:
            value = value.expanduser()
            if not value.is_file():
                raise ValueError(f"no file at {value}")
        return value
