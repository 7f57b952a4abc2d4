"""Build the whole testbed with one command: the policy, the verifier (the policy trained further), the PRM
trained on the policy's samples, then the PRM's and the verifier's measurements against the exact step
labels.

    .venv/bin/python experiments/testbed/build.py              # about 45 minutes on 2 cores (policy ~25, then verifier ~10 beside PRM ~20)
    .venv/bin/python experiments/testbed/build.py --skip-built # only what is missing (cached folders)

The folders land in tts/testbed/policy, tts/testbed/verifier and tts/testbed/prm (bf16 safetensors, committed); everything is
seeded, so a rebuild on the same software gives the same weights.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import common

HERE = Path(__file__).resolve().parent


def start(script: str, *args: str) -> subprocess.Popen:
    print(f"== {script} {' '.join(args)}", flush=True)
    return subprocess.Popen([sys.executable, str(HERE / script), *args], cwd=HERE)


def wait(*jobs: subprocess.Popen) -> None:
    codes = [job.wait() for job in jobs]
    if any(codes):
        sys.exit(f"a build step failed (exit codes {codes})")


def step(script: str, *args: str) -> None:
    wait(start(script, *args))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-built", action="store_true", help="keep model folders that already exist")
    ap.add_argument("--no-eval", action="store_true", help="do not measure the PRM and the verifier afterwards")
    args = ap.parse_args()
    built = lambda d: (d / "model.safetensors").is_file()  # noqa: E731
    if not (args.skip_built and built(common.POLICY_DIR)):
        # Two phases, as the committed policy was trained: 1500 steps from scratch (it learns the format,
        # not yet to copy), then 2000 more from those bf16 weights on a second seed's problems (copying
        # and arithmetic appear; the loss falls from about 0.9 to about 0.3).
        with tempfile.TemporaryDirectory() as tmp:
            step("train_policy.py", "--steps", "1500", "--seed", "0", "--out", f"{tmp}/phase1")
            step("train_policy.py", "--init", f"{tmp}/phase1", "--steps", "2000", "--seed", "1")
    # The verifier and the PRM both start from the policy and not from each other: one core each (every
    # script runs one torch thread, so results do not depend on what runs beside it).
    jobs = []
    if not (args.skip_built and built(common.VERIFIER_DIR)):
        # The verifier: the policy trained 1500 steps further on a third seed's problems (a stronger
        # model of the same task, read as a LikelihoodPRM). The relative path keeps training.json free
        # of this machine's folders.
        jobs.append(start("train_policy.py", "--init", "../../tts/testbed/policy", "--steps", "1500", "--seed",
                          "2", "--out", str(common.VERIFIER_DIR), "--verifier"))
    if not (args.skip_built and built(common.PRM_DIR)):
        jobs.append(start("train_prm.py"))
    wait(*jobs)
    if not args.no_eval:
        # The measurements docs/performance.md quotes, for the PRM and the verifier side by side.
        measure = ("--problems", "60", "--threshold", "auto")
        wait(start("evaluate_prm.py", *measure, "--out", str(HERE / "results" / "prm_eval.json")),
             start("evaluate_prm.py", *measure, "--prm", "testbed-verifier",
                   "--out", str(HERE / "results" / "verifier_eval.json")))


if __name__ == "__main__":
    main()
