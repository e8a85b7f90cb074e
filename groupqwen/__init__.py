"""GroupQwen: a local, OpenAI-compatible orchestration service for the Qwen3 model family."""

__version__ = "0.1.0"
