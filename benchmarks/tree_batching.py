"""Beam search batched across problems against one problem at a time, on the vLLM backend, in one run.

Both sides run the same BeamSearch (same problems, same seeds, so the same requests) on the same engine:

* ``one problem at a time``: problems solved one after another, each search step sending that problem's
  beams to the engine together and nothing else: how huggingface/search-and-learn runs beam search
  (one problem's beams per ``llm.generate`` call, problems sequentially);
* ``tts, all problems at once``: ``tts.run`` with every problem in flight, so each search step of every
  problem meets the others' in the engine's continuous batch.

The engine's prefix cache is reset before each side, so neither inherits the other's blocks. Reported per
side: wall time, generated tokens and throughput; engine calls (requests) per search step of one problem,
requests and sequences in flight together (averaged over time), and sequences per engine step (counted on
vLLM's own output stream: each engine step returns one output per sequence that advanced); prompt tokens
and the share served from the prefix cache, both as the ledger counts them (a request's prompt once, its
cached part the least any of its samples found) and per engine sequence (vLLM's ``num_cached_tokens`` of
every sample).

The arithmetic datasets ask for "just the number", which leaves nothing to search over; the benchmark asks
the embedded model to work step by step instead, and cuts its solution into fixed-size steps of
``--step-tokens`` tokens. With ``--model testbed`` it runs the testbed's tiny policy on its own
step-by-step task (``steps*`` datasets, one step per line: ``--step-delimiter "\n"``), where an engine
step costs little compute, so what is measured is the batching itself rather than the CPU's arithmetic.

    .venv/bin/python benchmarks/tree_batching.py --dataset multistep --limit 32 --block-size 32
    .venv/bin/python benchmarks/tree_batching.py --model testbed --dataset steps4 --step-delimiter "\n"

Needs vLLM (``scripts/install.sh --vllm``); on a CPU set nothing else (the backend binds every core).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import time

import tts
from tts.backends.vllm import VLLMBackend, VLLMOptions
from tts.escapes import decode_escapes
from tts.strategies.beam import BeamSearch
from tts.strategies.steps import Segmenter
from tts.types import SamplingParams

STEPWISE = "Work it out step by step, then give the final number."


class Counting:
    """A backend proxy that records every request's span and size, and the engine's steps."""

    def __init__(self, backend: VLLMBackend):
        self.backend = backend
        self.name, self.model_name, self.shape = backend.name, backend.model_name, backend.shape
        self.spans: list[tuple[float, float, int]] = []  # (start, end, sequences)
        self.sequence_prompt = self.sequence_cached = 0
        self.step_sizes: list[int] = []
        core = backend.engine.engine_core
        original = core.get_output_async

        async def counted():  # runs on the engine's loop: one call per engine step
            outputs = await original()
            if outputs.outputs:
                self.step_sizes.append(len(outputs.outputs))
            return outputs

        core.get_output_async = counted

    def reset(self) -> None:
        self.spans, self.step_sizes = [], []
        self.sequence_prompt = self.sequence_cached = 0

    def count_prompt_tokens(self, request):
        return self.backend.count_prompt_tokens(request)

    async def generate(self, request, on_cancel=None):
        start = time.perf_counter()
        generation = await self.backend.generate(request, on_cancel)
        self.spans.append((start, time.perf_counter(), request.params.n))
        for c in generation.completions:
            self.sequence_prompt += c.prompt_tokens
            self.sequence_cached += c.cached_prompt_tokens
        return generation

    async def aclose(self) -> None:
        await self.backend.aclose()

    def in_flight(self) -> tuple[float, float]:
        """Requests and sequences in flight, averaged over the time anything was in flight."""
        events = sorted([(s, 1, n) for s, _, n in self.spans] + [(e, -1, -n) for _, e, n in self.spans])
        busy = req_area = seq_area = 0.0
        reqs = seqs = 0
        last = None
        for t, dr, ds in events:
            if last is not None and reqs > 0:
                busy += t - last
                req_area += reqs * (t - last)
                seq_area += seqs * (t - last)
            reqs, seqs, last = reqs + dr, seqs + ds, t
        return (req_area / busy, seq_area / busy) if busy else (0.0, 0.0)


def run_side(counting: Counting, problems, strategy, concurrency: int, seed: int) -> dict:
    backend = counting.backend
    asyncio.run_coroutine_threadsafe(backend.engine.reset_prefix_cache(), backend._loop).result()
    counting.reset()
    started = time.perf_counter()
    results = tts.run(problems, strategy, counting, concurrency=concurrency, seed=seed)
    wall = time.perf_counter() - started
    ledgers = [r.trace.ledger for r in results]
    per_step = [k for r in results for k in r.trace.info["engine_calls_per_step"]]
    generated = sum(led["generated_tokens"] for led in ledgers)
    prompt = sum(led["prompt_tokens"] for led in ledgers)
    cached = sum(led["cached_prompt_tokens"] for led in ledgers)
    requests, sequences = counting.in_flight()
    steps = counting.step_sizes
    return {
        "wall_s": wall,
        "problems": len(results),
        "correct": sum(bool(r.correct) for r in results),
        "generated_tokens": generated,
        "tokens_per_s": generated / wall,
        "search_steps": len(per_step),
        "engine_calls": len(counting.spans),
        "engine_calls_per_search_step": sum(per_step) / len(per_step),
        "requests_in_flight": requests,
        "sequences_in_flight": sequences,
        "engine_steps": len(steps),
        "sequences_per_engine_step": sum(steps) / len(steps) if steps else 0.0,
        "prompt_tokens": prompt,
        "cached_prompt_tokens": cached,
        "cache_hit_rate": cached / prompt if prompt else 0.0,
        "sequence_prompt_tokens": counting.sequence_prompt,
        "sequence_cached_prompt_tokens": counting.sequence_cached,
        "sequence_cache_hit_rate": (counting.sequence_cached / counting.sequence_prompt
                                    if counting.sequence_prompt else 0.0),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description="beam search batched across problems vs one problem at a time (vLLM)")
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--dataset", default="multistep")
    ap.add_argument("--limit", type=int, default=32)
    ap.add_argument("--n", type=int, default=8, help="beams (N)")
    ap.add_argument("--expansions", type=int, default=4, help="next steps per kept beam (beam width N / M)")
    ap.add_argument("--step-tokens", type=int, default=16, help="tokens per step (without --step-delimiter)")
    ap.add_argument("--step-delimiter", default=None, help='end steps at this text instead (testbed: "\\n")')
    ap.add_argument("--max-tokens", type=int, default=96, help="generated tokens per path")
    ap.add_argument("--block-size", type=int, default=32, help="vLLM KV block size (the CPU default is 128)")
    ap.add_argument("--memory", type=float, default=0.25, help="vLLM gpu_memory_utilization (on a CPU too)")
    ap.add_argument("--dtype", default="auto", help="vLLM dtype: auto, float32, bfloat16")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args()

    from tts import testbed
    from tts.backends import embedded

    step_delimiter = decode_escapes(args.step_delimiter) if args.step_delimiter else None
    model = {"embedded": lambda: str(embedded.model_dir()), "testbed": lambda: str(testbed.POLICY_DIR)}.get(
        args.model, lambda: args.model)()
    context = None if args.model == "testbed" else 2048  # None: the model's own (the testbed's is 512)
    backend = VLLMBackend(model, VLLMOptions(max_model_len=context, block_size=args.block_size,
                                             gpu_memory_utilization=args.memory, dtype=args.dtype))
    counting = Counting(backend)
    problems = [dataclasses.replace(p, prompt=p.prompt.replace("Reply with just the number.", STEPWISE))
                for p in tts.data.load(args.dataset, limit=args.limit)]
    segmenter = (Segmenter(mode="delimiter", delimiter=step_delimiter) if step_delimiter
                 else Segmenter(mode="tokens", step_tokens=args.step_tokens))
    strategy = BeamSearch(n=args.n, expansions=args.expansions, segmenter=segmenter,
                          params=SamplingParams(temperature=0.8, max_tokens=args.max_tokens))
    # Warm the engine up (first-call costs), then clear what the warm-up left in the prefix cache.
    tts.run(problems[:1], strategy, counting, seed=args.seed + 1)

    sides = {
        "one problem at a time": run_side(counting, problems, strategy, 1, args.seed),
        "tts, all problems at once": run_side(counting, problems, strategy, len(problems), args.seed),
    }
    asyncio.run(backend.aclose())

    steps = f"steps ending at {step_delimiter!r}" if step_delimiter else f"steps of {args.step_tokens} tokens"
    print(f"beam search N={args.n}, M={args.expansions} (width {strategy.width}), {steps}, at most {args.max_tokens} per path; {args.dataset}, {len(problems)} problems; vLLM "
          f"block size {args.block_size}, dtype {args.dtype}\n")
    rows = [
        ("wall s", "wall_s", "{:.1f}"),
        ("generated tokens", "generated_tokens", "{:,}"),
        ("generated tokens/s", "tokens_per_s", "{:.1f}"),
        ("correct", "correct", "{}"),
        ("engine calls", "engine_calls", "{:,}"),
        ("engine calls per search step (one problem)", "engine_calls_per_search_step", "{:.2f}"),
        ("requests in flight (time average)", "requests_in_flight", "{:.1f}"),
        ("sequences in flight (time average)", "sequences_in_flight", "{:.1f}"),
        ("engine steps", "engine_steps", "{:,}"),
        ("sequences per engine step", "sequences_per_engine_step", "{:.1f}"),
        ("prompt tokens (ledger)", "prompt_tokens", "{:,}"),
        ("  served from prefix cache", "cache_hit_rate", "{:.1%}"),
        ("prompt tokens (every sequence)", "sequence_prompt_tokens", "{:,}"),
        ("  served from prefix cache", "sequence_cache_hit_rate", "{:.1%}"),
    ]
    names = list(sides)
    print("| | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for label, key, fmt in rows:
        print(f"| {label} | " + " | ".join(fmt.format(sides[s][key]) for s in names) + " |")
    loop, batched = (sides[s] for s in names)
    speedup = batched["tokens_per_s"] / loop["tokens_per_s"]
    print(f"\nthroughput, batched / one at a time: {speedup:.2f}x "
          f"(target >= 5x: {'met' if speedup >= 5 else 'NOT met'}); prefix cache (ledger, batched): "
          f"{batched['cache_hit_rate']:.1%} "
          f"(target >= 80%: {'met' if batched['cache_hit_rate'] >= 0.8 else 'NOT met'})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "sides": sides, "speedup": speedup}, fh, indent=1)


if __name__ == "__main__":
    main()
