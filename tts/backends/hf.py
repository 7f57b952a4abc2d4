"""Hugging Face transformers backend (CPU or GPU).

Concurrent ``generate`` calls from many problems are gathered into one micro-batch: a worker task waits
a few milliseconds for requests to arrive, then runs one decode loop for all of them in a thread (so the
event loop keeps accepting work). Each request's prompt is prefilled once and its KV cache copied to its
n sample rows, so n samples cost one prompt computation, as in vLLM. Rows leave the batch as soon as they
finish, and each request is answered as soon as its last row finishes.

The decode loop is our own rather than ``model.generate`` because the toolkit needs, per row: its own
temperature, top-p/top-k, max tokens, stop strings and seed, exact token counts and logprobs, and
cancellation between steps.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..budget import model_shape
from ..types import Completion
from .base import TEXT_LISTENER, EngineError, Generation, GenerationRequest, PartialUsage, PromptEncoder, quiet_loading


class ModelLoadError(EngineError):
    pass


#: the transformers model classes :func:`load_pretrained` can load, by the name a verifier spec uses
MODEL_CLASSES = ("causal_lm", "token_classification", "sequence_classification", "auto_remote")


def load_pretrained(path: str | Path, kind: str = "causal_lm", *, device: str = "auto", dtype: str = "auto",
                    trust_remote_code: bool = False) -> tuple[Any, Any, str]:
    """A local model folder as (tokenizer, model in eval mode on its device, device): the one loader the
    hf backend and the reward models and judges share. ``device="auto"`` is CUDA when there is one;
    ``dtype="auto"`` is float32 on the CPU (half precision is slow there) and the checkpoint's own on
    a GPU. transformers' loading chatter is off (:func:`~tts.backends.base.quiet_loading`)."""
    import torch
    import transformers

    if kind not in MODEL_CLASSES:
        raise ValueError(f"model class must be one of {', '.join(MODEL_CLASSES)}, got {kind!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype: Any = torch.float32 if device == "cpu" and dtype == "auto" else dtype
    if isinstance(torch_dtype, str) and torch_dtype != "auto":
        torch_dtype = getattr(torch, torch_dtype)
    cls = {"causal_lm": transformers.AutoModelForCausalLM,
           "token_classification": transformers.AutoModelForTokenClassification,
           "sequence_classification": transformers.AutoModelForSequenceClassification,
           "auto_remote": transformers.AutoModel}[kind]
    with quiet_loading():
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
        model = cls.from_pretrained(str(path), dtype=torch_dtype, trust_remote_code=trust_remote_code)
    return tokenizer, model.to(device).eval(), device


@dataclass
class _Item:
    request: GenerationRequest
    prompt_ids: list[int]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    started: bool = False
    cancelled: bool = False
    partial: Generation | None = None
    listener: Any = None  # TEXT_LISTENER as the caller set it (called on its loop with each row's text)


@dataclass
class _Row:
    item: _Item
    seed: int
    index: int = 0  # the sample's place in its request
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish: str | None = None
    stop_reason: str | int | None = None  # the stop string or stop token id that ended the row
    text: str = ""


class HFBackend:
    name = "hf"

    def __init__(
        self,
        model: str | Path,
        *,
        device: str = "auto",
        dtype: str = "auto",
        max_batch_rows: int = 64,
        batch_wait_s: float = 0.01,
    ):
        import torch

        self._torch = torch
        self.model_name = str(model)
        try:
            self.tokenizer, self.model, self.device = load_pretrained(model, device=device, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load model {model!r}: {str(exc).splitlines()[0]}") from exc
        cfg = self.model.config
        self._prompts = PromptEncoder(self.tokenizer)
        self.shape = model_shape(self.model)
        eos = {self.tokenizer.eos_token_id, *_as_list(getattr(cfg, "eos_token_id", None))}
        gen_cfg = getattr(self.model, "generation_config", None)
        eos |= set(_as_list(getattr(gen_cfg, "eos_token_id", None)))
        self.eos_ids = frozenset(i for i in eos if i is not None)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else min(self.eos_ids or {0})
        self.max_batch_rows = max_batch_rows
        self.batch_wait_s = batch_wait_s
        self.batch_sizes: list[int] = []  # rows per engine batch, for benchmarks and tests
        self._queue: list[_Item] = []
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None

    # --- prompt ----------------------------------------------------------------------------------
    def render(self, request: GenerationRequest) -> str:
        return self._prompts.render(request)

    def encode(self, request: GenerationRequest) -> list[int]:
        return self._prompts.encode(request)

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return len(self.encode(request))

    # --- scheduling (event loop side) ------------------------------------------------------------
    async def generate(self, request: GenerationRequest, on_cancel: PartialUsage | None = None) -> Generation:
        loop = asyncio.get_running_loop()
        item = _Item(request, self.encode(request), loop.create_future(), loop, listener=TEXT_LISTENER.get())
        self._queue.append(item)
        self._ensure_worker()
        self._wakeup.set()
        try:
            return await item.future
        except asyncio.CancelledError:
            item.cancelled = True
            if item.started:
                # The decode thread drops the rows at its next step; wait for it so that the tokens it
                # did compute are reported, not lost from the ledger.
                await asyncio.shield(item.finished.wait())
            elif item in self._queue:
                self._queue.remove(item)
            if on_cancel is not None:
                on_cancel(item.partial or Generation((), 0))
            raise

    def _ensure_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._wakeup = asyncio.Event()
            self._worker = asyncio.create_task(self._work())

    async def _work(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            # Give concurrent problems a moment to add their requests to this batch.
            await asyncio.sleep(self.batch_wait_s)
            while self._queue:
                batch, rows = [], 0
                while self._queue and (not batch or rows + self._queue[0].request.params.n <= self.max_batch_rows):
                    item = self._queue.pop(0)
                    if item.cancelled:
                        continue
                    item.started = True
                    batch.append(item)
                    rows += item.request.params.n
                if batch:
                    await asyncio.to_thread(self._run_batch, batch)

    # --- decoding (thread side) ------------------------------------------------------------------
    def _deliver(self, item: _Item, rows: list[_Row]) -> None:
        completions = tuple(
            Completion(
                text=r.text,
                num_tokens=len(r.ids),
                finish_reason=r.finish or "cancelled",
                token_ids=tuple(r.ids),
                logprobs=tuple(r.logprobs) if item.request.params.logprobs else None,
                prompt_tokens=len(item.prompt_ids),
                stop_reason=r.stop_reason,
            )
            for r in rows
        )
        generation = Generation(completions, len(item.prompt_ids), 0)

        def finish() -> None:
            item.partial = generation
            if not item.future.done():
                item.future.set_result(generation)
            item.finished.set()

        item.loop.call_soon_threadsafe(finish)

    def _run_batch(self, items: list[_Item]) -> None:
        torch = self._torch
        try:
            with torch.inference_mode():
                self._decode(items)
        except BaseException as exc:  # surface engine errors to every waiting caller
            for item in items:
                if not item.finished.is_set():
                    item.loop.call_soon_threadsafe(_fail_item, item, exc)
            raise

    def _decode(self, items: list[_Item]) -> None:
        torch = self._torch
        device = self.device
        width = max(len(it.prompt_ids) for it in items)
        input_ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for i, it in enumerate(items):
            ids = it.prompt_ids
            input_ids[i, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            mask[i, width - len(ids):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        # The cache API: we own one DynamicCache for the batch, the model fills it in place, and rows
        # are copied or dropped with reorder_cache; the model's returned past_key_values is never read
        # (transformers is retiring the legacy tuples that return value used to carry).
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        out = self.model(
            input_ids=input_ids.to(device), attention_mask=mask.to(device),
            position_ids=positions.to(device), past_key_values=cache, use_cache=True,
        )
        rows: list[_Row] = []
        owner: list[int] = []
        for i, it in enumerate(items):
            base = it.request.params.seed
            for k in range(it.request.params.n):
                seed = (base + k) if base is not None else random.getrandbits(62)
                rows.append(_Row(it, seed, k))
                owner.append(i)
        index = torch.tensor(owner, dtype=torch.long, device=device)
        # Copy each prompt's KV cache to its n sample rows: the prompt was computed once.
        cache.reorder_cache(index)
        logits = out.logits[:, -1, :].float().index_select(0, index)
        mask = mask.to(device).index_select(0, index)
        last_pos = positions[:, -1].to(device).index_select(0, index)
        generators = [torch.Generator(device=device).manual_seed(r.seed) for r in rows]
        pending = {id(it): sum(1 for r in rows if r.item is it) for it in items}
        self.batch_sizes.append(len(rows))
        active = list(range(len(rows)))

        while active:
            logprobs_all = torch.log_softmax(logits, dim=-1)
            next_tokens = []
            keep = []
            for slot, r_idx in enumerate(active):
                row = rows[r_idx]
                params = row.item.request.params
                if row.item.cancelled:
                    row.finish = "cancelled"
                else:
                    token = _sample(torch, logits[slot], params, generators[r_idx])
                    row.ids.append(token)
                    row.logprobs.append(float(logprobs_all[slot, token]))
                    row.finish = self._finished(row, token, params)
                    if row.item.listener is not None and row.finish is None:
                        text = self.tokenizer.decode(row.ids, skip_special_tokens=True)
                        row.item.loop.call_soon_threadsafe(row.item.listener, row.index, text)
                if row.finish is None:
                    keep.append(slot)
                    next_tokens.append(row.ids[-1])
                else:
                    row.text = self._final_text(row)
                    pending[id(row.item)] -= 1
                    if pending[id(row.item)] == 0:
                        self._deliver(row.item, [r for r in rows if r.item is row.item])
            if not keep:
                break
            if len(keep) < len(active):
                sel = torch.tensor(keep, dtype=torch.long, device=device)
                cache.reorder_cache(sel)
                mask, last_pos = mask.index_select(0, sel), last_pos.index_select(0, sel)
                active = [active[s] for s in keep]
            mask = torch.cat([mask, torch.ones((len(active), 1), dtype=mask.dtype, device=device)], dim=1)
            last_pos = last_pos + 1
            out = self.model(
                input_ids=torch.tensor(next_tokens, dtype=torch.long, device=device)[:, None],
                attention_mask=mask, position_ids=last_pos[:, None], past_key_values=cache, use_cache=True,
            )
            logits = out.logits[:, -1, :].float()

    def _finished(self, row: _Row, token: int, params) -> str | None:
        # As vLLM: end-of-sequence first (no stop reason), then stop token ids, then stop strings.
        if token in self.eos_ids:
            return "stop"
        if token in params.stop_token_ids:
            row.stop_reason = token
            return "stop"
        if params.stop:
            text = self.tokenizer.decode(row.ids, skip_special_tokens=True)
            hits = sorted((text.find(s), k) for k, s in enumerate(params.stop) if s in text)
            if hits:
                row.stop_reason = params.stop[hits[0][1]]
                return "stop"
        if len(row.ids) >= params.max_tokens:
            return "length"
        if params.confidence_stop is not None:
            window, threshold = params.confidence_stop
            if len(row.logprobs) >= window and sum(row.logprobs[-window:]) / window < threshold:
                return "low_confidence"
        return None

    def _final_text(self, row: _Row) -> str:
        text = self.tokenizer.decode(row.ids, skip_special_tokens=True)
        hits = [text.find(s) for s in row.item.request.params.stop if s in text]
        return text[: min(hits)] if hits else text

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except (asyncio.CancelledError, Exception):
                pass
            self._worker = None


def _fail_item(item: _Item, exc: BaseException) -> None:
    if not item.future.done():
        item.future.set_exception(RuntimeError(f"engine failed: {exc}"))
    item.finished.set()


def _sample(torch, logits, params, generator) -> int:
    if params.temperature == 0:
        return int(torch.argmax(logits))
    scores = logits / params.temperature
    if params.top_k:
        kth = torch.topk(scores, min(params.top_k, scores.numel())).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=True)
        probs = torch.softmax(sorted_scores, dim=-1)
        # Drop a token when the tokens ranked above it already cover top_p of the mass.
        drop = (torch.cumsum(probs, dim=-1) - probs) > params.top_p
        sorted_scores = sorted_scores.masked_fill(drop, float("-inf"))
        scores = torch.full_like(scores, float("-inf")).scatter(0, order, sorted_scores)
    probs = torch.softmax(scores, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple, set)) else [value]
