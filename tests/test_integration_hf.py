"""The embedded SmolLM2-135M-Instruct on the transformers backend, for real (slow: loads the model)."""

import asyncio
import json

import pytest
from click.testing import CliRunner

import tts
import tts.cli
from tts.backends.base import GenerationRequest
from tts.budget import Ledger
from tts.runtime import Generator
from tts.types import Message, SamplingParams

from .conftest import run

pytestmark = pytest.mark.slow
QUESTION = (Message("user", "What is 3 + 4? Reply with just the number."),)


def test_sampling_counts_logprobs_and_seeds(hf_backend):
    params = SamplingParams(n=3, max_tokens=12, seed=123, logprobs=True)
    a = run(hf_backend.generate(GenerationRequest(QUESTION, params)))
    b = run(hf_backend.generate(GenerationRequest(QUESTION, params)))
    assert [c.text for c in a.completions] == [c.text for c in b.completions]  # seeded
    assert a.prompt_tokens == hf_backend.count_prompt_tokens(GenerationRequest(QUESTION, params))
    for c in a.completions:
        assert 1 <= c.num_tokens <= 12 and len(c.token_ids) == c.num_tokens == len(c.logprobs)
        assert all(lp <= 0 for lp in c.logprobs)
        assert c.finish_reason in ("stop", "length")
        if c.finish_reason == "stop":
            assert c.token_ids[-1] in hf_backend.eos_ids
        assert c.text == hf_backend.tokenizer.decode(c.token_ids, skip_special_tokens=True)


def test_greedy_rows_agree_whatever_the_batch(hf_backend):
    greedy = SamplingParams(temperature=0, max_tokens=8)

    async def both():
        alone = await hf_backend.generate(GenerationRequest(QUESTION, greedy))
        other = (Message("user", "Name a colour, then explain why you like it in detail."),)
        together = await asyncio.gather(
            hf_backend.generate(GenerationRequest(QUESTION, greedy)),
            hf_backend.generate(GenerationRequest(other, greedy)),
        )
        return alone, together

    alone, together = run(both())
    assert alone.completions[0].text == together[0].completions[0].text


def test_stop_strings_and_max_tokens(hf_backend):
    params = SamplingParams(temperature=0, max_tokens=40, stop=(" ",))
    prompt = (Message("user", "Write a long sentence about the sea."),)
    c = run(hf_backend.generate(GenerationRequest(prompt, params))).completions[0]
    assert " " not in c.text and c.finish_reason == "stop"
    c = run(hf_backend.generate(GenerationRequest(prompt, SamplingParams(temperature=0, max_tokens=5)))).completions[0]
    assert c.num_tokens == 5 and c.finish_reason == "length"


def test_continuation_from_a_prefix(hf_backend):
    prompt = (Message("user", "Write one sentence about the sea."),)
    greedy = SamplingParams(temperature=0, max_tokens=12)
    whole = run(hf_backend.generate(GenerationRequest(prompt, greedy))).completions[0]
    prefix = hf_backend.tokenizer.decode(whole.token_ids[:5], skip_special_tokens=True)
    req = GenerationRequest(prompt, SamplingParams(temperature=0, max_tokens=7), prefix=prefix)
    assert hf_backend.render(req).endswith("assistant\n" + prefix)
    assert hf_backend.count_prompt_tokens(req) == whole.prompt_tokens + 5
    rest = run(hf_backend.generate(req)).completions[0]
    # Greedy decoding continued from its own first 5 tokens writes the same sentence.
    assert prefix + rest.text == whole.text


def test_cancellation_mid_batch_stops_the_row_and_charges_what_was_computed(hf_backend):
    ledger = Ledger()
    gen = Generator(hf_backend, ledger, seed=5)
    long_prompt = (Message("user", "Tell me a very long story about a dragon."),)

    async def main():
        long = asyncio.create_task(gen.sample(long_prompt, SamplingParams(max_tokens=400)))
        short = asyncio.create_task(gen.sample(QUESTION, SamplingParams(max_tokens=4)))
        await short
        await asyncio.sleep(0.3)
        long.cancel()
        with pytest.raises(asyncio.CancelledError):
            await long

    run(main())
    assert ledger.engine_calls == 2
    assert 4 < ledger.generated_tokens < 404  # the long row stopped early but its tokens were charged
    assert ledger._reserved_generated == 0


def test_majority_end_to_end_through_the_api(hf_backend):
    problems = tts.data.load("add1", limit=4)
    results = tts.run(problems, tts.Majority(n=4, params=SamplingParams(max_tokens=24)), hf_backend)
    assert len(results) == 4
    for r in results:
        assert len(r.trace.candidates) == 4
        assert r.trace.ledger["generated_tokens"] == sum(c.num_tokens for c in r.trace.candidates)
        assert r.trace.ledger["flops"] > 2 * hf_backend.shape.n_params * r.trace.ledger["generated_tokens"]
        assert r.correct in (True, False)
    assert max(hf_backend.batch_sizes) >= 8  # problems were batched together


def test_cli_default_job_on_a_few_problems(embedded_model_dir, tmp_path):
    out = tmp_path / "r.jsonl"
    result = CliRunner().invoke(tts.cli.cli, ["run", "--backend", "hf", "--limit", "3", "--n", "2", "--max-tokens", "16", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(lines) == 6 and {l["strategy"] for l in lines} == {"single", "majority"}
    assert "accuracy against compute" in result.output
