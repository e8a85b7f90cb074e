"""``OpenAIEmbedder`` against a real ``/v1/embeddings`` server on loopback, and ``cache.embedder``'s settings.

The server (``EmbeddingServer``) is a ``ThreadingHTTPServer`` in a thread whose answer each test sets: by
default it embeds the texts with ``HashingEmbedder``, scales every vector so that none is unit length and
lists them in reverse order (the client must sort by ``index`` and normalise); a test swaps ``reply`` for a
server that misbehaves (a wrong width or count, per-token vectors, NaN, an error status, invalid JSON, a
hang, a dropped connection), and ``stop()`` / ``start()`` take it down and back up on the same port.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
from servers import free_port

from groupqwen.cache.embedders import HashingEmbedder, OpenAIEmbedder, openai_http
from groupqwen.cache.semantic import SemanticCache
from groupqwen.config import EmbedderConfig, load_settings
from groupqwen.errors import CacheUnavailable, ConfigError, EmbedderUnavailable
from groupqwen.messages import ChatRequest, Completion, Message, Sampling, Usage

from .helpers import embedded_store, policy

DIM = 16
MODEL = "Qwen/Qwen3-Embedding-0.6B"
HINT = "set cache.embedder.dim to start without the server"


# -- the server ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: Any  # the parsed JSON, or the raw text when it is not JSON

    @property
    def texts(self) -> list[str]:
        texts: list[str] = self.body["input"]
        return texts


@dataclass(frozen=True)
class Reply:
    """What the server answers: ``body`` as it is when bytes, else as JSON (NaN allowed); ``delay_s``
    first (cut short when the server stops); ``drop``: close the connection without answering; ``trickle_s``:
    send the body in ``chunks`` pieces, this long apart (each gap shorter than the client's read timeout)."""

    status: int = 200
    body: object = b""
    content_type: str = "application/json"
    delay_s: float = 0.0
    drop: bool = False
    trickle_s: float = 0.0
    chunks: int = 8


def raw_rows(texts: list[str], dim: int = DIM) -> list[list[float]]:
    """The server's unnormalised vectors: ``HashingEmbedder``'s, the i-th scaled by ``i + 2``."""
    unit = HashingEmbedder(dim).embed(texts)
    return [[float(x) * (i + 2) for x in row] for i, row in enumerate(unit)]


def embeddings(rows: list[Any], *, model: str = MODEL, reverse: bool = True) -> dict[str, object]:
    """An OpenAI ``/v1/embeddings`` answer for ``rows``, listed last row first unless ``reverse`` is off."""
    data = [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)]
    if reverse:
        data.reverse()
    return {"object": "list", "model": model, "data": data, "usage": {"prompt_tokens": 3, "total_tokens": 3}}


def error(status: int, message: str, kind: str = "invalid_request_error") -> Reply:
    return Reply(status, {"error": {"message": message, "type": kind, "param": None, "code": None}})


class EmbeddingServer:
    """An OpenAI-compatible embeddings server on a loopback port, served by a thread.

    ``reply`` maps each request to its ``Reply`` (default: ``embed_well``); ``requests`` records them all.
    ``stop()`` closes the port (a real outage: connections are refused) and ``start()`` reopens it."""

    def __init__(self, dim: int = DIM) -> None:
        self.port = 0  # the first start() picks a free one; later ones reopen it
        self.dim = dim
        self.requests: list[Seen] = []
        self.reply: Callable[[Seen], Reply] = self.embed_well
        self.release = threading.Event()  # ends the delays of hanging answers
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def embed_well(self, seen: Seen) -> Reply:
        return Reply(body=embeddings(raw_rows(seen.texts, self.dim), model=seen.body["model"]))

    def start(self) -> None:
        self.release.clear()
        self._httpd = _HTTPServer(("127.0.0.1", self.port), _Handler)
        self.port = self._httpd.server_address[1]
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01})
        self._thread.daemon = True
        self._thread.start()

    def stop(self) -> None:
        self.release.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


