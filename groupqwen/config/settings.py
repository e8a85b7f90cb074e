"""``Settings`` (the sections of ``server``, ``images``, ``responses``, ``models``, ``cache``, ``router``,
``telemetry``, ``ws`` put together, checked against the catalog) and ``load_settings``, which reads them
and names every bad field."""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from groupqwen.catalog import ModelSpec, builtin_catalog, finetuned
from groupqwen.config.access import AuthConfig
from groupqwen.config.cache import CacheConfig
from groupqwen.config.finetune import FinetuneConfig
from groupqwen.config.images import ImagesConfig
from groupqwen.config.limits import LimitsConfig
from groupqwen.config.models import ModelConfig
from groupqwen.config.paths import default_data_dir, default_models_dir
from groupqwen.config.responses import ResponsesConfig
from groupqwen.config.router import RouterConfig
from groupqwen.config.server import ServerConfig
from groupqwen.config.telemetry import TelemetryConfig
from groupqwen.config.ui import UIConfig
from groupqwen.config.ws import WsConfig
from groupqwen.errors import ConfigError

ENV_PREFIX = "GROUPQWEN_"
# settings that moved into a section: old flat name → new dotted name (CHANGELOG.md, "Changed")
_MOVED = {
    "database_url": "telemetry.database_url",
    "telemetry_retention_days": "telemetry.retention_days",
    "telemetry_buffer_records": "telemetry.buffer_records",
    "health_timeout_s": "telemetry.health_timeout_s",
    "health_min_free_disk_mb": "telemetry.health_min_free_disk_mb",
}


def _env_name(dotted: str) -> str:
    return ENV_PREFIX + dotted.replace(".", "__").upper()


def _moved_errors(given: Any) -> list[str]:
    """One ``name: where it went`` per old flat setting in ``given`` or in the environment."""
    errors = []
    if isinstance(given, dict):
        for old, new in _MOVED.items():
            if old in given:
                errors.append(f"{old}: moved to {new} (the YAML section or environment {_env_name(new)})")
    environment = {name.upper() for name in os.environ}
    for old, new in _MOVED.items():
        if _env_name(old) in environment:
            errors.append(f"{_env_name(old)}: moved to {_env_name(new)} ({new})")
    return errors


