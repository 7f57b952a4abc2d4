"""A supervised probe on the policy's own hidden states as a process verifier (ReProbe-style): no second model.

The policy that writes the solutions is read once more, teacher-forced over the question and the steps
laid out exactly as it wrote them, and a small head (a logistic regression or a one-hidden-layer MLP)
maps what it computes there to the probability that each step is right given its prefix. The head reads,
per step, features of the policy's own forward pass (:func:`step_features`):

* four numbers from its final hidden states read through its own LM head: the lowest and the mean
  log-probability the policy gives the step's tokens, the lowest including the line break (the tag) that
  ends the step, and that line break's own; a wrong step is one the policy was unsure of somewhere;
* its hidden states at the step's last token (the tag, the line break the policy wrote to end it) from
  the decoder layers named in ``layers`` (0 the embeddings, i the output of layer i, the last one after
  the final norm): the first position that has seen the whole step.

The head is trained on exact step labels (``experiments/testbed/train_probe.py``), so the probe costs
one pass of the policy over the new tokens plus the head.

A probe folder holds two files:

* ``probe.json``: ``policy`` (the model folder whose states the probe reads, relative to the probe
  folder), ``layers`` (a list, possibly empty), ``hidden`` (the MLP's width, 0 for a logistic
  regression), the tagged layout (``question_prefix``, ``question_separator``, ``step_tag``,
  ``step_join``, ``step_separator``) and, optionally, ``label`` and ``training`` (what made it);
* ``probe.safetensors``: ``mean`` and ``std`` (feature standardisation), ``w0``, ``b0`` and, for an MLP,
  ``w1``, ``b1``.

:class:`ProbePRM` is a :class:`~tts.verifiers.prm.TokenLogitPRM` in the tagged layout whose model is the
policy returning those per-position features (:class:`ProbeModel`) in place of its logits, so it scores
steps as the other PRMs do: incremental (the KV states of scored prefixes reused), forwards shared
across problems, and its tokens and FLOPs reserved in the ledger as verifier work before it runs
(``metering.metered``). It always runs in this process (``--prm-backend vllm`` leaves it on
transformers: vLLM does not return hidden states).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

from ..budget import ModelShape
from ..types import Problem
from .prm import HFModel, TokenLogitPRM

PROBE_CONFIG = "probe.json"
PROBE_WEIGHTS = "probe.safetensors"
#: probe.json keys, and the layout keys among them (TokenLogitPRM's tagged-format settings)
LAYOUT = ("question_prefix", "question_separator", "step_tag", "step_join", "step_separator")
CONFIG_KEYS = ("policy", "layers", "hidden", "label", "training") + LAYOUT
#: features of a step from the policy's token log-probabilities (before its hidden states)
LOGPROB_FEATURES = ("min_logprob", "mean_logprob", "min_logprob_with_tag", "tag_logprob")


def _bad(folder: Path, why: str) -> ValueError:
    return ValueError(f"probe folder {str(folder)!r}: {why}")


def read_folder(folder: str | Path) -> tuple[dict, dict]:
    """A probe folder's settings and head weights (numpy arrays), checked against each other: a missing
    or malformed file, an unknown setting or a tensor of the wrong shape is one ValueError naming it."""
    import numpy as np

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise _bad(folder, "not a folder")
    path = folder / PROBE_CONFIG
    if not path.is_file():
        raise _bad(folder, f"no {PROBE_CONFIG}")
    from ..inputs import InputFileError, read_small_text

    try:
        cfg = json.loads(read_small_text(path, "probe settings file"))
    except InputFileError as exc:
        raise ValueError(str(exc)) from None
    except (ValueError, RecursionError):
        raise _bad(folder, f"{PROBE_CONFIG} is not valid JSON") from None
    if not isinstance(cfg, dict):
        raise _bad(folder, f"{PROBE_CONFIG} must hold a JSON object")
    unknown = sorted(set(cfg) - set(CONFIG_KEYS))
    if unknown:
        raise _bad(folder, f"unknown setting(s) {', '.join(map(repr, unknown))} in {PROBE_CONFIG}; "
                           f"choose from {', '.join(CONFIG_KEYS)}")
    if not isinstance(cfg.get("policy"), str) or not cfg["policy"]:
        raise _bad(folder, f"{PROBE_CONFIG} must name the policy folder ('policy', relative to the probe folder)")
    layers = cfg.get("layers")
    if not isinstance(layers, list) or not all(type(x) is int and x >= 0 for x in layers) or len(set(layers)) < len(layers):
        raise _bad(folder, f"'layers' must be a list of distinct hidden-state indices (possibly empty), got {layers!r}")
    hidden = cfg.get("hidden", 0)
    if type(hidden) is not int or hidden < 0:
        raise _bad(folder, f"'hidden' must be a non-negative integer (0: logistic regression), got {hidden!r}")
    for key in LAYOUT:
        if key in cfg and not isinstance(cfg[key], str):
            raise _bad(folder, f"{key!r} must be a string, got {cfg[key]!r}")
    weights = folder / PROBE_WEIGHTS
    if not weights.is_file():
        raise _bad(folder, f"no {PROBE_WEIGHTS}")
    try:
        from safetensors.numpy import load_file

        tensors = load_file(str(weights))
    except Exception as exc:  # a truncated or foreign file: the library's own words after ours
        raise _bad(folder, f"{PROBE_WEIGHTS} is not a readable safetensors file ({exc})") from None
    want = ["mean", "std", "w0", "b0"] + (["w1", "b1"] if hidden else [])
    if sorted(tensors) != sorted(want):
        raise _bad(folder, f"{PROBE_WEIGHTS} must hold exactly {', '.join(want)}; it holds {', '.join(sorted(tensors)) or 'nothing'}")
    d = tensors["mean"].shape[0] if tensors["mean"].ndim == 1 else -1
    shapes = {"mean": (d,), "std": (d,), "w0": (hidden or 1, d), "b0": (hidden or 1,)}
    if hidden:
        shapes.update(w1=(1, hidden), b1=(1,))
    for name, shape in shapes.items():
        if d < 1 or tuple(tensors[name].shape) != shape:
            raise _bad(folder, f"tensor {name!r} has shape {tuple(tensors[name].shape)}, expected {shape}")
        if not np.isfinite(tensors[name]).all():
            raise _bad(folder, f"tensor {name!r} is not finite")
    if (tensors["std"] <= 0).any():
        raise _bad(folder, "tensor 'std' must be positive")
    return cfg, {k: np.asarray(v, dtype=np.float32) for k, v in tensors.items()}


def head_forward(tensors: dict, features):
    """The head's logit of each row of ``features`` (torch, [..., D] -> [...])."""
    torch = __import__("torch")
    x = (features - tensors["mean"]) / tensors["std"]
    x = x @ tensors["w0"].T + tensors["b0"]
    if "w1" in tensors:
        x = torch.relu(x) @ tensors["w1"].T + tensors["b1"]
    return x[..., 0]


