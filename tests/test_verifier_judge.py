import asyncio
import math

import pytest

from tts.backends.scripted import ScriptedBackend, ScriptedReply
from tts.budget import Ledger
from tts.types import Completion, Problem
from tts.verifiers.judge import LLMJudge

PROBLEM = Problem("p1", prompt="What is 2 + 3?")


def _completions(*texts):
    return [Completion(t, 3, "stop") for t in texts]


def test_yes_probability_from_logprobs_of_sampled_tokens():
    # Candidate "5": the judge draws Yes (p=0.7) and, separately, " yes" (p=0.1): both Yes tokens count.
    # Candidate "7": only No is drawn, so no Yes probability is known: 0.
    script = {
        "Proposed answer: 5": [ScriptedReply("Yes", [math.log(0.7)]), ScriptedReply(" yes", [math.log(0.1)]),
                               ScriptedReply("Yes", [math.log(0.7)]), ScriptedReply("No", [math.log(0.2)])],
        "Proposed answer: 7": [ScriptedReply("No", [math.log(0.9)])],
    }
    backend = ScriptedBackend(script)
    judge = LLMJudge(backend, samples=4)
    ledger = Ledger()
    scores = asyncio.run(judge.score(PROBLEM, _completions("5", "7"), ledger))
    assert scores == pytest.approx([0.8, 0.0])
    assert backend.batches == [2]  # both candidates judged in one engine batch
    prompt_tokens = sum(backend.count_prompt_tokens(r) for r in backend.requests)
    assert ledger.verifier_tokens == prompt_tokens + 2 * 4
    assert ledger.engine_calls == 2 and ledger.flops > 0
    assert ledger.generated_tokens == 0  # judge work is verifier work, not generation


def test_parsed_score_mode():
    backend = ScriptedBackend({"Proposed answer: 5": ["9 out of 10"], "Proposed answer: 7": ["I think 2."],
                               "Proposed answer: x": ["no idea"], "Proposed answer: y": ["15"]})
    judge = LLMJudge(backend, mode="score", scale=10, unparsed_score=0.25)
    scores = asyncio.run(judge.score(PROBLEM, _completions("5", "7", "x", "y"), Ledger()))
    assert scores == pytest.approx([0.9, 0.2, 0.25, 1.0])
    assert "scale from 1 to 10" in backend.requests[0].prompt[-1].content


def test_custom_prompt_and_validation():
    backend = ScriptedBackend(["Yes"])
    judge = LLMJudge(backend, prompt="Q: {question} A: {answer} ok?", system_prompt="Be strict.", samples=1)
    request = judge.request(PROBLEM, "5")
    assert request.prompt[0].content == "Be strict." and request.prompt[1].content == "Q: What is 2 + 3? A: 5 ok?"
    assert request.params.max_tokens == 1 and request.params.logprobs
    with pytest.raises(ValueError, match="LLMJudge.prompt"):
        LLMJudge(backend, prompt="no placeholders")
    with pytest.raises(ValueError, match="LLMJudge.mode"):
        LLMJudge(backend, mode="vibes")
    with pytest.raises(ValueError, match="LLMJudge.temperature"):
        LLMJudge(backend, samples=4, temperature=0)


@pytest.mark.slow
def test_judge_on_the_embedded_model(hf_backend):
    torch = pytest.importorskip("torch")
    judge = LLMJudge(hf_backend, samples=16)
    completions = _completions("5", "The answer is 7.")
    ledger = Ledger()

    async def go():
        return await judge.score(PROBLEM, completions, ledger)

    scores = asyncio.run(go())
    assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores)
    print(f"\nembedded judge P(Yes): 2+3=5 -> {scores[0]:.3f}, 2+3=7 -> {scores[1]:.3f}")
    # Independently: the model's next-token distribution after the judge prompt.
    tok, model = hf_backend.tokenizer, hf_backend.model
    for completion, score in zip(completions, scores):
        request = judge.request(PROBLEM, completion.text)
        ids = hf_backend.encode(request)
        with torch.inference_mode():
            probs = torch.softmax(model(input_ids=torch.tensor([ids])).logits[0, -1].float(), -1)
        yes_ids = [i for i in range(len(tok)) if tok.decode([i]).strip().lower() == "yes"]
        total_yes = float(probs[yes_ids].sum())
        assert score <= total_yes + 1e-4
        if total_yes > 0.3:  # 16 draws miss a token this likely with probability < 0.4^16
            assert score > 0
        # the score is a sum of exact probabilities of distinct yes tokens
        assert any(abs(score - float(probs[list(sub)].sum())) < 1e-3 for sub in _subsets(yes_ids, probs))
    assert ledger.verifier_tokens == sum(len(hf_backend.encode(judge.request(PROBLEM, c.text))) + 16 for c in completions)
    assert ledger.engine_calls == 2

    score_judge = LLMJudge(hf_backend, mode="score", max_tokens=6)
    parsed = asyncio.run(score_judge.score(PROBLEM, completions, Ledger()))
    assert all(0.0 <= s <= 1.0 for s in parsed)


def _subsets(ids, probs):
    """Subsets of the likeliest yes tokens (the judge can only have seen likely ones)."""
    top = sorted(ids, key=lambda i: -float(probs[i]))[:4]
    out = [()]
    for i in top:
        out += [s + (i,) for s in out]
    return [s for s in out]
