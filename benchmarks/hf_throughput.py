"""Throughput of the hf backend: P prompts x n samples in one run, tokens per second.

    .venv/bin/python benchmarks/hf_throughput.py --model embedded --prompts 64 --n 8

``--random-init`` builds the model from the folder's config.json with random weights (same shape and
cost per token, nonsense text), for machines that can hold the config and tokenizer but not the weights;
``--ignore-eos`` then makes every sample run to max tokens so the work is the same on every run.
"""

from __future__ import annotations

import argparse
import asyncio
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--max-batch-rows", type=int, default=512)
    ap.add_argument("--random-init", action="store_true")
    ap.add_argument("--ignore-eos", action="store_true")
    args = ap.parse_args()

    import torch

    import tts
    from tts.backends.base import GenerationRequest
    from tts.backends.hf import HFBackend
    from tts.types import SamplingParams

    model = tts.backends.resolve_model(args.model)
    if args.random_init:
        from transformers import AutoConfig, AutoModelForCausalLM

        original = AutoModelForCausalLM.from_pretrained
        config = AutoConfig.from_pretrained(model)
        AutoModelForCausalLM.from_pretrained = lambda *a, **k: AutoModelForCausalLM.from_config(config, dtype=k.get("dtype"))
        try:
            backend = HFBackend(model, max_batch_rows=args.max_batch_rows)
        finally:
            AutoModelForCausalLM.from_pretrained = original
    else:
        backend = HFBackend(model, max_batch_rows=args.max_batch_rows)
    if args.ignore_eos:
        backend.eos_ids = frozenset()
    problems = tts.data.load("add1", limit=args.prompts)
    params = SamplingParams(n=args.n, temperature=0.7, max_tokens=args.max_tokens, seed=0)
    requests = [GenerationRequest(p.chat(), params) for p in problems]

    async def go():
        return await asyncio.gather(*(backend.generate(r) for r in requests))

    asyncio.run(go())  # warm-up (CUDA kernels, allocator)
    started = time.perf_counter()
    generations = asyncio.run(go())
    wall = time.perf_counter() - started
    tokens = sum(c.num_tokens for g in generations for c in g.completions)
    device = torch.cuda.get_device_name(0) if backend.device == "cuda" else "cpu"
    print(f"| {device} | {backend.device} | {args.prompts} x n={args.n} | {tokens:,} | {wall:.2f} | {tokens / wall:,.0f} | "
          f"{backend.batch_sizes[-3:]} |")


if __name__ == "__main__":
    main()
