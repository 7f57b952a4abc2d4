"""Tree search (beam search, DVTS, REBASE, MCTS, particle filter) on a scripted tree with known step scores.

The scripted model names each step after its parent's step plus a letter (the k-th sample drawn from a
prefix gets the k-th letter), so the children of step "B" are "BA", "BB", ...; steps at FINAL depth end
the solution with an answer. The scripted PRM scores a partial solution by its newest step's name.
"""

from __future__ import annotations

import math
import random

import pytest

from tts.backends.scripted import ScriptedBackend, ScriptedReply
from tts.budget import Budget
from tts.runtime import derive_seed, run_async
from tts.strategies.beam import DVTS, BeamSearch, Rebase, allocate
from tts.strategies.mcts import MCTS
from tts.strategies.particles import ParticleFilter
from tts.strategies.steps import (FunctionStepScorer, Segmenter, VerifierStepScorer, ended_at_stop, to_step)
from tts.strategies.tree import Tree
from tts.types import Completion, Problem, SamplingParams
from tts.verifiers.confidence import ConfidenceVerifier

from .conftest import run

P = Problem(id="q", prompt="Solve it.", answer="7")
SCORES = {"A": .1, "B": .9, "C": .5, "D": .8, "BA": .2, "BB": .3, "DA": .95, "DB": .1, "AA": .6, "AB": 0.0,
          "DAA": .4, "DAB": .7, "BBA": .99, "BBB": .1}
ANSWERS = {"BBA": 7, "BBB": 3, "DAA": 3, "DAB": 3}
PARAMS = SamplingParams(max_tokens=200, temperature=1.0)


def steps_of(prompt: str) -> list[str]:
    prefix = prompt.split("Assistant: ", 1)[1]
    return [s for s in prefix.split("\n\n") if s.strip()]


def script(final: int = 3):
    def reply(prompt: str, index: int) -> str:
        steps = steps_of(prompt)
        name = (steps[-1].split()[0] if steps else "") + "ABCDEFGH"[index % 8]
        if len(steps) + 1 >= final:
            return f"{name} so the answer is {ANSWERS.get(name, 0)}"
        return f"{name}\n\nnext"  # the token after the blank line completes the stop string
    return reply


def prm(scores=SCORES):
    return FunctionStepScorer(lambda text: scores.get(text.split("\n\n")[-1].split()[0], 0.0), name="prm")


def solve(strategy, problems=(P,), budget=None, backend=None):
    backend = backend or ScriptedBackend(script())
    results = run(run_async(list(problems), strategy, backend, budget=budget))
    return results, backend


def names(trace, ids):
    nodes = {n["id"]: n for n in trace.info["tree"]["nodes"]}
    return [nodes[i]["step"].split()[0] for i in ids]


# --- steps ---------------------------------------------------------------------------------------

def test_step_stop_and_end_of_sequence_are_told_apart():
    seg = Segmenter()
    params = seg.params(SamplingParams(), "", 50)
    assert params.stop == ("\n\n",) and params.max_tokens == 50
    stopped = ScriptedBackend._complete(ScriptedReply("one two\n\nthree"), params, 0)
    ended = ScriptedBackend._complete(ScriptedReply("one two"), params, 0)
    assert stopped.text == ended.text == "one two" and stopped.finish_reason == ended.finish_reason == "stop"
    assert (stopped.stop_reason, ended.stop_reason) == ("\n\n", None)
    assert ended_at_stop(stopped, "\n\n") and not ended_at_stop(ended, "\n\n")
    step = to_step(seg, stopped, "")
    assert (step.text, step.join, step.finished) == ("one two", "\n\n", False)
    step = to_step(seg, ended, "")
    assert (step.join, step.finished) == ("", True)


