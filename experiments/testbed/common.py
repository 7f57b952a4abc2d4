"""Shared pieces of the testbed scripts: the tokenizer, model configs, text layout, seeding, paths.

The policy sees exactly what the toolkit's backends send a model without a chat template
(tts.backends.base.render_chat_fallback): ``"User: Evaluate <expr>\\nAssistant: "``, then writes the
solution (tts.data.stepwise.solution) and the end-of-sequence token.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tts.data import stepwise  # noqa: E402
from tts.testbed import POLICY_DIR, PRM_DIR, PRM_CONFIG, PROBE_DIR, VERIFIER_DIR  # noqa: E402,F401
from tts.types import Message  # noqa: E402
from tts.backends.base import render_chat_fallback  # noqa: E402

#: torch threads. One by default: results then do not depend on the machine, and on a shared 2-core
#: machine two OpenMP threads competing with other processes ran up to 10x slower than one.
THREADS = int(os.environ.get("TESTBED_THREADS", "1"))
#: whole-word tokens (the prompt's fixed words); everything else is one token per character
WORDS = ["User", "Assistant", "Evaluate", "Answer"]
SPECIAL = ["<pad>", "<s>", "</s>", "<unk>"]
#: the PRM's step tag (Math-Shepherd's " ки": a space and this token) and its label tokens "+" / "-"
STEP_TAG_WORD = "ки"
CHARS = list("0123456789 \n+-*/=:().,?!'\"") + [chr(c) for c in range(ord("a"), ord("z") + 1)] + \
    [chr(c) for c in range(ord("A"), ord("Z") + 1)]


def setup(seed: int) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(THREADS)
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def build_tokenizer():
    """A character-level tokenizer (plus the prompt's four words and the step tag) in HF format."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL + WORDS + [STEP_TAG_WORD] + CHARS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    pattern = "|".join(WORDS + [STEP_TAG_WORD]) + r"|[\s\S]"
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        model_max_length=512, clean_up_tokenization_spaces=False,
    )


def llama_config(tokenizer, hidden: int, layers: int, heads: int, intermediate: int):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=heads, head_dim=hidden // heads, intermediate_size=intermediate,
        max_position_embeddings=512, rope_theta=10000.0, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, rms_norm_eps=1e-5,
    )


def prompt_text(expr: str) -> str:
    """What the backends send for a stepwise problem to a model without a chat template."""
    return render_chat_fallback((Message("user", f"Evaluate {expr}"),))


def train_expressions(level: str, count: int, seed: int, exclude: set[str]) -> list[str]:
    """Training expressions from their own seed stream, never one of the evaluation problems (fewer than
    ``count`` when the level has fewer distinct expressions)."""
    rng = random.Random(f"testbed-train:{level}:{seed}")
    return [e for e in stepwise.expressions(level, count, rng) if e not in exclude]


def held_out(levels=None, per_level: int = 1000, seeds=(0, 1, 2)) -> set[str]:
    """Expressions of the problems tts.data.load gives for the first seeds: kept out of training."""
    out: set[str] = set()
    for level in levels or stepwise.LEVELS:
        for s in seeds:
            out |= {p.metadata["expression"] for p in stepwise.generate(level, per_level, s)}
    return out


def save_model(model, tokenizer, folder: Path, extra_files: dict[str, str] | None = None) -> None:
    """bf16 safetensors + tokenizer, written to a temporary folder renamed into place."""
    import shutil
    import torch

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.to(torch.bfloat16).save_pretrained(tmp, safe_serialization=True)
    model.generation_config.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    for name, text in (extra_files or {}).items():
        (tmp / name).write_text(text)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def sample_solutions(model, tok, exprs: list[str], k: int, temperature: float, seed: int,
                     max_new_tokens: int = 200, batch: int = 256) -> list[list[str]]:
    """``k`` sampled solutions per expression (plain transformers generate; prompts are grouped by
    token length, so nothing is padded). Seeded per group: the same call gives the same texts."""
    import torch

    encoded = [tok(prompt_text(e), add_special_tokens=False)["input_ids"] for e in exprs]
    by_len: dict[int, list[int]] = {}
    for i, ids in enumerate(encoded):
        by_len.setdefault(len(ids), []).append(i)
    out: list[list[str]] = [[] for _ in exprs]
    rows = [(i, j) for length in sorted(by_len) for i in by_len[length] for j in range(k)]
    start = 0
    while start < len(rows):
        length = len(encoded[rows[start][0]])
        group = [r for r in rows[start:start + batch] if len(encoded[r[0]]) == length]
        start += len(group)
        torch.manual_seed(hash_seed(seed, rows[start - 1]))
        ids = torch.tensor([encoded[i] for i, _ in group])
        with torch.inference_mode():
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                 temperature=temperature, top_p=1.0, top_k=0, max_new_tokens=max_new_tokens,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        texts = tok.batch_decode(gen[:, length:], skip_special_tokens=True)
        for (i, _), text in zip(group, texts):
            out[i].append(text)
    return out


def hash_seed(*parts) -> int:
    import hashlib

    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=4).digest(), "little")


def load_policy(folder=None):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = folder or POLICY_DIR
    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    return model, tok
