"""Every benchmark and experiment script still imports and parses its options (``--help``): a
refactor that renames what a script uses fails here, not weeks later when someone reruns it. The
scripts' real runs need engines or peers and are recorded in docs/performance.md."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: run inside a peer's own environment (it imports the peer, not tts), so not here
PEER_SIDE = {"peers_its_hub.py"}
SCRIPTS = sorted(p for folder in ("benchmarks", "experiments") for p in (REPO / folder).glob("*.py")
                 if p.name not in PEER_SIDE)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_script_help(script):
    done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage:")
