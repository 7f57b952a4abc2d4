"""LLM-as-a-judge: any tts backend scores candidates by answering a verification prompt.

Two modes:

* ``"yes_prob"``: the judge answers the prompt with one token; the score is the probability of a "Yes"
  token. ``samples`` answers are drawn at temperature 1 (or one greedy answer when ``samples=1`` and
  ``temperature=0``); a backend's logprob of a sampled token is the model's own log-probability of it,
  so whenever a Yes token (any of ``yes_words``, case and spaces ignored; " Yes" and "Yes" are distinct
  tokens and both count) is among the samples, its probability is known exactly, and the score is the
  sum over the distinct Yes tokens seen. When no Yes token is drawn the score is 0: the probability is
  then small (below about 1/samples with high confidence), but not exactly known.
* ``"score"``: the judge writes a number on a ``1..scale`` scale; the first number in its reply,
  clipped to the scale and divided by ``scale``, is the score (``unparsed_score`` when it wrote none).

All candidates of a problem are judged concurrently (the backend batches them). The judge's prompt and
generated tokens are charged to the ledger as verifier tokens, with their FLOPs and one call each.
"""

from __future__ import annotations

import asyncio
import math
import re
from dataclasses import dataclass
from typing import Sequence

from ..backends.base import Backend, Generation, GenerationRequest
from ..budget import Ledger, generation_usage
from ..types import Completion, Message, Problem, SamplingParams
from .prm import question_of

MODES = ("yes_prob", "score")

YES_NO_PROMPT = (
    "Here is a question and a proposed answer.\n\nQuestion: {question}\n\nProposed answer: {answer}\n\n"
    "Is the proposed answer correct? Reply with just Yes or No."
)
SCORE_PROMPT = (
    "Here is a question and a proposed answer.\n\nQuestion: {question}\n\nProposed answer: {answer}\n\n"
    "Rate how likely the proposed answer is to be correct on a scale from 1 to {scale}. "
    "Reply with just the number."
)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass(frozen=True)
class LLMJudge:
    backend: Backend
    mode: str = "yes_prob"
    #: a template with {question} and {answer} (and {scale} in score mode); None: the mode's default
    prompt: str | None = None
    system_prompt: str | None = None
    samples: int = 4
    temperature: float = 1.0
    yes_words: tuple[str, ...] = ("yes",)
    scale: int = 10
    max_tokens: int = 8
    unparsed_score: float = 0.0
    #: candidate text longer than this is clipped to its end (where the final answer is)
    max_answer_chars: int = 4000
    name: str = "judge"
    needs_logprobs: bool = False

    def __post_init__(self) -> None:
        c = "LLMJudge"
        if self.mode not in MODES:
            raise ValueError(f"{c}.mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not hasattr(self.backend, "generate") or not hasattr(self.backend, "shape"):
            raise ValueError(f"{c}.backend must be a tts backend (with generate and shape), got {self.backend!r}")
        template = self.template
        for key in ("{question}", "{answer}"):
            if key not in template:
                raise ValueError(f"{c}.prompt must contain {key}, got {self.prompt!r}")
        if not isinstance(self.samples, int) or self.samples < 1:
            raise ValueError(f"{c}.samples must be a positive integer, got {self.samples!r}")
        if not isinstance(self.temperature, (int, float)) or self.temperature < 0:
            raise ValueError(f"{c}.temperature must be a number >= 0, got {self.temperature!r}")
        if self.mode == "yes_prob" and self.samples > 1 and self.temperature == 0:
            raise ValueError(f"{c}.temperature must be > 0 to draw {self.samples} samples (greedy gives one answer)")
        object.__setattr__(self, "yes_words", tuple(w.strip().lower() for w in self.yes_words))
        if not self.yes_words or not all(self.yes_words):
            raise ValueError(f"{c}.yes_words must be non-empty words, got {self.yes_words!r}")
        if not isinstance(self.scale, int) or self.scale < 2:
            raise ValueError(f"{c}.scale must be an integer >= 2, got {self.scale!r}")
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"{c}.max_tokens must be a positive integer, got {self.max_tokens!r}")
        if not isinstance(self.max_answer_chars, int) or self.max_answer_chars < 1:
            raise ValueError(f"{c}.max_answer_chars must be a positive integer, got {self.max_answer_chars!r}")

    @property
    def template(self) -> str:
        if self.prompt is not None:
            return self.prompt
        return YES_NO_PROMPT if self.mode == "yes_prob" else SCORE_PROMPT

    def request(self, problem: Problem, completion_text: str, seed: int | None = None) -> GenerationRequest:
        answer = completion_text[-self.max_answer_chars:]
        content = self.template.replace("{question}", question_of(problem)).replace("{answer}", answer)
        content = content.replace("{scale}", str(self.scale))
        chat = ((Message("system", self.system_prompt),) if self.system_prompt else ()) + (Message("user", content),)
        if self.mode == "yes_prob":
            params = SamplingParams(n=self.samples, temperature=self.temperature, max_tokens=1, logprobs=True, seed=seed)
        else:
            params = SamplingParams(n=1, temperature=0.0, max_tokens=self.max_tokens, seed=seed)
        return GenerationRequest(chat, params)

    def yes_probability(self, generation: Generation) -> float:
        """Sum of the exact probabilities of the distinct Yes tokens among the judge's answers."""
        seen: dict[object, float] = {}
        for c in generation.completions:
            if c.text.strip().lower() in self.yes_words and c.logprobs:
                key = c.token_ids[0] if c.token_ids else c.text
                seen[key] = math.exp(c.logprobs[0])
        return min(1.0, sum(seen.values()))

    def parse_score(self, text: str) -> float:
        found = _NUMBER.search(text)
        if not found:
            return self.unparsed_score
        value = min(max(float(found.group()), 0.0), float(self.scale))
        return value / self.scale

    async def score(self, problem: Problem, completions: Sequence[Completion], ledger: Ledger) -> list[float]:
        from ..runtime import derive_seed

        requests = [self.request(problem, c.text, derive_seed("judge", problem.id, i)) for i, c in enumerate(completions)]
        # Every judge call is reserved at its worst case (whole prompt computed, every sample at max_tokens)
        # before any is sent, so a budget refuses the judging instead of being overrun by it.
        shape = self.backend.shape
        reservations = []
        try:
            for r in requests:
                prompt = self.backend.count_prompt_tokens(r)
                n, most = r.params.n, r.params.max_tokens
                reservations.append(ledger.reserve_verifier(
                    prompt + n * most, shape.flops(0, prompt) + n * shape.flops(prompt, prompt + most), 1))
            generations = await asyncio.gather(*(self.backend.generate(r) for r in requests))
        except BaseException:  # refused, failed or cancelled: release what was held, charge nothing
            for res in reservations:
                ledger.settle_verifier(res, 0, 0.0, 0)
            raise
        for gen, res in zip(generations, reservations):
            usage = generation_usage(shape, gen.prompt_tokens, gen.cached_prompt_tokens, [c.num_tokens for c in gen.completions])
            ledger.settle_verifier(res, usage.total_tokens, usage.flops, 1)
        if self.mode == "yes_prob":
            return [self.yes_probability(g) for g in generations]
        return [self.parse_score(g.completions[0].text if g.completions else "") for g in generations]
