"""The laptop-scale testbed: a tiny policy, a tiny process reward model and a verifier for the ``steps*`` datasets.

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

:data:`VERIFIER_DIR` holds the policy trained further, read as a
:class:`tts.verifiers.prm.LikelihoodPRM` (``--prm testbed-verifier``): each step scores the lowest
probability this stronger model gives one of its tokens. The trained PRM ranks two candidates for the
same step near chance; the verifier ranks them well, so it is the one that makes search pay off.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
POLICY_DIR = HERE / "policy"
PRM_DIR = HERE / "prm"
#: the policy trained further (more steps on other problems): a stronger model of the same task, read as
#: a LikelihoodPRM (a step scores its own tokens' probabilities under it)
VERIFIER_DIR = HERE / "verifier"
#: the file in a PRM folder that says how the verifier reads it: the PRM class's keyword arguments, and
#: ``"kind"``: ``"token_logit"`` (default, TokenLogitPRM) or ``"likelihood"`` (LikelihoodPRM)
PRM_CONFIG = "tts_prm.json"
#: --prm names of the testbed's folders
ALIASES = {"testbed": PRM_DIR, "testbed-verifier": VERIFIER_DIR}
KINDS = ("token_logit", "likelihood")


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
    """The PRM of a local folder (default: the testbed's trained PRM; ``"testbed-verifier"``: the stronger
    model read as a LikelihoodPRM), configured by its tts_prm.json; a folder without one is read as a
    Math-Shepherd-style TokenLogitPRM."""
    from ..verifiers.prm import LikelihoodPRM, TokenLogitPRM

    folder = ALIASES.get(str(folder), PRM_DIR if folder is None else Path(folder).expanduser())
    if not (Path(folder) / "config.json").is_file():
        raise ValueError(f"PRM path {str(folder)!r} is not a Hugging Face model folder (no config.json there); "
                         f"give a local model folder or one of: {', '.join(ALIASES)}")
    options = {**prm_options(folder), **overrides}
    kind = options.pop("kind", "token_logit")
    if kind not in KINDS:
        raise ValueError(f"{Path(folder) / PRM_CONFIG}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return (LikelihoodPRM if kind == "likelihood" else TokenLogitPRM)(str(folder), **options)


def prm(**overrides):
    """The testbed's PRM."""
    return load_prm(None, **overrides)