def test_stop_reason_decides_the_step_boundary():
    seg = Segmenter()
    # Only the backend's stop_reason counts, not how the text or the token count look.
    at_delimiter = Completion("one two", 2, "stop", stop_reason="\n\n")
    at_eos = Completion("one two", 5, "stop")  # more tokens than its text: no longer read as a stop
    other_stop = Completion("one two", 3, "stop", stop_reason="###")
    by_token = Completion("one two", 3, "stop", stop_reason=7)
    assert to_step(seg, at_delimiter, "").join == "\n\n"
    assert all(to_step(seg, c, "").finished for c in (at_eos, other_stop, by_token))
    assert ended_at_stop(by_token, 7) and not ended_at_stop(Completion("x", 1, "length", stop_reason=None), 7)
    # The scripted engine names the stop string that ended the sample: the earliest in the text.
    params = SamplingParams(stop=("three", "two"))
    c = ScriptedBackend._complete(ScriptedReply("one two three"), params, 0)
    assert (c.text, c.stop_reason, c.num_tokens) == ("one ", "two", 2)
    assert ScriptedBackend._complete(ScriptedReply("one"), params, 0).stop_reason is None
    with pytest.raises(ValueError, match="stop_reason"):
        Completion("x", 1, "stop", stop_reason=1.5)


def test_openai_backend_reads_or_infers_the_stop_reason():
    from tts.backends.base import GenerationRequest
    from tts.backends.openai import OpenAIBackend
    from tts.budget import ModelShape

    backend = OpenAIBackend("m", base_url="http://127.0.0.1:1/v1", shape=ModelShape(1e6, 4, 64), check_model=False)
    request = GenerationRequest("Go:", SamplingParams(n=4, stop=("\n\n",), stop_token_ids=(9,)))
    answer = {"choices": [
        {"index": 0, "text": "a b", "finish_reason": "stop", "stop_reason": "\n\n"},  # vLLM reports it
        {"index": 1, "text": "a b", "finish_reason": "stop", "stop_reason": None},  # end-of-sequence
        {"index": 2, "text": "a b", "finish_reason": "stop", "stop_reason": 9},  # a stop token id
        {"index": 3, "text": "a b", "finish_reason": "length", "stop_reason": None},
    ], "usage": {"prompt_tokens": 3, "completion_tokens": 8}}
    got = backend._generation(request, answer, chat=False)
    assert [c.stop_reason for c in got.completions] == ["\n\n", None, 9, None]
    # A server that does not say: token ids ending in a stop id, else more tokens than the text has.
    answer = {"choices": [
        {"index": 0, "text": "a b", "finish_reason": "stop", "token_ids": [1, 2, 9]},
        {"index": 1, "text": "a b", "finish_reason": "stop"},
    ], "usage": {"prompt_tokens": 3}}
    request = GenerationRequest("Go:", SamplingParams(n=2, stop=("\n\n",), stop_token_ids=(9,)))
    got = backend._generation(request, answer, chat=False)
    assert [c.stop_reason for c in got.completions] == [9, None]  # "a b" is 1 token by the 3-byte estimate
    answer["choices"][1]["text"] = ""
    answer["choices"][1]["logprobs"] = {"token_logprobs": [-0.1, -0.2]}
    assert backend._generation(request, answer, chat=False).completions[1].stop_reason == "\n\n"


def test_tokens_regex_and_think_segmentation():
    seg = Segmenter(mode="tokens", step_tokens=3)
    params = seg.params(SamplingParams(), "", 100)
    assert params.max_tokens == 3 and params.stop == ()
    c = ScriptedBackend._complete(ScriptedReply("a b c d e"), params, 0)
    assert to_step(seg, c, "").finished is False  # a length stop is the step boundary
    seg = Segmenter(mode="regex", pattern=r"Step \d+:")
    c = Completion("first part Step 2: second", 5, "stop")
    step = to_step(seg, c, "")
    assert (step.text, step.join, step.finished) == ("first part ", "Step 2:", False)
    assert to_step(seg, Completion("no boundary", 2, "stop"), "").finished
    with pytest.raises(ValueError, match="pattern"):
        Segmenter(mode="regex")
    # After </think> the answer is one final step: no delimiter stop, whatever ended it.
    seg = Segmenter()
    assert seg.params(SamplingParams(), "<think>a\n\nb</think>", 9).stop == ()
    step = to_step(seg, ScriptedBackend._complete(ScriptedReply("x\n\ny"), SamplingParams(), 0),
                   "<think>a</think>")
    assert step.finished


