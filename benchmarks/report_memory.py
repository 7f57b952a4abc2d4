"""Peak memory of ``tts report`` on a large results file (issue 17: bounded for a million records).

Writes N synthetic majority@8 records in the results format (valid digests; candidate texts of about
200 characters, as a real run stores them), then runs ``tts report`` on them in a child process and
prints its peak resident memory and wall time.

    .venv/bin/python benchmarks/report_memory.py --records 100000
    .venv/bin/python benchmarks/report_memory.py --records 100000 --checkout ../other-tts   # another version side by side
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tts.results import FORMAT_VERSION, digest


def record(i: int, rng: random.Random) -> dict:
    cands = []
    for j in range(8):
        answer = str(rng.randint(0, 3))
        cands.append({"text": f"Let me think step by step about problem {i}. " * 5 + f"The answer is {answer}.",
                      "answer": answer, "num_tokens": 48, "finish_reason": "stop", "scores": {"confidence": rng.random()},
                      "correct": answer == "1"})
    rec = {"id": f"p{i:07d}", "strategy": "majority", "answer": "1", "reference": "1", "correct": rng.random() < 0.6,
           "chosen": 0, "candidates": cands, "ledger": {"generated_tokens": 384, "prompt_tokens": 40, "flops": 1.0e9},
           "info": {}, "metadata": {"level": i % 5 + 1, "question": "What is 1 + 0? " * 4}, "config_hash": "h",
           "dataset": "synthetic", "model": "m", "run": {"dataset": "synthetic"}, "format": FORMAT_VERSION}
    rec["digest"] = digest(rec)
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--checkout", help="also run the report of the tts package in this folder (an older version)")
    args = ap.parse_args()
    rng = random.Random(0)
    path = Path(tempfile.mkdtemp(prefix="tts-report-")) / "big.jsonl"
    with path.open("w") as fh:
        for i in range(args.records):
            fh.write(json.dumps(record(i, rng), ensure_ascii=False) + "\n")
    size_mb = path.stat().st_size / 2**20
    versions = [("this checkout", None)] + ([(args.checkout, args.checkout)] if args.checkout else [])
    for label, folder in versions:
        code = "import sys; from tts.report import report_command; report_command([sys.argv[1]])"
        if folder:  # import tts from that folder: ahead of sys.path, and past the editable install's finder
            code = (f"import sys; sys.meta_path = [f for f in sys.meta_path if 'editable' not in repr(f)]; "
                    f"sys.path.insert(0, {str(Path(folder).resolve())!r}); import tts; "
                    f"assert tts.__file__.startswith({str(Path(folder).resolve())!r}), tts.__file__; ") + code.split("; ", 1)[1]
        env = dict(os.environ)
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - start
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        note = "" if peak_mb * 1024 > before else " (peak not above an earlier child's)"
        print(f"{label}: {args.records} records ({size_mb:.0f} MB file): tts report exit {proc.returncode}, "
              f"peak RSS {peak_mb:.0f} MB{note}, {seconds:.1f} s")
        if proc.returncode:
            print(proc.stderr[-500:])
    path.unlink()


if __name__ == "__main__":
    main()
