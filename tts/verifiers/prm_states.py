"""Scoring a step without rereading its path: a PRM's KV states of scored prefixes, reused.

Tree search scores every child with its whole path (question, earlier steps, the new step). A PRM
is a causal model, so the outputs at the path's positions do not depend on what follows them: the KV
state at the end of a node's scored input is all a child needs to score its new step. :class:`StateCache`
keeps those states keyed by the exact token ids they cover (an entry is reused only for an input that
starts with exactly those ids, so a template that does not extend its own prefix simply misses), with
the step scores already read and the last position's logits (a likelihood PRM predicts a step's first
token from there), under a byte cap with least-recently-used eviction; a miss recomputes from the start.
:func:`extend` runs one forward over many rows, each continuing its own cached state (left-padded to a
common length, masked) or starting from nothing, and returns each row's new logits and its new state.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence

#: the default cap on the states one PRM keeps (its least recently used are dropped first)
DEFAULT_CACHE_BYTES = 256 << 20


@dataclass
class State:
    """A scored prefix: its token ids, per-layer (key, value) tensors [heads, length, dim], the logits
    of its last position, and the scores of the steps it holds."""

    ids: tuple[int, ...]
    kv: list[tuple[Any, Any]]
    last_logits: Any
    scores: list[float]

    @property
    def length(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        # the state's own share of its batch's tensors (its views' sizes)
        tensors = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self.kv)
        return tensors + self.last_logits.numel() * self.last_logits.element_size() + 40 * len(self.ids)


class StateCache:
    """States of scored prefixes, least recently used dropped first beyond ``max_bytes`` (0: keep
    nothing, so every input is scored from its start: full rescoring). Thread-safe: concurrent
    problems score in worker threads."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[int, ...], State] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = self.misses = self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def longest(self, ids: Sequence[int], boundaries: Sequence[int]) -> tuple[State | None, int]:
        """The cached state covering the longest of ``ids[:b]`` for ``b`` in ``boundaries`` (step ends,
        ascending), and the index of that boundary (-1 when none is cached)."""
        if not self.max_bytes:
            return None, -1
        with self._lock:
            for k in range(len(boundaries) - 1, -1, -1):
                state = self._entries.get(tuple(ids[:boundaries[k]]))
                if state is not None:
                    self._entries.move_to_end(state.ids)
                    self.hits += 1
                    return state, k
            self.misses += 1
            return None, -1

    def put(self, state: State) -> None:
        if not self.max_bytes or state.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(state.ids, None)
            if old is not None:
                self.bytes -= old.nbytes
            self._entries[state.ids] = state
            self.bytes += state.nbytes
            while self.bytes > self.max_bytes and self._entries:
                _, dropped = self._entries.popitem(last=False)
                self.bytes -= dropped.nbytes
                self.evictions += 1

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.bytes = 0


def extend(engine, pasts: Sequence[State | None], news: Sequence[Sequence[int]]) -> list[tuple[Any, list]]:
    """One forward of rows that each continue ``pasts[i]`` (or start from nothing) with the tokens
    ``news[i]``: per row, the logits of its new tokens [len(news[i]), vocab] (float, on the CPU) and its
    state after them (per layer (key, value) [heads, past + new, dim]). Pasts are left-padded to the
    longest and masked out; new tokens are right-padded, so no row's outputs depend on another's."""
    torch = engine.torch
    from transformers import DynamicCache

    n = len(news)
    lengths = [len(x) for x in news]
    past = [p.length if p is not None else 0 for p in pasts]
    longest, width = max(past), max(lengths)
    input_ids = torch.full((n, width), engine.pad_id, dtype=torch.long)
    mask = torch.zeros((n, longest + width), dtype=torch.long)
    positions = torch.zeros((n, width), dtype=torch.long)
    for i, row in enumerate(news):
        input_ids[i, :len(row)] = torch.tensor(list(row), dtype=torch.long)
        mask[i, longest - past[i]:longest + len(row)] = 1
        positions[i] = past[i] + torch.arange(width)
    cache = DynamicCache(config=engine.model.config)
    if longest:
        cache = DynamicCache(ddp_cache_data=_batched_pasts(torch, pasts, past, longest), config=engine.model.config)
    device = engine.device
    with engine.lock, torch.inference_mode():
        out = engine.model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                           position_ids=positions.to(device), past_key_values=cache, use_cache=True)
    logits = (out.logits if hasattr(out, "logits") else out[0]).float().cpu()
    results = []
    for i in range(n):
        # views into the batch's cache tensors, not copies: thousands of small copies per forward
        # cost a small PRM more than its arithmetic; the batch's padding lives as long as its rows do
        start, end = longest - past[i], longest + lengths[i]
        kv = [(layer.keys[i, :, start:end], layer.values[i, :, start:end]) for layer in cache.layers]
        results.append((logits[i, :lengths[i]], kv))
    return results


