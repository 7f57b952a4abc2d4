"""Sweep budget forcing's thinking budgets and numbers of Waits; plot accuracy against thinking tokens.

Each point runs one budget-forced strategy (one greedy sample by default, majority over ``--n`` samples
otherwise) over a dataset. ``--budgets`` caps thinking in tokens (0: thinking is opened and closed for the
model, which answers at once); ``--waits K`` suppresses the model's own end of thinking exactly K times
(s1's budget in Waits), within the cap. The unforced strategy on the same prompts is the reference row.

Prompts (``--prompt``): ``plain`` sends the dataset's prompt as it is, for reasoning models, which think
anyway; ``oneshot`` (the default) is for the embedded SmolLM2-135M-Instruct, an instruction model that
does not think on its own: a system message asking for thinking inside <think></think>, a worked
example as an earlier turn, and the opener "I need to add" written after the opening "<think>". Without
them it answers at once or never closes its thinking (see ``SHOT_ANSWER``).

On the CPU with the embedded model (docs/performance.md, "Budget forcing sweep (issue 8)"; about
15 minutes on 2 shared cores):

    python experiments/budget_forcing_sweep.py --dataset add1 --limit 40 --budgets 0,16,32,64 \
        --waits 0,1,2 --out docs/budget_forcing_embedded.png

On a GPU with a real reasoning model. Its delimiters come from its tokenizer: the chat template of the
DeepSeek-R1 distills names <think>/</think> and its generation prompt already opens thinking
("<｜Assistant｜><think>\n"), so nothing is opened for it; "</think>" is one token in its vocabulary, so
vLLM stops thinking at that token id (and at the string, should the model spell it in pieces). MATH-500
comes from $TTS_DATA_DIR or the hub; answers after a self-ended thinking are full write-ups, hence the
larger answer cap:

    python experiments/budget_forcing_sweep.py --model deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B \
        --engine vllm --prompt plain --dataset math500 --limit 100 --budgets 0,512,1024,2048,4096 \
        --waits 0,1,2 --n 4 --temperature 0.6 --answer-max-tokens 512 --max-model-len 8192 \
        --out docs/budget_forcing_r1_distill_1p5b.png

On the CPU, ``--engine vllm --block-size 32`` runs the same path on the embedded model (a block size
below 128 lets vLLM's prefix cache serve each continuation's shared prefix).

It prints a markdown table (``--samples-out`` also writes every sample's text and forcing record) and
writes the figure (``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
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

#: A worked example for ``--prompt oneshot``: SmolLM2-135M (an instruction model, not a reasoning model)
#: given only SYSTEM and "<think>" answers at once or rambles without ever closing its thinking; with this
#: example before the question and the opener "I need to add" written after "<think>" it reasons in the
#: example's form and ends its thinking itself (probed on 12 add1 problems at T=0.7: closed 12/12, against
#: 0/12 with SYSTEM alone, with or without the opener).
SHOT_QUESTION = "What is 3 + 5?"
SHOT_ANSWER = ("<think>\nI need to add 3 and 5. Counting up from 3 by 5: 4, 5, 6, 7, 8. So 3 + 5 = 8.\n</think>\n"
               "The answer is 8.")

#: --prompt -> the opener written after the opening delimiter when --opener is not given
OPENERS = {"oneshot": "\nI need to add", "system": "\n", "plain": ""}


def make_backend(args):
    """The engine by registry name (so ``embedded`` resolves to its converted folder for both)."""
    from tts import backends

    options = {}
    if args.engine == "vllm":
        options = {k: v for k, v in (("block_size", args.block_size), ("max_model_len", args.max_model_len))
                   if v is not None}
    return backends.create(args.engine, args.model, **options)


def with_prompt(problems, kind: str):
    """The problems as asked in the ``--prompt`` form: ``plain`` leaves them as they are (reasoning models
    think anyway); ``system`` adds the system message asking for thinking; ``oneshot`` adds it and a worked
    example as an earlier turn. The built-in "Reply with just the number." is dropped from the question
    in both because it makes the small model end its thinking at once."""
    if kind == "plain":
        return problems
    shot = (Message("user", SHOT_QUESTION), Message("assistant", SHOT_ANSWER)) if kind == "oneshot" else ()
    out = []
    for p in problems:
        chat = [dataclasses.replace(m, content=m.content.replace(" Reply with just the number.", ""))
                if m.role == "user" else m for m in p.chat()]
        out.append(dataclasses.replace(p, prompt=None, messages=(Message("system", SYSTEM), *shot, *chat)))
    return out


async def run_point(problems, strategy, backend, seed: int, dump=None, label=None) -> dict:
    run_ledger = Ledger()
    started = time.perf_counter()
    results = await run_async(problems, strategy, backend, grader=grader_for, run_ledger=run_ledger, seed=seed)
    seconds = time.perf_counter() - started
    if dump is not None:  # every sample's text and its forcing record, to check the counts by hand
        for r in results:
            dump.write(json.dumps({**label, "id": r.problem.id, "answer": r.trace.answer, "correct": r.correct,
                                   "texts": [c.text for c in r.trace.candidates],
                                   "budget_forcing": r.trace.info.get("budget_forcing")}) + "\n")
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


def make_policy(args, backend, budget: int, waits: int) -> BudgetForcing:
    settings = dict(max_thinking_tokens=budget, max_waits=waits or None, min_thinking_tokens=None,
                    answer_max_tokens=args.answer_max_tokens, wait_text=args.wait_text,
                    thinking_opener=OPENERS[args.prompt] if args.opener is None else args.opener)
    # Explicit delimiters win; otherwise those of the model's chat template or vocabulary (else <think>).
    settings.update({k: v for k, v in (("think_start", args.think_start), ("think_end", args.think_end)) if v})
    return BudgetForcing.for_backend(backend, **settings)


async def sweep(args) -> list[dict]:
    backend = make_backend(args)
    problems = with_prompt(data.load(args.dataset, limit=args.limit, seed=args.seed), args.prompt)
    params = SamplingParams(temperature=args.temperature, max_tokens=max(args.budgets) + args.answer_max_tokens)
    dump = open(args.samples_out, "w") if args.samples_out else None
    rows = []
    try:
        if not args.no_baseline:
            point = await run_point(problems, inner_strategy(args, params), backend, args.seed,
                                    dump, {"budget": None, "waits": None})
            rows.append({"budget": None, "waits": None, **point})
            print(f"unforced: {point}", file=sys.stderr)
        print(f"first policy: {make_policy(args, backend, args.budgets[0], args.waits[0])}", file=sys.stderr)
        for waits in args.waits:
            for budget in args.budgets:
                policy = make_policy(args, backend, budget, waits)
                strategy = BudgetForced(inner=inner_strategy(args, params), policy=policy)
                point = await run_point(problems, strategy, backend, args.seed, dump, {"budget": budget, "waits": waits})
                rows.append({"budget": budget, "waits": waits, **point})
                print(f"budget={budget} waits={waits}: {point}", file=sys.stderr)
    finally:
        await backend.aclose()
        if dump is not None:
            dump.close()
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| max thinking tokens | Waits | accuracy | thinking tok/sample | generated tok/sample | Waits/sample | capped | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        budget = "unforced" if r["budget"] is None else str(r["budget"])
        waits = "-" if r["waits"] is None else str(r["waits"])
        # Unforced samples are not split into thinking and answer: their thinking is in "generated".
        thinking = "-" if r["budget"] is None else f"{r['thinking_per_sample']:.1f}"
        lines.append(f"| {budget} | {waits} | {r['accuracy']:.3f} | {thinking} | "
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
    ap.add_argument("--prompt", choices=("oneshot", "system", "plain"), default="oneshot",
                    help="oneshot: system message + a worked example (small instruction models); system: the "
                         "system message only; plain: the dataset's prompt as is (reasoning models)")
    ap.add_argument("--no-system", dest="prompt", action="store_const", const="plain", help="same as --prompt plain")
    ap.add_argument("--opener", default=None,
                    help="text written after the opening delimiter (default: per --prompt, 'I need to add' for "
                         "oneshot, nothing for plain)")
    ap.add_argument("--think-start", default=None, help="opening delimiter (default: from the model's tokenizer)")
    ap.add_argument("--think-end", default=None, help="closing delimiter (default: from the model's tokenizer)")
    ap.add_argument("--block-size", type=int, default=None, help="vllm: KV block size (32 on a CPU for prefix caching)")
    ap.add_argument("--max-model-len", type=int, default=None, help="vllm: context length")
    ap.add_argument("--samples-out", type=Path, default=None, help="JSONL of every sample's text and forcing record")
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
