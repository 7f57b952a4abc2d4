"""The laptop-scale testbed: a tiny policy and a tiny process reward model for the ``steps*`` datasets.

Both are small Llama models (character-level tokenizer, bf16 safetensors, a few MB) trained on a CPU by
``experiments/testbed/build.py`` and shipped in this folder, so every strategy, PRM search included, can
be run, compared and regression-tested without a GPU or a download:

    tts run --backend hf --model tts/testbed/policy --dataset steps5 --strategy beam_search,dvts \\
        --prm testbed --step-delimiter "\\n" --aggregation min --max-tokens 256

:data:`POLICY_DIR` and :data:`PRM_DIR` are the folders (found relative to this package, no machine
paths); :func:`prm` returns the PRM as a :class:`tts.verifiers.prm.TokenLogitPRM` built from the folder's
``tts_prm.json`` (tagged format laid out as the policy reads a problem and writes a solution, each step
scored by ``+`` against ``-`` at the line break that ends it). It is trained on the steps up to the first
wrong one, so combine its step scores with ``min`` (``--aggregation min``) in tree search.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
POLICY_DIR = HERE / "policy"
PRM_DIR = HERE / "prm"
#: the file in a PRM folder that says how the verifier reads it (TokenLogitPRM keyword arguments)
PRM_CONFIG = "tts_prm.json"
#: --prm names that mean the testbed's PRM
ALIASES = ("testbed",)


def prm_options(folder: str | Path) -> dict:
    """TokenLogitPRM keyword arguments stored in a PRM folder's tts_prm.json ({} when there is none)."""
    path = Path(folder) / PRM_CONFIG
    if not path.is_file():
        return {}
    options = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(options, dict):
        raise ValueError(f"{path} must hold a JSON object of TokenLogitPRM options")
    return options


def load_prm(folder: str | Path | None = None, **overrides):
    """A TokenLogitPRM for a local PRM folder (default: the testbed's), configured by its tts_prm.json;
    a folder without one is read as a Math-Shepherd-style PRM."""
    from ..verifiers.prm import TokenLogitPRM

    folder = PRM_DIR if folder is None or str(folder) in ALIASES else Path(folder).expanduser()
    if not (Path(folder) / "config.json").is_file():
        raise ValueError(f"PRM path {str(folder)!r} is not a Hugging Face model folder (no config.json there)")
    options = {**prm_options(folder), **overrides}
    return TokenLogitPRM(str(folder), **options)


def prm(**overrides):
    """The testbed's PRM."""
    return load_prm(None, **overrides)