class _HTTPServer(ThreadingHTTPServer):
    owner: EmbeddingServer
    request_queue_size = 64  # the default backlog (5) drops concurrent connects: a 1 s SYN retry each


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        headers = {name.lower(): value for name, value in self.headers.items()}
        seen = Seen(self.command, self.path, headers, body)
        owner = self.server.owner
        owner.requests.append(seen)
        reply = owner.reply(seen)
        if reply.delay_s:
            owner.release.wait(reply.delay_s)
        if reply.drop:
            self.close_connection = True
            return
        data = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        with contextlib.suppress(OSError):  # the client may have given up (a hang)
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if not reply.trickle_s:
                self.wfile.write(data)
                return
            size = -(-len(data) // reply.chunks)
            for start in range(0, len(data), size):
                self.wfile.write(data[start : start + size])
                self.wfile.flush()
                if owner.release.wait(reply.trickle_s):
                    return

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[EmbeddingServer]:
    running = EmbeddingServer()
    running.start()
    yield running
    running.stop()


@pytest.fixture
def closed_url() -> str:
    """A loopback URL where nothing listens."""
    return f"http://127.0.0.1:{free_port()}/v1"


@contextlib.contextmanager
def client(url: str, **kw: Any) -> Iterator[OpenAIEmbedder]:
    embedder = OpenAIEmbedder(url, MODEL, **{"timeout_s": 2.0, **kw})
    try:
        yield embedder
    finally:
        embedder.close()


def unavailable(embedder: OpenAIEmbedder, texts: list[str]) -> EmbedderUnavailable:
    """The ``EmbedderUnavailable`` that embedding ``texts`` raises (no more, no less specific)."""
    with pytest.raises(EmbedderUnavailable) as info:
        embedder.embed(texts)
    assert info.value.code == "embedder_unavailable"
    assert embedder.url in info.value.message
    return info.value


# -- a well-behaved server -------------------------------------------------------------------------------


@pytest.mark.parametrize("base", ["{url}", "{url}/"], ids=["plain", "trailing-slash"])
def test_the_width_is_probed_once_at_start(server: EmbeddingServer, base: str) -> None:
    with client(base.format(url=server.url)) as embedder:
        assert embedder.dim == DIM
        assert embedder.name == MODEL
        assert embedder.url == f"{server.url}/embeddings"
        [probe] = server.requests
        assert (probe.method, probe.path) == ("POST", "/v1/embeddings")
        assert probe.body["model"] == MODEL and len(probe.texts) == 1
        embedder.embed(["hello"])
        assert len(server.requests) == 2  # the width is asked once, not per call


def test_vectors_are_normalised_and_in_input_order(server: EmbeddingServer) -> None:
    texts = ["How do I boil an egg?", "What is the capital of France?", "Explain Python decorators"]
    with client(server.url, dim=DIM) as embedder:
        got = embedder.embed(texts)
    assert got.dtype == np.float32 and got.shape == (3, DIM)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-6)
    # the server sent row i scaled by i + 2, last row first: sorted by index and normalised, they are
    # HashingEmbedder's rows again, each at its text's position
    np.testing.assert_allclose(got, HashingEmbedder(DIM).embed(texts), atol=1e-6)
    [request] = server.requests
    assert request.body == {"model": MODEL, "input": texts, "encoding_format": "float"}
    assert request.headers["content-type"] == "application/json"


def test_the_rows_are_ordered_by_index_not_by_position(server: EmbeddingServer) -> None:
    """Explicit rows, listed in a scrambled order: row k of the result is the item whose index is k."""
    rows = [[1.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0], [0.0, 0.0, 0.0, 4.0]]
    order = [2, 0, 3, 1]
    data = [{"object": "embedding", "index": i, "embedding": rows[i]} for i in order]
    server.reply = lambda seen: Reply(body={"object": "list", "data": data})
    with client(server.url, dim=4) as embedder:
        got = embedder.embed(["a", "b", "c", "d"])
    np.testing.assert_array_equal(got, np.eye(4, dtype=np.float32))


@pytest.mark.parametrize("api_key", [None, "", "sk-test-123"], ids=["none", "empty", "given"])
def test_the_api_key_is_sent_as_a_bearer_token(server: EmbeddingServer, api_key: str | None) -> None:
    with client(server.url, api_key=api_key) as embedder:
        embedder.embed(["hello"])
    assert len(server.requests) == 2  # the probe and the call: both authenticated alike
    for seen in server.requests:
        if api_key:
            assert seen.headers["authorization"] == f"Bearer {api_key}"
        else:
            assert "authorization" not in seen.headers


