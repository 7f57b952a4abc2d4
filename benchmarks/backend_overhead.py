"""What the toolkit adds over the raw engine: raw transformers generation against `tts` majority
voting on the hf backend, side by side in one run, on the same prompts, samples and batch shapes.

Both sides sample n completions for each of the same problems at temperature 0.7 with the same max
tokens, 8 problems (8 x n rows) per engine batch, stopping at the end-of-turn token. Reported: wall time,
generated tokens and tokens per second; the overhead is the ratio of tokens per second, since sampled
lengths differ between the two sides.

    .venv/bin/python benchmarks/backend_overhead.py --limit 64 --n 8
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    ap = argparse.ArgumentParser(description="raw engine vs tts backend overhead")
    ap.add_argument("--dataset", default="add1")
    ap.add_argument("--limit", type=int, default=64)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=2, help="alternate the two sides this many times")
    args = ap.parse_args()

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
    print(f"{args.dataset}, {len(problems)} problems x n={args.n}, max {args.max_tokens} tokens, "
          f"{per_batch} problems per batch, {args.rounds} alternating rounds\n")
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


if __name__ == "__main__":
    main()
