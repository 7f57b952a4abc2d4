"""tts against the reference library its_hub on one `vllm serve` of the embedded model.

The same problems (60 single-digit additions), N=16 samples each at temperature 0.7 and at most 48
tokens, majority vote on the answer, through:

* tts: majority voting on the openai backend (one request per problem with ``n=16``, problems in flight
  at once up to ``--concurrency``);
* its_hub 1.2.0: ``SelfConsistency`` with budget 16, problems one after another, 8 concurrent requests
  per problem, and fully sequential (1); it runs in its own environment (``--peers-python``), since it
  is a peer to compare with, not a dependency;
* a plain client: one chat request per problem with ``n=16``, 8 requests at a time, voting with the same
  answer reader as tts.

Prompt and generated tokens are read from the server's own counters (``/metrics``) before and after
each side, so every client is counted the same way. Each answer is graded by tts's grader.

    python3 -m venv .venv-peers && .venv-peers/bin/pip install "its-hub[lm]==1.2.0"
    .venv/bin/python benchmarks/peers.py --limit 60 --n 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import tts
from tts.backends import resolve_model
from tts.backends.openai import OpenAIBackend
from tts.backends.vllm_server import VLLMServer
from tts.data.grading import extractor_for
from tts.metrics import wilson_interval
from tts.types import SamplingParams
from tts.verifiers.answers import same_answer

SERVED_NAME = "smollm2"
#: server counters read around each side; vLLM counts a request's prompt once per sample (it expands n
#: into n sequences), and cache hits are the prompt tokens it did not recompute
METRICS = ("vllm:prompt_tokens_total", "vllm:prefix_cache_hits_total", "vllm:generation_tokens_total")


def messages(problem) -> list[dict]:
    return [{"role": m.role, "content": m.content} for m in problem.chat()]


def tts_side(url: str, model_dir: str, problems, args) -> tuple[float, dict]:
    backend = OpenAIBackend(SERVED_NAME, base_url=url, tokenizer=model_dir).connect()
    strategy = tts.Majority(n=args.n, params=SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens))
    started = time.perf_counter()
    results = tts.run(problems, strategy, backend, concurrency=args.concurrency)
    wall = time.perf_counter() - started
    asyncio.run(backend.aclose())
    return wall, {r.problem.id: r.trace.answer for r in results}


async def plain_client(url: str, problems, args) -> dict:
    """What a user writes with an HTTP client: n samples per request, a vote on the extracted answers."""
    import httpx

    gate = asyncio.Semaphore(8)
    async with httpx.AsyncClient(timeout=600) as client:
        async def one(problem):
            async with gate:
                reply = await client.post(url + "/chat/completions", json={
                    "model": SERVED_NAME, "messages": messages(problem), "n": args.n,
                    "temperature": args.temperature, "max_tokens": args.max_tokens})
                reply.raise_for_status()
            read = extractor_for(problem)
            answers = [read(c["message"]["content"] or "") for c in reply.json()["choices"]]
            votes = Counter(a for a in answers if a is not None)
            return problem.id, votes.most_common(1)[0][0] if votes else None

        return dict(await asyncio.gather(*(one(p) for p in problems)))


def its_hub_side(url: str, problems, args, concurrency: int) -> tuple[float, dict]:
    job = {"url": url, "model": SERVED_NAME, "budget": args.n, "temperature": args.temperature,
           "max_tokens": args.max_tokens, "concurrency": concurrency,
           "problems": [{"id": p.id, "messages": messages(p)} for p in problems]}
    worker = Path(__file__).with_name("peers_its_hub.py")
    done = subprocess.run([args.peers_python, str(worker)], input=json.dumps(job), capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"its_hub worker failed:\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    by_id = {p.id: p for p in problems}
    return out["wall"], {pid: extractor_for(by_id[pid])(text or "") for pid, text in out["answers"].items()}


def main() -> None:
    ap = argparse.ArgumentParser(description="tts vs its_hub vs a plain client on one vllm serve")
    ap.add_argument("--dataset", default="add1")
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--concurrency", type=int, default=32, help="tts: problems in flight")
    ap.add_argument("--peers-python", default=".venv-peers/bin/python", help="python of the environment with its_hub")
    ap.add_argument("--skip-sequential", action="store_true", help="skip its_hub with 1 request at a time")
    args = ap.parse_args()
    if not Path(args.peers_python).exists():
        sys.exit(f"--peers-python {args.peers_python}: not found; make it with: "
                 "python3 -m venv .venv-peers && .venv-peers/bin/pip install 'its-hub[lm]==1.2.0'")

    problems = tts.data.load(args.dataset, limit=args.limit)
    model_dir = resolve_model("embedded")
    # (name, requests it sends, run): tts and the plain client send one request with n samples per
    # problem, its_hub one request per sample
    one_per_problem, one_per_sample = len(problems), len(problems) * args.n
    sides = [("tts majority (openai backend)", one_per_problem, lambda url: tts_side(url, model_dir, problems, args)),
             ("its_hub SelfConsistency, 8 concurrent", one_per_sample, lambda url: its_hub_side(url, problems, args, 8)),
             ("plain client, n per request, 8 concurrent", one_per_problem,
              lambda url: _timed(plain_client(url, problems, args)))]
    if not args.skip_sequential:
        sides.append(("its_hub SelfConsistency, sequential", one_per_sample, lambda url: its_hub_side(url, problems, args, 1)))
    rows = []
    with VLLMServer(model_dir, memory_fraction=0.5, served_name=SERVED_NAME) as server:
        # one warm-up request, so no side pays for the engine's first step
        _timed(plain_client(server.url, problems[:1], args))
        for name, requests, side in sides:
            before = [server.metric(m) for m in METRICS]
            wall, answers = side(server.url)
            prompt, cached, generated = (server.metric(m) - b for m, b in zip(METRICS, before))
            correct = sum(answers.get(p.id) is not None and same_answer(answers[p.id], p.answer) for p in problems)
            rows.append((name, requests, wall, prompt, cached, generated, correct))
            print(f"done: {name} in {wall:.1f} s", file=sys.stderr, flush=True)
    print(f"{args.dataset}, {len(problems)} problems, N={args.n}, temperature {args.temperature}, "
          f"max {args.max_tokens} tokens, one vllm serve (CPU: block size 32)\n")
    print("| client | requests | wall s | prompt tokens (of which from prefix cache) | generated tokens | accuracy (95% Wilson) |")
    print("|---|---|---|---|---|---|")
    for name, requests, wall, prompt, cached, generated, correct in rows:
        lo, hi = wilson_interval(correct, len(problems))
        print(f"| {name} | {requests:,} | {wall:.1f} | {prompt:,.0f} ({cached:,.0f}) | {generated:,.0f} | "
              f"{correct / len(problems):.3f} ({lo:.2f}-{hi:.2f}) |")


def _timed(coro) -> tuple[float, dict]:
    started = time.perf_counter()
    answers = asyncio.run(coro)
    return time.perf_counter() - started, answers


if __name__ == "__main__":
    main()
