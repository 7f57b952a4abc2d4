"""`tts serve` under concurrent clients: throughput and accuracy of majority@N per request.

On one upstream `vllm serve` of the embedded model, ``--clients`` concurrent OpenAI clients each send
their share of the problems (single-digit additions) as chat requests with ``model: majority@N``:

* through `tts serve --backend openai` (one upstream request with n=N per client request; the
  clients' requests meet in the upstream engine's batches);
* a plain client straight to the upstream server (one request with n=N, the vote done client-side by
  the same answer reader), the floor any proxy adds overhead to;
* its_hub 1.2.0's `its-iaas` server configured for self-consistency with budget N, and optillm's
  proxy with its majority_voting approach (model-name prefix, ``k`` = N), each in its own environment
  (``--its-hub-python``, ``--optillm-python``; a side is skipped when its environment is missing);
* through `tts serve --backend vllm` (the engine in the server process, no upstream hop), after the
  upstream server has stopped.

Upstream requests and prompt tokens come from vLLM's own counters (``/metrics``) around each side.
Every answer is graded by tts's grader.

    python3 -m venv .venv-peers && .venv-peers/bin/pip install "its-hub[lm,iaas]==1.2.0"
    python3 -m venv .venv-optillm && .venv-optillm/bin/pip install optillm
    .venv/bin/python benchmarks/serve.py --limit 60 --n 16 --clients 16
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

import tts  # noqa: E402
from tts.backends import resolve_model  # noqa: E402
from tts.backends.vllm_server import VLLMServer, free_port  # noqa: E402
from tts.data.grading import extractor_for  # noqa: E402
from tts.metrics import wilson_interval  # noqa: E402
from tts.verifiers.answers import same_answer  # noqa: E402

UPSTREAM = ("vllm:request_success_total", "vllm:prompt_tokens_total", "vllm:generation_tokens_total")


def messages(problem) -> list[dict]:
    return [{"role": m.role, "content": m.content} for m in problem.chat()]


def vote(problem, texts) -> str | None:
    """The majority answer of texts, read by tts's answer reader for the problem."""
    read = extractor_for(problem)
    votes = Counter(a for a in (read(t or "") for t in texts) if a)
    return votes.most_common(1)[0][0] if votes else None


async def clients(url: str, problems, args, body, answer, headers=None) -> tuple[float, dict]:
    """``--clients`` workers, each sending its next problem when its last one is answered:
    ``body(problem)`` is its request, ``answer(problem, reply)`` reads the answer from the reply."""
    queue = list(problems)
    answers: dict[str, str | None] = {}
    async with httpx.AsyncClient(timeout=1200, headers=headers) as client:
        async def worker():
            while queue:
                problem = queue.pop(0)
                reply = await client.post(url + "/chat/completions", json=body(problem))
                reply.raise_for_status()
                answers[problem.id] = answer(problem, reply.json())

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.clients)))
        return time.perf_counter() - started, answers


def sampling(args) -> dict:
    return {"temperature": args.temperature, "max_tokens": args.max_tokens}


def tts_side(spec):
    return (lambda p: {"model": spec, "messages": messages(p)} | SAMPLING,
            lambda p, data: data["tts"]["answer"])


def plain_side(model, n):
    return (lambda p: {"model": model, "messages": messages(p), "n": n} | SAMPLING,
            lambda p, data: vote(p, [c["message"]["content"] for c in data["choices"]]))


def one_answer(p, data) -> str | None:
    return vote(p, [data["choices"][0]["message"]["content"]])


class Served:
    """A server process on a free port ("{port}" in ``cmd``), up once ``ready_path`` answers: a peer in
    its own environment (a program to compare with, not a dependency) or `tts serve` itself."""

    def __init__(self, cmd: list[str], ready_path: str, env: dict | None = None):
        import os

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([c.replace("{port}", str(self.port)) for c in cmd], env={**os.environ, **(env or {})},
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 600  # an engine's first start can take minutes
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"{cmd[0]} exited: {self.proc.stderr.read()[-2000:]}")
            try:
                httpx.get(self.url + ready_path, timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.5)
        sys.exit(f"{cmd[0]} did not start")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def tts_serve(*args: str) -> Served:
    server = Served([sys.executable, "-m", "tts.cli", "serve", "--port", "{port}", "--max-concurrent-requests", "256",
                     *args], "/health")
    server.url += "/v1"
    return server


