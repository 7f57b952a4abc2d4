"""`tts serve` under concurrent clients: throughput and accuracy of majority@N per request.

On one upstream `vllm serve` of the embedded model, ``--clients`` concurrent OpenAI clients each send
their share of the problems (single-digit additions) as chat requests with ``model: majority@N``:

* through `tts serve --backend openai` (one upstream request with n=N per client request; the
  clients' requests meet in the upstream engine's batches);
* a plain client straight to the upstream server (one request with n=N, the vote done client-side by
  the same answer reader), the floor any proxy adds overhead to;
* through `tts serve --backend vllm` (the engine in the server process, no upstream hop), after the
  upstream server has stopped.

Upstream requests and prompt tokens come from vLLM's own counters (``/metrics``) around each side.
Every answer is graded by tts's grader.

    .venv/bin/python benchmarks/serve.py --limit 60 --n 16 --clients 16
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

import tts  # noqa: E402
from tts.backends import resolve_model  # noqa: E402
from tts.backends.vllm_server import VLLMServer  # noqa: E402
from tts.data.grading import extractor_for  # noqa: E402
from tts.metrics import wilson_interval  # noqa: E402
from tts.verifiers.answers import same_answer  # noqa: E402

UPSTREAM = ("vllm:request_success_total", "vllm:prompt_tokens_total", "vllm:generation_tokens_total")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def messages(problem) -> list[dict]:
    return [{"role": m.role, "content": m.content} for m in problem.chat()]


class TTSServe:
    def __init__(self, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.proc = subprocess.Popen([sys.executable, "-m", "tts.cli", "serve", "--port", str(self.port),
                                      "--max-concurrent-requests", "256", *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"tts serve exited: {self.proc.stderr.read()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.5)
        sys.exit("tts serve did not start in 10 minutes")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


async def clients(url: str, model: str, problems, args, *, vote_here: bool) -> tuple[float, dict]:
    """``--clients`` workers, each sending its next problem when its last one is answered."""
    queue = list(problems)
    answers: dict[str, str | None] = {}
    async with httpx.AsyncClient(timeout=1200) as client:
        async def worker():
            while queue:
                problem = queue.pop(0)
                body = {"model": model, "messages": messages(problem), "temperature": args.temperature,
                        "max_tokens": args.max_tokens}
                if vote_here:
                    body["n"] = args.n
                reply = await client.post(url + "/chat/completions", json=body)
                reply.raise_for_status()
                data = reply.json()
                if vote_here:
                    read = extractor_for(problem)
                    votes = Counter(a for a in (read(c["message"]["content"] or "") for c in data["choices"]) if a)
                    answers[problem.id] = votes.most_common(1)[0][0] if votes else None
                else:
                    answers[problem.id] = data["tts"]["answer"]

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.clients)))
        return time.perf_counter() - started, answers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="add1")
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--skip-direct", action="store_true", help="skip tts serve on the vllm backend")
    args = ap.parse_args()

    problems = tts.data.load(args.dataset, limit=args.limit)
    model_dir = resolve_model("embedded")
    spec = f"majority@{args.n}"
    rows = []

    def record(name, wall, answers, upstream):
        correct = sum(answers.get(p.id) is not None and same_answer(answers[p.id], p.answer) for p in problems)
        rows.append((name, wall, correct, upstream))
        print(f"done: {name} in {wall:.1f} s", file=sys.stderr, flush=True)

    with VLLMServer(model_dir, memory_fraction=0.5) as upstream:
        # warm-up, one full untimed pass: vLLM's first batches of each size are slow on a CPU, and the
        # side that met them first would pay for them (57 s against 22 s in a first try)
        asyncio.run(clients(upstream.url, model_dir, problems, args, vote_here=True))
        proxy = TTSServe("--backend", "openai", "--base-url", upstream.url, "--model", "embedded")
        try:
            for name, url, model, here in (("tts serve, backend openai", proxy.url, spec, False),
                                           ("plain client to vllm serve (n per request)", upstream.url, model_dir, True)):
                before = [upstream.metric(m) for m in UPSTREAM]
                wall, answers = asyncio.run(clients(url, model, problems, args, vote_here=here))
                record(name, wall, answers, [upstream.metric(m) - b for m, b in zip(UPSTREAM, before)])
        finally:
            proxy.close()
    if not args.skip_direct:
        direct = TTSServe("--backend", "vllm", "--model", "embedded")
        try:
            asyncio.run(clients(direct.url, spec, problems, args, vote_here=False))  # warm-up, as above
            wall, answers = asyncio.run(clients(direct.url, spec, problems, args, vote_here=False))
            record("tts serve, backend vllm (no upstream hop)", wall, answers, None)
        finally:
            direct.close()

    print(f"\n{args.dataset}, {len(problems)} problems, {spec} per request, {args.clients} concurrent clients, "
          f"temperature {args.temperature}, max {args.max_tokens} tokens\n")
    print("| client | wall s | requests/s | accuracy (95% Wilson) | upstream requests | upstream prompt tokens |")
    print("|---|---|---|---|---|---|")
    for name, wall, correct, up in rows:
        lo, hi = wilson_interval(correct, len(problems))
        ups = f"{up[0]:,.0f} | {up[1]:,.0f}" if up else "- | -"
        print(f"| {name} | {wall:.1f} | {len(problems) / wall:.2f} | {correct / len(problems):.3f} "
              f"({lo:.2f}-{hi:.2f}) | {ups} |")


if __name__ == "__main__":
    main()
