"""Process reward models: one score per reasoning step, aggregated into one score per candidate.

Three kinds, all on transformers (torch and transformers are imported when a model is first used):

* :class:`TokenLogitPRM`: a causal LM trained to write a "good"/"bad" token after each step. The step
  score is the probability of the good token at the step tag, renormalised over {good, bad} when a bad
  token is configured (else over the whole vocabulary). ``format="tagged"`` appends ``step_tag`` after
  each step in one text (Math-Shepherd: tag ``" ки"``, tokens ``"+"``/``"-"``); ``format="chat"`` writes
  each step as a user turn and reads the assistant's first token (RLHFlow Llama3.1-8B-PRM: ``"+"``/``"-"``).
* :class:`LikelihoodPRM`: any causal LM, read without step labels: a step scores the model's own
  probability of its tokens (lowest or geometric mean), so a model stronger than the policy flags the
  token where a step goes wrong. No "good" token, no training on step labels.
* :class:`RewardHeadPRM`: a model with a per-token classification/reward head (Qwen2.5-Math-PRM). The
  steps are joined by ``step_token`` (``"<extra_0>"``) and the head's probability of ``positive_label``
  at each such token is the step score (one output logit: its sigmoid).

The generator's step separator (``step_separator``, default a blank line) splits a candidate into steps;
the PRM's own tag/token replaces it in the PRM's input. Scoring is batched (``max_batch`` sequences per
forward), runs in a worker thread so the event loop keeps going, and charges the scored tokens, their
forward FLOPs and one call per forward to the ledger.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..budget import Ledger, ModelShape, model_shape
from ..types import Completion, Problem
from .metering import admit, metered
from .prm_states import DEFAULT_CACHE_BYTES

AGGREGATIONS = ("last", "min", "product", "mean")
#: the file in a local PRM folder that says how to read it: the PRM class's keyword arguments, and
#: ``"kind"``: ``"token_logit"`` (default, TokenLogitPRM) or ``"likelihood"`` (LikelihoodPRM)
FOLDER_CONFIG = "tts_prm.json"
FOLDER_KINDS = ("token_logit", "likelihood")
FORMATS = ("tagged", "chat")
MODEL_CLASSES = ("token_classification", "auto_remote")


def aggregate(step_scores: Sequence[float], how: str) -> float:
    """One score from step scores: the last step's, the weakest step's, their product or their mean."""
    if how not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {how!r}")
    if not step_scores:
        return float("-inf")
    if how == "last":
        return float(step_scores[-1])
    if how == "min":
        return float(min(step_scores))
    if how == "product":
        return float(math.prod(step_scores))
    return float(sum(step_scores) / len(step_scores))


def split_steps(text: str, separator: str) -> list[str]:
    """A candidate's steps: pieces between separators, empty ones dropped (a bare text is one step)."""
    steps = [s.strip() for s in text.split(separator)] if separator else [text.strip()]
    steps = [s for s in steps if s]
    return steps or [text.strip()]


def question_of(problem: Problem) -> str:
    if problem.prompt is not None:
        return problem.prompt
    users = [m.content for m in problem.chat() if m.role == "user"]
    return users[-1] if users else ""


