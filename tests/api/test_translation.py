"""``translation_options`` (Qwen-MT's) on chat completions and the Responses API: validation, routing to
``auto:translate``, the options compiled into a local model's prompts with the format kept, and passed
through to a model that takes them itself (a Qwen-MT endpoint; here a loopback server that records what
it is sent)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from groupqwen.backends.fake import FakeBackend
from groupqwen.cache.keys import cache_key
from groupqwen.messages import ChatRequest, Message, TranslationOptions
from groupqwen.modalities.segments import structure
from groupqwen.testing import fake_services, fake_settings, gateway

DOCUMENT = (
    "# Install the model\n\n"
    "Run `make test` to check it, then read https://example.com/docs about {name}.\n\n"
    "- The cache keeps answers.\n- Mail ops@example.com when it fails.\n\n"
    "| Setting | Meaning |\n|---|---|\n| `n_ctx` | The context window |\n\n"
    "```python\nprint('hello')\n```\n"
)


def _options(**extra: Any) -> dict[str, Any]:
    return {"source_lang": "English", "target_lang": "French", **extra}


def _ask(http: Any, content: str = "Hello there, my friend.", **body: Any) -> Any:
    body.setdefault("model", "auto")
    body.setdefault("translation_options", _options())
    messages = [{"role": "user", "content": content}]
    return http.post("/v1/chat/completions", json={"messages": messages, **body})


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Any, FakeBackend]]:
    backend = FakeBackend("translator", tokens=("Bonjour", " le", " monde"))
    settings = fake_settings(
        tmp_path, ("fake", "translator"), router={"routes": {"auto:translate": "translator"}}
    )
    with gateway(fake_services(settings, {"fake": FakeBackend(), "translator": backend})) as http:
        yield http, backend


@pytest.mark.parametrize(
    ("options", "param", "says"),
    [
        ({"target_lang": "Klingon"}, "translation_options.target_lang", "Klingon"),
        ({"source_lang": "Elvish", "target_lang": "fr"}, "translation_options.source_lang", "'auto'"),
        ({"source_lang": "fr", "target_lang": "French"}, "translation_options.target_lang", "both French"),
        ({"source_lang": "auto"}, "translation_options.target_lang", "Field required"),
        (_options(terms=[{"source": "cache"}]), "translation_options.terms[0].target", "Field required"),
        (_options(tm_list="nope"), "translation_options.tm_list", "list"),
        (_options(domain="IT"), "translation_options.domain", "Extra inputs"),
        ("French", "translation_options", "dictionary"),
    ],
)
def test_bad_options_are_400s_naming_the_field(
    served: tuple[Any, FakeBackend], options: Any, param: str, says: str
) -> None:
    http, backend = served
    response = _ask(http, translation_options=options)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and says in error["message"]
    if "Klingon" in says:
        assert "Western Persian (fa)" in error["message"]  # the supported languages are listed
    assert backend.requests == []


def test_what_a_translation_may_not_carry(served: tuple[Any, FakeBackend]) -> None:
    http, _ = served
    two = [{"role": "system", "content": "Be nice."}, {"role": "user", "content": "Hello"}]
    response = http.post(
        "/v1/chat/completions", json={"model": "auto", "messages": two, "translation_options": _options()}
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "messages"
    response = _ask(http, logprobs=True)
    assert response.status_code == 400 and response.json()["error"]["param"] == "logprobs"
    response = _ask(http, model="auto:translate", translation_options=None)
    assert response.status_code == 400 and response.json()["error"]["param"] == "translation_options"


def test_auto_with_options_takes_the_translate_route_and_keeps_the_format(
    served: tuple[Any, FakeBackend],
) -> None:
    """The fake model answers "Bonjour le monde" to everything: pieces with protected spans lose them,
    are retried, then translated between their spans; the structure comes back identical."""
    http, backend = served
    response = _ask(http, DOCUMENT, translation_options=_options(source_lang="auto"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["x-groupqwen-route"] == "auto:translate"
    assert body["model"] == "translator"
    content = body["choices"][0]["message"]["content"]
    assert structure(content) == structure(DOCUMENT)
    for kept in ("`make test`", "https://example.com/docs", "{name}", "ops@example.com", "print('hello')"):
        assert kept in content
    assert content.startswith("# Bonjour le monde\n\n")
    report = body["groupqwen"]["translation"]
    assert report["source_lang"] == "English"
    assert report["pieces"] == 7 and report["piecewise"] == 2 and report["untranslated"] == 0
    assert report["retried"] == 2
    system = backend.requests[0].messages[0]
    assert system.role == "system" and "from English into French" in system.content
    assert body["usage"]["completion_tokens"] == 3 * len(backend.requests)


def test_the_stream_gives_the_pieces_in_order(served: tuple[Any, FakeBackend]) -> None:
    http, _ = served
    with http.stream(
        "POST",
        "/v1/chat/completions",
        json={
            "model": "auto",
            "stream": True,
            "messages": [{"role": "user", "content": DOCUMENT}],
            "translation_options": _options(),
        },
    ) as response:
        frames = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    pieces = [f["choices"][0]["delta"].get("content", "") for f in frames if f["choices"]]
    assert len([p for p in pieces if p]) >= 7
    streamed = "".join(pieces)
    assert structure(streamed) == structure(DOCUMENT)
    assert frames[-1]["groupqwen"]["translation"]["pieces"] == 7


def test_terms_memory_and_domains_are_compiled_into_the_prompt(served: tuple[Any, FakeBackend]) -> None:
    http, backend = served
    options = _options(
        terms=[{"source": "world", "target": "univers"}, {"source": "unused", "target": "inutile"}],
        tm_list=[
            {"source": "Hello, world.", "target": "Bonjour, univers."},
            {"source": "Nothing alike", "target": "Rien de pareil"},
        ],
        domains="Software documentation, formal tone.",
    )
    response = _ask(http, "Hello world, how are you?\n\nHello, world.\n", translation_options=options)
    body = response.json()
    assert body["choices"][0]["message"]["content"] == "Bonjour le monde\n\nBonjour, univers.\n"
    # a first answer without the term, one retry, one with the term pinned in the text; the memory's exact
    # match needs no generation
    assert len(backend.requests) == 3
    messages = backend.requests[0].messages
    system = messages[0].content
    assert "Domain and style: Software documentation, formal tone." in system
    assert "- world → univers" in system and "unused" not in system
    assert [(m.role, m.content) for m in messages[1:]] == [
        ("user", "Hello, world."),
        ("assistant", "Bonjour, univers."),
        ("user", "Hello world, how are you?"),
    ]
    retry = backend.requests[1].messages[0].content
    assert "rejected: these terms must be translated as given: world → univers" in retry
    pinned = backend.requests[2].messages
    assert "already written in the target language in the text: keep them as they are: univers" in (
        pinned[0].content
    )
    assert pinned[-1].content == "Hello univers, how are you?"
    report = body["groupqwen"]["translation"]
    assert (report["terms_expected"], report["terms_held"], report["terms_hit_rate"]) == (1, 0, 0.0)
    assert report["terms_held_by"] == {"prompt": 0, "retry": 0, "pinned": 0, "substituted": 0}


def test_a_term_left_untranslated_is_replaced_by_its_target(tmp_path: Path) -> None:
    backend = FakeBackend("translator", tokens=("Le", " cache", " est", " plein"))
    settings = fake_settings(tmp_path, ("translator",))
    with gateway(fake_services(settings, backend)) as http:
        options = _options(terms=[{"source": "cache", "target": "antémémoire"}])
        body = _ask(http, "The cache is full.", model="translator", translation_options=options).json()
    assert body["choices"][0]["message"]["content"] == "Le antémémoire est plein"
    assert body["groupqwen"]["translation"]["terms_hit_rate"] == 1.0
    assert len(backend.requests) == 1


def test_the_cache_keeps_translations_apart() -> None:
    def key(target: str | None) -> str:
        options = TranslationOptions(target) if target else None
        request = ChatRequest((Message("user", "Hello"),), "auto", translation=options)
        return cache_key(request, "", "m", ("e", 8)).scope

    assert len({key(None), key("French"), key("German")}) == 3


class _QwenMT(BaseHTTPRequestHandler):
    """A stand-in for a Qwen-MT endpoint (DashScope cannot be reached here): records each body, streams a
    fixed translation."""

    bodies: ClassVar[list[dict[str, Any]]] = []

    def log_message(self, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        data = b'{"object":"list","data":[{"id":"qwen-mt-flash","object":"model"}]}'
        self.send_response(200)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.bodies.append(body)
        chunks = [
            {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Je n'ai pas ri"}}]},
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}},
        ]
        data = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(data.encode())))
        self.end_headers()
        self.wfile.write(data.encode())


def test_a_qwen_mt_endpoint_gets_the_options_passed_through(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _QwenMT)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        model = {"backend": "openai_http", "urls": [url], "remote_model": "qwen-mt-flash"}
        settings = fake_settings(tmp_path, models={"mt": {**model, "translation": True}}, default_model="mt")
        terms = [{"source": "video", "target": "vidéo"}]
        options = _options(source_lang="auto", terms=terms, domains="Chat")
        text = "No me reí después de ver este video"
        with gateway(fake_services(settings)) as http:
            response = _ask(http, text, model="mt", translation_options=options)
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == "Je n'ai pas ri"
        report = response.json()["groupqwen"]["translation"]  # the term applied, and was missed
        assert (report["terms_expected"], report["terms_held"], report["source_lang"]) == (1, 0, None)
        sent = _QwenMT.bodies[-1]
        assert sent["messages"] == [{"role": "user", "content": text}]
        assert sent["translation_options"] == {
            "source_lang": "auto",
            "target_lang": "French",
            "terms": [{"source": "video", "target": "vidéo"}],
            "domains": "Chat",
        }
    finally:
        server.shutdown()
        server.server_close()


def test_an_html_block_keeps_its_tags_attributes_and_lines(served: tuple[Any, FakeBackend]) -> None:
    http, _ = served
    block = '<div class="note">\n  Read the <a href="https://example.com/guide">guide</a> first.\n</div>\n'
    body = _ask(http, block).json()
    assert body["choices"][0]["message"]["content"] == (
        '<div class="note">\n  Bonjour le monde <a href="https://example.com/guide">Bonjour le monde</a> '
        "Bonjour le monde\n</div>\n"
    )
    assert body["groupqwen"]["translation"]["piecewise"] == 1


def test_a_long_paragraph_is_translated_in_runs_of_sentences_within_the_context(tmp_path: Path) -> None:
    """A model with a 700-token window: each generation gets at most (700 - 512) // 3 * 3 = 186 characters
    of the paragraph, whole sentences, in order; the paragraph comes back as one."""
    settings = fake_settings(tmp_path, {"translator": {"n_ctx": 700}})
    backend = FakeBackend("translator", tokens=("Bonjour.",), n_ctx=700)
    paragraph = " ".join(f"The {w} fox jumps over the lazy dog." for w in ["quick", "brown", "red"] * 12)
    with gateway(fake_services(settings, backend)) as http:
        body = _ask(http, f"# Title\n\n{paragraph}\n", model="translator").json()
    asked = [r.messages[-1].content for r in backend.requests[1:]]
    assert len(asked) > 1 and all(len(text) <= 186 for text in asked)
    assert " ".join(asked) == paragraph
    assert (
        body["choices"][0]["message"]["content"]
        == "# Bonjour.\n\n" + " ".join(["Bonjour."] * len(asked)) + "\n"
    )


def test_a_piece_no_answer_fits_stays_as_it_was(tmp_path: Path) -> None:
    """A model that always answers with a list item: the paragraph would become a list, so after the retry
    and the piecewise attempt (its term enforced there too: asked, retried, pinned) it is kept as written,
    and its term counts as missed."""
    backend = FakeBackend("translator", tokens=("-", " Bonjour"))
    with gateway(fake_services(fake_settings(tmp_path, ("translator",)), backend)) as http:
        options = _options(terms=[{"source": "cache", "target": "antémémoire"}])
        body = _ask(http, "The cache is full.\n", model="translator", translation_options=options).json()
    assert body["choices"][0]["message"]["content"] == "The cache is full.\n"
    report = body["groupqwen"]["translation"]
    assert (report["untranslated"], report["retried"], report["piecewise"]) == (1, 2, 1)
    assert (report["terms_expected"], report["terms_held"]) == (1, 0)
    assert len(backend.requests) == 2 + 3


def _respond(http: Any, **body: Any) -> Any:
    body.setdefault("model", "auto")
    body.setdefault("input", "Hello there, my friend.")
    body.setdefault("translation_options", _options())
    return http.post("/v1/responses", json=body)


def test_the_responses_api_takes_translation_options(served: tuple[Any, FakeBackend]) -> None:
    http, backend = served
    response = _respond(http, input=DOCUMENT, store=False)
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["x-groupqwen-route"] == "auto:translate"
    text = body["output"][0]["content"][0]["text"]
    assert structure(text) == structure(DOCUMENT) and text.startswith("# Bonjour le monde\n\n")
    assert body["groupqwen"]["translation"]["pieces"] == 7
    assert "from English into French" in backend.requests[0].messages[0].content
    ask = {"model": "auto", "input": "Hello there.", "translation_options": _options(), "stream": True}
    with http.stream("POST", "/v1/responses", json=ask) as streamed:
        events = [json.loads(line[6:]) for line in streamed.iter_lines() if line.startswith("data: {")]
    done = events[-1]
    assert done["type"] == "response.completed"
    assert done["response"]["output"][0]["content"][0]["text"] == "Bonjour le monde"
    assert done["response"]["groupqwen"]["translation"]["pieces"] == 1


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"translation_options": {"target_lang": "Klingon"}}, "translation_options.target_lang", "Klingon"),
        ({"translation_options": _options(tm_list="nope")}, "translation_options.tm_list", "list"),
        ({"instructions": "Be brief."}, "input", "without instructions or earlier turns"),
        ({"include": ["message.output_text.logprobs"]}, "logprobs", "cannot be combined"),
    ],
)
def test_the_responses_api_refuses_what_chat_refuses(
    served: tuple[Any, FakeBackend], body: dict[str, Any], param: str, says: str
) -> None:
    http, backend = served
    response = _respond(http, **body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and says in error["message"]
    assert backend.requests == []


def test_a_translation_does_not_continue_a_stored_conversation(served: tuple[Any, FakeBackend]) -> None:
    http, _ = served
    first = _respond(http, translation_options=None, model="fake").json()
    response = _respond(http, previous_response_id=first["id"])
    assert response.status_code == 400 and response.json()["error"]["param"] == "input"
    assert "this request has user, assistant, user" in response.json()["error"]["message"]
