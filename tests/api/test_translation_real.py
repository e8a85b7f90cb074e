"""A real document translated by the bundled Qwen2.5-Coder-0.5B in process, through ``auto:translate``:
whatever the small model writes, the structure comes back identical (headings, table rows and cells, the
code block byte for byte, inline code). One thread, temperature 0; quality is not asserted here
(bench/translate.py measures it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from groupqwen.config import Settings, load_settings
from groupqwen.modalities.segments import split, structure
from groupqwen.pool.bundled import ensure_bundled
from groupqwen.testing import fake_services, gateway

pytestmark = pytest.mark.integration

QWEN = "qwen2.5-coder-0.5b"
ROUTING = Path(__file__).resolve().parents[2] / "docs" / "routing.md"


def _excerpt() -> str:
    """docs/routing.md's "Routes" heading with the first rows of its table, and its "The decision is
    visible" section (a paragraph with inline code, a JSON code block, another paragraph)."""
    lines = ROUTING.read_text(encoding="utf-8").splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith("## Routes"))
    shown = next(i for i, line in enumerate(lines) if line.startswith("## The decision is visible"))
    end = next(i for i in range(shown + 1, len(lines)) if lines[i].startswith("## "))
    return "".join(lines[start : start + 6]) + "\n" + "".join(lines[shown:end])


def test_a_real_document_keeps_its_structure(tmp_path: Path) -> None:
    models_dir = Settings().models_dir
    ensure_bundled(Settings().catalog()[QWEN], models_dir)
    settings = load_settings(
        models_dir=models_dir, data_dir=tmp_path / "data", n_threads=1, n_ctx=1024, cache={"backend": "off"}
    )
    document = _excerpt()
    assert "```json" in document and "| `auto` |" in document
    with gateway(fake_services(settings)) as http:
        response = http.post(
            "/v1/chat/completions",
            json={
                "model": "auto",
                "temperature": 0,
                "messages": [{"role": "user", "content": document}],
                "translation_options": {"source_lang": "auto", "target_lang": "de"},
            },
        )
    assert response.status_code == 200, response.text
    assert response.headers["x-groupqwen-route"] == "auto:translate"
    body = response.json()
    translated = body["choices"][0]["message"]["content"]
    assert translated != document
    assert structure(translated) == structure(document)
    code = document[document.index("```json") : document.index("```\n", document.index("```json") + 3) + 4]
    assert code in translated
    report = body["groupqwen"]["translation"]
    assert report["source_lang"] == "English"
    assert report["pieces"] == sum(p.translate for p in split(document))
    assert body["usage"]["completion_tokens"] > 0


def test_terms_are_enforced_and_line_breaks_kept_on_the_real_model(tmp_path: Path) -> None:
    """Django's own message (its Spanish catalogue says "Buscar ruta de la plantilla"): the 0.5B model
    writes "Ruta de búsqueda" when asked, so the term "Search" → "Buscar" has to be enforced; "name" is
    only inside the placeholder, so it is no term of the text. A paragraph of lines of their own keeps
    its lines, a paragraph wrapped at a width keeps its number of lines."""
    models_dir = Settings().models_dir
    ensure_bundled(Settings().catalog()[QWEN], models_dir)
    settings = load_settings(
        models_dir=models_dir, data_dir=tmp_path / "data", n_threads=1, n_ctx=1024, cache={"backend": "off"}
    )
    document = (
        "Search path for template <q>%(name)s</q>:\n\n"
        "The file was saved.\nThe server restarted.\n\n"
        "The cache keeps the answers of the\nmodel for one day.\n"
    )
    options = {
        "source_lang": "English",
        "target_lang": "Spanish",
        "terms": [{"source": "Search", "target": "Buscar"}, {"source": "name", "target": "nombre"}],
    }
    with gateway(fake_services(settings)) as http:
        body = http.post(
            "/v1/chat/completions",
            json={
                "model": QWEN,
                "temperature": 0,
                "messages": [{"role": "user", "content": document}],
                "translation_options": options,
            },
        ).json()
    translated = body["choices"][0]["message"]["content"]
    first, lines, wrapped = translated.rstrip("\n").split("\n\n")
    assert "buscar" in first.casefold() and "<q>%(name)s</q>" in first
    assert len(lines.split("\n")) == 2 and len(wrapped.split("\n")) == 2, translated
    report = body["groupqwen"]["translation"]
    assert (report["terms_expected"], report["terms_held"], report["terms_hit_rate"]) == (1, 1, 1.0)
    assert sum(report["terms_held_by"].values()) == 1