def _batched_pasts(torch, pasts, past: list[int], longest: int) -> list[tuple[Any, Any]]:
    """Per layer the rows' past keys and values as [rows, heads, longest, dim], left-padded with zeros
    (masked out): one expand when every row continues the same state (siblings), one stack when the
    pasts are as long as each other, padding only otherwise."""
    template = next(p for p in pasts if p is not None)
    if all(p is template for p in pasts):
        n = len(pasts)
        return [(k[None].expand(n, *k.shape), v[None].expand(n, *v.shape)) for k, v in template.kv]
    layers = []
    for layer, (k0, v0) in enumerate(template.kv):
        def padded(p, i, which, like):
            if p is None:
                return like.new_zeros((like.shape[0], longest, like.shape[-1]))
            t = p.kv[layer][which]
            return t if past[i] == longest else torch.nn.functional.pad(t, (0, 0, longest - past[i], 0))
        layers.append((torch.stack([padded(p, i, 0, k0) for i, p in enumerate(pasts)]),
                       torch.stack([padded(p, i, 1, v0) for i, p in enumerate(pasts)])))
    return layers


@dataclass
class _Request:
    rows: list  # (past, new tokens, full input length) per row
    results: list | None = None
    error: BaseException | None = None
    done: bool = False


class RowBatcher:
    """Forwards shared by concurrent scoring calls: the problems in flight score in worker threads,
    and a call that arrives while a forward runs waits and goes into the next one with every other
    call that arrived meanwhile (as an engine's continuous batch does), grouped by :func:`groups`.
    Rows that continue a cached state are a few tokens each, so a forward's fixed cost, not its
    arithmetic, is what a small PRM pays for, and sharing forwards is what removes it."""

    def __init__(self):
        self._cv = threading.Condition()
        self._queue: list[_Request] = []
        self._busy = False
        #: forwards run and the seconds they took (what benchmarks/verifier_cost.py reports)
        self.forwards = 0
        self.seconds = 0.0

    def run(self, engine, rows: list, max_batch: int) -> list:
        """Per row ``(past, new, full_length)``, ``(logits, kv)`` as :func:`extend` returns them."""
        if not rows:
            return []
        mine = _Request(rows)
        with self._cv:
            self._queue.append(mine)
            while not mine.done and self._busy:
                self._cv.wait()
            if mine.done:
                return self._done(mine)
            self._busy = True
            taken, self._queue = self._queue, []
        try:
            flat = [(request, k) for request in taken for k in range(len(request.rows))]
            for request in taken:
                request.results = [None] * len(request.rows)
            every = [request.rows[k] for request, k in flat]
            started = time.perf_counter()
            try:
                for group in groups([r[1] for r in every], [r[2] for r in every], max_batch):
                    out = extend(engine, [every[j][0] for j in group], [every[j][1] for j in group])
                    self.forwards += 1
                    for j, result in zip(group, out):
                        request, k = flat[j]
                        request.results[k] = result
            except BaseException as exc:  # every caller of this batch gets the error
                for request in taken:
                    request.results, request.error = None, exc
            self.seconds += time.perf_counter() - started
        finally:
            with self._cv:
                for request in taken:
                    request.done = True
                self._busy = False
                self._cv.notify_all()
        return self._done(mine)

    @staticmethod
    def _done(request: _Request) -> list:
        if request.error is not None:
            raise request.error
        return request.results


def groups(rows: Sequence[Sequence[int]], full_lengths: Sequence[int], max_batch: int) -> list[list[int]]:
    """Row indices in forwards of similar length, each at most ``max_batch`` full inputs' worth of
    padded tokens (rows that continue a cached state are short, so more of them share a forward)."""
    if not rows:
        return []
    area = max_batch * max(full_lengths)
    order = sorted(range(len(rows)), key=lambda j: len(rows[j]))
    out: list[list[int]] = [[]]
    for j in order:  # ascending lengths: the newest row is the longest of its group
        if out[-1] and (len(out[-1]) + 1) * max(len(rows[j]), 1) > area:
            out.append([])
        out[-1].append(j)
    return out
