"""Internal, wire-independent values that flow between the layers. All immutable (``value``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, dataclass_transform

from groupqwen.catalog import ModelSpec

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls"]

_T = TypeVar("_T")


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def value(cls: type[_T]) -> type[_T]:
    """An internal value: a dataclass that mypy holds frozen (assigning a field is an error) and that
    hashes and compares by its fields as a frozen one does. Not frozen at run time: a frozen dataclass's
    ``__init__`` sets each field through ``object.__setattr__``, three times the cost of a plain one, and
    a request makes about fifteen of these (docs/benchmarks.md)."""
    return dataclass(slots=True, unsafe_hash=True)(cls)


@value
class ImagePart:
    """An image in a user message, as OpenAI's ``image_url`` part carries it: an ``http(s)`` URL or a
    ``data:image/…;base64,`` URL (validated by the API), and the client's ``detail`` if it sent one."""

    url: str
    detail: Literal["auto", "low", "high"] | None = None


@value
class PreparedImage:
    """An image decoded and resized for a vision model (``modalities/preprocess.py``): ``rgb`` holds
    ``width`` × ``height`` × 3 bytes of pixels (empty where only the sizes are known: an image a remote
    model receives); ``original_*``: the upright image the client sent, which boxes are mapped back to."""

    rgb: bytes
    width: int
    height: int
    original_width: int
    original_height: int


@value
class Box:
    """A region a vision model pointed at, in pixels of the image sent (``modalities/boxes.py``)."""

    label: str
    x1: float
    y1: float
    x2: float
    y2: float


@value
class ToolCall:
    """A function call the model made: ``arguments`` is JSON text (an object), as OpenAI's wire carries it."""

    id: str
    name: str
    arguments: str

    def as_json(self) -> dict[str, Any]:
        """The call as OpenAI's wire (and Hugging Face chat templates) have it."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@value
class ToolCallDelta:
    """A piece of a streamed tool call, in OpenAI's shape: the first piece of call ``index`` has its ``id``
    and ``name``, the following ones only more ``arguments`` text."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@value
class Tool:
    """A function the model may call; ``parameters`` is its JSON schema (``None``: no parameters)."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    def as_json(self) -> dict[str, Any]:
        """The tool as OpenAI's wire (and Hugging Face chat templates) have it."""
        function: dict[str, Any] = {"name": self.name}
        if self.description is not None:
            function["description"] = self.description
        if self.parameters is not None:
            function["parameters"] = self.parameters
        if self.strict is not None:
            function["strict"] = self.strict
        return {"type": "function", "function": function}


ToolChoice = Literal["auto", "none", "required", "named"]


@value
class Tools:
    """The tools of a request and how the model may use them: ``choice`` ``auto`` (call or answer),
    ``none`` (answer in text), ``required`` (call at least one), ``named`` (call ``name``); ``parallel``:
    several calls in one answer."""

    functions: tuple[Tool, ...]
    choice: ToolChoice = "auto"
    name: str | None = None
    parallel: bool = True

    @property
    def active(self) -> bool:
        """Whether the model may call a tool (every choice but ``none``)."""
        return self.choice != "none"


@value
class Message:
    """One turn. ``content`` is its text; a turn with images also has ``parts``: its text parts (``str``)
    and images in the client's order, and ``content`` is then those text parts joined by newlines. An
    assistant turn may carry the ``tool_calls`` it made; a ``tool`` turn is the result of the call
    ``tool_call_id``."""

    role: Role
    content: str
    parts: tuple[str | ImagePart, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    @property
    def images(self) -> tuple[ImagePart, ...]:
        if not self.parts:  # a turn of text alone (a request's images are asked for a few times a request)
            return ()
        return tuple(p for p in self.parts if isinstance(p, ImagePart))


@value
class ResponseFormat:
    """``json_object`` (any JSON) or ``json_schema`` (``schema`` constrains it); enforced by a grammar."""

    type: Literal["json_object", "json_schema"]
    schema: dict[str, Any] | None = None


DEFAULT_TEMPERATURE = 0.7  # a request that sets none, on a model run in-process (and for the cache's policy)


@value
class Sampling:
    """How to sample; ``temperature`` and ``top_p`` ``None`` where the client set none: the model's default
    (``DEFAULT_TEMPERATURE`` and 1.0 for a model run here; a model's server applies its own)."""

    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    max_tokens: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias in [-100, 100])

    @property
    def local_temperature(self) -> float:
        """The temperature a model run here samples at (and the cache's policy judges by)."""
        return DEFAULT_TEMPERATURE if self.temperature is None else self.temperature

    @property
    def local_top_p(self) -> float:
        return 1.0 if self.top_p is None else self.top_p


@value
class Term:
    """A pair of Qwen-MT's ``terms`` (a term and how to translate it) or ``tm_list`` (a translation memory
    entry: a sentence and its translation)."""

    source: str
    target: str


@value
class TranslationOptions:
    """Qwen-MT's ``translation_options``, validated: ``source`` and ``target`` are languages by their
    English names as Qwen-MT spells them (``source`` may be ``auto``), ``memory`` is ``tm_list``."""

    target: str
    source: str = "auto"
    terms: tuple[Term, ...] = ()
    memory: tuple[Term, ...] = ()
    domains: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The options as Qwen-MT's API takes them."""
        out: dict[str, Any] = {"source_lang": self.source, "target_lang": self.target}
        if self.terms:
            out["terms"] = [{"source": t.source, "target": t.target} for t in self.terms]
        if self.memory:
            out["tm_list"] = [{"source": t.source, "target": t.target} for t in self.memory]
        if self.domains is not None:
            out["domains"] = self.domains
        return out