def main() -> None:
    global SAMPLING
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="add1")
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--skip-direct", action="store_true", help="skip tts serve on the vllm backend")
    ap.add_argument("--its-hub-python", default=".venv-peers/bin/python",
                    help="python of an environment with its-hub 1.2.0 (its-iaas); skipped when missing")
    ap.add_argument("--optillm-python", default=".venv-optillm/bin/python",
                    help="python of an environment with optillm; skipped when missing")
    args = ap.parse_args()
    SAMPLING = sampling(args)

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
        asyncio.run(clients(upstream.url, problems, args, *plain_side(model_dir, args.n)))
        sides = []
        proxy = tts_serve("--backend", "openai", "--base-url", upstream.url, "--model", "embedded")
        sides.append(("tts serve majority@N, backend openai", proxy, proxy.url, tts_side(spec)))
        sides.append(("plain client to vllm serve (n per request, client-side vote)", None, upstream.url,
                      plain_side(model_dir, args.n)))
        if Path(args.its_hub_python).exists():
            iaas = Served([args.its_hub_python, "-m", "its_hub.integration.iaas.app_server", "--port", "{port}",
                         "--log-level", "WARNING"], "/v1/models")
            httpx.post(iaas.url + "/configure", timeout=60, json={
                "endpoint": upstream.url, "api_key": "none", "model": model_dir, "alg": "self-consistency",
                "regex_patterns": [r"(-?\d+)(?!.*\d)"], "budget": args.n, "temperature": args.temperature,
            }).raise_for_status()
            sides.append((f"its_hub its-iaas self-consistency, budget {args.n}", iaas, iaas.url + "/v1",
                          (lambda p: {"model": model_dir, "messages": messages(p), "budget": args.n} | SAMPLING,
                           one_answer)))
        if Path(args.optillm_python).exists():
            # optillm's majority_voting plugin, chosen by the model-name prefix; k samples in one request
            opt = Served([args.optillm_python, "-c", "import optillm; optillm.main()", "--base-url", upstream.url,
                        "--port", "{port}"],
                       "/health", env={"OPENAI_API_KEY": "none"})
            sides.append((f"optillm proxy, majority_voting, k {args.n}", opt, opt.url + "/v1",
                          (lambda p: {"model": f"majority_voting-{model_dir}", "messages": messages(p),
                                      "k": args.n} | SAMPLING, one_answer)))
        try:
            for name, _, url, (body, answer) in sides:
                before = [upstream.metric(m) for m in UPSTREAM]
                wall, answers = asyncio.run(clients(url, problems, args, body, answer,
                                                    headers={"Authorization": "Bearer none"}))
                record(name, wall, answers, [upstream.metric(m) - b for m, b in zip(UPSTREAM, before)])
        finally:
            for _, server, _, _ in sides:
                if server is not None:
                    server.close()
    if not args.skip_direct:
        # the upstream server's engine settings (VLLMServer: block size 32, 2048-token context), so the two
        # vLLM sides differ only by the hop
        direct = tts_serve("--backend", "vllm", "--model", "embedded", "--engine-option", "block_size=32",
                          "--engine-option", "max_model_len=2048")
        try:
            asyncio.run(clients(direct.url, problems, args, *tts_side(spec)))  # warm-up, as above
            wall, answers = asyncio.run(clients(direct.url, problems, args, *tts_side(spec)))
            record("tts serve majority@N, backend vllm (no upstream hop)", wall, answers, None)
        finally:
            direct.close()

    print(f"\n{args.dataset}, {len(problems)} problems, N={args.n} per request, {args.clients} concurrent clients, "
          f"temperature {args.temperature}, max {args.max_tokens} tokens\n")
    print("| client | wall s | requests/s | accuracy (95% Wilson) | upstream sequences | upstream prompt tokens | "
          "upstream generated tokens |")
    print("|---|---|---|---|---|---|---|")
    for name, wall, correct, up in rows:
        lo, hi = wilson_interval(correct, len(problems))
        ups = f"{up[0]:,.0f} | {up[1]:,.0f} | {up[2]:,.0f}" if up else "- | - | -"
        print(f"| {name} | {wall:.1f} | {len(problems) / wall:.2f} | {correct / len(problems):.3f} "
              f"({lo:.2f}-{hi:.2f}) | {ups} |")


SAMPLING: dict = {}


if __name__ == "__main__":
    main()
