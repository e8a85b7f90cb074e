"""One ``Settings`` object, merged with the model catalog (``catalog.py``), nested per area.

Settings come from, highest priority first: keyword arguments, ``GROUPQWEN_*`` environment variables
(nested fields with ``__``, e.g. ``GROUPQWEN_MODELS__QWEN3_8B__PATH``, ``GROUPQWEN_TELEMETRY__DATABASE_URL``),
an optional YAML file (``--config``), then the defaults. Every validation error names its field.

``settings.py`` holds ``Settings`` and ``load_settings``; each area's section has its own module
(``server``, ``auth``, ``limits``, ``images``, ``responses``, ``models``, ``cache``, ``router``,
``telemetry``, ``ui``, ``ws``); ``paths`` the default locations, ``fields`` the field types they share.
"""

from groupqwen.config.access import AuthConfig
from groupqwen.config.cache import CacheConfig, EmbedderConfig
from groupqwen.config.fields import BearerToken
from groupqwen.config.finetune import FinetuneConfig, Hyperparameters
from groupqwen.config.images import ImagesConfig
from groupqwen.config.limits import LimitsConfig, RatesConfig
from groupqwen.config.models import ModelConfig
from groupqwen.config.paths import cache_home, default_data_dir, default_models_dir
from groupqwen.config.responses import ResponsesConfig
from groupqwen.config.router import AUTO_MODEL, RouterConfig, TierConfig
from groupqwen.config.server import ServerConfig
from groupqwen.config.settings import Settings, load_settings
from groupqwen.config.telemetry import TelemetryConfig
from groupqwen.config.ui import UIConfig
from groupqwen.config.ws import WsConfig

__all__ = [
    "AUTO_MODEL",
    "AuthConfig",
    "BearerToken",
    "CacheConfig",
    "EmbedderConfig",
    "FinetuneConfig",
    "Hyperparameters",
    "ImagesConfig",
    "LimitsConfig",
    "ModelConfig",
    "RatesConfig",
    "ResponsesConfig",
    "RouterConfig",
    "ServerConfig",
    "Settings",
    "TelemetryConfig",
    "TierConfig",
    "UIConfig",
    "WsConfig",
    "cache_home",
    "default_data_dir",
    "default_models_dir",
    "load_settings",
]
