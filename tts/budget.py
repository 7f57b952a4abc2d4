"""The compute ledger and hard budgets.

One :class:`Ledger` per problem (and one per run, its parent) counts what was spent: generated tokens,
prompt tokens computed and served from cache, verifier tokens, engine calls, FLOPs and wall time.
A :class:`Budget` caps any of these. The cap is enforced where requests enter the backend
(:meth:`Ledger.admit`): a request is reserved at its worst-case cost before it is sent, so concurrent
requests of one problem can never overspend together; a request the remaining budget cannot pay for is
clipped (its samples share what is left, each capped at its share) or refused with :class:`BudgetExhausted`. When the
engine answers, the reservation is replaced by the engine's own counts (:meth:`Ledger.settle`).

Ledgers are used from the event loop thread only, so they need no locks.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Iterator, Mapping

from .types import SamplingParams

UNITS = ("generated_tokens", "total_tokens", "flops", "seconds", "engine_calls")


class BudgetExhausted(Exception):
    """Raised when a request cannot be paid for at all. Strategies catch it and return their best answer."""

    def __init__(self, unit: str, limit: float, spent: float):
        super().__init__(f"budget exhausted: {unit} limit {limit:g}, already spent or reserved {spent:g}")
        self.unit, self.limit, self.spent = unit, limit, spent


@dataclass(frozen=True)
class Budget:
    """Hard limits; ``None`` means unlimited.

    ``total_tokens`` counts computed prompt tokens + generated tokens + verifier tokens.
    """

    generated_tokens: int | None = None
    total_tokens: int | None = None
    flops: float | None = None
    seconds: float | None = None
    engine_calls: int | None = None

    def __post_init__(self) -> None:
        for name in UNITS:
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"Budget.{name} must be a positive number or None, got {value!r}")

    @property
    def unlimited(self) -> bool:
        return all(getattr(self, name) is None for name in UNITS)


@dataclass(frozen=True)
class ModelShape:
    """What FLOP accounting needs to know about a model.

    ``n_params`` are the parameters multiplied per processed token: everything except the input
    embedding lookup (which is a gather, not a matmul), with the output projection counted even when
    its weights are tied to the embedding.
    """

    n_params: float
    n_layers: int
    d_model: int

    def flops(self, start: int, end: int) -> float:
        """Forward FLOPs to process the tokens at positions [start, end) of one sequence.

        2 x params per token for the matmuls, plus attention over the context: a token at position t
        attends to t earlier tokens, costing 2 x n_layers x d_model x t (Kaplan et al. 2020).
        """
        if end <= start:
            return 0.0
        count = end - start
        positions = (start + end - 1) * count / 2
        return 2.0 * self.n_params * count + 2.0 * self.n_layers * self.d_model * positions


def model_shape(model) -> ModelShape:
    """The :class:`ModelShape` of a loaded transformers model (duck-typed: ``config``, ``parameters()``,
    ``get_input_embeddings()``), so this module needs no torch."""
    cfg = model.config
    total = sum(p.numel() for p in model.parameters())
    embed = model.get_input_embeddings().weight.numel()
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    # Tied: the shared matrix is counted once in `total` and it is the output matmul, so keep it.
    # Untied: drop the input embedding (a lookup, not a matmul).
    n_params = total if tied else total - embed
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    return ModelShape(float(n_params), int(text_cfg.num_hidden_layers), int(text_cfg.hidden_size))


@dataclass(frozen=True)
class Usage:
    """What one engine call actually consumed, as the engine counted it."""

    generated_tokens: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    flops: float = 0.0
    engine_calls: int = 1

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens - self.cached_prompt_tokens + self.generated_tokens


def generation_usage(
    shape: ModelShape, prompt_tokens: int, cached_prompt_tokens: int, generated: list[int]
) -> Usage:
    """Usage of one request: the prompt computed once (minus the cached part), then each sample's tokens."""
    flops = shape.flops(cached_prompt_tokens, prompt_tokens)
    flops += sum(shape.flops(prompt_tokens, prompt_tokens + g) for g in generated)
    return Usage(sum(generated), prompt_tokens, cached_prompt_tokens, flops, 1)


@dataclass
class Reservation:
    """Worst-case cost held against every ledger in the chain until the engine answers."""

    params: SamplingParams
    prompt_tokens: int
    generated_tokens: int
    flops: float
    settled: bool = False
    calls: int = 1