class ProbeModel:
    """The policy returning, at every position, what the probe reads: its log-probabilities of the next
    token (log-softmax of its LM head, [vocab]) followed by its hidden states of ``layers`` ([hidden]
    each). Called like a causal LM (ids, mask, positions, a KV cache), it returns them as ``logits``
    [batch, tokens, vocab + hidden x layers], so the PRM machinery (state reuse, the last position's
    outputs kept with a state, shared forwards) is unchanged."""

    def __init__(self, causal_lm, layers: Sequence[int]):
        self.lm = causal_lm
        self.config = causal_lm.config
        available = int(self.config.num_hidden_layers) + 1
        if layers and max(layers) >= available:
            raise ValueError(f"probe reads hidden state {max(layers)}, but the policy has only {available} "
                             f"(0 = embeddings ... {available - 1} = last layer)")
        self.layers = list(layers)
        self.vocab = int(causal_lm.get_output_embeddings().weight.shape[0])

    @property
    def width(self) -> int:
        """Features per step (:func:`step_features`)."""
        return len(LOGPROB_FEATURES) + len(self.layers) * int(self.config.hidden_size)

    def get_input_embeddings(self):
        return self.lm.get_input_embeddings()

    def parameters(self):
        return self.lm.parameters()

    def __call__(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=False):
        torch = __import__("torch")
        out = self.lm.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            past_key_values=past_key_values, use_cache=use_cache, output_hidden_states=True)
        logp = torch.log_softmax(self.lm.lm_head(out.hidden_states[-1]).float(), dim=-1)
        return SimpleNamespace(logits=torch.cat([logp] + [out.hidden_states[i].float() for i in self.layers], dim=-1))


