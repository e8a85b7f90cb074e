"""The local LLM as the cache's judge on candidate hits only (issue 16): does its "Yes" help the verifier?

    nice -n 15 .venv/bin/python bench/judge.py --model GGUF [--threads 2] [--prompt NAME] [--tune N]
    nice -n 15 .venv/bin/python bench/judge.py --model GGUF --try-prompts N

A candidate is a pair whose bundled cosine reaches the shipped verifier's floor (a miss below it would
never pay the judge). The judge is one ``llama_cpp.Llama`` asked, through its ChatML template, whether the
two questions ask for the same answer; its score is the log-odds of the first answer token, ``log p(Yes) -
log p(No)`` (each over its spellings ``Yes``/``yes``). The instruction is a fixed prefix of the prompt, so
llama.cpp keeps its KV state from one pair to the next and evaluates only the pair and the closing
question (the gateway's own prefix reuse, ``eval_prompt``).

Scores are kept on disk beside the vectors (``bench/qqp.py``'s ``VECTORS_DIR``), one JSON line per pair,
keyed by the GGUF's sha256 and the prompt's text: a rerun, or a run on more pairs, pays only for the new
ones. Each line keeps the milliseconds its pair took, the threads and the load average then.

``--try-prompts N`` scores the first ``N`` tune candidates (a seeded order) with each of ``PROMPTS`` (or
``--prompt`` alone) and prints the ROC AUC among them beside the bundled cosine's and the shipped
verifier's, and that of the mean of the judge's and the verifier's ranks (nothing fitted); with every
candidate of the part, the recalls at the rates below too. The wording is chosen on a small slice of the
tune part, never on the calibrate part (``--part calibrate``: a model too slow for the refits below, on
the part the others are reported on).
Otherwise, on the ``calibrate`` part: recall at exactly 0.5 / 1 / 2 / 5 % false hits (the table of
``bench/second_opinion.py``) of plain cosine, the judge's score alone, the shipped logistic refitted on the
tune part, and the same refit with the judge's score (alone and times the cosine) as two more inputs; both
refits on the tune part's pairs below the floor and the first ``--tune`` of its candidates (a seeded
subsample when fewer than all); then the cost of a candidate.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "bench")]

import qqp  # noqa: E402
import second_opinion  # noqa: E402
import train_cache_verifier as train  # noqa: E402

from groupqwen.backends.llamacpp import eval_prompt  # noqa: E402
from groupqwen.cache import verifier as verifiers  # noqa: E402
from groupqwen.cache.embedders import MiniLMEmbedder  # noqa: E402

Array = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
SEED = 16


@dataclass(frozen=True)
class Prompt:
    """The fixed prefix (system turn and the user turn's opening) and the pair's part (``{a}``, ``{b}``),
    which closes the user turn and opens the assistant's."""

    system: str
    intro: str
    pair: str

    def prefix(self) -> str:
        return f"<|im_start|>system\n{self.system}<|im_end|>\n<|im_start|>user\n{self.intro}"

    def suffix(self, a: str, b: str) -> str:
        return self.pair.format(a=a, b=b) + "<|im_end|>\n<|im_start|>assistant\n"

    def digest(self) -> str:
        return hashlib.sha256(f"{self.prefix()}\0{self.pair}".encode()).hexdigest()[:12]


_CLOSE = "\nAnswer Yes or No."
PROMPTS = {
    "same-answer": Prompt(
        "You are a helpful assistant.",
        "Do these two questions ask for the same answer?\n",
        "Q1: {a}\nQ2: {b}" + _CLOSE,
    ),
    "cached-answer": Prompt(
        "You check a cache of answers. A cached answer may be reused only if it fully answers the new "
        "question: the same subject, the same entities, numbers and conditions, the same intent.",
        "",
        "Cached question: {a}\nNew question: {b}\nDoes the answer to the cached question answer the new "
        "question?" + _CLOSE,
    ),
    "few-shot": Prompt(
        "You decide whether two questions are duplicates: one answer serves both. Different entities, "
        "numbers, negations, conditions or intent make them different.",
        "Examples:\nQ1: how do i learn python fast?\nQ2: what is the quickest way to learn python?\nYes\n"
        "Q1: what is the capital of france?\nQ2: what is the capital of germany?\nNo\n"
        "Q1: why do cats purr?\nQ2: how do cats purr?\nNo\n"
        "Q1: how can i lose weight without exercise?\nQ2: how can i lose weight by exercising?\nNo\n"
        "Q1: what are some good books on history?\nQ2: which history books should i read?\nYes\n\n"
        "Now these two:\n",
        "Q1: {a}\nQ2: {b}\nAre they duplicates?" + _CLOSE,
    ),
}


class Judge:
    """A GGUF on llama.cpp (``threads`` threads) scoring pairs with ``prompt``; the prefix stays evaluated."""

    def __init__(self, path: Path, prompt: Prompt, threads: int) -> None:
        import llama_cpp

        with path.open("rb") as f:
            sha = hashlib.file_digest(f, "sha256").hexdigest()[:12]
        self.name, self.prompt, self.threads = f"{path.stem}@{sha}", prompt, threads
        self._llama_cpp = llama_cpp
        self.llm: Any = llama_cpp.Llama(
            model_path=str(path), n_ctx=2048, n_threads=threads, n_threads_batch=threads,
            n_batch=512, logits_all=False, verbose=False,
        )  # fmt: skip
        self._prefix = self._tokens(prompt.prefix())
        self._yes, self._no = self._first_tokens("Yes", "yes"), self._first_tokens("No", "no")
        self._never = threading.Event()

    def _tokens(self, text: str) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def _first_tokens(self, *words: str) -> list[int]:
        return sorted({self._tokens(w)[0] for w in words})

    def score(self, a: str, b: str) -> float:
        """``log p(Yes) - log p(No)`` for the first token of the answer."""
        eval_prompt(self.llm, self._prefix + self._tokens(self.prompt.suffix(a, b)), self._never)
        pointer = self._llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        logits = np.ctypeslib.as_array(pointer, shape=(int(self.llm.n_vocab()),)).astype(np.float64)
        yes, no = logits[self._yes], logits[self._no]
        return float(np.logaddexp.reduce(yes) - np.logaddexp.reduce(no))

    def close(self) -> None:
        self.llm.close()


class Scores:
    """The judge's scores on disk (one JSON line a pair: texts, score, ms, threads, load average)."""

    def __init__(self, judge: Judge) -> None:
        self.judge = judge
        self.path = qqp.VECTORS_DIR / f"judge-{judge.name}-{judge.prompt.digest()}.jsonl"
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                if line.strip():  # a line cut short by a kill is dropped, and scored again
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    self.rows[(row["a"], row["b"])] = row

    def of(self, a: list[str], b: list[str], rows: npt.NDArray[np.intp], label: str) -> Array:
        """The score of each pair in ``rows`` (NaN elsewhere), scoring and saving the ones not on disk."""
        out = np.full(len(a), np.nan)
        todo = [i for i in rows if (a[i], b[i]) not in self.rows]
        if todo:
            print(f"{label}: scoring {len(todo)} of {len(rows)} pairs with {self.judge.name}", flush=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            for n, i in enumerate(todo, 1):
                start = time.perf_counter()
                score = self.judge.score(a[i], b[i])
                ms = (time.perf_counter() - start) * 1000
                row = {"a": a[i], "b": b[i], "score": score, "ms": round(ms, 2)}
                row |= {"threads": self.judge.threads, "load": round(os.getloadavg()[0], 2)}
                self.rows[(a[i], b[i])] = row
                f.write(json.dumps(row) + "\n")
                f.flush()
                if n % 100 == 0:
                    print(f"  {n}/{len(todo)}", flush=True)
        for i in rows:
            out[i] = self.rows[(a[i], b[i])]["score"]
        return out

    def cost(self) -> str:
        ms = sorted(r["ms"] for r in self.rows.values())
        loads = [r["load"] for r in self.rows.values()]
        threads = sorted({r["threads"] for r in self.rows.values()})
        return (
            f"{len(ms)} candidates scored: p50 {statistics.median(ms):.0f} ms, "
            f"p95 {ms[int(0.95 * (len(ms) - 1))]:.0f} ms ({self.judge.name}, threads {threads}, "
            f"load average {min(loads):.1f}–{max(loads):.1f})"
        )


def candidates(pairs: qqp.Pairs, floor: float, limit: int | None = None) -> npt.NDArray[np.intp]:
    """The rows whose cosine reaches ``floor``, in a seeded order; the first ``limit`` of them."""
    rows = np.flatnonzero(pairs.cosine >= floor)
    rows = rows[np.random.default_rng(SEED).permutation(len(rows))]
    return rows if limit is None else rows[:limit]


def auc(scores: Array, labels: Bools) -> float:
    """ROC AUC (ties count half)."""
    pos, neg = scores[labels], scores[~labels]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / max(1, len(pos) * len(neg)))


def ranks(scores: Array) -> Array:
    """Each score's rank among them, from 0 (the lowest) to 1."""
    out: Array = np.argsort(np.argsort(scores, kind="stable")) / max(1, len(scores) - 1)
    return out


def try_prompts(args: argparse.Namespace, parts: dict[qqp.Part, qqp.Pairs], floor: float) -> None:
    pairs = parts[args.part]
    rows = candidates(pairs, floor, args.try_prompts)
    labels = pairs.labels[rows]
    every = len(rows) == int((pairs.cosine >= floor).sum())  # all of them: recalls at the rates too
    shipped = qqp.verifier_scores(pairs, verifiers.load())[rows]

    def line(name: str, score: Array) -> str:
        cells = f"| {name} | {auc(score, labels):.3f} |"
        if every:
            full = np.full(len(pairs.ids), -np.inf)
            full[rows] = score
            cells += f" {second_opinion.recalls(full, pairs.labels)} |"
        return cells

    n, duplicates = len(rows), int(labels.sum())
    print(f"the first {n} {args.part} candidates (seed {SEED}; {duplicates} duplicates)\n")
    rates = [f"recall at {r:.1%}" for r in second_opinion.RATES] if every else []
    print("| scores | ROC AUC among them | " + " | ".join(rates) + " |")
    print("|---" * (2 + len(rates)) + "|")
    print(line("bundled cosine", pairs.cosine[rows].astype(np.float64)))
    print(line("shipped verifier", shipped))
    for name in [args.prompt] if args.prompt else PROMPTS:
        judge = Judge(args.model, PROMPTS[name], args.threads)
        store = Scores(judge)
        score = store.of(pairs.a, pairs.b, rows, name)[rows]
        print(line(f"{judge.name}, prompt {name}", score))
        mean = (ranks(score) + ranks(shipped)) / 2
        print(line("the same and the shipped verifier: mean of the two ranks (nothing fitted)", mean))
        print(store.cost(), flush=True)
        judge.close()


def compare(args: argparse.Namespace, parts: dict[qqp.Part, qqp.Pairs], floor: float) -> None:
    prompt = args.prompt or "same-answer"
    judge = Judge(args.model, PROMPTS[prompt], args.threads)
    store = Scores(judge)
    calibrate = parts["calibrate"]
    tune = parts["tune"]
    keep = tune.cosine < floor
    keep[candidates(tune, floor, args.tune)] = True
    tune = tune.select(keep)
    labels = calibrate.labels
    judged: dict[str, Array] = {}
    for name, pairs in (("calibrate", calibrate), ("tune", tune)):
        judged[name] = store.of(pairs.a, pairs.b, candidates(pairs, floor), name)
    hand_a, hand_b, hand_labels = train.hand_pairs()
    bundled = MiniLMEmbedder(threads=1)
    hand_cos = (bundled.embed(hand_a) * bundled.embed(hand_b)).sum(axis=1).astype(np.float64)
    hand_judged = store.of(hand_a, hand_b, np.flatnonzero(hand_cos >= floor), "hand-made tuning pairs")

    n_tune = int((tune.cosine >= floor).sum())
    n_all = int((parts["tune"].cosine >= floor).sum())
    print(f"\n{judge.name}, prompt {prompt!r}; calibrate part: {len(labels)} pairs, ")
    print(f"{int(np.isfinite(judged['calibrate']).sum())} candidates (bundled cosine ≥ {floor}); refits on")
    print(f"{n_tune} of the tune part's {n_all} candidates; recall at exactly these false-hit rates\n")
    print("| scores | " + " | ".join(f"recall at {r:.1%}" for r in second_opinion.RATES) + " |")
    print("|---" * (len(second_opinion.RATES) + 1) + "|")
    plain = second_opinion.recalls(calibrate.cosine.astype(np.float64), labels)
    print(f"| bundled cosine alone, all pairs | {plain} |")
    alone = np.nan_to_num(judged["calibrate"], nan=-np.inf)
    print(f"| judge alone, candidates ≥ {floor} | {second_opinion.recalls(alone, labels)} |")
    idf = train.document_frequencies(set(parts["tune"].a) | set(parts["tune"].b))
    hand_x = train.matrix(hand_a, hand_b, hand_cos, idf)
    x = {
        name: train.matrix(p.a, p.b, p.cosine.astype(np.float64), idf)
        for name, p in (("tune", tune), ("calibrate", calibrate))
    }
    fits = {
        "logistic (shipped inputs), refit": (hand_x, x),
        "logistic + judge": (
            second_opinion.with_second(hand_x, hand_judged),
            {name: second_opinion.with_second(rows, judged[name]) for name, rows in x.items()},
        ),
    }
    for name, (fit_hand, inputs) in fits.items():
        choice = train.choose(
            inputs["tune"], tune.labels, fit_hand, hand_labels, floors=(floor,), verbose=False
        )
        scores = train.scored(choice.model, choice.floor, inputs["calibrate"])
        print(
            f"| {name} (CV on tune: {choice.recall:.3f}; l2 {choice.l2}, hand weight {choice.hand_weight}) "
            f"| {second_opinion.recalls(scores, labels)} |"
        )
    print(f"\n{store.cost()}")
    judge.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a GGUF (a chat model with ChatML)")
    parser.add_argument("--data", type=Path, default=qqp.DEFAULT_DATA)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt", choices=sorted(PROMPTS), help="default: same-answer; each with --try")
    parser.add_argument("--tune", type=int, default=None, help="score only this many tune candidates")
    parser.add_argument("--try-prompts", type=int, default=0, metavar="N")
    parser.add_argument("--part", choices=qqp.PARTS[:2], default="tune", help="--try-prompts' candidates")
    args = parser.parse_args()
    parts = qqp.load(args.data, MiniLMEmbedder(threads=1))
    floor = verifiers.load().floor
    if args.try_prompts:
        try_prompts(args, parts, floor)
    else:
        compare(args, parts, floor)


if __name__ == "__main__":
    main()