@dataclass
class Lease:
    """A share of a ledger reserved for work elsewhere (:meth:`Ledger.lease`): ``budget`` is what the
    work may spend; the other fields are what was reserved for it in the leasing ledger."""

    budget: Budget
    generated_tokens: int = 0
    total_tokens: int = 0
    flops: float = 0.0
    engine_calls: int = 0
    ended: bool = False


@dataclass
class Ledger:
    budget: Budget = field(default_factory=Budget)
    parent: "Ledger | None" = None
    generated_tokens: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    verifier_tokens: int = 0
    engine_calls: int = 0
    flops: float = 0.0
    _reserved_generated: int = 0
    _reserved_total: int = 0
    _reserved_flops: float = 0.0
    _reserved_calls: int = 0
    _started: float = field(default_factory=time.perf_counter)
    _stopped: float | None = None
    # Budget forcing splits generated tokens into thinking and answer (a subset of generated_tokens,
    # reported separately; no budget caps them). Kept last so positional construction is unchanged.
    thinking_tokens: int = 0
    answer_tokens: int = 0

    # --- reading -----------------------------------------------------------------------------------
    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens - self.cached_prompt_tokens + self.generated_tokens + self.verifier_tokens

    @property
    def wall_seconds(self) -> float:
        return (self._stopped or time.perf_counter()) - self._started

    def stop_clock(self) -> None:
        if self._stopped is None:
            self._stopped = time.perf_counter()

    def snapshot(self) -> dict[str, float]:
        return {
            "generated_tokens": self.generated_tokens,
            "prompt_tokens": self.prompt_tokens,
            "cached_prompt_tokens": self.cached_prompt_tokens,
            "verifier_tokens": self.verifier_tokens,
            "engine_calls": self.engine_calls,
            "flops": self.flops,
            "thinking_tokens": self.thinking_tokens,
            "answer_tokens": self.answer_tokens,
            "wall_seconds": round(self.wall_seconds, 4),
        }

    def child(self, budget: Budget | None = None) -> "Ledger":
        """A ledger whose spending also counts (and is capped) here."""
        return Ledger(budget=budget or Budget(), parent=self)

    def seconds_left(self) -> float | None:
        """Wall time left under the tightest time budget here or above (None: no time budget)."""
        lefts = [n.budget.seconds - n.wall_seconds for n in self._chain() if n.budget.seconds is not None]
        return max(0.0, min(lefts)) if lefts else None

    def seconds_limit(self) -> float | None:
        """The tightest time budget here or above, in seconds (None: no time budget)."""
        limits = [n.budget.seconds for n in self._chain() if n.budget.seconds is not None]
        return min(limits) if limits else None

    def _chain(self) -> Iterator["Ledger"]:
        node: Ledger | None = self
        while node is not None:
            yield node
            node = node.parent

    # --- admission ---------------------------------------------------------------------------------
    def _affordable_generated(self, prompt_tokens: int, max_len: int, shape: ModelShape) -> float:
        """Most generated tokens this ledger alone can still pay for, given the prompt must be paid too."""
        b = self.budget
        room = math.inf
        if b.seconds is not None and self.wall_seconds >= b.seconds:
            raise BudgetExhausted("seconds", b.seconds, self.wall_seconds)
        if b.engine_calls is not None and self.engine_calls + self._reserved_calls >= b.engine_calls:
            raise BudgetExhausted("engine_calls", b.engine_calls, self.engine_calls + self._reserved_calls)
        if b.generated_tokens is not None:
            room = min(room, b.generated_tokens - self.generated_tokens - self._reserved_generated)
            if room < 1:
                raise BudgetExhausted("generated_tokens", b.generated_tokens, b.generated_tokens - room)
        if b.total_tokens is not None:
            spent = self.total_tokens + self._reserved_total
            room = min(room, b.total_tokens - spent - prompt_tokens)
            if room < 1:
                raise BudgetExhausted("total_tokens", b.total_tokens, spent)
        if b.flops is not None:
            spent = self.flops + self._reserved_flops
            # Price every generated token at the longest context it could reach, so the bound holds.
            per_token = shape.flops(max_len - 1, max_len)
            room = min(room, (b.flops - spent - shape.flops(0, prompt_tokens)) // per_token)
            if room < 1:
                raise BudgetExhausted("flops", b.flops, spent)
        return room

    def admit(self, prompt_tokens: int, params: SamplingParams, shape: ModelShape) -> Reservation:
        """Reserve a request's worst-case cost in this ledger and its parents, clipping it to fit.

        A request the budget cannot pay in full becomes a pool: the n samples share what the budget can
        pay (each capped at its share, ``max_tokens = room // n``; fewer samples only when there is not
        one token for each), and the generator refills samples the cap cut short from what finished
        samples left unspent (:meth:`tts.runtime.Generator.sample`). So majority@8 under 400 tokens draws
        eight samples of up to 50 tokens, not one of 256 that then uses ten.
        Raises BudgetExhausted when not even one token can be paid for.
        """
        max_len = prompt_tokens + params.max_tokens
        room = min(node._affordable_generated(prompt_tokens, max_len, shape) for node in self._chain())
        n, max_tokens = params.n, params.max_tokens
        if room < n * max_tokens:
            n = int(min(n, room))
            max_tokens = int(min(max_tokens, room // n))
            params = dataclasses.replace(params, n=n, max_tokens=max_tokens)
        generated = n * max_tokens
        flops = shape.flops(0, prompt_tokens) + n * shape.flops(prompt_tokens, prompt_tokens + max_tokens)
        for node in self._chain():
            node._reserved_generated += generated
            node._reserved_total += prompt_tokens + generated
            node._reserved_flops += flops
            node._reserved_calls += 1
        return Reservation(params, prompt_tokens, generated, flops)

    def room(self, prompt_tokens: int, max_tokens: int, shape: ModelShape) -> int:
        """Generated tokens a request of this prompt could still be admitted for here and above
        (0 when none: the budget is spent or a limit other than tokens binds)."""
        try:
            max_len = prompt_tokens + max_tokens
            room = min(node._affordable_generated(prompt_tokens, max_len, shape) for node in self._chain())
        except BudgetExhausted:
            return 0
        return int(min(room, 2**62))

    def settle(self, reservation: Reservation, usage: Usage) -> None:
        """Release a reservation and charge what the engine reports it actually did."""
        if reservation.settled:
            raise RuntimeError("reservation settled twice")
        reservation.settled = True
        for node in self._chain():
            node._reserved_generated -= reservation.generated_tokens
            node._reserved_total -= reservation.prompt_tokens + reservation.generated_tokens
            node._reserved_flops -= reservation.flops
            node._reserved_calls -= 1
            node.generated_tokens += usage.generated_tokens
            node.prompt_tokens += usage.prompt_tokens
            node.cached_prompt_tokens += usage.cached_prompt_tokens
            node.flops += usage.flops
            node.engine_calls += usage.engine_calls

    def reserve_verifier(self, tokens: int, flops: float = 0.0, calls: int = 1) -> Reservation:
        """Reserve a verifier's work (tokens it reads or generates, FLOPs, model calls) before it runs,
        here and in every parent; BudgetExhausted when any total_tokens, flops, engine_calls or seconds
        budget cannot pay for all of it (a verifier's work is not clipped: half a score is no score)."""
        for node in self._chain():
            b = node.budget
            if b.seconds is not None and node.wall_seconds >= b.seconds:
                raise BudgetExhausted("seconds", b.seconds, node.wall_seconds)
            if b.engine_calls is not None and calls and node.engine_calls + node._reserved_calls + calls > b.engine_calls:
                raise BudgetExhausted("engine_calls", b.engine_calls, node.engine_calls + node._reserved_calls)
            if b.total_tokens is not None and node.total_tokens + node._reserved_total + tokens > b.total_tokens:
                raise BudgetExhausted("total_tokens", b.total_tokens, node.total_tokens + node._reserved_total)
            if b.flops is not None and node.flops + node._reserved_flops + flops > b.flops:
                raise BudgetExhausted("flops", b.flops, node.flops + node._reserved_flops)
        for node in self._chain():
            node._reserved_total += tokens
            node._reserved_flops += flops
            node._reserved_calls += calls
        return Reservation(SamplingParams(), tokens, 0, flops, calls=calls)

    def settle_verifier(self, reservation: Reservation, tokens: int, flops: float = 0.0, calls: int = 1) -> None:
        """Release a verifier reservation and charge what the verifier actually did."""
        if reservation.settled:
            raise RuntimeError("reservation settled twice")
        reservation.settled = True
        for node in self._chain():
            node._reserved_total -= reservation.prompt_tokens
            node._reserved_flops -= reservation.flops
            node._reserved_calls -= reservation.calls
        self.charge_verifier(tokens, flops, calls)

    def charge_verifier(self, tokens: int, flops: float = 0.0, calls: int = 0) -> None:
        """Charge a verifier's work (scored tokens, FLOPs, model calls) to this ledger and its parents.
        Verifiers reserve first (:meth:`reserve_verifier`, through ``tts.verifiers.metering``); this is
        the charging half."""
        for node in self._chain():
            node.verifier_tokens += tokens
            node.flops += flops
            node.engine_calls += calls

    # --- leases (a share of this ledger handed to work that runs elsewhere) -------------------------
    def lease(self, ways: int) -> "Lease":
        """Reserve a ``1/ways`` share of what this ledger and its parents have neither spent nor
        reserved, for one problem solved in another process (a Ray replica), which gets the share as
        its own :class:`Budget` (``Lease.budget``). Every limited unit is shared (integers at least 1,
        never more than is left); seconds are not divided: the work may take what is left of the run's
        wall time. Because each share is at most what is left, no sum of leases can pass a limit.
        Raises BudgetExhausted when some limited unit has nothing left. Unlimited ledgers lease
        nothing (``Lease.budget`` is an unlimited Budget)."""
        if ways < 1:
            raise ValueError(f"ways must be at least 1, got {ways}")
        left: dict[str, float] = {}
        for node in self._chain():
            b = node.budget
            units = {
                "generated_tokens": None if b.generated_tokens is None
                else b.generated_tokens - node.generated_tokens - node._reserved_generated,
                "total_tokens": None if b.total_tokens is None else b.total_tokens - node.total_tokens - node._reserved_total,
                "flops": None if b.flops is None else b.flops - node.flops - node._reserved_flops,
                "engine_calls": None if b.engine_calls is None
                else b.engine_calls - node.engine_calls - node._reserved_calls,
                "seconds": None if b.seconds is None else b.seconds - node.wall_seconds,
            }
            for unit, value in units.items():
                if value is not None:
                    left[unit] = min(left.get(unit, math.inf), value)
        share: dict[str, float] = {}
        for unit, value in left.items():
            whole = unit in ("generated_tokens", "total_tokens", "engine_calls")
            if value < 1 if whole else value <= 0:
                limit = min(getattr(n.budget, unit) for n in self._chain() if getattr(n.budget, unit) is not None)
                raise BudgetExhausted(unit, limit, limit - max(value, 0))
            share[unit] = value if unit == "seconds" else (max(1, int(value // ways)) if whole else value / ways)
        lease = Lease(Budget(**share), int(share.get("generated_tokens", 0)), int(share.get("total_tokens", 0)),
                      float(share.get("flops", 0.0)), int(share.get("engine_calls", 0)))
        self._hold_lease(lease, +1)
        return lease

    def _hold_lease(self, lease: "Lease", sign: int) -> None:
        for node in self._chain():
            node._reserved_generated += sign * lease.generated_tokens
            node._reserved_total += sign * lease.total_tokens
            node._reserved_flops += sign * lease.flops
            node._reserved_calls += sign * lease.engine_calls

    def end_lease(self, lease: "Lease", spent: Mapping[str, float]) -> None:
        """Release a lease and charge what the work reported it spent (a ledger snapshot). A lease
        whose work was lost with its process is never ended: what it may have spent stays reserved,
        so the limit still holds, and nothing unknown is reported as spent."""
        if lease.ended:
            raise RuntimeError("lease ended twice")
        lease.ended = True
        self._hold_lease(lease, -1)
        for node in self._chain():
            node.generated_tokens += int(spent.get("generated_tokens", 0))
            node.prompt_tokens += int(spent.get("prompt_tokens", 0))
            node.cached_prompt_tokens += int(spent.get("cached_prompt_tokens", 0))
            node.verifier_tokens += int(spent.get("verifier_tokens", 0))
            node.engine_calls += int(spent.get("engine_calls", 0))
            node.flops += float(spent.get("flops", 0.0))
            node.thinking_tokens += int(spent.get("thinking_tokens", 0))
            node.answer_tokens += int(spent.get("answer_tokens", 0))

    def record_thinking(self, thinking: int, answer: int) -> None:
        """Note how many already-charged generated tokens were thinking and how many answer, here and
        in the parents (budget forcing calls this; it charges nothing, settle() already did)."""
        for node in self._chain():
            node.thinking_tokens += thinking
            node.answer_tokens += answer
