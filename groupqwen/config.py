"""One ``Settings`` object, merged with the model catalog (``catalog.py``).

Settings come from, highest priority first: keyword arguments, ``GROUPQWEN_*`` environment variables
(nested fields with ``__``, e.g. ``GROUPQWEN_MODELS__QWEN3_8B__PATH``), an optional YAML file
(``--config``), then the defaults below. Every validation error names its field.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from groupqwen.catalog import BackendKind, ModelSpec, builtin_catalog
from groupqwen.errors import ConfigError

AUTO_MODEL = "auto"


def cache_home() -> Path:
    """GroupQwen's cache directory: ``$XDG_CACHE_HOME/groupqwen`` (default ``~/.cache/groupqwen``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")) / "groupqwen"


def default_models_dir() -> Path:
    return cache_home() / "models"


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "groupqwen"


# ---------------------------------------------------------------------------------------------------------
# Settings


def _fits_a_header(value: str) -> str:
    if not (value.isascii() and value.isprintable()):
        raise ValueError("must be printable ASCII (it is sent in the Authorization header)")
    return value


BearerToken = Annotated[str, AfterValidator(_fits_a_header)]


class ModelConfig(BaseModel):
    """A catalog override or a new model. A new id needs ``path`` (or ``backend: fake``)."""

    model_config = ConfigDict(extra="forbid")

    path: Path | None = Field(None, description="Local GGUF file")
    backend: BackendKind = Field("llamacpp", description="Which backend serves it")
    n_ctx: int | None = Field(None, ge=64, description="Context window to allocate (tokens)")
    context_length: int | None = Field(None, ge=64, description="The model's trained context length")
    thinking: bool | None = Field(None, description="Whether the model understands enable_thinking")
    vision: bool | None = Field(None, description="Whether the model takes images (image_url parts)")
    fake_reply: str | None = Field(None, description="backend 'fake' only: the reply it streams")
    urls: list[str] | None = Field(None, description="backend 'openai_http': replica base URLs (…/v1)")
    remote_model: str | None = Field(None, description="backend 'openai_http': the server's model name")
    api_key: BearerToken | None = Field(None, description="backend 'openai_http': bearer token")
    keep_alive: float | None = Field(None, ge=-1, description="Seconds idle before unload; -1 never")
    pinned: bool | None = Field(None, description="Never evict this model")
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
        return self

    @field_validator("path")
    @classmethod
    def _path_is_file(cls, value: Path | None) -> Path | None:
        if value is not None:
            value = value.expanduser()
            if not value.is_file():
                raise ValueError(f"no file at {value}")
        return value


class EmbedderConfig(BaseModel):
    """What turns the cache's questions into vectors (docs/cache.md, "Embedder")."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["minilm", "openai"] = Field(
        "minilm", description="minilm: the bundled model, in-process; openai: a /v1/embeddings server"
    )
    url: str | None = Field(None, description="openai: the server's base URL (…/v1)")
    model: str | None = Field(None, description="openai: the model to ask the server for")
    api_key: BearerToken | None = Field(None, description="openai: bearer token")
    dim: int | None = Field(
        None, ge=1, le=65_536, description="openai: the vectors' width; unset: asked of the server at start"
    )

    @field_validator("url")
    @classmethod
    def _url_is_http(cls, value: str | None) -> str | None:
        if value is not None and (
            urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).hostname
        ):
            raise ValueError(f"{value!r} is not an http(s) URL with a host")
        return value

    @model_validator(mode="after")
    def _kind_needs(self) -> EmbedderConfig:
        remote = {"url": self.url, "model": self.model, "api_key": self.api_key, "dim": self.dim}
        if self.kind == "openai":
            missing = [name for name in ("url", "model") if not remote[name]]
            if missing:
                raise ValueError(f"kind 'openai' needs {' and '.join(map(repr, missing))}")
        else:
            given = [name for name, value in remote.items() if value is not None]
            if given:
                raise ValueError(f"{', '.join(map(repr, given))}: only for kind 'openai'")
        return self


class CacheConfig(BaseModel):
    """The semantic cache (docs/cache.md)."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["embedded", "redis", "off"] = Field(
        "embedded", description="embedded: in-process index + SQLite file; redis: shared; off"
    )
    path: Path | None = Field(None, description="embedded: the SQLite file; default: data_dir/cache.sqlite")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="redis: where the shared cache lives")
    redis_prefix: str = Field("groupqwen:cache:", min_length=1, description="redis: key prefix")
    redis_timeout_s: float = Field(0.05, gt=0, le=10, description="redis: a call slower than this bypasses")
    threshold: float = Field(0.83, gt=0, le=1, description="Least cosine similarity served as a hit")
    ttl_s: float = Field(86_400, gt=0, description="Default seconds an answer is kept")
    max_ttl_s: float = Field(30 * 86_400, gt=0, description="Largest TTL a request may ask for")
    max_temperature: float = Field(0.5, ge=0, le=2, description="Hotter requests bypass the cache")
    cache_seeded: bool = Field(False, description="Also cache requests that set a seed (per seed)")
    max_entries: int = Field(100_000, ge=1, description="embedded: entries kept (least recently used go)")
    timeout_s: float = Field(0.5, gt=0, le=30, description="A lookup step or store slower than this bypasses")
    overlap: Literal["auto", "always", "never"] = Field(
        "auto",
        description="Start generating on a loaded model while the semantic layer embeds: always, never, or "
        "auto: unless the model runs in-process on CPU threads that fill the cores (docs/cache.md)",
    )
    embedder: EmbedderConfig = Field(
        default_factory=EmbedderConfig,  # type: ignore[arg-type]
        description="What embeds the questions: the bundled MiniLM or a /v1/embeddings server",
    )

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value