def test_verifier_step_scorer_scores_the_partial_text():
    scorer = VerifierStepScorer(ConfidenceVerifier("mean"))
    assert scorer.needs_logprobs and scorer.name == "confidence_mean"
    backend = ScriptedBackend([ScriptedReply("A\n\nnext", [-1.0, -3.0]), ScriptedReply("B", [-0.1])])
    strategy = BeamSearch(n=2, expansions=1, scorer=scorer, params=PARAMS)
    [r], _ = solve(strategy, backend=backend)
    nodes = r.trace.info["tree"]["nodes"]
    # The first step "A" stopped at the blank line: both tokens are its logprobs, mean -2.
    a = next(n for n in nodes if n["step"] == "A")
    assert a["score"] == pytest.approx(round(2.718281828 ** -2.0, 6), abs=1e-6)


# --- strategies ----------------------------------------------------------------------------------

def test_beam_search_keeps_the_top_beams_at_each_step():
    scorer = prm()
    [r], backend = solve(BeamSearch(n=4, expansions=2, scorer=scorer, params=PARAMS))
    t = r.trace
    assert [names(t, ids) for ids in t.info["beams"]] == [["B", "D"], ["DA", "BB"]]
    assert sorted(c.text.split("\n\n")[-1].split()[0] for c in t.candidates) == ["BBA", "BBB", "DAA", "DAB"]
    assert t.answer == "7" and t.candidates[t.chosen].text.startswith("B\n\nBB\n\nBBA")
    assert backend.batches == [1, 2, 2]  # the beams of a step go out together
    assert scorer.calls == [4, 4, 4]  # one scorer call per step
    assert t.info["completed"] == 4


def test_beam_search_lookahead_ranks_by_the_rollout():
    # Without lookahead "B" (0.9) beats "C" (0.5); one greedy step further, C's child CA scores 1.0.
    scores = {**SCORES, "CA": 1.0, "BA": 0.0, "AA": 0.0, "DA": 0.0}
    [r], _ = solve(BeamSearch(n=4, expansions=4, lookahead=1, scorer=prm(scores), params=PARAMS),
                   backend=ScriptedBackend(script(final=4)))
    assert names(r.trace, r.trace.info["beams"][0]) == ["C"]
    kinds = {n["kind"] for n in r.trace.info["tree"]["nodes"]}
    assert "lookahead" in kinds


def test_dvts_subtrees_and_pooled_selection():
    [r], _ = solve(DVTS(n=4, expansions=2, scorer=prm(), params=PARAMS))
    t = r.trace
    assert {g: names(t, ids) for g, ids in t.info["subtrees"].items()} == {
        "0": ["B", "BB", "BBA"], "1": ["D", "DA", "DAB"]}
    assert t.answer == "7"
    assert len(t.candidates) == 4
    # A weighted vote pools the subtrees: "3" has 0.1 + 0.4 + 0.7 > 0.99.
    [r], _ = solve(DVTS(n=4, expansions=2, scorer=prm(), params=PARAMS, select="weighted"))
    assert r.trace.answer == "3" and r.trace.info["votes"]["3"] == pytest.approx(1.2)


def test_rebase_shares_the_expansion_budget_by_softmax():
    assert allocate(4, [0.0817, 0.4049, 0.1819, 0.3315]) == [0, 2, 1, 1]
    [r], _ = solve(Rebase(n=4, temperature=0.5, scorer=prm(), params=PARAMS))
    t = r.trace
    shares = [{name: k for name, k in zip(names(t, [int(i) for i in s]), s.values())} for s in t.info["shares"]]
    assert shares == [{"B": 2, "C": 1, "D": 1}, {"BA": 1, "BB": 1, "DA": 2}]
    assert len(t.candidates) == 4 and t.answer == "7"  # BBA (0.99) beats BAA, DAA, DAB