def step_features(window, offset: int, ids: Sequence[int], tags: Sequence[int], done: int, start: int, vocab: int):
    """The probe's input for each step from ``done`` on ([steps, features]): ``window`` holds
    :class:`ProbeModel`'s outputs from position ``offset`` on (the row before a step's first token must be
    there: it predicts that token), ``tags`` the steps' last positions, ``start`` where the first step
    begins (after the question)."""
    torch = __import__("torch")
    rows = []
    for k in range(done, len(tags)):
        a, t = (tags[k - 1] + 1 if k else start), tags[k]
        # token j is predicted at position j - 1
        pred = window[a - 1 - offset:t - offset, :vocab]
        token_logp = pred.gather(1, torch.tensor(ids[a:t + 1], device=pred.device)[:, None])[:, 0]
        step = token_logp[:-1] if len(token_logp) > 1 else token_logp
        rows.append(torch.cat([torch.stack([step.min(), step.mean(), token_logp.min(), token_logp[-1]]),
                               window[t - offset, vocab:]]))
    return torch.stack(rows) if rows else window.new_zeros((0, window.shape[-1] - vocab + len(LOGPROB_FEATURES)))


@dataclass(frozen=True)
class ProbePRM(TokenLogitPRM):
    """The policy (``model``) read by the probe in ``probe`` (a probe folder): each step scores the
    head's probability that it is right (:func:`step_features` of the policy's forward pass). Make one
    with :meth:`from_folder`. The good/bad tokens are not read."""

    probe: Path | None = None
    label: str = "probe"
    aggregation: str = "min"
    _head: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.format != "tagged":
            raise ValueError(f"ProbePRM reads the tagged format only, got format={self.format!r}")
        if not isinstance(self.probe, Path):
            raise ValueError(f"ProbePRM.probe must be the probe folder as a Path, got {self.probe!r}")
        cfg, tensors = read_folder(self.probe)
        self._head.update(cfg=cfg, tensors=tensors)

    @classmethod
    def from_folder(cls, folder: str | Path, **overrides) -> "ProbePRM":
        """The probe of a folder on the policy its probe.json names (``overrides`` win)."""
        folder = Path(folder).expanduser()
        cfg, _ = read_folder(folder)
        policy = (folder / cfg["policy"]).resolve()
        if not (policy / "config.json").is_file():
            raise _bad(folder, f"its policy {cfg['policy']!r} is not a model folder (no config.json there)")
        try:
            shape = json.loads((policy / "config.json").read_text())
            layers, hidden = int(shape["num_hidden_layers"]), int(shape["hidden_size"])
        except (ValueError, KeyError, TypeError, OSError):
            layers = hidden = None
        if layers is not None:  # the head's width against the policy's, before any model is loaded
            if cfg["layers"] and max(cfg["layers"]) > layers:
                raise _bad(folder, f"it reads hidden state {max(cfg['layers'])}, but its policy has only "
                                   f"{layers + 1} (0 = embeddings ... {layers} = last layer)")
            width = len(LOGPROB_FEATURES) + len(cfg["layers"]) * hidden
            got = read_folder(folder)[1]["mean"].shape[0]
            if got != width:
                raise _bad(folder, f"its head reads {got} features, but {len(cfg['layers'])} hidden state(s) of "
                                   f"its policy and {len(LOGPROB_FEATURES)} log-probability features are {width}")
        settings = {k: cfg[k] for k in LAYOUT if k in cfg}
        if "label" in cfg:
            settings["label"] = cfg["label"]
        return cls(str(policy), probe=folder, **{**settings, **overrides})

    def _load(self) -> HFModel:
        eng = HFModel(self.model, "causal_lm", self.device, self.dtype)  # through backends.hf.load_pretrained
        wrapped = ProbeModel(eng.model, self._head["cfg"]["layers"])
        tensors = self._head["tensors"]
        if tensors["mean"].shape[0] != wrapped.width:
            raise ValueError(f"probe {str(self.probe)!r} reads {tensors['mean'].shape[0]} features, but "
                             f"{len(wrapped.layers)} hidden state(s) of this policy give {wrapped.width}")
        # on the CPU, where the PRM machinery hands the windows of outputs to the reader
        self._head["torch"] = {k: eng.torch.as_tensor(v) for k, v in tensors.items()}
        # FLOPs per token: the policy's (decoder and LM head) and the head's, once per step (counted per
        # token here: an upper bound, as it is a few hundred multiply-adds)
        shape = eng.shape
        head = sum(int(v.size) for k, v in tensors.items() if k[0] == "w")
        eng.model, eng.shape = wrapped, ModelShape(shape.n_params + head, shape.n_layers, shape.d_model)
        return eng

    def _reader(self, problem: Problem):
        eng = self.engine()
        torch = eng.torch
        start = len(self._question_ids(problem))
        vocab = eng.model.vocab
        head = self._head["torch"]

        def read(window, offset: int, ids: list[int], positions: list[int], done: int) -> list[float]:
            feats = step_features(window.float().cpu(), offset, ids, positions, done, start, vocab)
            return [float(p) for p in torch.sigmoid(head_forward(head, feats))]

        return read


