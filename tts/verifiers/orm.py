"""Outcome reward models: one score per whole candidate from a sequence-classification model.

The candidate is rendered as a conversation (the problem as the user turn, the candidate as the
assistant turn) with the reward model's chat template, or as plain "question\\n\\nanswer" text when the
tokenizer has none. With one output label the raw logit is the reward (Skywork/ArmoRM-style scalar
RMs); with more, the probability of ``positive_label``. Batched, left-padded with explicit positions
(so a padded row scores exactly as it would alone), run in a worker thread, and charged to the ledger as
verifier tokens, forward FLOPs and one call per forward.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Sequence

from ..budget import Ledger
from ..types import Completion, Problem
from .metering import admit, metered
from .prm import HFModel, LazyModel, question_of


@dataclass(frozen=True)
class SequenceClassifierORM:
    model: str
    #: None: a single-logit head gives its raw value, a multi-label head the last label's probability
    positive_label: int | None = None
    chat: bool = True
    max_batch: int = 8
    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = False
    name: str = "orm"
    needs_logprobs: bool = False
    _lazy: LazyModel = field(default_factory=LazyModel, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"SequenceClassifierORM.model must be a model name or folder, got {self.model!r}")
        if self.positive_label is not None and (not isinstance(self.positive_label, int) or self.positive_label < 0):
            raise ValueError(
                f"SequenceClassifierORM.positive_label must be None or a non-negative integer, got {self.positive_label!r}"
            )
        if not isinstance(self.max_batch, int) or self.max_batch < 1:
            raise ValueError(f"SequenceClassifierORM.max_batch must be a positive integer, got {self.max_batch!r}")

    def engine(self) -> HFModel:
        with self._lazy.lock:
            if self._lazy.value is None:
                self._lazy.value = HFModel(
                    self.model, "sequence_classification", self.device, self.dtype, self.trust_remote_code
                )
            return self._lazy.value

    def encode(self, problem: Problem, text: str) -> list[int]:
        eng = self.engine()
        if self.chat and getattr(eng.tokenizer, "chat_template", None):
            messages = [{"role": m.role, "content": m.content} for m in problem.chat()]
            messages.append({"role": "assistant", "content": text})
            return eng.chat_ids(messages, add_generation_prompt=False)
        return eng.bos() + eng.ids(question_of(problem) + "\n\n" + text)

    def scores(self, problem: Problem, texts: Sequence[str]) -> tuple[list[float], tuple[int, float, int]]:
        eng = self.engine()
        torch = eng.torch
        rows = [self.encode(problem, t) for t in texts]
        out = [0.0] * len(rows)
        groups = eng.batches(rows, self.max_batch)
        admit(eng.cost(rows, len(groups)))  # reserved in the ledger before any forward pass
        for group in groups:
            batch = [rows[i] for i in group]
            # The classifier pools the last token that is not the pad id. Left padding with an id that
            # occurs in no row makes that each row's real last token (a text ending in the tokenizer's
            # own pad token, such as an end-of-turn token, would otherwise be pooled one token early).
            used = {t for row in batch for t in row}
            pad = next(t for t in [eng.pad_id, *range(eng.model.config.vocab_size - 1, -1, -1)] if t not in used)
            with eng.lock:
                eng.model.config.pad_token_id = pad
                logits, _ = eng.forward(batch, left_pad=True, pad_id=pad)
            if logits.dim() == 3:  # a model returning per-token logits: take the last column
                logits = logits[:, -1, :]
            labels = logits.shape[-1]
            if self.positive_label is not None and self.positive_label >= labels:
                raise ValueError(
                    f"SequenceClassifierORM.positive_label {self.positive_label} is out of range for {labels} labels"
                )
            if labels == 1 and self.positive_label in (None, 0):
                values = logits[:, 0]
            else:
                label = labels - 1 if self.positive_label is None else self.positive_label
                values = torch.softmax(logits, dim=-1)[:, label]
            for b, i in enumerate(group):
                out[i] = float(values[b])
        return out, eng.cost(rows, len(groups))

    async def score(self, problem: Problem, completions: Sequence[Completion], ledger: Ledger) -> list[float]:
        if not completions:
            return []
        return await metered(ledger, self.scores, problem, [c.text for c in completions])