def test_mcts_visits_and_values_on_a_known_tree():
    [r], backend = solve(MCTS(simulations=4, expansions=2, c_explore=1.0, scorer=prm(), params=PARAMS))
    t = r.trace
    nodes = {n["step"].split()[0] if n["step"] else "root": n for n in t.info["tree"]["nodes"]}
    # sim 1 expands the root (A .1, B .9); UCT then picks B, then A (1.277 > 1.146), then B -> BB.
    visits = {k: n["visits"] for k, n in nodes.items()}
    assert visits == {"root": 8, "A": 3, "B": 5, "AA": 1, "AB": 1, "BA": 1, "BB": 3, "BBA": 1, "BBB": 1}
    assert nodes["root"]["value"] == pytest.approx(3.19 / 8, abs=1e-6)  # .1+.9, +.2+.3, +.6+0, +.99+.1
    assert nodes["A"]["value"] == pytest.approx(0.7 / 3, abs=1e-6)
    assert nodes["B"]["value"] == pytest.approx(2.49 / 5, abs=1e-6)
    assert nodes["BB"]["value"] == pytest.approx(1.39 / 3, abs=1e-6)
    # Most visits: B, then BB, then the tie BBA/BBB broken by value.
    assert t.answer == "7" and t.candidates[t.chosen].text.endswith("BBA so the answer is 7")
    assert len(backend.requests) == 4 and t.info["simulations"] == 4
    # Vote over finished leaves: BBA says 7, BBB says 3 -> a tie, broken by the seeded draw; still an answer.
    [r], _ = solve(MCTS(simulations=4, expansions=2, scorer=prm(), params=PARAMS, final="vote"))
    assert r.trace.answer in {"3", "7"} and set(r.trace.info["votes"]) == {"3", "7"}


def test_mcts_parallel_simulations_with_virtual_loss():
    strategy = MCTS(simulations=6, expansions=2, c_explore=1.0, scorer=prm(), params=PARAMS, parallel=2)
    [r], backend = solve(strategy)
    t = r.trace
    nodes = {n["step"].split()[0] if n["step"] else "root": n for n in t.info["tree"]["nodes"]}
    # Batch 1: the root, then the root again twice (collisions): one simulation; A .1, B .9.
    # Batch 2: B (UCT 1.733 > 0.933); virtual loss on root and B (N 3, 2) makes B 1.191 vs A 1.148, so
    #   the root's leaf B again (a collision); a second virtual loss (N 4, 3): A 1.277 > B 0.980 -> A.
    #   B -> BA .2, BB .3 and A -> AA .6, AB 0 in one engine batch.
    # Batch 3: B (1.240 > A 1.006) -> BB (1.348 > BA 1.248); with its virtual loss (root 7, B 4, BB 2):
    #   B 1.048 > A 1.039, then BA 1.377 > BB 0.983 -> BA. BB -> BBA .99, BBB .1; BA -> BAA 0, BAB 0.
    # Batch 4 (one simulation left): A 1.109 > B 0.929 -> AA (1.648 > AB 1.048) -> AAA 0, AAB 0.
    visits = {k: n["visits"] for k, n in nodes.items()}
    assert visits == {"root": 12, "A": 5, "B": 7, "AA": 3, "AB": 1, "BA": 3, "BB": 3, "BBA": 1, "BBB": 1,
                      "BAA": 1, "BAB": 1, "AAA": 1, "AAB": 1}
    assert nodes["root"]["value"] == pytest.approx(3.19 / 12, abs=1e-6)
    assert nodes["B"]["value"] == pytest.approx(2.49 / 7, abs=1e-6)
    assert nodes["BB"]["value"] == pytest.approx(1.39 / 3, abs=1e-6)
    assert backend.batches == [1, 2, 2, 1] and t.info["parallel_batches"] == [1, 2, 2, 1]
    assert t.info["simulations"] == 6 and t.answer == "7"
    # Every virtual loss is gone: a node's visits are its own evaluation (the root has none) plus its
    # children's.
    by_id = {n["id"]: n for n in t.info["tree"]["nodes"]}
    for n in by_id.values():
        if n["children"]:
            own = 0 if n["parent"] is None else 1
            assert n["visits"] == own + sum(by_id[c]["visits"] for c in n["children"])
    # On this tree the sequential search reaches the same visits, in 6 engine rounds instead of 4.
    [seq], backend = solve(MCTS(simulations=6, expansions=2, c_explore=1.0, scorer=prm(), params=PARAMS))
    seq_nodes = seq.trace.info["tree"]["nodes"]
    assert {n["step"].split()[0] if n["step"] else "root": n["visits"] for n in seq_nodes} == visits
    assert backend.batches == [1] * 6 and "parallel_batches" not in seq.trace.info
    assert MCTS().config()["parallel"] == 1 and strategy.config()["parallel"] == 2
    from tts.strategies import create

    assert create("mcts", 4, PARAMS, {"parallel_simulations": 3}).parallel == 3
    assert create("mcts", 4, PARAMS, {}).parallel == 1
    with pytest.raises(ValueError, match="parallel"):
        MCTS(parallel=0)