class HFModel:
    """A tokenizer + model pair loaded once, with the bits of scoring every PRM/ORM shares."""

    def __init__(self, path: str, kind: str, device: str, dtype: str, trust_remote_code: bool = False):
        import torch

        from ..backends.hf import load_pretrained

        self.torch = torch
        self.tokenizer, self.model, self.device = load_pretrained(
            path, kind, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        self.pad_id = int(pad)
        # One forward at a time: concurrent problems share the model, and CPU forwards gain nothing from
        # overlapping; it also guards config tweaks made just before a forward (the ORM's pad id).
        self.lock = threading.RLock()
        self.shape: ModelShape = model_shape(self.model)
        self._ids: dict[str, tuple[int, ...]] = {}

    def ids(self, text: str) -> list[int]:
        # Memoised: tree search encodes every path again at each depth, its steps the same strings.
        got = self._ids.get(text)
        if got is None:
            if len(self._ids) >= 1 << 16:
                self._ids.clear()
            got = self._ids[text] = tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return list(got)

    def single_id(self, text: str, what: str) -> int:
        ids = self.ids(text)
        if len(ids) != 1:
            raise ValueError(f"{what} {text!r} must be exactly one token of this tokenizer, got {len(ids)} tokens")
        return ids[0]

    def bos(self) -> list[int]:
        bos = self.tokenizer.bos_token_id
        return [bos] if bos is not None and getattr(self.tokenizer, "add_bos_token", True) else []

    def chat_ids(self, messages: list[dict], add_generation_prompt: bool) -> list[int]:
        out = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=False
        )
        if isinstance(out, dict) or hasattr(out, "keys"):
            out = out["input_ids"]
        return list(out)

    def forward(self, batch: list[list[int]], left_pad: bool = False, pad_id: int | None = None) -> tuple[Any, list[int]]:
        """Logits of a padded batch (right-padded unless ``left_pad``) and each row's offset of token 0."""
        torch = self.torch
        width = max(len(x) for x in batch)
        input_ids = torch.full((len(batch), width), self.pad_id if pad_id is None else pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        offsets = []
        for i, row in enumerate(batch):
            start = width - len(row) if left_pad else 0
            input_ids[i, start:start + len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, start:start + len(row)] = 1
            offsets.append(start)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with self.lock, torch.inference_mode():
            out = self.model(
                input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                position_ids=positions.to(self.device),
            )
        logits = out.logits if hasattr(out, "logits") else out[0]
        return logits.float().cpu(), offsets

    def batches(self, rows: list[list[int]], max_batch: int) -> list[list[int]]:
        """Row indices grouped into batches of similar length (less padding)."""
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        return [order[i:i + max_batch] for i in range(0, len(order), max_batch)]

    def cost(self, rows: list[list[int]], calls: int) -> tuple[int, float, int]:
        tokens = sum(len(r) for r in rows)
        flops = sum(self.shape.flops(0, len(r)) for r in rows)
        return tokens, flops, calls


def _check_common(cls: str, obj: Any) -> None:
    if not isinstance(obj.model, str) or not obj.model:
        raise ValueError(f"{cls}.model must be a model name or folder, got {obj.model!r}")
    if obj.aggregation not in AGGREGATIONS:
        raise ValueError(f"{cls}.aggregation must be one of {', '.join(AGGREGATIONS)}, got {obj.aggregation!r}")
    if not isinstance(obj.max_batch, int) or obj.max_batch < 1:
        raise ValueError(f"{cls}.max_batch must be a positive integer, got {obj.max_batch!r}")
    if not isinstance(obj.step_separator, str):
        raise ValueError(f"{cls}.step_separator must be a string, got {obj.step_separator!r}")
    if isinstance(obj.state_cache_bytes, bool) or not isinstance(obj.state_cache_bytes, int) or obj.state_cache_bytes < 0:
        raise ValueError(f"{cls}.state_cache_bytes must be a non-negative integer (0: no reuse), got {obj.state_cache_bytes!r}")


class LazyModel:
    """Loads the model on first use, once, even when several threads ask at the same time."""

    def __init__(self):
        self.lock = threading.Lock()
        self.value: HFModel | None = None
        self.states = None  # the StateCache of scored prefixes (tts.verifiers.prm_states)
        from .prm_states import RowBatcher

        self.batcher = RowBatcher()  # forwards shared by the problems scoring at the same time


class _PRMBase:
    def score_steps_with_cost(self, problem: Problem, texts: list[str]) -> tuple[list[list[float]], tuple[int, float, int]]:
        """Every step's score of each text, and the cost (tokens read, FLOPs, forwards). A text whose
        path was scored before (a tree node's parent, the same leaf again) is read from the cached state
        at the end of its longest scored prefix, and a first step from the question's state: only new
        steps' tokens go through the model, and only those are charged. Scores equal full rescoring's
        (``state_cache_bytes=0``) up to float rounding of a different batch layout."""
        from .prm_states import State

        eng = self.engine()
        cache = self._states_cache()
        read = self._reader(problem)
        question = self._prefix_length(problem) if cache.max_bytes else None
        out: list[list[float]] = [[] for _ in texts]
        work = []  # [text index, past state (or the key of a question state to compute), start, steps done, ids, positions]
        for i, text in enumerate(texts):
            ids, positions = self.encode(problem, text)
            marks = [p + 1 for p in positions]  # a step's state ends after its scored token
            if question is not None:
                marks = [question] + marks  # the question alone: every first step continues it
            past, k = cache.longest(ids, marks)
            done = max(k, 0) if question is not None else k + 1  # steps whose scores the state holds
            if done == len(positions):  # this very path was scored before
                out[i] = list(past.scores)
                continue
            if past is None and question is not None:
                past = tuple(ids[:question])  # computed below, once for all the rows that need it
            work.append([i, past, marks[k] if k >= 0 else (question or 0), done, ids, positions])
        pending = [list(q) for q in dict.fromkeys(w[1] for w in work if isinstance(w[1], tuple))]
        rows = [ids[start:positions[-1] + 1] for _, _, start, _, ids, positions in work]
        question_groups = self._groups(pending, [len(q) for q in pending])
        row_groups = self._groups(rows, [w[5][-1] + 1 for w in work])
        flops = sum(eng.shape.flops(0, len(q)) for q in pending) + \
            sum(eng.shape.flops(w[2], w[2] + len(r)) for w, r in zip(work, rows))
        cost = (sum(map(len, pending)) + sum(map(len, rows)), flops, len(question_groups) + len(row_groups))
        admit(cost)  # reserved in the ledger before any forward pass
        # The forwards themselves are shared with the other problems scoring now (RowBatcher); the cost
        # above is this call's own, whatever it was batched with, so ledgers do not depend on timing.
        batcher = self._lazy.batcher
        states = {}
        for q, (logits, kv) in zip(pending, batcher.run(eng, [(None, q, len(q)) for q in pending], self.max_batch)):
            states[tuple(q)] = State(tuple(q), kv, logits[-1].clone(), [])
            cache.put(states[tuple(q)])
        for w in work:
            if isinstance(w[1], tuple):
                w[1] = states[w[1]]
        extended = batcher.run(eng, [(w[1], r, w[5][-1] + 1) for w, r in zip(work, rows)], self.max_batch)
        for j, (logits, kv) in enumerate(extended):
            i, past, start, done, ids, positions = work[j]
            # the window of logits from the position before the first new token (a likelihood PRM
            # predicts that token from there), so readers index positions as window[p - offset]
            if past is not None:
                window, offset = eng.torch.cat([past.last_logits[None], logits]), start - 1
            else:
                window, offset = logits, 0
            scores = (list(past.scores) if past is not None else []) + read(window, offset, ids, positions, done)
            out[i] = scores
            cache.put(State(tuple(ids[:positions[-1] + 1]), kv, logits[-1].clone(), scores))
        return out, cost

    def _groups(self, rows: list[list[int]], full_lengths: list[int]) -> list[list[int]]:
        from .prm_states import groups

        return groups(rows, full_lengths, self.max_batch)

    def _prefix_length(self, problem: Problem) -> int | None:
        """How many input tokens come before the first step whatever the steps are (None: not known,
        so no question state is kept)."""
        return None

    def _states_cache(self):
        from .prm_states import StateCache

        lazy: LazyModel = self._lazy
        with lazy.lock:
            if lazy.states is None or lazy.states.max_bytes != self.state_cache_bytes:
                lazy.states = StateCache(self.state_cache_bytes)
            return lazy.states

    async def score(self, problem: Problem, completions: Sequence[Completion], ledger: Ledger) -> list[float]:
        if not completions:
            return []
        steps = await metered(ledger, self.score_steps_with_cost, problem, [c.text for c in completions])
        return [aggregate(s, self.aggregation) for s in steps]

    def step_scores(self, problem: Problem, texts: Sequence[str]) -> list[list[float]]:
        """Per-step scores of each text (no ledger; for analysis and tests)."""
        return self.score_steps_with_cost(problem, list(texts))[0]

    def engine(self) -> HFModel:
        lazy: LazyModel = self._lazy
        with lazy.lock:
            if lazy.value is None:
                lazy.value = self._load()
            return lazy.value

    @property
    def name(self) -> str:
        return f"{self.label}_{self.aggregation}"


@dataclass(frozen=True)
class TokenLogitPRM(_PRMBase):
    """A causal-LM PRM scored by the probability of its "good" token at each step tag."""

    model: str
    format: str = "tagged"
    step_tag: str = " ки"
    good_token: str = "+"
    bad_token: str | None = "-"
    step_separator: str = "\n\n"
    #: tagged format: the text between the question and the first step
    question_separator: str = " "
    #: tagged format: the text before the question (a PRM fine-tuned from a policy reads the policy's
    #: own layout best, e.g. "User: " with question_separator "\nAssistant: ")
    question_prefix: str = ""
    #: tagged format: the text between one step's tag and the next step ("" when the tag is itself the
    #: line break, as in a PRM that scores each step at the newline ending it)
    step_join: str = "\n"
    aggregation: str = "min"
    max_batch: int = 8
    device: str = "auto"
    dtype: str = "auto"
    label: str = "prm"
    needs_logprobs: bool = False
    #: bytes of KV states of scored prefixes kept for reuse (0: rescore every path from its start);
    #: changes no score, so it is not part of the configuration
    state_cache_bytes: int = field(default=DEFAULT_CACHE_BYTES, compare=False)
    _lazy: LazyModel = field(default_factory=LazyModel, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_common("TokenLogitPRM", self)
        if self.format not in FORMATS:
            raise ValueError(f"TokenLogitPRM.format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.format == "tagged" and not self.step_tag:
            raise ValueError("TokenLogitPRM.step_tag must be a non-empty string for the tagged format")
        for name in ("question_separator", "question_prefix", "step_join"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"TokenLogitPRM.{name} must be a string, got {getattr(self, name)!r}")
        if not self.good_token:
            raise ValueError(f"TokenLogitPRM.good_token must be a non-empty string, got {self.good_token!r}")
        if self.bad_token is not None and (not self.bad_token or self.bad_token == self.good_token):
            raise ValueError(f"TokenLogitPRM.bad_token must be None or a token other than good_token, got {self.bad_token!r}")

    @classmethod
    def math_shepherd(cls, model: str, **kw) -> "TokenLogitPRM":
        return cls(model, format="tagged", step_tag=" ки", good_token="+", bad_token="-", **kw)

    @classmethod
    def rlhflow(cls, model: str, **kw) -> "TokenLogitPRM":
        return cls(model, format="chat", good_token="+", bad_token="-", **kw)

    def _load(self) -> HFModel:
        return HFModel(self.model, "causal_lm", self.device, self.dtype)

    def _prefix_length(self, problem: Problem) -> int | None:
        return len(self._question_ids(problem)) if self.format == "tagged" else None

    def _question_ids(self, problem: Problem) -> list[int]:
        """Tagged format: the ids before the first step (BOS, prefix, question, separator)."""
        eng = self.engine()
        return eng.bos() + eng.ids(self.question_prefix + question_of(problem) + self.question_separator)

    def encode(self, problem: Problem, text: str) -> tuple[list[int], list[int]]:
        """Token ids of the PRM input and the positions whose next-token logits score each step."""
        eng = self.engine()
        steps = split_steps(text, self.step_separator)
        question = question_of(problem)
        if self.format == "tagged":
            # Built piece by piece, so a tag can never merge with the text around it and every
            # position is known exactly.
            ids = self._question_ids(problem)
            tag = eng.ids(self.step_tag)
            positions = []
            for k, step in enumerate(steps):
                ids += eng.ids((self.step_join if k else "") + step) + tag
                positions.append(len(ids) - 1)
            return ids, positions
        good = eng.single_id(self.good_token, "TokenLogitPRM.good_token")
        messages: list[dict] = []
        positions = []
        for k, step in enumerate(steps):
            messages.append({"role": "user", "content": (question + " " + step) if k == 0 else step})
            prefix = eng.chat_ids(messages, add_generation_prompt=True)
            positions.append(len(prefix) - 1)
            messages.append({"role": "assistant", "content": self.good_token})
        ids = eng.chat_ids(messages, add_generation_prompt=False)
        # The score is read where the assistant's answer token would be generated, so the template
        # must render each shorter conversation as a prefix of the whole (true of common templates).
        if any(p + 1 >= len(ids) or ids[p + 1] != good for p in positions):
            raise ValueError("the chat template does not put the good token right after each generation prompt")
        return ids, positions

    def _reader(self, problem: Problem):
        """How the logits of an input's positions from ``offset`` on ([tokens, vocab]), its ids and its
        step positions become the scores of its steps from ``done`` on: the good token's probability at
        each step tag."""
        eng = self.engine()
        torch = eng.torch
        good = eng.single_id(self.good_token, "TokenLogitPRM.good_token")
        bad = eng.single_id(self.bad_token, "TokenLogitPRM.bad_token") if self.bad_token is not None else None

        def read(window, offset: int, ids: list[int], positions: list[int], done: int) -> list[float]:
            at = window[[p - offset for p in positions[done:]]]  # [new steps, vocab]
            if bad is None:
                return [float(p) for p in torch.softmax(at, dim=-1)[:, good]]
            return [float(p) for p in torch.softmax(at[:, [good, bad]], dim=-1)[:, 0]]

        return read


LIKELIHOOD_REDUCTIONS = ("min", "mean")


@dataclass(frozen=True)
class LikelihoodPRM(TokenLogitPRM):
    """A causal LM as a process verifier without step labels: a step's score is the model's own
    probability of the step's tokens, read in the same tagged layout (the lowest token probability,
    ``reduce="min"``, or their geometric mean, ``"mean"``). A model stronger than the policy at the task
    gives a wrong step a low score at the token where it goes wrong (the digit it would not have written).
    The tag and the good/bad tokens are not read; only ``format="tagged"`` is supported."""

    reduce: str = "min"
    label: str = "likelihood_prm"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.format != "tagged":
            raise ValueError(f"LikelihoodPRM reads the tagged format only, got format={self.format!r}")
        if self.reduce not in LIKELIHOOD_REDUCTIONS:
            raise ValueError(f"LikelihoodPRM.reduce must be one of {', '.join(LIKELIHOOD_REDUCTIONS)}, got {self.reduce!r}")

    def _reader(self, problem: Problem):
        """Step scores from the probabilities of each step's own tokens (its tag not included)."""
        eng = self.engine()
        torch = eng.torch
        start = len(self._question_ids(problem))

        def read(window, offset: int, ids: list[int], tags: list[int], done: int) -> list[float]:
            # token j is predicted at position j - 1 (window row j - 1 - offset); step k's tokens run
            # from the end of the one before (or of the question) up to its tag
            logp = torch.log_softmax(window[:len(ids) - 1 - offset], dim=-1)
            token_logp = logp.gather(1, torch.tensor(ids[offset + 1:])[:, None])[:, 0]
            bounds = list(zip([start] + [t + 1 for t in tags[:-1]], tags))[done:]
            return [self._reduce(token_logp[a - 1 - offset:t - 1 - offset]) for a, t in bounds]

        return read

    def _reduce(self, token_logp) -> float:
        if token_logp.numel() == 0:
            return 1.0
        value = token_logp.min() if self.reduce == "min" else token_logp.mean()
        return float(value.exp())


@dataclass(frozen=True)
class RewardHeadPRM(_PRMBase):
    """A PRM with a per-token reward head, read at each step-separator token (Qwen2.5-Math-PRM style)."""

    model: str
    step_token: str = "<extra_0>"
    positive_label: int = 1
    step_separator: str = "\n\n"
    #: render question and steps with the tokenizer's chat template (system prompt below), else plain text
    chat: bool = True
    system_prompt: str | None = "Please reason step by step, and put your final answer within \\boxed{}."
    model_class: str = "token_classification"
    trust_remote_code: bool = False
    aggregation: str = "min"
    max_batch: int = 8
    device: str = "auto"
    dtype: str = "auto"
    label: str = "prm"
    needs_logprobs: bool = False
    #: bytes of KV states of scored prefixes kept for reuse (0: rescore every path from its start);
    #: changes no score, so it is not part of the configuration
    state_cache_bytes: int = field(default=DEFAULT_CACHE_BYTES, compare=False)
    _lazy: LazyModel = field(default_factory=LazyModel, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_common("RewardHeadPRM", self)
        if not self.step_token:
            raise ValueError(f"RewardHeadPRM.step_token must be a non-empty string, got {self.step_token!r}")
        if not isinstance(self.positive_label, int) or self.positive_label < 0:
            raise ValueError(f"RewardHeadPRM.positive_label must be a non-negative integer, got {self.positive_label!r}")
        if self.model_class not in MODEL_CLASSES:
            raise ValueError(f"RewardHeadPRM.model_class must be one of {', '.join(MODEL_CLASSES)}, got {self.model_class!r}")

    @classmethod
    def qwen_math_prm(cls, model: str, **kw) -> "RewardHeadPRM":
        """Qwen2.5-Math-PRM-7B/72B: remote code, ``<extra_0>`` after each step, label 1 = correct."""
        return cls(model, step_token="<extra_0>", model_class="auto_remote", trust_remote_code=True, **kw)

    def _load(self) -> HFModel:
        return HFModel(self.model, self.model_class, self.device, self.dtype, self.trust_remote_code)

    def encode(self, problem: Problem, text: str) -> tuple[list[int], list[int]]:
        eng = self.engine()
        sep = eng.single_id(self.step_token, "RewardHeadPRM.step_token")
        # A step token inside the candidate's own text would add a spurious step: remove it.
        steps = [s.replace(self.step_token, "") for s in split_steps(text, self.step_separator)]
        body = self.step_token.join(steps) + self.step_token
        question = question_of(problem)
        if self.chat and getattr(eng.tokenizer, "chat_template", None):
            messages = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else []) + [
                {"role": "user", "content": question}, {"role": "assistant", "content": body},
            ]
            ids = eng.chat_ids(messages, add_generation_prompt=False)
        else:
            ids = eng.bos() + eng.ids(question + "\n" + body)
        positions = [i for i, t in enumerate(ids) if t == sep]
        if len(positions) != len(steps):
            raise ValueError(
                f"expected {len(steps)} {self.step_token!r} tokens in the PRM input, found {len(positions)}"
            )
        return ids, positions

    def _reader(self, problem: Problem):
        """The head's probability of ``positive_label`` (one output: its sigmoid) at each new step token."""
        torch = self.engine().torch

        def read(window, offset: int, ids: list[int], positions: list[int], done: int) -> list[float]:
            if window.shape[-1] <= self.positive_label and window.shape[-1] != 1:
                raise ValueError(
                    f"RewardHeadPRM.positive_label {self.positive_label} is out of range for a head with "
                    f"{window.shape[-1]} outputs"
                )
            at = window[[p - offset for p in positions[done:]]]  # [new steps, labels]
            probs = torch.sigmoid(at[:, 0]) if at.shape[-1] == 1 else torch.softmax(at, dim=-1)[:, self.positive_label]
            return [float(p) for p in probs]

        return read


def load_folder(folder: str | Path, **overrides) -> TokenLogitPRM:
    """The PRM of a local model folder, configured by its tts_prm.json (``overrides`` win); a folder
    without one is read as a Math-Shepherd-style TokenLogitPRM."""
    import dataclasses

    from ..inputs import InputFileError, read_small_text

    folder = Path(folder)
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("pytorch_model*.bin")):
        raise ValueError(f"PRM folder {str(folder)!r} has no weights (*.safetensors or pytorch_model*.bin)")
    if not (folder / "tokenizer.json").is_file() and not (folder / "tokenizer_config.json").is_file():
        raise ValueError(f"PRM folder {str(folder)!r} has no tokenizer (tokenizer.json or tokenizer_config.json)")
    path = folder / FOLDER_CONFIG
    options: object = {}
    if path.exists():
        try:
            options = json.loads(read_small_text(path, "PRM settings file"))
        except InputFileError as exc:
            raise ValueError(str(exc)) from None
        except (ValueError, RecursionError):
            raise ValueError(f"{path}: not valid JSON") from None
    if not isinstance(options, dict):
        raise ValueError(f"{path} must hold a JSON object of PRM options")
    options = {**options, **overrides}
    kind = options.pop("kind", "token_logit")
    if kind not in FOLDER_KINDS:
        raise ValueError(f"{path}: kind must be one of {', '.join(FOLDER_KINDS)}, got {kind!r}")
    cls = LikelihoodPRM if kind == "likelihood" else TokenLogitPRM
    known = {f.name for f in dataclasses.fields(cls) if f.init and f.name != "model"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"{path}: unknown PRM setting(s) {', '.join(map(repr, unknown))}; choose from kind, "
                         f"{', '.join(sorted(known))}")
    try:
        return cls(str(folder), **options)
    except TypeError as exc:  # a setting of the wrong type
        raise ValueError(f"{path}: {exc}") from None
