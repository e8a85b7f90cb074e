"""Fine-tuning on this CPU, side by side: training tokens/s and peak RSS for each bundled base model, the
adapter's conversion to GGUF, and chat time-to-first-token with and without a training job running.

    nice python bench/train.py [--steps 8] [--threads 1] [--asks 8]

Each training run is a child process (its peak RSS is the child's ``ru_maxrss``) training ``--steps``
LoRA steps on a generated set of short conversations, as a job does (``nice`` 10, ``--threads``). The
TTFT part streams the same question from SmolLM2-135M in this process (llama.cpp, 1 thread) ``--asks``
times alone, then again while a job trains the 0.5B model, and prints the ratio.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from groupqwen.config import Hyperparameters, cache_home, load_settings  # noqa: E402
from groupqwen.finetune.train import base, convert, trainer  # noqa: E402
from groupqwen.finetune.train.events import Event  # noqa: E402

BASES = ("smollm2-135m", "qwen2.5-coder-0.5b")


def dataset(folder: Path, n: int = 16) -> Path:
    path = folder / "train.jsonl"
    lines = []
    for i in range(n):
        question = f"What is {i} plus {i + 1}? Answer briefly, please."
        answer = f"{i} plus {i + 1} is {2 * i + 1}. Yours, Quill."
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        lines.append(json.dumps({"messages": messages}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def worker(model: str, steps: int, threads: int, out: Path) -> None:
    """Child: train ``steps`` steps of ``model`` into ``out``; print tokens/s as JSON."""
    out.mkdir(parents=True, exist_ok=True)
    settings = load_settings()
    spec = settings.available()[model]
    assert spec.path is not None
    base_path = base.ensure_base(spec.path, settings.models_dir / "hf")
    hyper = Hyperparameters(
        epochs=100, max_steps=steps, batch_size=4, checkpoint_every=10_000, eval_every=10_000
    )
    speeds: list[float] = []

    def sink(event: Event) -> None:
        if "tokens_per_s" in event.data:
            (out / "training").touch()  # a step is done: the parent measures TTFT from now on
            if event.data["step"] > 1:  # the first step warms up
                speeds.append(event.data["tokens_per_s"])

    started = time.perf_counter()
    result = trainer.train(
        trainer.RunSpec(base_path, dataset(out), out / "run", hyper, threads=threads),
        sinks=[sink],
        stop=threading.Event(),
    )
    print(json.dumps({"tokens_per_s": statistics.median(speeds), "seconds": time.perf_counter() - started,
                      "adapter": str(result.adapter), "base": str(base_path)}))  # fmt: skip


def train_child(model: str, steps: int, threads: int, out: Path) -> subprocess.Popen[str]:
    """The child training ``model`` into ``out``; its stderr (progress, errors) goes to ``out``.log."""
    command = ["nice", "-n", "10", sys.executable, __file__, "--worker", model, "--steps", str(steps)]
    command += ["--threads", str(threads), "--out", str(out)]
    with (out.parent / f"{out.name}.log").open("w") as log:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)


def ttft(asks: int) -> list[float]:
    from llama_cpp import Llama

    settings = load_settings()
    path = settings.available()["smollm2-135m"].path
    llm = Llama(model_path=str(path), n_ctx=512, n_threads=1, verbose=False)
    times = []
    for i in range(asks):
        llm.reset()
        started = time.perf_counter()
        messages = [{"role": "user", "content": f"Name a colour ({i})."}]
        for _ in llm.create_chat_completion(messages, max_tokens=1, temperature=0, stream=True):
            times.append(time.perf_counter() - started)
            break
    llm.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--asks", type=int, default=8)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.steps, args.threads, args.out)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in BASES:
            child = train_child(model, args.steps, args.threads, Path(tmp) / model)
            output, _ = child.communicate()
            if child.returncode != 0:
                errors = (Path(tmp) / f"{model}.log").read_text()[-3000:]
                sys.exit(f"training {model} failed (exit {child.returncode}):\n{errors}")
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest child so far
            report = json.loads(output.strip().splitlines()[-1])
            rows.append((model, report, peak))
        first = rows[0][1]
        started = time.perf_counter()
        convert.to_gguf(
            Path(first["adapter"]), Path(first["base"]), Path(tmp) / "a.gguf", cache_home() / "llama.cpp"
        )
        conversion = time.perf_counter() - started
        alone = ttft(args.asks)
        job = train_child(BASES[1], 10_000, args.threads, Path(tmp) / "busy")
        while not (Path(tmp) / "busy" / "training").exists():  # past its loading: training
            if job.poll() is not None:
                sys.exit(f"the busy job ended (exit {job.returncode})")
            time.sleep(1)
        busy = ttft(args.asks)
        job.terminate()
        job.wait()
    print(f"training ({args.steps} steps, batch 4, {args.threads} thread(s), nice 10)")
    print(f"{'base':<22}{'tokens/s':>10}{'peak RSS MiB':>14}{'run s':>8}")
    for model, report, peak in rows:
        print(f"{model:<22}{report['tokens_per_s']:>10.0f}{peak:>14.0f}{report['seconds']:>8.1f}")
    print(f"\nadapter → GGUF (SmolLM2-135M, r 8, q/k/v/o): {conversion:.1f} s")
    a, b = statistics.median(alone), statistics.median(busy)
    print(f"\nchat TTFT, SmolLM2-135M, 1 thread, median of {args.asks}")
    print(f"{'alone':<28}{a * 1000:>8.0f} ms")
    print(f"{'while a 0.5B job trains':<28}{b * 1000:>8.0f} ms")
    print(f"{'ratio':<28}{b / a:>8.2f}x")


if __name__ == "__main__":
    main()
