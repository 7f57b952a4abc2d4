"""Budget forcing (s1, Muennighoff et al. 2025): minimum and maximum thinking budgets, as a generation
policy that composes with every strategy.

A reasoning model thinks between two delimiters (``<think> ... </think>`` for Qwen3 and DeepSeek-R1) and
then answers. :class:`BudgetForcing` controls how long it thinks:

  * **maximum**: thinking is generated with at most ``max_thinking_tokens`` tokens; when it reaches them,
    the end-of-thinking delimiter and an answer cue ("Final Answer:") are appended for the model and only
    the answer is generated;
  * **minimum**: when the model ends its thinking too early, the delimiter is dropped and ``wait_text``
    ("Wait") is appended instead, and thinking continues from there. "Too early" is in tokens
    (``min_thinking_tokens``) or, with no token minimum, in Waits: the end of thinking is then suppressed
    exactly ``max_waits`` times (s1's budget in number of Waits).

Every step is an ordinary request through the problem's metered :class:`~tts.runtime.Generator`, whose
prefix is the previous step's prefix extended, so the ledger charges each step from the engine's own
counts and prefix caching (vLLM) makes each continuation cheap.

It is a policy, not only a strategy: ``policy.wrap(gen)`` returns a generator with the same ``sample``
coroutine, ``ledger`` and ``seed``, so any strategy samples budget-forced traces without knowing it;
:class:`BudgetForced` does that for one strategy (``BudgetForced(inner=Majority(n=8), policy=...)``), and
reads each candidate's answer from the text after its thinking.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

from ..backends.base import GenerationRequest
from ..budget import BudgetExhausted
from ..runtime import Generator, Strategy, as_prompt, derive_seed
from ..types import Completion, Message, Problem, SamplingParams, Trace
from ..options import MAX_DEPTH, MAX_TOKENS, check, option
from .sampling import Extractor, Single, answer_reader

#: Thinking delimiters of known reasoning-model families, most common first. ``from_tokenizer`` picks
#: the first pair the tokenizer's chat template or vocabulary knows.
KNOWN_DELIMITERS: tuple[tuple[str, str], ...] = (
    ("<think>", "</think>"),                        # Qwen3, QwQ, DeepSeek-R1 and its distills
    ("<thinking>", "</thinking>"),
    ("<|begin_of_thought|>", "<|end_of_thought|>"),  # Sky-T1 / Bespoke-Stratos
    ("<|start_thinking|>", "<|end_thinking|>"),
)


#: what a certainty probe appends to the thinking so far; the model's next tokens are its answer now
PROBE_TEXT = "\n\n... I can give the answer now. **Final Answer**\n\\boxed{"
#: a probe answer that hesitates does not count as an answer (Dynasor-CoT discards these too)
HEDGES = ("wait", "hmm", "hold on", "but ")


@dataclass(frozen=True)
class BudgetForcing:
    """How long a model may and must think. Budgets count generated thinking tokens (the text this
    policy appends, Waits and delimiters, is prompt, not generated).

    ``max_thinking_tokens=None`` caps thinking at the sampling params' ``max_tokens``;
    ``answer_max_tokens=None`` caps the answer the same way. ``min_thinking_tokens=None`` with
    ``max_waits=K`` forces exactly K Waits; with a token minimum, ``max_waits`` bounds the Waits
    (None: as many as it takes, which ends because every continuation generates at least one token).
    ``open_thinking`` writes ``think_start`` for the model when neither the chat template nor the prefix
    has opened thinking already (models that open it themselves would write the same thing), followed by
    ``thinking_opener`` (e.g. ``"\\nI need to"``: a first few words that get a small instruction model
    reasoning instead of answering at once; prompt, not generated, so the budgets do not count it).
    ``max_thinking_tokens=0`` answers at once: thinking is opened and closed for the model (no opener)
    and only the answer is generated.
    """

    #: None (both): the delimiters the model's tokenizer knows (chat template or vocabulary), resolved
    #: when the policy meets its backend (:meth:`wrap`), else ``<think>`` and ``</think>``
    think_start: str | None = option(None, help="the text that opens thinking (default: the model's own)")
    think_end: str | None = option(None, help="the text that ends thinking (default: the model's own)")
    min_thinking_tokens: int | None = option(None, low=0, high=MAX_TOKENS,
                                             help="append a Wait when thinking ends before this many tokens (any strategy)")
    max_thinking_tokens: int | None = option(None, low=0, high=MAX_TOKENS,
                                             help="end thinking after this many tokens and ask for the answer (any strategy; 0: answer at once)")
    max_waits: int | None = option(None, low=0, high=MAX_DEPTH, help="most Waits per sample")
    wait_text: str = option("Wait", escapes=True, help="text appended to keep thinking")
    answer_cue: str = option("Final Answer:", escapes=True, help="text written after thinking to ask for the answer")
    answer_max_tokens: int | None = option(None, low=1, high=MAX_TOKENS,
                                           help="most tokens of the answer after thinking (default max_tokens)")
    open_thinking: bool = True
    thinking_opener: str = option("", escapes=True,
                                  help="words written after the opened thinking to start the model reasoning (prompt, not counted as thinking)")
    #: certainty probes (Dynasor-CoT): every probe_every thinking tokens the answer is asked for
    probe_every: int | None = option(None, low=1, high=MAX_TOKENS,
                                     help="every this many thinking tokens, probe for the answer; stop thinking once the last probe_window probes agree (Dynasor-CoT; any strategy)")
    probe_window: int = option(3, low=1, high=MAX_DEPTH, help="consecutive agreeing probe answers that stop thinking")
    probe_tokens: int = option(16, low=1, high=MAX_TOKENS, help="most tokens of one probe's answer")
    #: taken as written, escapes not decoded (LaTeX's backslashes stay); newlines come from a recipe
    probe_text: str = option(PROBE_TEXT, help="text appended to the thinking so far to ask for the answer, as written (ending in {: the probe stops at })")

    def __post_init__(self) -> None:
        check(self)
        for name in ("think_start", "think_end", "wait_text"):
            value = getattr(self, name)
            if value is not None and not value.strip():
                raise ValueError(f"BudgetForcing.{name} must be a non-empty string, got {value!r}")
        if self.think_start is not None and self.think_start == self.think_end:
            raise ValueError(f"BudgetForcing.think_start and think_end must differ, both are {self.think_start!r}")
        if not self.probe_text.strip():
            raise ValueError(f"BudgetForcing.probe_text must be a non-empty string, got {self.probe_text!r}")
        if (self.min_thinking_tokens is not None and self.max_thinking_tokens is not None
                and self.min_thinking_tokens > self.max_thinking_tokens):
            raise ValueError(
                f"BudgetForcing.min_thinking_tokens ({self.min_thinking_tokens}) must not exceed "
                f"max_thinking_tokens ({self.max_thinking_tokens})")

    @property
    def given(self) -> bool:
        """Whether any setting differs from the defaults (a command line without forcing options wraps nothing)."""
        return self != BudgetForcing()

    # --- construction ------------------------------------------------------------------------------
    def resolved(self, tokenizer: Any) -> "BudgetForcing":
        """This policy with its unset delimiters filled: the known pair the tokenizer's model uses (in its
        chat template or its vocabulary), else ``<think>``/``</think>``. Given delimiters always win."""
        if self.think_start is not None and self.think_end is not None:
            return self
        found = detect_delimiters(tokenizer) if tokenizer is not None else None
        start, end = found or KNOWN_DELIMITERS[0]
        return replace(self, think_start=self.think_start or start, think_end=self.think_end or end)

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, **settings: Any) -> "BudgetForcing":
        """A policy with the thinking delimiters this tokenizer's model uses (see :meth:`resolved`)."""
        return cls(**settings).resolved(tokenizer)

    @classmethod
    def for_backend(cls, backend: Any, **settings: Any) -> "BudgetForcing":
        """:meth:`from_tokenizer` with the backend's tokenizer (None for backends without one)."""
        return cls(**settings).resolved(getattr(backend, "tokenizer", None))

    def wrap(self, gen: Generator) -> "ForcedGenerator":
        return ForcedGenerator(gen, self.resolved(gen.backend.tokenizer))

    # --- rules -------------------------------------------------------------------------------------
    def should_wait(self, thinking_tokens: int, waits: int) -> bool:
        """Whether an end of thinking after ``thinking_tokens`` tokens and ``waits`` Waits is suppressed."""
        if self.max_waits is not None and waits >= self.max_waits:
            return False
        if self.min_thinking_tokens is None:
            return self.max_waits is not None  # budget in Waits: exactly max_waits of them
        return thinking_tokens < self.min_thinking_tokens

    def thinking_cap(self, params: SamplingParams) -> int:
        """The most thinking tokens one sample may generate (0: none, answer at once)."""
        return self.max_thinking_tokens if self.max_thinking_tokens is not None else params.max_tokens


