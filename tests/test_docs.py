"""What the documents promise about `auto`, thinking and the API reference, held to the code: one
definition of `auto` that every explanation links to, thinking documented as doing nothing with the
bundled models (which do not think), and the Swagger UI the gateway serves."""

from __future__ import annotations

from pathlib import Path

import pytest

from groupqwen.backends.fake import FakeBackend
from groupqwen.catalog import builtin_catalog
from groupqwen.testing import fake_services, fake_settings, gateway

REPO = Path(__file__).resolve().parent.parent
AUTO_DEFINITION = "routing.md#what-auto-does"


def _text(name: str) -> str:
    return " ".join((REPO / name).read_text(encoding="utf-8").split())  # lines rewrapped: one space


def test_routing_md_holds_the_one_definition_of_auto() -> None:
    assert "## What `auto` does" in (REPO / "docs/routing.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["README.md", "docs/api.md", "docs/cache.md"])
def test_every_explanation_of_auto_links_to_it(name: str) -> None:
    assert AUTO_DEFINITION in _text(name)


@pytest.mark.parametrize("name", ["README.md", "docs/api.md"])
def test_thinking_is_documented_as_doing_nothing_with_the_bundled_models(name: str) -> None:
    text = _text(name)
    assert "do not think" in text
    assert "/think" in text and "change nothing" in text


def test_the_bundled_models_indeed_do_not_think() -> None:
    bundled = [spec for spec in builtin_catalog().values() if spec.bundled is not None]
    assert bundled and not any(spec.thinking for spec in bundled)


def test_think_with_a_model_that_does_not_think_changes_nothing(tmp_path: Path) -> None:
    backend = FakeBackend(model_id="plain", tokens=["Hi"])
    with gateway(fake_services(fake_settings(tmp_path, ["plain"]), backend)) as client:
        body = {"model": "plain", "messages": [{"role": "user", "content": "Hello /think"}]}
        answer = client.post("/v1/chat/completions", json={**body, "enable_thinking": True}).json()
    assert answer["groupqwen"]["thinking"] is False
    assert answer["choices"][0]["message"].get("reasoning_content") is None
    assert backend.requests[-1].messages[-1].content == "Hello /think"  # left in the prompt as text


@pytest.mark.parametrize("name", ["README.md", "docs/api.md"])
def test_the_swagger_ui_is_documented(name: str) -> None:
    assert "`GET /docs`" in _text(name) and "Swagger UI" in _text(name)


def test_the_gateway_serves_the_swagger_ui(tmp_path: Path) -> None:
    with gateway(fake_services(fake_settings(tmp_path))) as client:
        docs = client.get("/docs")
        assert docs.status_code == 200 and "swagger-ui" in docs.text
        assert client.get("/openapi.json").json()["info"]["title"] == "GroupQwen"
        assert client.get("/redoc").status_code == 200


def test_the_configuration_reference_is_the_settings() -> None:
    """docs/DEPLOYMENT.md's configuration reference is scripts/gen_config_reference.py's output: every field
    of the settings with its variable, default and meaning."""
    from groupqwen.config.reference import replace_in

    committed = (REPO / "docs/DEPLOYMENT.md").read_text(encoding="utf-8")
    assert committed == replace_in(committed), (
        "docs/DEPLOYMENT.md is stale: run scripts/gen_config_reference.py"
    )
    for dotted in (
        "auth.bootstrap_admin_key",
        "cache.redis_url",
        "telemetry.database_url",
        "ws.resume_window_s",
    ):
        assert f"| `{dotted}` | `GROUPQWEN_{dotted.replace('.', '__').upper()}` |" in committed


def _as_written(text: str) -> str:
    """Source text with adjacent string literals joined and every interpolation (``{…}``, ``$NAME``)
    written ``…``, as docs/TROUBLESHOOTING.md writes a message's variable parts."""
    import re

    text = re.sub(r"\"\s*\n\s*(?:rf|fr|f|r)?\"", "", text)
    text = re.sub(r"\{[^{}]*\}", "…", text)
    text = re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", "…", text)
    return text.replace("\\`", "`").replace("'…'", "…")


def test_every_message_in_troubleshooting_is_one_the_code_writes() -> None:
    """A ```text block of docs/TROUBLESHOOTING.md quotes GroupQwen (the package or scripts/deploy.sh)
    word for word, so a reworded message cannot leave the document behind."""
    import re

    document = (REPO / "docs/TROUBLESHOOTING.md").read_text(encoding="utf-8")
    messages = re.findall(r"```text\n(.*?)\n```", document, flags=re.S)
    assert len(messages) >= 10
    sources = [*sorted((REPO / "groupqwen").rglob("*.py")), REPO / "scripts" / "deploy.sh"]
    code = _as_written("\n".join(path.read_text(encoding="utf-8") for path in sources)).lower()
    missing = [m for m in messages if _as_written(m).lower() not in code]
    assert missing == [], f"not written by the code (reworded?): {missing}"