@value
class TranslationReport:
    """How a translation went (in-process translation only): the language read for ``auto``, the pieces
    of prose translated, retried (a first answer lost a protected span, a term or the layout), translated
    piece by piece around their protected spans, or left as they were (no translation kept the format);
    the ``terms`` that applied to the text, how many of them the translation holds, and how each came to be
    held (``terms_held_by``: the first prompt, the retry, the pinned attempt, the substitution)."""

    source: str | None
    pieces: int
    retried: int
    piecewise: int
    untranslated: int
    terms_expected: int
    terms_held: int
    terms_held_by: tuple[tuple[str, int], ...] = ()


@value
class ChatRequest:
    """One chat completion as the orchestrator sees it (already validated)."""

    messages: tuple[Message, ...]
    model: str
    sampling: Sampling = field(default_factory=Sampling)
    logprobs: bool = False
    top_logprobs: int = 0
    response_format: ResponseFormat | None = None
    user: str | None = None
    enable_thinking: bool | None = None  # None: soft switch in the last user turn, else the model's default
    raw_prompt: bool = False  # a text completion: the one user turn is continued as written, no chat template
    tools: Tools | None = None
    n: int = 1  # choices to generate (the adapter runs the pipeline once per choice)
    prepared: tuple[PreparedImage, ...] = ()  # one per image, once the pipeline prepared them
    prepared_for: tuple[str, ...] = ()  # the models ``prepared`` (and the images' parts) were made for
    translation: TranslationOptions | None = None  # translate the one user turn (Qwen-MT's options)
    stream: bool = True  # False: the client reads the whole answer at once (JSON, not SSE)

    @property
    def images(self) -> tuple[ImagePart, ...]:
        """Every image of the conversation, in order."""
        return tuple(image for m in self.messages for image in m.images)


@value
class GenerationRequest:
    """What a backend is asked to do: a resolved model, a prompt as messages, and how to sample."""

    messages: tuple[Message, ...]
    sampling: Sampling
    logprobs: bool = False  # each token's log-probability (the cascade's confidence, or the client asked)
    top_logprobs: int = 0  # and that many alternatives per token (implies ``logprobs``)
    response_format: ResponseFormat | None = None
    enable_thinking: bool = True
    raw_prompt: bool = False  # continue the last message's text as written (``ChatRequest.raw_prompt``)
    tools: Tools | None = None
    images: tuple[PreparedImage, ...] = ()  # the messages' images, decoded, for a model run in-process
    translation: TranslationOptions | None = None  # for a model that takes Qwen-MT's options itself
    stream: bool = True  # False: the client reads the whole answer at once (a server may send one JSON)


@value
class TopLogprob:
    token: str
    logprob: float
    bytes: tuple[int, ...]


@value
class TokenLogprob:
    """The log-probability of one generated token, with the ``top`` alternatives when asked for."""

    token: str
    logprob: float
    bytes: tuple[int, ...]
    top: tuple[TopLogprob, ...] = ()


@value
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@value
class Chunk:
    """A piece of a backend's output. The last chunk has ``finish_reason`` and ``usage`` set.

    ``prompt_opens_thinking`` on the first chunk says the prompt already opened a ``<think>`` block, so
    the output starts inside reasoning.
    """

    text: str = ""
    logprobs: tuple[TokenLogprob, ...] = ()
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    prompt_opens_thinking: bool = False
    tool_calls: tuple[ToolCallDelta, ...] = ()


@value
class Delta:
    """A piece of the answer as the client sees it: thinking split from content."""

    content: str = ""
    reasoning: str = ""
    logprobs: tuple[TokenLogprob, ...] = ()
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()


@value
class CascadeStep:
    """A model the cascade may answer with; it escalates past it while confidence is below ``bar``."""

    model: str
    bar: float | None  # None: the last step, never escalated
    thinking: bool


@value
class Decision:
    """What the orchestrator decided for a request, reported in headers and telemetry."""

    model: str
    route: str
    reason: str
    thinking: bool
    escalations: int = 0  # tiers the cascade tried and left before this model
    confidence: float | None = None  # the accepted answer's calibrated confidence, when it was scored
    steps: tuple[CascadeStep, ...] = ()  # the cascade's ladder from ``model`` up; () for one model
    abandoned_tokens: int = 0  # generated by the tiers the cascade left (aborted early or escalated)


@value
class Completion:
    content: str
    reasoning: str
    finish_reason: FinishReason
    usage: Usage
    logprobs: tuple[TokenLogprob, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()


@value
class ReplicaState:
    """One server behind a backend (``Backend.replicas``). ``served``: streams finished there;
    ``failures``: attempts that failed there; ``ejected_for``: seconds left of a passive ejection."""

    url: str
    healthy: bool
    outstanding: int
    served: int
    failures: int
    last_error: str | None
    ejected_for: float


ModelStatus = Literal["unloaded", "loading", "loaded", "failed"]


@value
class ModelState:
    """A snapshot of one model in the pool, for ``/v1/models`` and the CLI. ``replicas``: what its
    backend reports of its servers while loaded (``Backend.replicas``); () when unloaded or in-process."""

    spec: ModelSpec
    status: ModelStatus
    error: str | None
    active: int
    queued: int
    last_used: float | None  # wall-clock seconds
    estimated_bytes: int | None
    measured_bytes: int | None
    replicas: tuple[ReplicaState, ...] = ()