def detect_delimiters(tokenizer: Any) -> tuple[str, str] | None:
    """The known thinking-delimiter pair a tokenizer's chat template mentions, else one whose both
    halves are single tokens in its vocabulary; None when it has neither."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # some tokenizers keep several named templates
        template = "\n".join(str(t) for t in template.values())
    if isinstance(template, str):
        for start, end in KNOWN_DELIMITERS:
            if start in template and end in template:
                return start, end
    get_vocab = getattr(tokenizer, "get_vocab", None)
    vocab = get_vocab() if callable(get_vocab) else {}
    for start, end in KNOWN_DELIMITERS:
        if start in vocab and end in vocab:
            return start, end
    return None


def single_token_id(tokenizer: Any, text: str) -> int | None:
    """The id of ``text`` when the tokenizer encodes it as exactly one token, else None."""
    if tokenizer is None:
        return None
    try:
        ids = tokenizer.encode(text, add_special_tokens=False)
    except Exception:  # a tokenizer we cannot drive this way: fall back to stop strings
        return None
    return int(ids[0]) if len(ids) == 1 else None


@dataclass
class ForcedSample:
    """What budget forcing did to one sample: the per-sample record behind the trace info."""

    thinking_tokens: int = 0  # generated by this call (not counting thinking the caller's prefix held)
    answer_tokens: int = 0
    waits: int = 0
    capped: bool = False  # thinking reached the maximum and was ended for the model
    probes: list = field(default_factory=list)  # each certainty probe's answer (None: no usable answer)
    probe_tokens: int = 0  # generated by the probes (charged to the ledger, not part of the text)
    probe_stopped: bool = False  # the last probe_window probes agreed and thinking was ended for it
    budget_stop: str | None = None  # a later step the budget refused; the sample ends where it was
    #: the returned text, and what each part of it is: (kind, start, end) character spans with kind
    #: thinking (generated), wait (the injected Wait), cue (injected opener, delimiter, answer cue), answer
    text: str = ""
    segments: list[tuple[str, int, int]] = field(default_factory=list)

    def grow(self, text: str, piece: str, kind: str) -> str:
        """``text + piece``, remembering what the piece is."""
        if piece:
            self.segments.append((kind, len(text), len(text) + len(piece)))
        return text + piece

    def grown(self, text: str, longer: str, kind: str) -> str:
        """``longer`` (which extends ``text``), remembering what the added part is."""
        return self.grow(text, longer[len(text):], kind)


def _join(text: str, piece: str) -> str:
    """Put injected text on its own line unless the model's text already ends in whitespace."""
    return text + piece if not text or text[-1].isspace() else text + "\n" + piece


