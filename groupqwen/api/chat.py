"""What the chat adapters share beyond ``openai.py``'s helpers: a ``POST /v1/chat/completions`` body, read
from an HTTP request (``openai.py``) or from a WebSocket's ``chat.create`` frame (``ws.py``), parsed once."""

from __future__ import annotations

from pydantic import ValidationError

from groupqwen.api.errors import from_validation_error
from groupqwen.api.schemas.chat import ChatCompletionRequest, to_chat_request
from groupqwen.config import Settings
from groupqwen.messages import ChatRequest


def parse_chat(data: object, settings: Settings) -> tuple[ChatRequest, ChatCompletionRequest]:
    """A ``POST /v1/chat/completions`` body (already read as JSON) → the internal request and the wire
    one; a 400 naming the field when it is wrong."""
    try:
        body = ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    return to_chat_request(body, settings), body