def test_mcts_puct_and_rollout_values():
    # Rollout values: each new child is continued greedily to the end and scored by an outcome function.
    outcome = FunctionStepScorer(lambda text: 1.0 if text.endswith("is 7") else 0.0, name="outcome")
    strategy = MCTS(simulations=1, expansions=2, selection="puct", value="rollout", scorer=prm(),
                    rollout_verifier=_AsVerifier(outcome), params=PARAMS)
    [r], _ = solve(strategy)
    nodes = {n["step"].split()[0] if n["step"] else "root": n for n in r.trace.info["tree"]["nodes"]}
    # Greedy rollouts take the first letter each step: A -> AA -> AAA (answer 0), B -> BA -> BAA (answer 0).
    assert nodes["A"]["value"] == 0.0 and nodes["root"]["visits"] == 2
    assert {n["kind"] for n in r.trace.info["tree"]["nodes"]} == {"root", "step", "rollout"}
    assert nodes["A"]["prior"] == pytest.approx(0.5)


class _AsVerifier:
    """A FunctionStepScorer seen as an outcome verifier (scores whole texts)."""

    needs_logprobs = False

    def __init__(self, scorer):
        self.scorer, self.name = scorer, scorer.name

    async def score(self, problem, completions, ledger):
        return [self.scorer.fn(c.text) for c in completions]


def test_particle_filter_resamples_with_a_seeded_rng():
    strategy = ParticleFilter(n=4, temperature=0.5, scorer=prm(), params=PARAMS)
    [r], backend = solve(strategy)
    t = r.trace
    # Step 1: the root's 4 children A, B, C, D, weighted by softmax(score / 0.5), resampled by the RNG
    # seeded from the problem's seed.
    weights = t.info["weights"][0]
    exps = [math.exp(x / 0.5) for x in (.1, .9, .5, .8)]
    assert weights == pytest.approx([e / sum(exps) for e in exps], abs=1e-6)
    rng = random.Random(derive_seed(derive_seed(0, "q", "particle_filter"), "particle_filter"))
    expected = rng.choices(["A", "B", "C", "D"], weights=weights, k=4)
    assert names(t, t.info["particles"][0]) == expected
    # Particles on the same node go out as one request with n = their number.
    step2 = backend.requests[1:1 + len(set(expected))]
    assert sorted(r.params.n for r in step2) == sorted(expected.count(x) for x in set(expected))
    # Same seed, same run; every particle ends finished.
    [again], _ = solve(strategy)
    assert again.trace.info["particles"] == t.info["particles"]
    assert all(c.finish_reason == "stop" for c in t.candidates)
    # A near-zero temperature keeps only the best particle.
    [r], _ = solve(ParticleFilter(n=4, temperature=1e-3, scorer=prm(), params=PARAMS))
    assert names(r.trace, r.trace.info["particles"][0]) == ["B"] * 4


def test_budget_exhaustion_mid_search_returns_the_best_so_far():
    # Two engine calls: the root's expansion, then only one of the two beams' expansions is paid for.
    [r], _ = solve(BeamSearch(n=4, expansions=2, scorer=prm(), params=PARAMS), budget=Budget(engine_calls=2))
    t = r.trace
    assert "engine_calls" in t.info["budget_stop"]
    assert t.chosen is not None and t.candidates[t.chosen].text == "B\n\nBB"  # BB 0.3 > BA 0.2
    for strategy in (DVTS(n=4, expansions=2, scorer=prm(), params=PARAMS),
                     Rebase(n=4, scorer=prm(), params=PARAMS),
                     MCTS(simulations=5, expansions=2, scorer=prm(), params=PARAMS),
                     ParticleFilter(n=4, scorer=prm(), params=PARAMS)):
        [r], _ = solve(strategy, budget=Budget(engine_calls=2))
        assert r.trace.info["budget_stop"] and r.trace.chosen is not None, strategy.name


