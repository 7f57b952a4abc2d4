"""Sweep budget forcing's thinking budgets and numbers of Waits; plot accuracy against thinking tokens.

Each point runs one budget-forced strategy (one greedy sample by default, majority over ``--n`` samples
otherwise) over a built-in arithmetic level, with a system message that asks the model to think inside
the delimiters before answering (and the opening delimiter forced). ``--waits K`` suppresses the end of
thinking exactly K times (s1's budget in Waits); ``--budgets`` caps thinking in tokens. The unforced
strategy on the same prompts is the reference row.

On the CPU with the embedded model (a few minutes):

    python experiments/budget_forcing_sweep.py --dataset add2 --limit 8 --budgets 8,16,32 --waits 0,1

On a GPU with a real reasoning model (its own delimiters come from its chat template):

    python experiments/budget_forcing_sweep.py --model deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B \
        --engine vllm --dataset multistep --limit 200 --budgets 64,128,256,512,1024 --waits 0,1,2 --n 4 \
        --temperature 0.6 --no-system

It prints a markdown table and writes the figure (``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without install

from tts import data  # noqa: E402
from tts.budget import Ledger  # noqa: E402
from tts.data.grading import grader_for  # noqa: E402
from tts.runtime import run_async  # noqa: E402
from tts.strategies import Majority, Single  # noqa: E402
from tts.strategies.forcing import BudgetForced, BudgetForcing  # noqa: E402
from tts.types import Message, SamplingParams  # noqa: E402

SYSTEM = "Think step by step inside <think> </think> tags, then give the final answer as a number."


def make_backend(args):
    if args.engine == "vllm":
        from tts.backends.vllm import VLLMBackend

        return VLLMBackend(args.model)
    from tts.backends.hf import HFBackend

    if args.model == "embedded":
        from tts.backends import embedded

        return HFBackend(str(embedded.model_dir()))
    return HFBackend(args.model)


def with_system(problems, system: str | None):
    """Add the system message asking for thinking; the built-in "Reply with just the number." is dropped
    from the question because it makes the small model end its thinking at once."""
    if not system:
        return problems
    out = []
    for p in problems:
        chat = [dataclasses.replace(m, content=m.content.replace(" Reply with just the number.", ""))
                if m.role == "user" else m for m in p.chat()]
        out.append(dataclasses.replace(p, prompt=None, messages=(Message("system", system), *chat)))
    return out


async def run_point(problems, strategy, backend, seed: int) -> dict:
    run_ledger = Ledger()
    started = time.perf_counter()
    results = await run_async(problems, strategy, backend, grader=grader_for, run_ledger=run_ledger, seed=seed)
    seconds = time.perf_counter() - started
    graded = [r for r in results if r.correct is not None]
    samples = sum(len(r.trace.candidates) for r in results) or 1
    thinking = sum(r.trace.info.get("thinking_tokens", 0) for r in results)
    return {
        "accuracy": sum(r.correct for r in graded) / max(1, len(graded)),
        "thinking_per_sample": thinking / samples,
        "generated_per_sample": run_ledger.generated_tokens / samples,
        "waits_per_sample": sum(sum(r.trace.info.get("budget_forcing", {}).get("waits", [])) for r in results) / samples,
        "capped": sum(r.trace.info.get("budget_forcing", {}).get("capped", 0) for r in results) / samples,
        "seconds": seconds,
    }


def inner_strategy(args, params):
    return Single(params=params) if args.n == 1 else Majority(n=args.n, params=params)


async def sweep(args) -> list[dict]:
    backend = make_backend(args)
    problems = with_system(data.load(args.dataset, limit=args.limit, seed=args.seed), None if args.no_system else SYSTEM)
    params = SamplingParams(temperature=args.temperature, max_tokens=max(args.budgets) + args.answer_max_tokens)
    rows = []
    try:
        if not args.no_baseline:
            point = await run_point(problems, inner_strategy(args, params), backend, args.seed)
            rows.append({"budget": None, "waits": None, **point})
            print(f"unforced: {point}", file=sys.stderr)
        for waits in args.waits:
            for budget in args.budgets:
                policy = BudgetForcing.for_backend(
                    backend, max_thinking_tokens=budget, max_waits=waits or None,
                    min_thinking_tokens=None, answer_max_tokens=args.answer_max_tokens, wait_text=args.wait_text)
                strategy = BudgetForced(inner=inner_strategy(args, params), policy=policy)
                point = await run_point(problems, strategy, backend, args.seed)
                rows.append({"budget": budget, "waits": waits, **point})
                print(f"budget={budget} waits={waits}: {point}", file=sys.stderr)
    finally:
        await backend.aclose()
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| max thinking tokens | Waits | accuracy | thinking tok/sample | generated tok/sample | Waits/sample | capped | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        budget = "unforced" if r["budget"] is None else str(r["budget"])
        waits = "-" if r["waits"] is None else str(r["waits"])
        lines.append(f"| {budget} | {waits} | {r['accuracy']:.3f} | {r['thinking_per_sample']:.1f} | "
                     f"{r['generated_per_sample']:.1f} | {r['waits_per_sample']:.2f} | {r['capped']:.2f} | {r['seconds']:.1f} |")
    return "\n".join(lines)


def plot(rows: list[dict], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for waits in sorted({r["waits"] for r in rows if r["waits"] is not None}):
        pts = sorted((r["thinking_per_sample"], r["accuracy"], r["budget"]) for r in rows if r["waits"] == waits)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{waits} Wait(s)")
        for x, y, b in pts:
            ax.annotate(str(b), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
    for r in rows:
        if r["budget"] is None:
            ax.axhline(r["accuracy"], color="gray", linestyle="--", label="unforced")
    ax.set_xlabel("thinking tokens per sample (mean)")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="embedded", help="embedded, a model folder or a hub name")
    ap.add_argument("--engine", choices=("hf", "vllm"), default="hf")
    ap.add_argument("--dataset", default="add2", help="a built-in level: add2, multistep, ...")
    ap.add_argument("--limit", type=int, default=8, help="problems per point")
    ap.add_argument("--budgets", type=ints, default=[8, 16, 32], help="max thinking tokens, comma-separated")
    ap.add_argument("--waits", type=ints, default=[0, 1], help="numbers of forced Waits, comma-separated")
    ap.add_argument("--wait-text", default="Wait")
    ap.add_argument("--answer-max-tokens", type=int, default=8)
    ap.add_argument("--n", type=int, default=1, help="samples per problem (majority vote when > 1)")
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-system", action="store_true", help="no system message (for models that think anyway)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unforced reference row")
    ap.add_argument("--out", type=Path, default=Path("budget_forcing_sweep.png"))
    args = ap.parse_args(argv)
    rows = asyncio.run(sweep(args))
    print(table(rows))
    plot(rows, args.out, f"budget forcing, {args.model} on {args.dataset} (n={args.limit})")
    print(f"\nfigure: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
