"""A request's images made ready for the models that will answer it, and the boxes of their answers
(docs/vision.md).

``prepare`` runs once per request (``n`` choices share choice 0's), after the decision and the cache's
exact layer (an exact hit is replayed without its images read, unless its answer has boxes to map) and
before any model is leased:

- for a model the gateway runs itself (llama.cpp in-process), every image is read (a data URL decoded, an
  http(s) URL fetched by ``fetch.py``), decoded and resized to the model's pixel budget
  (``preprocess.py``): ``ChatRequest.prepared`` holds the pixels the backend hands its projector;
- for a remote model (``openai_http``), a data URL is sent as the client wrote it unless it is over the
  model's budget (pixels or ``images.max_bytes``), then re-encoded smaller; an http(s) URL is forwarded for
  the model's server to fetch (checked at the edge, ``api/schemas/images.py``). The sizes of the images the
  gateway holds are kept (``PreparedImage`` without pixels) so that boxes can be mapped back.

``boxes_of`` reads the grounding in an answer and maps it to the last image of the conversation (fetching
an http(s) image a remote model read itself, only when the answer points at it).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Sequence
from dataclasses import replace

from groupqwen import log
from groupqwen.catalog import ModelSpec
from groupqwen.config import ImagesConfig
from groupqwen.errors import ImageRefused
from groupqwen.messages import Box, ChatRequest, ImagePart, Message, PreparedImage
from groupqwen.modalities import boxes, preprocess
from groupqwen.modalities.fetch import fetch
from groupqwen.modalities.preprocess import PixelBudget

_log = log.get(__name__)

QWEN_FACTOR = 28  # 14-pixel patches, merged 2 × 2
QWEN3_FACTOR = 32  # Qwen3-VL: 16-pixel patches, merged 2 × 2


def budget_of(spec: ModelSpec, policy: ImagesConfig) -> PixelBudget:
    """The pixel budget of ``spec``'s images: its own ``min_pixels``/``max_pixels`` or the settings'."""
    factor = QWEN3_FACTOR if boxes.grounding_of(spec.family) == "qwen3-vl" else QWEN_FACTOR
    low = spec.min_pixels if spec.min_pixels is not None else policy.min_pixels
    high = spec.max_pixels if spec.max_pixels is not None else policy.max_pixels
    return PixelBudget(factor, min(low, high), max(high, factor * factor), policy.max_image_pixels)


async def prepare(request: ChatRequest, models: Sequence[ModelSpec], policy: ImagesConfig) -> ChatRequest:
    """``request`` with its images ready for ``models`` (the decision's, in order); unchanged without
    images. Raises ``ImageRefused`` naming the first image that cannot be used."""
    ids = tuple(m.id for m in models)
    if not request.images or not models or request.prepared_for == ids:  # none, or done (choice 0's)
        return request
    local = next((m for m in models if m.backend == "llamacpp"), None)
    remote = next((m for m in models if m.backend != "llamacpp"), None)
    messages: list[Message] = []
    prepared: list[PreparedImage] = []
    for i, message in enumerate(request.messages):
        parts: list[str | ImagePart] = []
        for j, part in enumerate(message.parts):
            if not isinstance(part, ImagePart):
                parts.append(part)
                continue
            where = f"messages[{i}].content[{j}] (image {len(prepared) + 1} of the request)"
            try:
                if local is not None:
                    data = await _read(part.url, where, policy)
                    budget = budget_of(local, policy)
                    prepared.append(await asyncio.to_thread(preprocess.prepare, data, where, budget))
                if remote is not None:
                    part, sizes = await _for_remote(part, where, budget_of(remote, policy), policy)
                    if local is None:
                        prepared.append(sizes)
            except ImageRefused as refused:
                refused.param = f"messages[{i}].content[{j}].image_url.url"  # the field, as the edge names it
                raise
            parts.append(part)
        messages.append(replace(message, parts=tuple(parts)) if message.parts else message)
    return replace(request, messages=tuple(messages), prepared=tuple(prepared), prepared_for=ids)


async def _read(url: str, where: str, policy: ImagesConfig) -> bytes:
    if url[:5].lower() == "data:":
        return _data(url, where, policy.max_bytes)
    return await fetch(url, where, policy)


def _data(url: str, where: str, limit: int) -> bytes:
    """A data URL's payload (checked at the edge: image/*, base64), within ``limit`` bytes."""
    payload = url.partition(",")[2]
    if len(payload) // 4 * 3 > limit + 3:
        raise ImageRefused(f"{where} is larger than images.max_bytes ({limit} bytes)", param=where)
    try:
        return base64.b64decode(payload, validate=True)
    except binascii.Error as exc:
        raise ImageRefused(f"{where} has a broken base64 payload: {exc}", param=where) from None


async def _for_remote(
    part: ImagePart, where: str, budget: PixelBudget, policy: ImagesConfig
) -> tuple[ImagePart, PreparedImage]:
    """The part as a remote model gets it, and the sizes the model will see (zero: unknown, a URL)."""
    if part.url[:5].lower() != "data:":
        return part, PreparedImage(b"", 0, 0, 0, 0)
    data = _data(part.url, where, policy.max_bytes)
    smaller = await asyncio.to_thread(preprocess.reencode, data, where, budget, policy.max_bytes)
    if smaller is not None:
        part = replace(part, url="data:image/jpeg;base64," + base64.b64encode(smaller).decode("ascii"))
    return part, _sizes(data, where, budget)


def _sizes(data: bytes, where: str, budget: PixelBudget) -> PreparedImage:
    """The image's sizes, and those a model with ``budget`` sees it at (no pixels: the model reads them)."""
    width, height = preprocess.measure(data, where)
    fitted = preprocess.fit(width, height, budget)
    return PreparedImage(b"", fitted[0], fitted[1], width, height)


def points_at(text: str, spec: ModelSpec) -> bool:
    """Whether ``spec``'s answer ``text`` holds a box in its model's format."""
    grounding = boxes.grounding_of(spec.family)
    return grounding is not None and boxes.found(text, grounding)


async def boxes_of(text: str, spec: ModelSpec, request: ChatRequest, policy: ImagesConfig) -> tuple[Box, ...]:
    """The boxes ``spec``'s answer ``text`` points at, in pixels of the conversation's last image; none
    where the model's box format is unknown or that image cannot be read. An http(s) image a remote model
    fetched itself is fetched here too (the same guarded fetch), only when the answer points at it: its
    size maps the boxes."""
    grounding = boxes.grounding_of(spec.family)
    if grounding is None or not request.prepared or not boxes.found(text, grounding):
        return ()
    last = request.prepared[-1]
    if last.original_width == 0:
        measured = await _measured(request.images[-1].url, spec, policy)
        if measured is None:
            return ()
        last = measured
    return boxes.parse(text, grounding, last)


async def _measured(url: str, spec: ModelSpec, policy: ImagesConfig) -> PreparedImage | None:
    """The sizes of the image at ``url`` as ``spec`` sees it; ``None`` (logged) when it cannot be read."""
    where = "the last image of the request (fetched to map the answer's boxes)"
    try:
        return _sizes(await fetch(url, where, policy), where, budget_of(spec, policy))
    except ImageRefused as refused:
        _log.warning("boxes not mapped", reason=refused.message)
        return None