def _close(text: str, delimiter: str) -> str:
    """End thinking after ``text``. A cap can fall in the middle of a delimiter the model spells in
    several tokens ("...= 11.\\n</" with "</think>" three tokens): its beginning is then completed
    rather than left as a stray fragment before a second delimiter."""
    for k in range(len(delimiter) - 1, 0, -1):
        if text.endswith(delimiter[:k]):
            return text + delimiter[k:]
    return _join(text, delimiter)


class ForcedGenerator:
    """A problem's generator whose samples are budget-forced traces. Same ``sample`` signature,
    ``ledger`` and ``seed`` as :class:`~tts.runtime.Generator`, so strategies use it unchanged."""

    def __init__(self, gen: Generator, policy: BudgetForcing):
        self.gen = gen
        self.policy = policy
        self.ledger = gen.ledger
        self.seed = gen.seed
        self.backend = gen.backend
        self.samples: list[ForcedSample] = []
        self._calls = 0
        # vLLM's min_tokens only blocks stop *token ids*, and a stop string is matched on detokenized
        # text: so stop at the delimiter's id when it is one token, and keep the string for the case
        # where the model spells it out in several tokens.
        self.stop_token_id = single_token_id(gen.backend.tokenizer, policy.think_end)
        self._read: Any = None  # (extract, vote key) of the problem being sampled, for probe answers

    # --- reading the state a prefix leaves thinking in ---------------------------------------------
    def _assistant_text(self, chat: tuple[Message, ...] | str, prefix: str) -> str:
        """What the assistant turn holds before generation: the chat template's generation prompt (which
        opens thinking for some models) and the prefix. Message contents are left out, so a system
        prompt that *describes* the delimiters does not count as opened or closed thinking."""
        if isinstance(chat, str):
            return chat + prefix
        if not chat:
            return prefix
        rendered = self.backend.render(GenerationRequest(chat, SamplingParams(), ""))
        last = chat[-1].content
        at = rendered.rfind(last) if last else -1
        tail = rendered[at + len(last):] if at >= 0 else ""
        return tail + prefix

    def _state(self, chat, prefix: str) -> str:
        text = self._assistant_text(chat, prefix)
        start, end = text.rfind(self.policy.think_start), text.rfind(self.policy.think_end)
        if end > start:
            return "answering"
        return "thinking" if start >= 0 else "fresh"

    def _thought_in_prefix(self, chat, prefix: str) -> int:
        """Tokens of thinking the caller's prefix already holds (a search continuing inside the thinking),
        so the budget counts them: the engine's count with the prefix minus without its thinking."""
        at = prefix.rfind(self.policy.think_start)
        cut = at + len(self.policy.think_start) if at >= 0 else 0
        if cut >= len(prefix):
            return 0
        count = self.backend.count_prompt_tokens
        params = SamplingParams()
        return max(0, count(GenerationRequest(chat, params, prefix)) - count(GenerationRequest(chat, params, prefix[:cut])))

    # --- sampling ------------------------------------------------------------------------------------
    async def sample(
        self,
        prompt: Problem | Sequence[Message] | str,
        params: SamplingParams,
        *,
        n: int | None = None,
        prefix: str = "",
    ) -> list[Completion]:
        if n is not None:
            params = replace(params, n=n)
        chat = as_prompt(prompt)
        if self.policy.probe_every is not None:
            self._read = _probe_reader(prompt)
        # Seeds of every step derive from one per call, so a sample's continuations do not depend on the
        # order in which its siblings' steps happen to reach the generator.
        base = params.seed if params.seed is not None else derive_seed(self.gen.seed, "budget_forcing", self._calls)
        self._calls += 1
        state = self._state(chat, prefix)
        if state == "answering":
            # Thinking already closed (a search continuing the answer, or a template that disables
            # thinking): nothing to force.
            completions = await self.gen.sample(chat, replace(params, seed=base), prefix=prefix)
            for c in completions:
                self._record(ForcedSample(answer_tokens=c.num_tokens, text=c.text,
                                          segments=[("answer", 0, len(c.text))] if c.text else []))
            return completions
        already = self._thought_in_prefix(chat, prefix) if state == "thinking" and prefix else 0
        think_cap = self.policy.thinking_cap(params)
        opened = ""
        if state == "fresh" and self.policy.open_thinking:
            # The opener only starts thinking that will be generated: none with a budget of 0.
            opened = self.policy.think_start + (self.policy.thinking_opener if think_cap > already else "")
        if already >= think_cap:
            # The prefix has used the whole thinking budget: end thinking and answer.
            firsts: list[Completion | None] = [None] * params.n
        else:
            first_params = self._thinking_params(params, self._chunk(think_cap - already), base)
            # One request for the n first segments: the engine computes the prompt once for all of them.
            firsts = list(await self.gen.sample(chat, first_params, prefix=prefix + opened))
        tasks = [
            asyncio.ensure_future(self._finish(chat, params, prefix, opened, already, first, base, i))
            for i, first in enumerate(firsts)
        ]
        return [c for c in await _gather(tasks)]

    def _thinking_params(self, params: SamplingParams, max_tokens: int, seed: int) -> SamplingParams:
        ids = (self.stop_token_id,) if self.stop_token_id is not None else ()
        # The strategy's own stop strings end answers, not thinking; during thinking only the delimiter
        # (or the model's end of sequence) stops it.
        return replace(params, max_tokens=max_tokens, stop=(self.policy.think_end,), stop_token_ids=ids, seed=seed)

    def _chunk(self, left: int) -> int:
        """Tokens of the next thinking request: what is left, in pieces of probe_every when probing."""
        every = self.policy.probe_every
        return left if every is None else min(left, every)

    async def _probe(self, chat, params: SamplingParams, prefix: str, seed: int, record: ForcedSample) -> str | None:
        """Ask for the answer after the thinking so far (``prefix``): a greedy request of at most
        probe_tokens tokens after probe_text, charged to the ledger like any request. The answer, as a
        voting key, or None when the probe gave none, did not finish it, or hedged."""
        policy = self.policy
        closing = policy.probe_text.rstrip().endswith("{")
        probe_params = replace(params, n=1, max_tokens=policy.probe_tokens, temperature=0.0, seed=seed,
                               stop=("}",) if closing else ("\n",), stop_token_ids=(), logprobs=False)
        got = (await self.gen.sample(chat, probe_params, prefix=prefix + policy.probe_text))[0]
        record.probe_tokens += got.num_tokens
        if closing and got.stop_reason != "}":
            return None  # the answer was not closed within probe_tokens
        if any(h in got.text.lower() for h in HEDGES):
            return None
        extract, key = self._read or _probe_reader(None)
        answer = extract(policy.probe_text.rsplit("\n", 1)[-1] + got.text + ("}" if closing else ""))
        return None if answer is None else key(answer)

    def _settled(self, probes: list) -> bool:
        """Whether the last probe_window probe answers are all the same answer."""
        w = self.policy.probe_window
        last = probes[-w:]
        return len(last) == w and last[0] is not None and all(a == last[0] for a in last)

    def _thinking_text(self, c: Completion) -> str:
        # A stop token id may leave the delimiter in the text (non-special added tokens are decoded).
        at = c.text.find(self.policy.think_end)
        return c.text if at < 0 else c.text[:at]

    async def _finish(
        self, chat, params: SamplingParams, prefix: str, opened: str, already: int,
        first: Completion | None, base: int, index: int,
    ) -> Completion:
        """Carry one sample from its first thinking segment to its answer."""
        policy = self.policy
        think_cap = policy.thinking_cap(params)
        record = ForcedSample()
        text = record.grow("", opened, "cue")  # everything after the caller's prefix: what the completion holds
        logprobs: list[float] = []
        segment = first
        step = 0
        last: Completion | None = None
        thought_text: str | None = None
        try:
            while segment is not None:
                last = segment
                record.thinking_tokens += segment.num_tokens
                if segment.logprobs is not None:
                    logprobs.extend(segment.logprobs)
                text = record.grow(text, self._thinking_text(segment), "thinking")
                if segment.finish_reason in ("cancelled", "low_confidence"):
                    # Stopped by the engine for its own reasons (DeepConf's online stop): the trace ends.
                    return self._done(text, record, logprobs, last, segment.finish_reason, params)
                thought = already + record.thinking_tokens
                if policy.probe_every is not None and segment.finish_reason == "length" and thought < think_cap:
                    # A piece of probe_every tokens ended: probe (past the minimum), then think on.
                    if policy.min_thinking_tokens is None or thought >= policy.min_thinking_tokens:
                        seed = derive_seed(base, index, "probe", len(record.probes))
                        record.probes.append(await self._probe(chat, params, prefix + text, seed, record))
                        if self._settled(record.probes):
                            record.probe_stopped = True
                            break
                    step += 1
                    seg_params = self._thinking_params(params, self._chunk(think_cap - thought),
                                                       derive_seed(base, index, step))
                    segment = (await self.gen.sample(chat, replace(seg_params, n=1), prefix=prefix + text))[0]
                    continue
                if segment.finish_reason == "length" or thought >= think_cap:
                    # "length" is the thinking budget running out (or the ledger clipping the request).
                    record.capped = segment.finish_reason == "length" or policy.should_wait(thought, record.waits)
                    break
                if not policy.should_wait(thought, record.waits):
                    break
                record.waits += 1
                text = record.grown(text, _join(text, policy.wait_text), "wait")
                step += 1
                seg_params = self._thinking_params(params, self._chunk(think_cap - thought), derive_seed(base, index, step))
                segment = (await self.gen.sample(chat, replace(seg_params, n=1), prefix=prefix + text))[0]
            thought_text = text  # what the sample is if the budget refuses the answer step
            if record.capped or record.probe_stopped or segment is None:
                record.capped = not record.probe_stopped
                text = record.grown(text, _close(text, policy.think_end), "cue")
                if policy.answer_cue:
                    text = record.grow(text, "\n\n" + policy.answer_cue, "cue")
            else:
                # The model ended thinking itself; write back the delimiter the stop cut off.
                text = record.grow(text, policy.think_end, "cue")
            step += 1
            answer_params = replace(params, n=1, max_tokens=policy.answer_max_tokens or params.max_tokens,
                                    seed=derive_seed(base, index, step))
            answer = (await self.gen.sample(chat, answer_params, prefix=prefix + text))[0]
        except BudgetExhausted as exc:
            # Anytime: a step the budget refuses ends this sample where it was, like a truncated sample.
            # The delimiter or cue written for a step that never ran is left out.
            record.budget_stop = str(exc)
            return self._done(thought_text if thought_text is not None else text, record, logprobs, last,
                              "length", params)
        record.answer_tokens = answer.num_tokens
        if answer.logprobs is not None:
            logprobs.extend(answer.logprobs)
        text = record.grow(text, answer.text, "answer")
        return self._done(text, record, logprobs, answer, answer.finish_reason, params, first)

    def _done(self, text: str, record: ForcedSample, logprobs: list[float], last: Completion | None,
              finish: str, params: SamplingParams, first: Completion | None = None) -> Completion:
        record.text = text
        record.segments = [(kind, a, min(b, len(text))) for kind, a, b in record.segments if a < len(text)]
        self._record(record)
        head = first or last
        return Completion(
            text=text,
            num_tokens=record.thinking_tokens + record.answer_tokens,
            finish_reason=finish,
            logprobs=tuple(logprobs) if params.logprobs else None,
            prompt_tokens=head.prompt_tokens if head is not None else 0,
            cached_prompt_tokens=head.cached_prompt_tokens if head is not None else 0,
        )

    def _record(self, record: ForcedSample) -> None:
        self.samples.append(record)
        self.ledger.record_thinking(record.thinking_tokens, record.answer_tokens)

    def segments_of(self, candidates: Sequence[Any]) -> list[list[list[Any]] | None]:
        """Per candidate, the [kind, start, end] spans of its text (thinking, wait, cue, answer), from the
        sample whose text it is; None for a candidate that is not one forced sample's text as returned
        (a search's path of several steps)."""
        by_text: dict[str, ForcedSample] = {}
        for s in self.samples:
            by_text.setdefault(s.text, s)
        out: list[list[list[Any]] | None] = []
        for c in candidates:
            s = by_text.get(c.text)
            out.append([[kind, a, b] for kind, a, b in s.segments] if s is not None and c.text else None)
        return out

    def summary(self) -> dict[str, Any]:
        """Totals for the trace info: thinking and answer tokens, Waits, capped samples."""
        return {
            "thinking_tokens": sum(s.thinking_tokens for s in self.samples),
            "answer_tokens": sum(s.answer_tokens for s in self.samples),
            "waits": [s.waits for s in self.samples],
            "capped": sum(s.capped for s in self.samples),
            **({"probe_tokens": sum(s.probe_tokens for s in self.samples),
                "probes": [len(s.probes) for s in self.samples],
                "probe_answers": [s.probes[-self.policy.probe_window:] for s in self.samples],
                "probe_stopped": sum(s.probe_stopped for s in self.samples)}
               if self.policy.probe_every is not None else {}),
            "samples": len(self.samples),
            "think_end": self.policy.think_end,
            "wait_text": self.policy.wait_text,
        }


