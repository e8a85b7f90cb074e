"""Import and curate a generated 100 MB ChatGPT export: time and peak RSS of each stage.

    .venv/bin/python bench/import.py [--mb 100] [--keep DIR]

The export is generated on the fly in a temporary folder (conversations with branches, tool calls, hidden
context, some duplicates and some personal data), then each stage runs in its own process so its peak RSS
(``ru_maxrss``) is its own. Goal (issue 7): import ≤ 30 s and ≤ 300 MB RSS.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

_VOCABULARY = (
    "the of and to in is that for it as with was on be by this are from at or an have not which but they "
    "his all can their has one more will been would there when what about into also time some could them "
    "other than then these its only two first new may any way use after over such our most where through "
    "much people make year between many both well even because each good those same while might under "
    "system program data function value return model train answer question energy light water plant "
    "reason list"
)
WORDS = _VOCABULARY.split()
PII = ["write to jane.roe@example.org", "call +1 415 555 2671", "card 4111 1111 1111 1111", "ip 203.0.113.45"]

STAGE = """
import json, resource, sys, time
from pathlib import Path
t = time.perf_counter()
stage, src, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
if stage == "import":
    from groupqwen.finetune.importers import import_paths
    report = import_paths([src], out)
    n = report.written
else:
    from groupqwen.finetune.curate import CurateConfig, curate_file
    n = curate_file(src, out, CurateConfig()).kept
rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": time.perf_counter() - t, "rss_mb": rss_mb, "n": n}))
"""


def _text(rng: random.Random, words: int) -> str:
    body = " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."
    return body + (" " + rng.choice(PII) + "." if rng.random() < 0.05 else "")


def _message(node: str, role: str, text: str, t: float, **extra: object) -> dict[str, object]:
    return {
        "id": node,
        "author": {"role": role, "name": None, "metadata": {}},
        "create_time": t,
        "content": {"content_type": "text", "parts": [text]},
        "status": "finished_successfully",
        "metadata": {"model_slug": "gpt-4o"} if role == "assistant" else {},
        "recipient": "all",
        **extra,
    }


def conversation(rng: random.Random, index: int) -> dict[str, object]:
    t = 1.7e9 + index * 60.0
    mapping: dict[str, dict[str, object]] = {
        "root": {"id": "root", "message": None, "parent": None, "children": []}
    }
    parent = "root"

    def add(node: str, message: dict[str, object] | None) -> None:
        nonlocal parent
        mapping[node] = {"id": node, "message": message, "parent": parent, "children": []}
        mapping[parent]["children"].append(node)  # type: ignore[attr-defined]
        parent = node

    add("sys", _message("sys", "system", "", t, metadata={"is_visually_hidden_from_conversation": True}))
    for turn in range(rng.randint(1, 6)):
        add(f"u{turn}", _message(f"u{turn}", "user", _text(rng, rng.randint(8, 60)), t + turn))
        if rng.random() < 0.2:  # an abandoned regeneration beside the kept answer
            sibling = f"r{turn}"
            mapping[sibling] = {
                "id": sibling,
                "parent": parent,
                "children": [],
                "message": _message(sibling, "assistant", _text(rng, 80), t),
            }
            mapping[parent]["children"].append(sibling)  # type: ignore[attr-defined]
        if rng.random() < 0.1:  # a tool call and its output
            code = _message(f"c{turn}", "assistant", "print(1)", t, recipient="python")
            code["content"] = {"content_type": "code", "language": "python", "text": "print(1)"}
            add(f"c{turn}", code)
            add(f"o{turn}", _message(f"o{turn}", "tool", "1", t))
        add(f"a{turn}", _message(f"a{turn}", "assistant", _text(rng, rng.randint(40, 400)), t + turn + 0.5))
    return {
        "title": f"Conversation {index}",
        "create_time": t,
        "update_time": t + 100,
        "mapping": mapping,
        "current_node": parent,
        "conversation_id": f"conv-{index}",
        "default_model_slug": "gpt-4o",
    }


def generate(path: Path, megabytes: int, seed: int = 7) -> int:
    rng = random.Random(seed)
    target = megabytes * 10**6
    written = 0
    count = 0
    previous: dict[str, object] | None = None
    with path.open("w", encoding="utf-8") as f:
        f.write("[")
        while written < target:
            conv = conversation(rng, count)
            if previous is not None and rng.random() < 0.03:  # an exact duplicate under another id
                conv = {**previous, "conversation_id": f"conv-{count}"}
            chunk = ("," if count else "") + json.dumps(conv)
            f.write(chunk)
            written += len(chunk)
            previous = conv
            count += 1
        f.write("]")
    return count


def run_stage(stage: str, src: Path, out: Path) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-c", STAGE, stage, str(src), str(out)], capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=int, default=100, help="size of the generated conversations.json")
    parser.add_argument("--keep", type=Path, help="generate into this folder and keep the files")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        export = folder / "conversations.json"
        count = generate(export, args.mb)
        size = export.stat().st_size / 1e6
        imported = run_stage("import", export, folder / "conversations.jsonl")
        curated = run_stage("curate", folder / "conversations.jsonl", folder / "curated.jsonl")
    print(f"generated {count} conversations, {size:.1f} MB")
    print(f"{'stage':<8} {'seconds':>8} {'MB/s':>7} {'peak RSS MB':>12} {'conversations out':>18}")
    for name, row in (("import", imported), ("curate", curated)):
        print(
            f"{name:<8} {row['seconds']:>8.1f} {size / row['seconds']:>7.1f} "
            f"{row['rss_mb']:>12.0f} {int(row['n']):>18}"
        )
    print("goal for import: <= 30 s and <= 300 MB peak RSS")


if __name__ == "__main__":
    main()
