"""Kill ``tts run`` with SIGKILL at random moments, resume each time, and check nothing was lost or
left behind: every problem exactly once at the end, every line valid, no engine process alive 10 s
after its run died (issue 17).

    .venv/bin/python benchmarks/soak_kill.py --backend vllm --kills 20
    .venv/bin/python benchmarks/soak_kill.py --backend hf --kills 20
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tts.results import read_records


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="vllm", choices=["vllm", "hf"])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--min-wait", type=float, default=3.0, help="earliest kill, seconds after the start")
    ap.add_argument("--max-wait", type=float, default=60.0, help="latest kill, seconds after the start")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    tts = str(Path(sys.executable).with_name("tts"))
    out = Path(tempfile.mkdtemp(prefix="tts-soak-")) / "r.jsonl"
    cmd = [tts, "run", "--backend", args.backend, "--dataset", "add2", "--limit", str(args.limit),
           "--strategy", "single,majority", "--n", "8", "--out", str(out)]
    survivors, lines_seen, started = 0, [], time.time()
    for k in range(args.kills):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait = rng.uniform(args.min_wait, args.max_wait)
        deadline = time.monotonic() + wait
        tree: set[int] = set()
        while time.monotonic() < deadline and proc.poll() is None:
            tree |= descendants(proc.pid)
            time.sleep(0.2)
        if proc.poll() is not None:
            print(f"kill {k + 1}: the run finished before the kill ({wait:.1f} s); stopping early")
            break
        tree |= descendants(proc.pid)
        proc.kill()
        proc.wait()
        time.sleep(10)
        # only this run's own processes: another tts run on the machine has engines of its own
        left = sorted(p for p in tree if alive(p))
        survivors += len(left)
        records = read_records(out) if out.exists() else []  # raises on any invalid line
        lines_seen.append(len(records))
        print(f"kill {k + 1} after {wait:.1f} s: {len(records)} results, {len(tree)} child processes seen, "
              f"{len(left)} alive 10 s later {left}", flush=True)
        for p in left:
            subprocess.run(["kill", "-9", str(p)])
    final = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    records = read_records(out)
    keys = [(r["strategy"], r["id"]) for r in records]
    expected = {(s, f"add2-{i:04d}") for s in ("single", "majority") for i in range(args.limit)}
    print(f"\n{args.backend}: {len(lines_seen)} kills at random moments in [{args.min_wait}, {args.max_wait}] s, "
          f"then a final resume (exit {final.returncode}) in {time.time() - started:.0f} s total")
    print(f"records {len(records)}, unique {len(set(keys))}, expected {len(expected)}, "
          f"exactly once: {set(keys) == expected and len(keys) == len(expected)}; "
          f"engine/child processes alive 10 s after a kill: {survivors}")
    ok = final.returncode == 0 and set(keys) == expected and len(keys) == len(expected) and survivors == 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
