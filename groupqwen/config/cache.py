"""``cache:``: the semantic cache and its embedder (docs/cache.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from groupqwen.config.fields import BearerToken, RedisUrl


class EmbedderConfig(BaseModel):
    """What turns the cache's questions into vectors (docs/cache.md, "Embedder")."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["minilm", "openai"] = Field(
        "minilm", description="minilm: the bundled model, in-process; openai: a /v1/embeddings server"
    )
    url: str | None = Field(None, description="openai: the server's base URL, e.g. http://gpu-box:8000/v1")
    model: str | None = Field(
        None,
        description="openai: the model asked for, e.g. Qwen/Qwen3-Embedding-0.6B; also the cache scope's "
        "embedder name",
    )
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
        "embedded",
        description="embedded: in-process index + SQLite file; redis: shared by replicas; off (YAML's bare "
        "off, no and false mean off too)",
    )
    path: Path | None = Field(None, description="embedded: the SQLite file; default: data_dir/cache.sqlite")
    redis_url: RedisUrl = Field("redis://127.0.0.1:6379/0", description="redis: where the shared cache lives")
    redis_prefix: str = Field("groupqwen:cache:", min_length=1, description="redis: key prefix")
    redis_timeout_s: float = Field(
        0.25,
        gt=0,
        le=10,
        description="redis: a call slower than this bypasses the cache for that request (Redis is taken "
        "for down only when calls keep timing out for 3 s, or a connection is refused or reset)",
    )
    threshold: float = Field(
        0.83,
        gt=0,
        le=1,
        description="Without the verifier (off, or another embedder): least cosine similarity served as a "
        "hit, after the lexical guard (bench/cache_quality.py)",
    )
    verifier: bool = Field(
        True,
        description="Check each candidate hit with the shipped pair classifier (docs/cache.md); it applies "
        "where the embedder is the bundled MiniLM it was fitted for, the threshold elsewhere",
    )
    max_false_hit_rate: float = Field(
        0.01,
        ge=0,
        le=1,
        description="With the verifier: the share of different questions you accept to be served another's "
        "answer (measured on Quora Question Pairs); per request: the header "
        "x-groupqwen-cache-max-false-hit-rate",
    )
    min_confidence: float = Field(
        0.5,
        ge=0,
        le=1,
        description="An answer the cascade scored below this confidence (or below its step's bar) is not "
        "cached",
    )
    ttl_s: float = Field(
        86_400,
        gt=0,
        description="Default seconds an answer is kept; per request: the header x-groupqwen-cache-ttl",
    )
    max_ttl_s: float = Field(30 * 86_400, gt=0, description="Largest TTL a request may ask for")
    max_temperature: float = Field(
        0.5, ge=0, le=2, description="Hotter requests bypass the cache (no temperature given: 0.7)"
    )
    cache_seeded: bool = Field(
        False, description="Also cache requests that set a seed (per seed); false: they bypass the cache"
    )
    max_entries: int = Field(100_000, ge=1, description="embedded: entries kept (least recently used go)")
    timeout_s: float = Field(0.5, gt=0, le=30, description="A lookup step or store slower than this bypasses")
    overlap: Literal["auto", "always", "never"] = Field(
        "auto",
        description="Start generating on a loaded model while the semantic layer embeds: always, never, or "
        "auto: for an in-process model that leaves the embedding a core or computes on a GPU; not for a "
        "remote model (each semantic hit would abandon a request sent to its server) (docs/cache.md)",
    )
    embedder: EmbedderConfig = Field(
        default_factory=EmbedderConfig,  # type: ignore[arg-type]
        description="What embeds the questions: the bundled MiniLM or a /v1/embeddings server",
    )

    @field_validator("backend", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        """YAML 1.1 reads a bare ``off`` or ``no`` as ``false`` (and ``on``/``yes`` as ``true``): false means
        off; true names no backend, so the error says what to write."""
        if value is False or (isinstance(value, str) and value.strip().lower() in ("false", "no")):
            return "off"
        if value is True or (isinstance(value, str) and value.strip().lower() in ("true", "yes", "on")):
            raise ValueError(
                "on/yes/true names no backend: write embedded (in-process, the default) or redis "
                "(shared by replicas); off turns the cache off"
            )
        if not isinstance(value, str) or value not in ("embedded", "redis", "off"):
            raise ValueError(f"{value!r} is not a cache backend: write embedded, redis or off")
        return value