class Settings(BaseSettings):
    """Everything GroupQwen reads from its configuration; see ``config.example.yaml``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        yaml_file=None,
    )

    host: str = Field("127.0.0.1", description="Address the gateway listens on")
    port: int = Field(8000, ge=1, le=65535, description="Port the gateway listens on")
    server: ServerConfig = Field(
        default_factory=ServerConfig,  # type: ignore[arg-type]
        description="Slow clients, idle and concurrent connections (docs/api.md)",
    )
    auth: AuthConfig = Field(
        default_factory=AuthConfig,  # type: ignore[arg-type]
        description="API keys, scopes and tenants: off (the default, for 127.0.0.1) or keys "
        "(docs/security.md)",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level: debug | info | warning | error"
    )
    models_dir: Path = Field(
        default_factory=default_models_dir,
        description="Where GGUF files live (the bundled models are fetched here); null: "
        "$XDG_CACHE_HOME/groupqwen/models (~/.cache/groupqwen/models)",
    )
    default_model: str = Field(
        "qwen2.5-coder-0.5b",
        description="The model 'auto' resolves to when none of the router's tiers is served here "
        "(docs/routing.md); its weights must be here for serve",
    )
    n_threads: int = Field(0, ge=0, description="llama.cpp threads per model (0: all cores)")
    n_gpu_layers: int = Field(
        0, ge=-1, description="Layers offloaded to the GPU (-1: all; CUDA llama.cpp); the budget is VRAM"
    )
    n_ctx: int = Field(
        4096, ge=64, description="Context window allocated per model (tokens), unless the model sets its own"
    )
    max_queue: int = Field(
        16, ge=0, description="Requests that may wait per model before a 503 with Retry-After"
    )
    max_body_bytes: int = Field(
        1_000_000, ge=1024, description="Largest request body accepted (bytes; 413 above it)"
    )
    max_stop_sequences: int = Field(4, ge=1, le=64, description="Most 'stop' strings a request may send")
    max_messages: int = Field(1000, ge=1, description="Most messages a chat request may send (400 above)")
    max_text_chars: int = Field(
        400_000,
        ge=1,
        description="Longest text of one message, or one text part (characters; 400 above); the body's size "
        "is max_body_bytes'",
    )
    max_output_tokens: int | None = Field(
        32768,
        ge=1,
        description="Largest max_tokens (or max_completion_tokens) a request may ask for (400 above); null: "
        "up to what the model's context leaves",
    )
    max_images: int = Field(
        8,
        ge=1,
        le=256,
        description="Most image parts a request may carry (each costs the vision model many tokens)",
    )
    limits: LimitsConfig = Field(
        default_factory=LimitsConfig,  # type: ignore[arg-type]
        description="Rate limits per API key and per tenant: requests and tokens per minute, concurrent "
        "requests (docs/security.md)",
    )
    images: ImagesConfig = Field(
        default_factory=ImagesConfig,  # type: ignore[arg-type]
        description="Which http(s) image URLs are forwarded to a model's server, which fetches them "
        "(docs/api.md, Images)",
    )
    responses: ResponsesConfig = Field(
        default_factory=ResponsesConfig,  # type: ignore[arg-type]
        description="The Responses API's stored responses (previous_response_id; docs/api.md, Responses)",
    )
    keep_alive: float = Field(
        300,
        ge=-1,
        description="Seconds a model may idle before it is unloaded (-1 never, 0 right away); per model: "
        "models.<id>.keep_alive",
    )
    memory_budget_mb: int | None = Field(
        None, ge=1, description="Memory for models (MiB); null: memory_share of what is available at start"
    )
    memory_share: float = Field(
        0.8, gt=0, le=1, description="Share of the memory available at start given to models"
    )
    memory_margin_mb: int = Field(256, ge=0, description="Kept free on top of the budget's share (MiB)")
    models: dict[str, ModelConfig] = Field(
        default_factory=dict,
        description="Catalog entries pointed at local weights or servers, and models of your own, by id",
        examples=[
            {
                "qwen3-8b": {
                    "path": "/models/Qwen3-8B-Q4_K_M.gguf",
                    "n_ctx": 8192,
                    "keep_alive": -1,
                    "pinned": True,
                },
                "my-finetune": {
                    "path": "/models/my-finetune.gguf",
                    "context_length": 32768,
                    "thinking": True,
                },
                "qwen3-vl-8b": {
                    "backend": "openai_http",
                    "urls": ["http://gpu-1:8000/v1"],
                    "remote_model": "Qwen/Qwen3-VL-8B-Instruct",
                },
                "qwen3-32b": {
                    "backend": "openai_http",
                    "urls": ["http://gpu-1:8000/v1", "http://gpu-2:8000/v1"],
                    "remote_model": "Qwen/Qwen3-32B",
                    "max_parallel": 64,
                },
            }
        ],
    )
    log_format: Literal["console", "json"] = Field(
        "console", description="Log lines: console (key=value) | json (one object per line)"
    )
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Where the gateway keeps its data (telemetry, cache, reviews); null: "
        "$XDG_DATA_HOME/groupqwen (~/.local/share/groupqwen)",
    )
    ui: UIConfig = Field(
        default_factory=UIConfig,  # type: ignore[arg-type]
        description="The web UI served at / and its chat-export uploads (docs/ui.md)",
    )
    cache: CacheConfig = Field(
        default_factory=CacheConfig,  # type: ignore[arg-type]
        description="The semantic cache (docs/cache.md)",
    )
    router: RouterConfig = Field(
        default_factory=RouterConfig,  # type: ignore[arg-type]
        description="Routing for model 'auto' and the routes auto:fast, auto:best, auto:cascade, auto:<name> "
        "(docs/routing.md)",
    )
    telemetry: TelemetryConfig = Field(
        default_factory=TelemetryConfig,  # type: ignore[arg-type]
        description="Request records, their database, and the health checks (docs/telemetry.md)",
    )
    ws: WsConfig = Field(
        default_factory=WsConfig,  # type: ignore[arg-type]
        description="The WebSocket endpoint /v1/ws: resume window, limits, heartbeats, origins (docs/api.md)",
    )
    finetune: FinetuneConfig = Field(
        default_factory=FinetuneConfig,  # type: ignore[arg-type]
        description="Training runs and fine-tuning jobs: threads, priority, hyperparameter defaults "
        "(docs/finetune.md)",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("yaml_file"):
            sources.append(YamlConfigSettingsSource(settings_cls))
        return tuple(sources)

    @model_validator(mode="before")
    @classmethod
    def _no_moved_settings(cls, value: Any) -> Any:
        """A setting that moved into a section is an error naming its new place, not an unknown field."""
        errors = _moved_errors(value)
        if errors:
            raise ValueError("; ".join(errors))
        return value

    @field_validator("models_dir", "data_dir", mode="before")
    @classmethod
    def _null_is_the_default_place(cls, value: Any, info: ValidationInfo) -> Any:
        """``null`` (as config.example.yaml writes it) means the default location."""
        if value is None:
            return default_models_dir() if info.field_name == "models_dir" else default_data_dir()
        return value

    @field_validator("models", mode="before")
    @classmethod
    def _env_names_to_ids(cls, value: Any) -> Any:
        """``GROUPQWEN_MODELS__QWEN2_5_CODER_0_5B__N_CTX`` names ``qwen2.5-coder-0.5b``: environment
        variables cannot hold ``.`` or ``-``."""
        if not isinstance(value, dict):
            return value
        by_env_name = {re.sub(r"[^a-z0-9]", "_", model_id): model_id for model_id in builtin_catalog()}
        return {
            (key if key in by_env_name.values() else by_env_name.get(str(key).lower(), key)): cfg
            for key, cfg in value.items()
        }

    @model_validator(mode="after")
    def _check_models(self) -> Settings:
        known = builtin_catalog()
        known.update(finetuned(self.finetuned_dir, known))  # ft: models recorded by finished runs
        errors = []
        for model_id, cfg in self.models.items():
            if model_id not in known and cfg.path is None and cfg.backend == "llamacpp":
                errors.append(f"models.{model_id}.path: a model not in the catalog needs a GGUF path")
        for where, model in self.model_references():
            if model not in known and model not in self.models:
                errors.append(f"{where}: unknown model {model!r}")
            elif where == "router.routes.auto:vision" and not self.catalog()[model].vision:
                errors.append(
                    f"{where}: {model!r} does not take images: point it at a model that does "
                    f"(a Qwen3-VL model such as qwen3-vl-8b), or set models.{model}.vision: true if it does"
                )
        if errors:
            raise ValueError("; ".join(errors))
        return self

    def catalog(self) -> dict[str, ModelSpec]:
        """The builtin catalog merged with the configured models; files found in ``models_dir`` (bundled or
        pulled) give their entries a path."""
        specs = builtin_catalog()
        for spec_id, spec in specs.items():
            if spec.filename and (self.models_dir / spec.filename).is_file():
                specs[spec_id] = replace(spec, path=self.models_dir / spec.filename)
        for model_id, cfg in self.models.items():
            base = specs.get(model_id) or ModelSpec(
                id=model_id,
                family="custom",
                parameters="?",
                context_length=cfg.n_ctx or self.n_ctx,
                size_bytes=cfg.path.stat().st_size if cfg.path else 0,
                quantization="?",
                architecture="?",
            )
            overrides: dict[str, Any] = {"backend": cfg.backend, "keep_alive": self.keep_alive}
            for name in ModelConfig.model_fields:
                value = getattr(cfg, name)
                if value is not None and name != "backend":
                    overrides[name] = tuple(value) if name == "urls" else value
            if cfg.mmproj is not None:  # a projector: the model takes images
                overrides["vision"] = True
            specs[model_id] = replace(base, **overrides)
        specs.update(finetuned(self.finetuned_dir, specs))
        for spec_id, spec in specs.items():
            if spec_id not in self.models:
                specs[spec_id] = replace(spec, keep_alive=self.keep_alive)
        return specs

    @property
    def finetuned_dir(self) -> Path:
        """Where finished fine-tuning runs record their models (``ft:…``)."""
        return self.data_dir / "finetune" / "models"

    def available(self) -> dict[str, ModelSpec]:
        """The models that can be served here: weights on disk, a server to call, or a fake backend."""
        return {
            k: s for k, s in self.catalog().items() if s.path is not None or s.urls or s.backend == "fake"
        }

    def model_references(self) -> list[tuple[str, str]]:
        """Where the configuration names a model, and which: ``default_model``, each router tier's and
        route's, then each of ``models:``'s (``("models.<id>", id)``); a gateway whose configuration names
        a model it does not know refuses to start."""
        return [
            ("default_model", self.default_model),
            *((f"router.tiers.{i}.model", tier.model) for i, tier in enumerate(self.router.tiers)),
            *((f"router.routes.{name}", model) for name, model in self.router.routes.items()),
            *((f"models.{model_id}", model_id) for model_id in self.models),
        ]

    def served_models(self) -> dict[str, ModelSpec]:
        """The models this gateway serves: ``available()``; with ``server.workers`` above 1 less the
        in-process (llama.cpp) ones the configuration does not name (in ``models:``, ``default_model``, the
        tiers or the routes; bundled or pulled into ``models_dir``): a request naming one would load it
        once per worker."""
        available = self.available()
        if self.server.workers == 1:
            return available
        named = {model for _, model in self.model_references()}
        return {k: s for k, s in available.items() if s.backend != "llamacpp" or k in named}


def _field_errors(exc: ValidationError) -> list[tuple[str, str]]:
    out = []
    for err in exc.errors():
        field = ".".join(str(part) for part in err["loc"]) or "(root)"
        message = err["msg"]
        if field == "(root)" and message.startswith("Value error, "):
            for part in message.removeprefix("Value error, ").split("; "):
                name, _, msg = part.partition(": ")
                out.append((name, msg))
            continue
        out.append((field, message.removeprefix("Value error, ")))  # our validators' own words
    return out


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build ``Settings`` from the environment and an optional YAML file; raise ``ConfigError`` naming
    every bad field."""
    settings_cls: type[Settings] = Settings
    if config_file is not None:
        if not config_file.is_file():
            raise ConfigError([("config", f"no such file: {config_file}")])
        try:
            data = yaml.safe_load(config_file.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError([("config", f"{config_file} is not valid YAML: {exc}")]) from exc
        if data is not None and not isinstance(data, dict):
            raise ConfigError([("config", f"{config_file} must hold a mapping of settings")])

        class FileSettings(Settings):
            model_config = SettingsConfigDict(yaml_file=config_file)

        settings_cls = FileSettings
    try:
        return settings_cls(**overrides)
    except ValidationError as exc:
        raise ConfigError(_field_errors(exc)) from exc
