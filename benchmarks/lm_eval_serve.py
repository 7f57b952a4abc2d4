"""A client no one here wrote: lm-evaluation-harness evaluates `tts serve` through its
``local-chat-completions`` model type, and its accuracies are compared with `tts run` on the same
problems.

The task is defined over a local JSONL file (no hub): ``--dataset add1`` (seeded single-digit
additions) or ``--dataset gsm8k --data-path ../shared/data/gsm8k/train.jsonl``. lm-eval runs twice,
with ``model=single`` and ``model=majority@N``; `tts run` runs the same two strategies on the same
file with the same sampling settings. lm-eval grades by the last number in the reply (its regex
filter), tts by its own grader, so small differences in reading are expected; the intervals say
whether the accuracies agree.

lm-eval lives in its own environment (it is a client, not a dependency):

    python3 -m venv .venv-lmeval && .venv-lmeval/bin/pip install "lm-eval[api]"
    .venv/bin/python benchmarks/lm_eval_serve.py --lm-eval-python .venv-lmeval/bin/python --limit 40
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

import tts  # noqa: E402
from tts.backends.vllm_server import free_port  # noqa: E402
from tts.metrics import wilson_interval  # noqa: E402

TASK = """task: tts_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: []
  max_gen_toks: {max_tokens}
  do_sample: true
  temperature: {temperature}
filter_list:
  - name: last_number
    filter:
      - function: regex
        regex_pattern: "(-?[0-9][0-9,]*(?:\\\\.[0-9]+)?)(?!.*[0-9])"
        group_select: 0
      - function: take_first
metric_list:
  - metric: exact_match
    ignore_punctuation: true
    regexes_to_ignore: [","]
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lm-eval-python", default=".venv-lmeval/bin/python")
    ap.add_argument("--dataset", default="add1")
    ap.add_argument("--data-path", default=None)
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--backend", default="hf")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--max-tokens", type=int, default=48)
    args = ap.parse_args()
    if not Path(args.lm_eval_python).exists():
        sys.exit(f"--lm-eval-python {args.lm_eval_python}: not found; make it with: "
                 "python3 -m venv .venv-lmeval && .venv-lmeval/bin/pip install 'lm-eval[api]'")

    problems = tts.data.load(args.dataset, limit=args.limit, path=args.data_path)
    work = Path(tempfile.mkdtemp(prefix="tts-lmeval-"))
    data = work / "problems.jsonl"
    data.write_text("".join(json.dumps({"id": p.id, "question": p.chat()[-1].content, "answer": p.answer}) + "\n"
                            for p in problems))
    (work / "tasks").mkdir()
    (work / "tasks" / "tts_local.yaml").write_text(TASK.format(data=data, max_tokens=args.max_tokens,
                                                              temperature=args.temperature))
    strategies = ["single", f"majority@{args.n}"]
    rows = []

    # tts run on the same file: the reference the harness's numbers should agree with
    out = work / "run.jsonl"
    cmd = [sys.executable, "-m", "tts.cli", "run", "--backend", args.backend, "--dataset", str(data),
           "--question-field", "question", "--answer-field", "answer", "--id-field", "id",
           "--strategy", ",".join(strategies), "--temperature", str(args.temperature),
           "--max-tokens", str(args.max_tokens), "--limit", str(len(problems)), "--out", str(out)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    for s in strategies:
        mine = [r for r in records if r.get("strategy") == s]
        correct = sum(bool(r.get("correct")) for r in mine)
        rows.append((f"tts run --strategy {s}", correct, len(mine), None))

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tts.cli", "serve", "--backend", args.backend, "--model",
                               "embedded", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"tts serve did not start: {server.stderr.read()[-2000:] if server.poll() is not None else ''}")
            time.sleep(0.5)
        for s in strategies:
            started = time.perf_counter()
            results = work / f"lm-eval-{s.replace('@', '-')}"
            model_args = (f"model={s},base_url=http://127.0.0.1:{port}/v1/chat/completions,num_concurrent=8,"
                          "max_retries=1,tokenized_requests=False")
            subprocess.run([args.lm_eval_python, "-m", "lm_eval", "--model", "local-chat-completions",
                            "--model_args", model_args, "--tasks", "tts_local", "--include_path", str(work / "tasks"),
                            "--apply_chat_template", "--output_path", str(results), "--log_samples"],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            [summary] = list(results.rglob("results_*.json"))
            metrics = json.loads(summary.read_text())["results"]["tts_local"]
            score = metrics["exact_match,last_number"]
            rows.append((f"lm-eval local-chat-completions, model={s}", round(score * len(problems)), len(problems),
                         time.perf_counter() - started))
    finally:
        server.terminate()
        server.wait(30)

    print(f"\n{args.dataset}, {len(problems)} problems, temperature {args.temperature}, max {args.max_tokens} tokens, "
          f"backend {args.backend}\n")
    print("| client | accuracy (95% Wilson) | wall s |")
    print("|---|---|---|")
    for name, correct, total, wall in rows:
        lo, hi = wilson_interval(correct, total)
        print(f"| {name} | {correct / total:.3f} ({lo:.2f}-{hi:.2f}) | {'' if wall is None else f'{wall:.0f}'} |")


if __name__ == "__main__":
    main()