def test_expansions_of_many_problems_share_engine_batches():
    problems = [Problem(id=f"q{i}", prompt=f"Question {i}?") for i in range(4)]
    scorer = prm()
    results, backend = solve(BeamSearch(n=4, expansions=2, scorer=scorer, params=PARAMS), problems=problems)
    assert backend.batches == [4, 8, 8]  # every beam of every problem, one batch per step
    assert all(r.trace.answer == "7" for r in results)
    _, backend = solve(Rebase(n=4, temperature=0.5, scorer=prm(), params=PARAMS), problems=problems)
    assert max(backend.batches) == 12


def test_tree_exports_to_json_and_networkx():
    [r], _ = solve(BeamSearch(n=4, expansions=2, scorer=prm(), params=PARAMS, tree_max_nodes=5))
    data = r.trace.info["tree"]
    assert len(data["nodes"]) == 5 and data["truncated"] == 8  # 1 + 4 + 4 + 4 nodes
    assert all(c < 5 for n in data["nodes"] for c in n["children"])
    import json
    json.dumps(r.trace.info)  # JSON-able as results files need
    tree = Tree.from_json(data)
    graph = tree.to_networkx()
    assert graph.number_of_nodes() == 5 and graph.number_of_edges() == 4
    assert graph.nodes[2]["score"] == pytest.approx(0.9)


def test_settings_are_validated():
    with pytest.raises(ValueError, match="expansions"):
        BeamSearch(n=2, expansions=4)
    with pytest.raises(ValueError, match="selection"):
        MCTS(selection="random")
    with pytest.raises(ValueError, match="aggregation"):
        DVTS(aggregation="median")
    with pytest.raises(ValueError, match="temperature"):
        Rebase(temperature=0)


# --- the embedded model ---------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", ["beam_search", "dvts", "rebase", "mcts", "particle_filter"])
def test_end_to_end_on_the_embedded_model(hf_backend, name):
    from tts.strategies import create

    # Tiny on purpose (a shared 2-core CPU): 2 paths of at most 2 steps of 6 tokens.
    params = SamplingParams(temperature=0.8, max_tokens=12)
    options = {"expansions": 2, "max_depth": 2, "step_tokens": 6, "simulations": 2}
    strategy = create(name, 2, params, options)
    problems = [Problem(id=f"p{i}", prompt=f"What is {i} + 3? Think step by step.") for i in range(2)]
    results = run(run_async(problems, strategy, hf_backend))
    for r in results:
        t = r.trace
        assert t.candidates and t.chosen is not None and not t.info.get("budget_stop")
        assert all(c.num_tokens <= 12 for c in t.candidates)
        assert len(t.info["tree"]["nodes"]) > 2 and t.ledger["generated_tokens"] > 0


@pytest.mark.slow
def test_hf_backend_reports_the_stop_reason(hf_backend):
    from tts.backends.base import GenerationRequest

    chat = Problem(id="s", prompt="Write three short lines about the sea, one per line.").chat()
    greedy = SamplingParams(n=1, temperature=0.0, max_tokens=24, seed=0)
    full = run(hf_backend.generate(GenerationRequest(chat, greedy))).completions[0]
    assert full.num_tokens > 5 and full.stop_reason is None
    word = full.text.split()[1]
    by_text = run(hf_backend.generate(GenerationRequest(chat, SamplingParams(
        n=1, temperature=0.0, max_tokens=24, seed=0, stop=("@@", word))))).completions[0]
    assert by_text.finish_reason == "stop" and by_text.stop_reason == word
    stop_id = full.token_ids[2]
    by_id = run(hf_backend.generate(GenerationRequest(chat, SamplingParams(
        n=1, temperature=0.0, max_tokens=24, seed=0, stop_token_ids=(stop_id,))))).completions[0]
    assert by_id.stop_reason == stop_id and by_id.token_ids[-1] == stop_id