class TierConfig(BaseModel):
    """One tier of the ``auto`` ladder (docs/routing.md). The bar comes from ``bar`` if set, else from
    ``target`` through the model's calibration table; ``max_complexity`` likewise (the pair measured
    together for ``target``). The last tier is never escalated."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="A model id from the catalog or models")
    max_complexity: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Tried first for requests scoring up to this; default: from the calibration for "
        "`target` (1.0 without one)",
    )
    target: float = Field(
        0.1, ge=0, le=1, description="At most this share of answers may be worse than the top tier's"
    )
    bar: float | None = Field(None, ge=0, le=1, description="Confidence below which answers escalate")
    multilingual: bool = Field(True, description="False: skipped for non-English prompts")


def _default_tiers() -> list[TierConfig]:
    return [
        TierConfig(model="smollm2-135m", multilingual=False),  # type: ignore[call-arg]
        TierConfig(model="qwen2.5-coder-0.5b"),  # type: ignore[call-arg]
    ]


class RouterConfig(BaseModel):
    """``model: auto`` and the named routes ``auto:…`` (docs/routing.md)."""

    model_config = ConfigDict(extra="forbid")

    tiers: list[TierConfig] = Field(default_factory=_default_tiers, description="Smallest first")
    routes: dict[str, str] = Field(
        default_factory=lambda: {"auto:translate": "qwen2.5-coder-0.5b"},
        description="Named routes served by a plain model; auto:vision takes requests with images",
    )
    classifier: bool = Field(True, description="Use the learned complexity classifier (False: rules only)")
    weights: Path | None = Field(None, description="Router weights JSON; default: the shipped file")
    thinking_threshold: float = Field(0.5, ge=0, le=1, description="Thinking head probability to think")
    warm_margin: float = Field(0.1, ge=0, le=1, description="Prefer a warm lower tier within this margin")
    buffer_tokens: int = Field(48, ge=1, le=4096, description="Tokens held back while confidence is unknown")

    @field_validator("routes")
    @classmethod
    def _route_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not name.startswith("auto:") or name in ("auto:fast", "auto:best", "auto:cascade"):
                raise ValueError(f"{name!r}: a route name starts with 'auto:' and is not a built-in route")
        return value


class Settings(BaseSettings):
    """Everything GroupQwen reads from its configuration; see ``config.example.yaml``."""

    model_config = SettingsConfigDict(
        env_prefix="GROUPQWEN_",
        env_nested_delimiter="__",
        extra="forbid",
        yaml_file=None,
    )

    host: str = Field("127.0.0.1", description="Address the gateway listens on")
    port: int = Field(8000, ge=1, le=65535, description="Port the gateway listens on")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level")
    models_dir: Path = Field(default_factory=default_models_dir, description="Where GGUF files live")
    default_model: str = Field("qwen2.5-coder-0.5b", description="What model 'auto' resolves to")
    n_threads: int = Field(0, ge=0, description="llama.cpp threads per model (0: all cores)")
    n_gpu_layers: int = Field(
        0, ge=-1, description="Layers offloaded to the GPU (-1: all; CUDA llama.cpp); the budget is VRAM"
    )
    n_ctx: int = Field(4096, ge=64, description="Default context window to allocate per model (tokens)")
    max_queue: int = Field(16, ge=0, description="Requests that may wait per model before 503")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Largest request body accepted (bytes)")
    max_stop_sequences: int = Field(4, ge=1, le=64, description="Most 'stop' strings per request")
    max_images: int = Field(8, ge=1, le=256, description="Most image parts per request")
    keep_alive: float = Field(300, ge=-1, description="Default seconds idle before a model is unloaded")
    memory_budget_mb: int | None = Field(None, ge=1, description="Memory for models (MiB); default: a share")
    memory_share: float = Field(0.8, gt=0, le=1, description="Share of available memory for models")
    memory_margin_mb: int = Field(256, ge=0, description="Safety margin kept free (MiB)")
    models: dict[str, ModelConfig] = Field(default_factory=dict, description="Catalog overrides/additions")
    # telemetry (docs/telemetry.md)
    log_format: Literal["console", "json"] = Field("console", description="Log lines: key=value or JSON")
    data_dir: Path = Field(default_factory=default_data_dir, description="Where the gateway keeps its data")
    database_url: str | None = Field(
        None,
        description="Telemetry database: sqlite:///<path> or postgresql://…; default: SQLite in data_dir",
    )
    telemetry_retention_days: float = Field(30, gt=0, description="Days request records are kept")
    telemetry_buffer_records: int = Field(
        10_000, ge=1, description="Records held while the database is slow or down; beyond: dropped, counted"
    )
    health_timeout_s: float = Field(2.0, gt=0, le=60, description="Seconds each health check may take")
    health_min_free_disk_mb: int = Field(1024, ge=0, description="Less free disk than this: degraded")
    cache: CacheConfig = Field(default_factory=CacheConfig, description="The semantic cache")  # type: ignore[arg-type]
    router: RouterConfig = Field(default_factory=RouterConfig, description="Routing and the cascade")  # type: ignore[arg-type]

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

    @field_validator("database_url")
    @classmethod
    def _database_url_scheme(cls, value: str | None) -> str | None:
        schemes = ("sqlite:///", "postgresql://", "postgres://", "postgresql+psycopg://")
        if value is not None and not value.startswith(schemes):
            raise ValueError("must start with sqlite:/// or postgresql://")
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
        errors = []
        for model_id, cfg in self.models.items():
            if model_id not in known and cfg.path is None and cfg.backend == "llamacpp":
                errors.append(f"models.{model_id}.path: a model not in the catalog needs a GGUF path")
        if self.default_model not in known and self.default_model not in self.models:
            errors.append(f"default_model: unknown model {self.default_model!r}")
        for i, tier in enumerate(self.router.tiers):
            if tier.model not in known and tier.model not in self.models:
                errors.append(f"router.tiers.{i}.model: unknown model {tier.model!r}")
        for name, model in self.router.routes.items():
            if model not in known and model not in self.models:
                errors.append(f"router.routes.{name}: unknown model {model!r}")
            elif name == "auto:vision" and not self.catalog()[model].vision:
                errors.append(
                    f"router.routes.{name}: {model!r} does not take images: point it at a model that does "
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
            specs[model_id] = replace(base, **overrides)
        for spec_id, spec in specs.items():
            if spec_id not in self.models:
                specs[spec_id] = replace(spec, keep_alive=self.keep_alive)
        return specs

    def available(self) -> dict[str, ModelSpec]:
        """The models that can be served here: weights on disk, a server to call, or a fake backend."""
        return {
            k: s for k, s in self.catalog().items() if s.path is not None or s.urls or s.backend == "fake"
        }


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
        out.append((field, message))
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