def test_a_configured_width_needs_no_request_and_no_server(server: EmbeddingServer, closed_url: str) -> None:
    with client(server.url, dim=DIM) as embedder:
        assert embedder.dim == DIM
        assert server.requests == []
        empty = embedder.embed([])
        assert empty.shape == (0, DIM) and empty.dtype == np.float32
        assert server.requests == []  # nothing to embed: no request
    with client(closed_url, dim=DIM) as embedder:  # the server is down: it starts all the same
        assert (embedder.dim, embedder.name) == (DIM, MODEL)
        assert embedder.embed([]).shape == (0, DIM)
        assert "ConnectError" in unavailable(embedder, ["hello"]).message


def test_a_zero_vector_stays_zero_instead_of_dividing_by_zero(server: EmbeddingServer) -> None:
    server.reply = lambda seen: Reply(body=embeddings([[0.0] * DIM, [3.0, 4.0] + [0.0] * (DIM - 2)]))
    with client(server.url, dim=DIM) as embedder:
        got = embedder.embed(["", "x"])
    assert np.isfinite(got).all()
    np.testing.assert_array_equal(got[0], np.zeros(DIM, dtype=np.float32))
    np.testing.assert_allclose(got[1, :2], [0.6, 0.8], rtol=1e-6)


def test_concurrent_calls_each_get_their_own_vectors(server: EmbeddingServer) -> None:
    """Blocking and thread-safe: the cache calls it from worker threads."""
    expected = HashingEmbedder(DIM)
    failures: list[str] = []
    with client(server.url, dim=DIM) as embedder:

        def work(worker: int) -> None:
            for call in range(5):
                texts = [f"worker {worker} call {call} text {j}" for j in range(worker % 3 + 1)]
                if not np.allclose(embedder.embed(texts), expected.embed(texts), atol=1e-6):
                    failures.append(f"{worker}/{call}")

        threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    assert failures == []
    assert len(server.requests) == 40


def test_it_works_again_once_the_server_recovers(server: EmbeddingServer) -> None:
    with client(server.url, dim=DIM) as embedder:
        server.reply = lambda seen: error(503, "warming up", "server_error")
        assert "warming up" in unavailable(embedder, ["hello"]).message
        server.reply = server.embed_well
        np.testing.assert_allclose(
            embedder.embed(["hello"]), HashingEmbedder(DIM).embed(["hello"]), atol=1e-6
        )
        server.stop()
        assert "ConnectError" in unavailable(embedder, ["hello"]).message
        server.start()
        np.testing.assert_allclose(
            embedder.embed(["hello"]), HashingEmbedder(DIM).embed(["hello"]), atol=1e-6
        )


# -- a server that misbehaves ----------------------------------------------------------------------------


def _rows(n: int, width: int = DIM) -> list[list[float]]:
    return [[float(i + 1)] * width for i in range(n)]