def _probe_reader(prompt: Any) -> tuple[Any, Any]:
    """(extract, vote key) for probe answers: the problem's own readers, else numbers and boxed answers."""
    if isinstance(prompt, Problem):
        from ..data.grading import extractor_for, vote_key_for

        return extractor_for(prompt), vote_key_for(prompt) or (lambda a: a)
    from ..verifiers.answers import extract_answer, normalize_answer

    return (lambda text: normalize_answer(extract_answer(text))), (lambda a: a)


async def _gather(tasks: list[asyncio.Future]) -> list:
    """gather that cancels the siblings when one fails (a time budget cancelling the caller, an engine
    error), so no orphaned continuation keeps generating and charging the ledger."""
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def after_thinking(extract: Extractor, think_end: str) -> Extractor:
    """An extractor that reads the answer from the text after the end of thinking (numbers and boxed
    answers written while thinking are not the answer), falling back to the whole text when the
    thinking never ended. The first end counts: thinking stops at the delimiter, so a later one is the
    model repeating it in its answer ("Final Answer: 12\\n</think>"), after which nothing is left."""

    def read(text: str) -> str | None:
        at = text.find(think_end)
        return extract(text[at + len(think_end):] if at >= 0 else text)

    return read


@dataclass(frozen=True)
class BudgetForced(Strategy):
    """Any strategy, run on budget-forced traces: ``BudgetForced(inner=Majority(n=8), policy=...)``.

    The inner strategy gets the wrapped generator, so its samples (and those of its searches) are
    forced; its answers are read after the thinking. The trace records thinking and answer tokens.
    """

    inner: Strategy = field(default_factory=Single)
    policy: BudgetForcing = option(default_factory=BudgetForcing, nested=True)
    name: str = ""
    width_option = None  # the inner strategy's

    @classmethod
    def shared_settings(cls, params: SamplingParams, options: Mapping[str, Any]) -> dict[str, Any]:
        return {"inner": Single(params=params)}  # the registered budget_forcing: one forced sample

    def __post_init__(self) -> None:
        if not isinstance(self.inner, Strategy):
            raise ValueError(f"BudgetForced.inner must be a Strategy, got {self.inner!r}")
        if not isinstance(self.policy, BudgetForcing):
            raise ValueError(f"BudgetForced.policy must be a BudgetForcing, got {self.policy!r}")
        if not self.name:
            # Distinct names keep results of forced and unforced runs of one strategy apart.
            name = "budget_forcing" if isinstance(self.inner, Single) else f"{self.inner.name}+budget_forcing"
            object.__setattr__(self, "name", name)

    def _inner_for(self, problem: Problem, think_end: str) -> Strategy:
        inner = self.inner
        if dataclasses.is_dataclass(inner) and "extract" in {f.name for f in dataclasses.fields(inner)}:
            reader = answer_reader(getattr(inner, "extract"), problem)
            inner = replace(inner, extract=after_thinking(reader, think_end))
        return inner

    async def solve(self, problem: Problem, gen: Generator) -> Trace:
        forced = self.policy.wrap(gen)
        trace = await self._inner_for(problem, forced.policy.think_end).solve(problem, forced)  # type: ignore[arg-type]
        summary = forced.summary()
        info = {**trace.info, "thinking_tokens": summary["thinking_tokens"],
                "answer_tokens": summary["answer_tokens"], "budget_forcing": summary,
                "segments": forced.segments_of(trace.candidates)}
        return replace(trace, strategy=self.name, info=info)


def with_forcing(strategy: Strategy, policy: BudgetForcing | None) -> Strategy:
    """``strategy`` run on budget-forced traces, or unchanged when there is no policy (or one that sets
    nothing); a strategy that is already forced gets this policy."""
    if policy is None or not policy.given:
        return strategy
    if isinstance(strategy, BudgetForced):
        return replace(strategy, policy=policy)
    return BudgetForced(inner=strategy, policy=policy)


__all__ = [
    "BudgetForced", "BudgetForcing", "ForcedGenerator", "ForcedSample", "KNOWN_DELIMITERS", "after_thinking",
    "detect_delimiters", "single_token_id", "with_forcing",
]