def probe_features(causal_lm, layers: Sequence[int], rows: Sequence[tuple[list[int], list[int], int]],
                   batch: int = 64) -> list[Any]:
    """:func:`step_features` of every step of each ``(ids, step tags, question length)`` row, from one
    plain forward per batch (right-padded, similar lengths together): what :class:`ProbePRM` computes
    when it scores those texts, so training reads what scoring reads. Per row a float tensor [steps,
    features] on the CPU."""
    torch = __import__("torch")
    model = ProbeModel(causal_lm, layers)
    device = next(causal_lm.parameters()).device
    pad = int(causal_lm.config.pad_token_id or 0)
    out: list[Any] = [None] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
    for first in range(0, len(order), batch):
        chunk = order[first:first + batch]
        width = max(len(rows[i][0]) for i in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for b, i in enumerate(chunk):
            ids[b, :len(rows[i][0])] = torch.tensor(rows[i][0])
            mask[b, :len(rows[i][0])] = 1
        with torch.inference_mode():
            window = model(ids.to(device), attention_mask=mask.to(device)).logits.cpu()
        for b, i in enumerate(chunk):
            row_ids, tags, start = rows[i]
            out[i] = step_features(window[b], 0, row_ids, tags, 0, start, model.vocab).clone()
    return out


def fit(features, labels, *, hidden: int = 0, epochs: int = 300, lr: float = 1e-2, weight_decay: float = 1e-3,
        seed: int = 0) -> dict:
    """Train a probe head on ``features`` ([n, D], float) and boolean ``labels`` (right step = True):
    standardised features, classes weighted equally, full-batch AdamW, seeded. Returns the head's
    tensors as numpy arrays (what :data:`PROBE_WEIGHTS` holds)."""
    import numpy as np
    import torch

    x = torch.as_tensor(np.asarray(features, dtype=np.float32))
    y = torch.as_tensor(np.asarray(labels, dtype=np.float32))
    if x.ndim != 2 or len(x) != len(y) or not len(y):
        raise ValueError(f"fit: features must be [n, D] with n labels, got {tuple(x.shape)} and {tuple(y.shape)}")
    if y.min() == y.max():
        raise ValueError("fit: the labels must hold both classes")
    gen = torch.Generator().manual_seed(seed)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-4)
    z = (x - mean) / std
    d = x.shape[1]
    shapes = [(hidden, d), (hidden,), (1, hidden), (1,)] if hidden else [(1, d), (1,)]
    params = []
    for i, s in enumerate(shapes):
        fan_in = s[-1] if len(s) == 2 else 1
        p = (torch.randn(s, generator=gen) / math.sqrt(fan_in)) if len(s) == 2 else torch.zeros(s)
        params.append(p.requires_grad_(True))
    pos = float(y.sum())
    weight = torch.where(y > 0.5, len(y) / (2 * pos), len(y) / (2 * (len(y) - pos)))
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    names = ["w0", "b0", "w1", "b1"][:len(params)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matmuls: more threads only wait on each other (badly, on a busy machine)
    try:
        for _ in range(epochs):
            tensors = dict(zip(names, params), mean=torch.zeros(d), std=torch.ones(d))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(head_forward(tensors, z), y, weight=weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    out = {name: p.detach().numpy().astype(np.float32) for name, p in zip(names, params)}
    out.update(mean=mean.numpy().astype(np.float32), std=std.numpy().astype(np.float32))
    return out


def save_folder(folder: str | Path, tensors: dict, settings: dict) -> None:
    """Write a probe folder (its two files), checked by reading it back."""
    from safetensors.numpy import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v for k, v in sorted(tensors.items())}, str(folder / PROBE_WEIGHTS))
    (folder / PROBE_CONFIG).write_text(json.dumps(settings, indent=1) + "\n")
    read_folder(folder)