MISBEHAVIOURS: dict[str, tuple[Callable[[Seen], Reply], list[str]]] = {
    "too-wide": (lambda s: Reply(body=embeddings(_rows(2, DIM + 4))), [f"{DIM + 4}-wide", f"expected {DIM}"]),
    "too-narrow": (lambda s: Reply(body=embeddings(_rows(2, 3))), ["3-wide", f"expected {DIM}"]),
    "too-few": (lambda s: Reply(body=embeddings(_rows(1))), ["indices [0]", "not one per text"]),
    "too-many": (lambda s: Reply(body=embeddings(_rows(3))), ["indices [0, 1, 2]", "not one per text"]),
    "no-rows": (lambda s: Reply(body=embeddings([])), ["indices []", "not one per text"]),
    "empty-vectors": (lambda s: Reply(body=embeddings([[], []])), ["not lists of numbers"]),
    "per-token": (
        lambda s: Reply(body=embeddings([[[0.1] * DIM] * 5, [[0.2] * DIM] * 5])),
        ["one vector per token", "--pooling"],
    ),
    "nan": (
        lambda s: Reply(body=embeddings([[float("nan")] * DIM, [1.0] * DIM])),
        ["not finite"],
    ),
    "infinity": (
        lambda s: Reply(body=embeddings([[1.0] * DIM, [float("inf")] + [1.0] * (DIM - 1)])),
        ["not finite"],
    ),
    "openai-error-500": (
        lambda s: error(500, "CUDA out of memory while embedding", "server_error"),
        ["answered 500", "CUDA out of memory while embedding"],
    ),
    "openai-error-400": (
        lambda s: error(400, "input is too long: 9000 tokens, max 8192"),
        ["answered 400", "input is too long: 9000 tokens, max 8192"],
    ),
    "string-error-413": (
        lambda s: Reply(
            413, {"error": "Input validation error: batch too large", "error_type": "Validation"}
        ),
        ["answered 413", "Input validation error: batch too large"],
    ),
    "text-error-401": (
        lambda s: Reply(401, b"Unauthorized: invalid token", "text/plain"),
        ["answered 401", "Unauthorized: invalid token"],
    ),
    "html-error-502": (
        lambda s: Reply(502, b"<html><body>Bad Gateway from the proxy</body></html>", "text/html"),
        ["answered 502", "Bad Gateway from the proxy"],
    ),
    "empty-503": (lambda s: Reply(503, b""), ["answered 503", "Service Unavailable"]),
    "redirect": (lambda s: Reply(307, b"moved"), ["answered 307"]),
    "invalid-json": (lambda s: Reply(body=b'{"data": [{"index": 0, "embedding": [1.0,'), ["malformed"]),
    "json-list": (lambda s: Reply(body=[[1.0] * DIM, [2.0] * DIM]), ["malformed"]),
    "no-data": (lambda s: Reply(body={"object": "list", "model": MODEL}), ["malformed", "KeyError"]),
    "no-index": (
        lambda s: Reply(body={"data": [{"embedding": [1.0] * DIM}, {"embedding": [2.0] * DIM}]}),
        ["malformed", "KeyError"],
    ),
    "bad-index": (
        lambda s: Reply(body={"data": [{"index": "first", "embedding": [1.0] * DIM}] * 2}),
        ["malformed"],
    ),
    "ragged": (lambda s: Reply(body=embeddings([[1.0] * DIM, [1.0] * (DIM - 1)])), ["different widths"]),
    "non-numeric": (lambda s: Reply(body=embeddings([["x"] * DIM, ["y"] * DIM])), ["not lists of numbers"]),
    "null-vector": (lambda s: Reply(body=embeddings([None, None])), ["not lists of numbers"]),
    "dropped": (lambda s: Reply(drop=True), ["RemoteProtocolError"]),
    "infinite-index": (
        lambda s: Reply(body={"data": [{"index": float("inf"), "embedding": [1.0] * DIM}] * 2}),
        ["malformed", "OverflowError"],
    ),
    "huge-integer": (
        lambda s: Reply(body=embeddings([[10**400] * DIM, [1] * DIM])),
        ["malformed", "OverflowError"],
    ),
    "deeply-nested": (
        lambda s: Reply(body=b'{"data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        ["malformed"],
    ),
}


@pytest.mark.parametrize(
    ("case", "says"), [(k, v[1]) for k, v in MISBEHAVIOURS.items()], ids=list(MISBEHAVIOURS)
)
def test_a_misbehaving_server_makes_the_embedder_unavailable(
    server: EmbeddingServer, case: str, says: list[str]
) -> None:
    server.reply = MISBEHAVIOURS[case][0]
    with client(server.url, dim=DIM) as embedder:
        failure = unavailable(embedder, ["first text", "second text"])
    for words in says:
        assert words in failure.message, failure.message
    assert isinstance(failure, CacheUnavailable)
    assert len(server.requests) == 1  # one request per call, no retries


@pytest.mark.parametrize("indices", [[0, 0], [0, 1, 1]], ids=["two-zeros", "three-no-two"])
def test_indices_that_are_not_one_per_text_are_refused(server: EmbeddingServer, indices: list[int]) -> None:
    rows = _rows(len(indices))
    data = [
        {"object": "embedding", "index": i, "embedding": row} for i, row in zip(indices, rows, strict=True)
    ]
    server.reply = lambda seen: Reply(body={"object": "list", "data": data})
    with client(server.url, dim=DIM) as embedder:
        unavailable(embedder, [f"text {i}" for i in range(len(indices))])


def test_an_answer_over_the_size_bound_is_refused(
    server: EmbeddingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(openai_http, "MAX_ANSWER_BYTES", 200)
    with client(server.url, dim=DIM) as embedder:
        failure = unavailable(embedder, ["first text", "second text"])
    assert "sent more than 200 bytes" in failure.message


def test_the_error_message_of_a_long_body_is_kept_short(server: EmbeddingServer) -> None:
    server.reply = lambda seen: error(500, "x" * 5000)
    with client(server.url, dim=DIM) as embedder:
        failure = unavailable(embedder, ["hello"])
    assert "x" * 300 in failure.message and "x" * 301 not in failure.message


def test_a_server_that_hangs_times_out(server: EmbeddingServer) -> None:
    server.reply = lambda seen: Reply(body=embeddings(_rows(1)), delay_s=30)
    with client(server.url, dim=DIM, timeout_s=0.2) as embedder:
        started = time.monotonic()
        failure = unavailable(embedder, ["hello"])
        elapsed = time.monotonic() - started
    assert "ReadTimeout" in failure.message
    assert elapsed < 5, "the call did not honour its timeout"


def test_a_server_that_trickles_its_answer_is_cut_off_at_the_timeout(server: EmbeddingServer) -> None:
    """A thousand chunks 0.1 s apart: every read is well within 0.25 s, but the whole answer would take
    100 s; only the call's overall timeout ends it (without one the answer would arrive and parse)."""
    server.reply = lambda seen: Reply(body=embeddings(raw_rows(seen.texts)), trickle_s=0.1, chunks=1000)
    with client(server.url, dim=DIM, timeout_s=0.25) as embedder, pytest.raises(EmbedderUnavailable):
        embedder.embed(["hello"])


def test_nothing_listening_makes_the_embedder_unavailable(closed_url: str) -> None:
    with client(closed_url, dim=DIM) as embedder:
        failure = unavailable(embedder, ["hello"])
    assert "ConnectError" in failure.message


def test_embedder_unavailable_is_a_cache_outage() -> None:
    failure = EmbedderUnavailable("down")
    assert isinstance(failure, CacheUnavailable)
    assert (failure.status_code, failure.error_type, failure.code) == (
        503,
        "server_error",
        "embedder_unavailable",
    )


# -- the probe at construction ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "says"),
    [
        (
            lambda s: error(404, f"model '{s.body['model']}' not found"),
            ["answered 404", f"model '{MODEL}' not found"],
        ),
        (lambda s: Reply(body=embeddings([[[0.5] * DIM] * 3])), ["--pooling"]),
        (lambda s: Reply(body=b"<html>a login page</html>", content_type="text/html"), ["malformed"]),
        (lambda s: Reply(body=embeddings([[float("nan")] * DIM])), ["not finite"]),
    ],
    ids=["model-not-found", "per-token", "not-json", "nan"],
)
def test_a_probe_that_fails_is_a_config_error(
    server: EmbeddingServer, reply: Callable[[Seen], Reply], says: list[str]
) -> None:
    server.reply = reply
    with pytest.raises(ConfigError) as info:
        OpenAIEmbedder(server.url, MODEL, timeout_s=2.0)
    [(name, message)] = info.value.errors
    assert name == "cache.embedder"
    assert HINT in message and server.url in message
    for words in says:
        assert words in message, message
    assert info.value.message == f"cache.embedder: {message}"
    assert isinstance(info.value.__cause__, EmbedderUnavailable)
    assert len(server.requests) == 1


def test_a_probe_of_a_server_that_is_down_is_a_config_error(closed_url: str) -> None:
    with pytest.raises(ConfigError) as info:
        OpenAIEmbedder(closed_url, MODEL, timeout_s=2.0)
    [(name, message)] = info.value.errors
    assert name == "cache.embedder"
    assert "ConnectError" in message and closed_url in message and HINT in message


def test_a_probe_that_hangs_is_a_config_error_within_the_timeout(server: EmbeddingServer) -> None:
    server.reply = lambda seen: Reply(body=embeddings(_rows(1)), delay_s=30)
    started = time.monotonic()
    with pytest.raises(ConfigError) as info:
        OpenAIEmbedder(server.url, MODEL, timeout_s=0.1, probe_timeout_s=0.3)
    assert 0.3 <= time.monotonic() - started < 5  # the probe's own, longer timeout
    assert "ReadTimeout" in info.value.message and HINT in info.value.message


def test_the_probe_waits_for_a_server_loading_its_model(server: EmbeddingServer) -> None:
    """A first request slower than the lookup timeout (Ollama loading the model) still starts the
    gateway; later calls have the short timeout."""
    slow = server.embed_well
    server.reply = lambda seen: replace(slow(seen), delay_s=0.4)
    with client(server.url, timeout_s=0.1, probe_timeout_s=5.0) as embedder:
        assert embedder.dim == DIM and len(server.requests) == 1
        failure = unavailable(embedder, ["hello"])
        assert "ReadTimeout" in failure.message


# -- behind the semantic cache ---------------------------------------------------------------------------


def ask(text: str) -> ChatRequest:
    return ChatRequest(messages=(Message("user", text),), model="m", sampling=Sampling(temperature=0.0))


async def test_a_failing_remote_embedder_makes_the_cache_bypass_until_it_recovers(
    server: EmbeddingServer,
) -> None:
    embedder = OpenAIEmbedder(server.url, MODEL, timeout_s=2.0)
    cache = SemanticCache(embedded_store(embedder.dim), embedder, policy(timeout_s=5.0))
    try:
        question = ask("What is the capital of France?")
        paraphrase = ask("what is the capital of France, please?")  # another exact key, nearly the same words
        first = await cache.lookup(question, "t", "m")
        assert first.status == "miss"
        task = cache.store(first, "m", Completion("Paris", "", "stop", Usage(5, 1)), None)
        assert task is not None
        await task
        assert (await cache.stats()).stores == 1

        hit = await cache.lookup(paraphrase, "t", "m")
        assert (hit.status, hit.reason) == ("hit", "semantic match")
        assert hit.completion().content == "Paris"
        assert await cache.probe() == ("ok", None)

        server.stop()  # the embeddings server goes down
        exact = await cache.lookup(question, "t", "m")  # the exact layer needs no embedding
        assert (exact.status, exact.reason) == ("hit", "exact match")
        requests = len(server.requests)
        bypass = await cache.lookup(paraphrase, "t", "m")  # the semantic layer does: a bypass, not a crash
        assert (bypass.status, bypass.reason) == ("bypass", "the cache embedder is unavailable"), bypass
        assert (
            bypass.key is None
            and cache.store(bypass, "m", Completion("x", "", "stop", Usage(1, 1)), None) is None
        )
        assert len(server.requests) == requests
        status, why = await cache.probe()
        assert status == "degraded" and why is not None and why.startswith("the embedder fails (")
        assert "ConnectError" in why and server.url in why
        assert cache.health() == "degraded"
        stats = await cache.stats()
        assert stats.status == "degraded" and stats.bypasses == 1 and stats.errors == 1
        assert stats.bypass_reasons["embedder"] == 1

        server.start()  # it is back, on the same port
        again = await cache.lookup(paraphrase, "t", "m")
        assert (again.status, again.reason) == ("hit", "semantic match")
        assert await cache.probe() == ("ok", None)
        assert cache.health() == "ok"
    finally:
        await cache.close()
        embedder.close()


async def test_a_remote_embedder_that_answers_an_error_status_makes_the_cache_bypass(
    server: EmbeddingServer,
) -> None:
    """A server that is up but answers 500 (or the wrong width) is an outage too."""
    embedder = OpenAIEmbedder(server.url, MODEL, timeout_s=2.0)
    cache = SemanticCache(embedded_store(embedder.dim), embedder, policy(timeout_s=5.0))
    try:
        first = await cache.lookup(ask("How do I boil an egg?"), "t", "m")
        task = cache.store(first, "m", Completion("Ten minutes.", "", "stop", Usage(5, 3)), None)
        assert task is not None
        await task
        for reply in (
            lambda s: error(500, "CUDA out of memory", "server_error"),
            lambda s: Reply(body=embeddings(raw_rows(s.texts, DIM + 1))),
        ):
            server.reply = reply
            lookup = await cache.lookup(ask("how do I boil an egg, please?"), "t", "m")
            assert lookup.status == "bypass"
            assert (await cache.probe())[0] == "degraded"
        server.reply = server.embed_well
        assert (await cache.lookup(ask("how do I boil an egg, please?"), "t", "m")).status == "hit"
        assert await cache.probe() == ("ok", None)
    finally:
        await cache.close()
        embedder.close()


async def test_an_embedder_slower_than_the_lookup_shows_in_the_health(server: EmbeddingServer) -> None:
    """As configured by default: the embedder's timeout is the lookup's, so the lookup's own timeout cuts
    a slow embedding short. The request is answered without the cache, and the health names the embedder
    until an embedding succeeds again."""
    quick = policy(timeout_s=0.3)
    embedder = OpenAIEmbedder(server.url, MODEL, timeout_s=quick.timeout_s)
    cache = SemanticCache(embedded_store(embedder.dim), embedder, quick)
    try:
        first = await cache.lookup(ask("How do I boil an egg?"), "t", "m")
        task = cache.store(first, "m", Completion("Ten minutes.", "", "stop", Usage(5, 3)), None)
        assert task is not None
        await task
        well = server.reply
        server.reply = lambda seen: replace(well(seen), delay_s=3)
        slow = await cache.lookup(ask("how do I boil an egg, please?"), "t", "m")
        assert (slow.status, slow.reason, slow.bypass) == (
            "bypass",
            "the cache took more than 0.3 s",
            "timeout",
        )
        assert await cache.probe() == (
            "degraded",
            "the embedder fails (no embedding within 0.3 s); requests bypass the cache",
        )
        server.reply = well
        again = await cache.lookup(ask("how do I boil an egg, please?"), "t", "m")
        assert (again.status, again.reason) == ("hit", "semantic match")
        assert await cache.probe() == ("ok", None)
    finally:
        await cache.close()
        embedder.close()


# -- cache.embedder in the settings ----------------------------------------------------------------------


def _errors(**embedder: object) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        load_settings(None, cache={"embedder": embedder})
    return info.value.errors


def test_the_default_embedder_is_the_bundled_minilm() -> None:
    config = load_settings(None).cache.embedder
    assert isinstance(config, EmbedderConfig)
    assert (config.kind, config.url, config.model, config.api_key, config.dim) == (
        "minilm",
        None,
        None,
        None,
        None,
    )


def test_a_valid_openai_embedder_parses() -> None:
    config = load_settings(
        None,
        cache={
            "embedder": {
                "kind": "openai",
                "url": "https://gpu.example:8000/v1",
                "model": MODEL,
                "api_key": "sk-1",
                "dim": 1024,
            }
        },
    ).cache.embedder
    assert (config.kind, config.url, config.model, config.api_key, config.dim) == (
        "openai",
        "https://gpu.example:8000/v1",
        MODEL,
        "sk-1",
        1024,
    )
    minimal = load_settings(
        None, cache={"embedder": {"kind": "openai", "url": "http://127.0.0.1:8080/v1", "model": "m"}}
    ).cache.embedder
    assert minimal.dim is None and minimal.api_key is None


def test_an_openai_embedder_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROUPQWEN_CACHE__EMBEDDER__KIND", "openai")
    monkeypatch.setenv("GROUPQWEN_CACHE__EMBEDDER__URL", "http://embed.internal:8000/v1")
    monkeypatch.setenv("GROUPQWEN_CACHE__EMBEDDER__MODEL", MODEL)
    monkeypatch.setenv("GROUPQWEN_CACHE__EMBEDDER__DIM", "1024")
    config = load_settings(None).cache.embedder
    assert (config.kind, config.url, config.model, config.dim) == (
        "openai",
        "http://embed.internal:8000/v1",
        MODEL,
        1024,
    )


@pytest.mark.parametrize(
    ("embedder", "field", "says"),
    [
        ({"kind": "openai"}, "cache.embedder", "needs 'url' and 'model'"),
        ({"kind": "openai", "model": MODEL}, "cache.embedder", "needs 'url'"),
        ({"kind": "openai", "url": "http://h/v1"}, "cache.embedder", "needs 'model'"),
        ({"kind": "openai", "url": "http://h/v1", "model": ""}, "cache.embedder", "needs 'model'"),
        ({"kind": "minilm", "url": "http://h/v1"}, "cache.embedder", "'url': only for kind 'openai'"),
        ({"model": MODEL}, "cache.embedder", "'model': only for kind 'openai'"),
        ({"kind": "minilm", "api_key": "k", "dim": 8}, "cache.embedder", "'api_key', 'dim': only for kind"),
        ({"kind": "openai", "url": "ftp://h/v1", "model": "m"}, "cache.embedder.url", "not an http(s) URL"),
        ({"kind": "openai", "url": "127.0.0.1:8000/v1", "model": "m"}, "cache.embedder.url", "http(s)"),
        ({"kind": "openai", "url": "", "model": "m"}, "cache.embedder.url", "http(s)"),
        ({"kind": "openai", "url": "http:///v1", "model": "m"}, "cache.embedder.url", "with a host"),
        (
            {"kind": "openai", "url": "http://h/v1", "model": "m", "api_key": "clé"},
            "cache.embedder.api_key",
            "printable ASCII",
        ),
        (
            {"kind": "openai", "url": "http://h/v1", "model": "m", "api_key": "k\nX-Injected: 1"},
            "cache.embedder.api_key",
            "printable ASCII",
        ),
        ({"kind": "openai", "url": "http://h/v1", "model": "m", "dim": 0}, "cache.embedder.dim", "1"),
        ({"kind": "openai", "url": "http://h/v1", "model": "m", "dim": -3}, "cache.embedder.dim", "1"),
        (
            {"kind": "openai", "url": "http://h/v1", "model": "m", "dim": 65_537},
            "cache.embedder.dim",
            "65536",
        ),
        (
            {"kind": "openai", "url": "http://h/v1", "model": "m", "dim": "wide"},
            "cache.embedder.dim",
            "integer",
        ),
        ({"kind": "bert"}, "cache.embedder.kind", "'minilm' or 'openai'"),
        (
            {"kind": "openai", "url": "http://h/v1", "model": "m", "token": "k"},
            "cache.embedder.token",
            "Extra",
        ),
    ],
    ids=[
        "openai-no-url-no-model",
        "openai-no-url",
        "openai-no-model",
        "openai-empty-model",
        "minilm-with-url",
        "default-kind-with-model",
        "minilm-with-key-and-dim",
        "ftp-url",
        "schemeless-url",
        "empty-url",
        "url-without-host",
        "non-ascii-key",
        "key-with-newline",
        "dim-zero",
        "dim-negative",
        "dim-too-wide",
        "dim-not-a-number",
        "unknown-kind",
        "unknown-field",
    ],
)
def test_a_bad_embedder_setting_names_its_field(embedder: dict[str, object], field: str, says: str) -> None:
    errors = _errors(**embedder)
    assert [name for name, _ in errors] == [field], errors
    assert says in errors[0][1], errors


@pytest.mark.parametrize("dim", [1, 384, 65_536])
def test_dim_bounds_are_inclusive(dim: int) -> None:
    config = load_settings(
        None, cache={"embedder": {"kind": "openai", "url": "http://h/v1", "model": "m", "dim": dim}}
    ).cache.embedder
    assert config.dim == dim


def test_the_settings_build_a_working_embedder(server: EmbeddingServer) -> None:
    """What the settings say is what ``OpenAIEmbedder`` takes: from config to vectors over HTTP."""
    config = load_settings(
        None, cache={"embedder": {"kind": "openai", "url": server.url, "model": MODEL, "api_key": "sk-9"}}
    ).cache.embedder
    assert config.url is not None and config.model is not None
    embedder = OpenAIEmbedder(config.url, config.model, api_key=config.api_key, dim=config.dim, timeout_s=2.0)
    try:
        assert embedder.dim == DIM
        np.testing.assert_allclose(
            embedder.embed(["hi there"]), HashingEmbedder(DIM).embed(["hi there"]), atol=1e-6
        )
    finally:
        embedder.close()
    assert {seen.headers["authorization"] for seen in server.requests} == {"Bearer sk-9"}
