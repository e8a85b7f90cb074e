"""Images in-process: the tiny random-weight Qwen2-VL model (tests/tiny_vlm.py) with its projector, loaded
by llama.cpp; an image goes decode → preprocess → vision encoder → projector → generation. The weights are
noise, so the checks are on what an image must change: the prompt's size (the image's tokens) and the
model's first distribution (a red image and a blue one lead to different logits)."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import pytest
from PIL import Image

from groupqwen.backends.llamacpp import LlamaCppBackend
from groupqwen.catalog import ModelSpec
from groupqwen.errors import ContextLengthExceeded, InvalidRequest, ModelLoadError
from groupqwen.messages import Chunk, GenerationRequest, ImagePart, Message, PreparedImage, Sampling
from groupqwen.modalities.preprocess import PixelBudget, prepare

pytestmark = pytest.mark.integration

BUDGET = PixelBudget(factor=28, min_pixels=3136, max_pixels=112 * 112, max_image_pixels=10_000_000)


def vlm_spec(model: Path, mmproj: Path | None) -> ModelSpec:
    return ModelSpec(
        id="tiny-qwen2-vl", family="qwen2-vl", parameters="10M", context_length=4096,
        size_bytes=model.stat().st_size, quantization="F16", architecture="qwen2vl", vision=True,
        path=model, mmproj=mmproj,
    )  # fmt: skip


def png(color: tuple[int, int, int], size: tuple[int, int] = (100, 60)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def ask(image: bytes | None, *, max_tokens: int = 3) -> GenerationRequest:
    parts: tuple[str | ImagePart, ...] = ("What is in the picture?",)
    images: tuple[PreparedImage, ...] = ()
    if image is not None:
        parts = (*parts, ImagePart(data_url(image)))
        images = (prepare(image, "messages[0].content[1]", BUDGET),)
    message = Message("user", "What is in the picture?", parts if image is not None else ())
    return GenerationRequest(
        messages=(message,),
        sampling=Sampling(temperature=0.0, max_tokens=max_tokens),
        logprobs=True,
        top_logprobs=5,
        images=images,
    )


async def collect(backend: LlamaCppBackend, request: GenerationRequest) -> list[Chunk]:
    async with aclosing(backend.stream(request)) as chunks:
        return [chunk async for chunk in chunks]


@pytest.fixture(scope="module")
def spec(tiny_vlm_files: tuple[Path, Path]) -> ModelSpec:
    return vlm_spec(*tiny_vlm_files)


@pytest.fixture
async def backend(spec: ModelSpec) -> AsyncIterator[LlamaCppBackend]:
    one = LlamaCppBackend(spec, n_ctx=1024, n_threads=1)
    yield one
    await one.close()


async def test_an_image_reaches_the_model_through_its_projector(backend: LlamaCppBackend) -> None:
    text_only = await collect(backend, ask(None))
    red = await collect(backend, ask(png((255, 0, 0))))
    blue = await collect(backend, ask(png((0, 0, 255))))
    again = await collect(backend, ask(png((255, 0, 0))))
    for chunks in (text_only, red, blue, again):
        assert chunks[-1].usage is not None and chunks[-1].finish_reason in ("stop", "length")
    assert text_only[-1].usage is not None and red[-1].usage is not None
    # 100 × 60 → 112 × 56 pixels (multiples of 28) → 8 × 4 patches of 14, merged 2 × 2: 8 image tokens,
    # with <|vision_start|> and <|vision_end|> around them (the newline before the image merges into the
    # question's last token)
    assert red[-1].usage.prompt_tokens - text_only[-1].usage.prompt_tokens == 8 + 2

    def first(chunks: list[Chunk]) -> list[float]:
        token = next(t for c in chunks for t in c.logprobs)
        return [alt.logprob for alt in token.top]

    assert first(red) != first(blue)  # the pixels changed what the model computes
    assert first(red) == pytest.approx(first(again))  # and the same pixels give the same (no stale state)


async def test_text_after_an_image_prompt_starts_from_a_clean_context(backend: LlamaCppBackend) -> None:
    before = await collect(backend, ask(None))
    await collect(backend, ask(png((0, 255, 0))))
    after = await collect(backend, ask(None))
    assert [t.logprob for c in before for t in c.logprobs] == pytest.approx(
        [t.logprob for c in after for t in c.logprobs]
    )


async def test_an_image_prompt_too_long_for_the_context(spec: ModelSpec) -> None:
    small = LlamaCppBackend(spec, n_ctx=64, n_threads=1)
    try:
        big = png((9, 9, 9), (112, 112))  # 16 image tokens; with max_tokens 40 it no longer fits 64
        with pytest.raises(ContextLengthExceeded, match="maximum context length is 64 tokens"):
            await collect(small, ask(big, max_tokens=40))
    finally:
        await small.close()


async def test_without_a_projector_images_are_refused_with_the_fix(spec: ModelSpec) -> None:
    plain = LlamaCppBackend(vlm_spec(spec.path or Path(), None), n_ctx=256, n_threads=1)
    try:
        with pytest.raises(InvalidRequest, match=r"set models\.tiny-qwen2-vl\.mmproj"):
            await collect(plain, ask(png((1, 2, 3))))
    finally:
        await plain.close()


async def test_a_projector_that_is_not_one_fails_the_load(spec: ModelSpec, tmp_path: Path) -> None:
    fake = tmp_path / "mmproj.gguf"
    fake.write_bytes((spec.path or Path()).read_bytes()[:4096])  # a GGUF header, not a projector
    broken = LlamaCppBackend(vlm_spec(spec.path or Path(), fake), n_ctx=256, n_threads=1)
    try:
        with pytest.raises(ModelLoadError, match="could not load the projector"):
            await broken.load()
    finally:
        await broken.close()
