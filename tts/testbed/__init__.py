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

:data:`PROBE_DIR` holds a probe of the policy's own states (``--step-scorer probe``, no second model;
:func:`load_probe`, :class:`tts.verifiers.probe.ProbePRM`), trained by
``experiments/testbed/train_probe.py`` on exact step labels.
"""

from __future__ import annotations

from pathlib import Path

from ..verifiers.prm import FOLDER_CONFIG, load_folder

HERE = Path(__file__).resolve().parent
POLICY_DIR = HERE / "policy"
PRM_DIR = HERE / "prm"
#: the policy trained further (more steps on other problems): a stronger model of the same task, read as
#: a LikelihoodPRM (a step scores its own tokens' probabilities under it)
VERIFIER_DIR = HERE / "verifier"
#: a probe on the policy's own hidden states (tts.verifiers.probe; ``--step-scorer probe``), trained by
#: experiments/testbed/train_probe.py on exact step labels
PROBE_DIR = HERE / "probe"
#: the file in a PRM folder that says how the verifier reads it (tts.verifiers.prm.load_folder)
PRM_CONFIG = FOLDER_CONFIG
#: --prm names of the testbed's folders
ALIASES = {"testbed": PRM_DIR, "testbed-verifier": VERIFIER_DIR}


def load_prm(folder: str | Path | None = None, **overrides):
    """The PRM of a local folder (default: the testbed's trained PRM; ``"testbed-verifier"``: the stronger
    model read as a LikelihoodPRM), read by :func:`tts.verifiers.prm.load_folder`."""
    folder = ALIASES.get(str(folder), PRM_DIR if folder is None else Path(folder).expanduser())
    if not (Path(folder) / "config.json").is_file():
        raise ValueError(f"PRM path {str(folder)!r} is not a Hugging Face model folder (no config.json there); "
                         f"give a local model folder or one of: {', '.join(ALIASES)}")
    return load_folder(folder, **overrides)


def load_probe(folder: str | Path | None = None, **overrides):
    """The probe step scorer of a probe folder (default: the testbed's, on the testbed policy), a
    :class:`tts.verifiers.probe.ProbePRM`."""
    from ..verifiers.probe import ProbePRM

    return ProbePRM.from_folder(PROBE_DIR if folder is None else Path(folder).expanduser(), **overrides)


def prm(**overrides):
    """The testbed's PRM."""
    return load_prm(None, **overrides)
