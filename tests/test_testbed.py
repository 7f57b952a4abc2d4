"""The testbed: the step-by-step arithmetic task (exact step checker) and the tiny policy + PRM pair."""

from __future__ import annotations

import pytest

from tts import data
from tts.data import stepwise
from tts.metrics import auroc, grouped_auroc


def test_canonical_solution_is_one_operation_per_line():
    assert stepwise.solution("12 + 7 * 3 - 20") == "12 + 21 - 20\n33 - 20\nAnswer: 13"
    assert stepwise.canonical_states("2 * 3 * 4 + 1") == ["6 * 4 + 1", "24 + 1", "25"]
    assert stepwise.evaluate("10 - 2 - 3 + 4 * 2") == 13


@pytest.mark.parametrize("text, first", [
    ("12 + 21 - 20\n33 - 20\nAnswer: 13", None),          # canonical
    ("12 + 21 - 20\n12 + 1\nAnswer: 13", None),           # another legal order (21 - 20 first)
    ("12 + 22 - 20\n34 - 20\nAnswer: 14", 0),             # wrong product; later steps inherit it
    ("19 * 3 - 20\n57 - 20\nAnswer: 37", 0),              # precedence ignored (12 + 7 first)
    ("12 + 21 - 20\n33 - 20\nAnswer: 12", 2),             # wrong last operation
    ("12 + 21 - 20\n32 - 20\nAnswer: 12", 1),             # wrong addition
    ("12 + 21 - 20\n33 + 20\nAnswer: 53", 1),             # copy error (operator changed)
    ("12 + 21 - 20\nAnswer: 13", None),                   # two operations in the answer line, right value
    ("12 + 21 - 20\n33 - 20 - 1\nAnswer: 12", 1),         # not a reduction
    ("12 + 21 - 20\n33 - 20\nAnswer: 13\n13", 3),         # text after the answer
    ("12 + 21 - 20\n33 - 20", None),                      # incomplete, but nothing wrong yet
    ("banana\nAnswer: 13", 0),
])
def test_first_wrong_step(text, first):
    assert stepwise.first_wrong_step("12 + 7 * 3 - 20", text) == first


def test_labels_after_first_wrong_step_are_wrong():
    labels = stepwise.StepLabels.of("12 + 7 * 3 - 20", "12 + 22 - 20\n12 + 2\nAnswer: 14")
    assert labels.labels == (False, False, False) and labels.first_wrong == 0 and labels.complete
    partial = stepwise.StepLabels.of("12 + 7 * 3 - 20", "12 + 21 - 20\n")
    assert partial.labels == (True,) and partial.first_wrong is None and not partial.complete


def test_right_steps_and_the_steps_a_prm_is_judged_on():
    assert stepwise.right_steps("12 + 7 * 3 - 20".split()) == ["12 + 21 - 20", "Answer: 13"]
    assert stepwise.right_steps("1 + 2 - 3".split()) == ["3 - 3", "1 + -1", "Answer: 0"]
    assert stepwise.judged_steps(3, None) == [(0, True), (1, True), (2, True)]
    assert stepwise.judged_steps(4, 1) == [(0, True), (1, False)]


def test_illegal_orders_are_wrong():
    # a - b + c: b + c first changes the value; a * b + c: b + c first too
    assert stepwise.first_wrong_step("9 - 2 + 3", "9 - 5\nAnswer: 4") == 0
    assert stepwise.first_wrong_step("2 * 3 + 4", "2 * 7\nAnswer: 14") == 0
    assert stepwise.legal_ops("1 + 2 * 3 - 4".split()) == [3]
    assert stepwise.legal_ops("1 + 2 - 3".split()) == [1, 3]


@pytest.mark.parametrize("level", list(stepwise.LEVELS))
def test_every_made_mistake_is_judged_wrong_where_it_is(level):
    import random

    rng = random.Random(level)
    made = {kind: 0 for kind in stepwise.MISTAKES}
    for expr in stepwise.expressions(level, 40, rng):
        steps = stepwise.split_solution(stepwise.solution(expr))
        for k, state in enumerate([expr] + steps[:-1]):
            for kind in stepwise.MISTAKES:
                wrong = stepwise.wrong_step(state, rng, kind)
                if wrong is not None:
                    made[kind] += 1
                    assert stepwise.first_wrong_step(expr, steps[:k] + [wrong]) == k, (expr, k, kind, wrong)
    # every kind applies somewhere (a dropped term needs three operations: with two, nothing is left)
    assert all(count for kind, count in made.items() if kind != "dropped" or stepwise.LEVELS[level][1] > 2), made
    with pytest.raises(ValueError, match="choose from"):
        stepwise.wrong_step("1 + 2 * 3", rng, "typo")


def test_generator_is_seeded_bounded_and_registered():
    a, b = data.load("steps4", limit=20, seed=3), data.load("steps4", limit=20, seed=3)
    assert [p.prompt for p in a] == [p.prompt for p in b]
    assert [p.prompt for p in a] != [p.prompt for p in data.load("steps4", limit=20, seed=4)]
    for level, (difficulty, ops, largest) in stepwise.LEVELS.items():
        for p in data.load(level, limit=30, seed=0):
            expr = p.metadata["expression"]
            parts = stepwise.tokens(expr)
            assert len(parts) == 2 * ops + 1 and p.metadata["level"] == difficulty
            assert all(1 <= int(x) <= largest for x in parts[::2])
            assert p.prompt == f"Evaluate {expr}" and p.answer == str(stepwise.evaluate(expr))
            states = stepwise.canonical_states(expr)
            assert all(0 <= int(v) <= stepwise.MAX_VALUE for s in states for v in s.split()[::2])
            assert stepwise.first_wrong_step(expr, stepwise.solution(expr)) is None
            assert len(stepwise.split_solution(stepwise.solution(expr))) == ops
    mixed = data.load("stepwise", limit=10)
    assert {p.metadata["dataset"] for p in mixed} == set(stepwise.LEVELS)
    assert "steps6" in data.DATASETS


def test_answers_grade_with_the_default_grader():
    p = data.load("steps3", limit=1)[0]
    text = stepwise.solution(p.metadata["expression"])
    read = data.grading.extractor_for(p)
    assert read(text) == p.answer and data.grader_for(p)(read(text), p.answer)


def test_prm_option_builds_scorers_and_verifiers(tmp_path):
    import json

    from tts.strategies import create
    from tts.strategies.steps import PRMStepScorer
    from tts.types import SamplingParams

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "tts_prm.json").write_text(json.dumps({"step_separator": "\n", "label": "mine"}))
    with pytest.raises(ValueError, match="has no weights"):
        create("beam_search", 8, SamplingParams(), {"prm": str(tmp_path)})
    (tmp_path / "model.safetensors").write_bytes(b"")  # the files a PRM folder needs (read when first scoring)
    with pytest.raises(ValueError, match="has no tokenizer"):
        create("beam_search", 8, SamplingParams(), {"prm": str(tmp_path)})
    (tmp_path / "tokenizer.json").write_text("{}")
    beam = create("beam_search", 8, SamplingParams(), {"prm": str(tmp_path)})
    assert isinstance(beam.scorer, PRMStepScorer) and beam.segmenter.delimiter == "\n"
    assert beam.scorer.prm.model == str(tmp_path)
    best = create("best_of_n", 8, SamplingParams(), {"prm": str(tmp_path)})
    assert best.verifier is beam.scorer.prm and best.verifier.name == "mine_min"
    dvts = create("dvts", 8, SamplingParams(), {"prm": str(tmp_path), "step_delimiter": "\n\n"})
    assert dvts.segmenter.delimiter == "\n\n"
    with pytest.raises(ValueError, match="set the same thing"):
        create("dvts", 8, SamplingParams(), {"prm": str(tmp_path), "step_scorer": "confidence_mean"})
    with pytest.raises(ValueError, match="not a folder here either"):
        create("dvts", 8, SamplingParams(), {"prm": str(tmp_path / "missing")})


# --- the committed policy and PRM (slow: they load models, a few seconds in all) ----------------------

@pytest.fixture(scope="module")
def testbed_backend():
    pytest.importorskip("transformers")
    import tts.testbed
    from tts.backends.hf import HFBackend

    if not (tts.testbed.POLICY_DIR / "model.safetensors").is_file():
        pytest.skip("testbed models not built (experiments/testbed/build.py)")
    return HFBackend(tts.testbed.POLICY_DIR)


def test_prm_reads_the_policy_layout_and_scores_at_each_line_break():
    pytest.importorskip("transformers")
    import tts.testbed
    from tts.backends.base import render_chat_fallback
    from tts.types import Message

    prm = tts.testbed.prm(device="cpu")
    problem = data.load("steps3", limit=1)[0]
    text = stepwise.solution(problem.metadata["expression"])
    ids, positions = prm.encode(problem, text + "\n")
    tok = prm.engine().tokenizer
    policy_view = render_chat_fallback((Message("user", problem.prompt),)) + text + "\n"
    assert tok.decode(ids) == policy_view  # exactly what the policy read and wrote, nothing inserted
    assert [tok.decode(ids[:p + 1]) for p in positions] == [
        policy_view[: i + 1] for i, ch in enumerate(policy_view) if ch == "\n" and i > policy_view.index("Assistant")]


def judged_scores(backend, prm, limit: int, n: int) -> list[tuple[int, int, bool, float]]:
    """(problem index, step index, right?, score) for every judged step (up to the first wrong one) of
    ``n`` policy samples per held-out steps3 problem, sampled through the hf backend and scored by ``prm``."""
    import asyncio

    from tts.backends.base import GenerationRequest
    from tts.types import SamplingParams

    out = []
    for i, problem in enumerate(data.load("steps3", limit=limit, seed=1)):
        request = GenerationRequest(problem.chat(), SamplingParams(n=n, temperature=0.7, max_tokens=96, seed=i))
        texts = [c.text for c in asyncio.run(backend.generate(request)).completions]
        for text, scores in zip(texts, prm.step_scores(problem, texts)):
            labels = stepwise.StepLabels.of(problem.metadata["expression"], text)
            out += [(i, k, right, scores[k]) for k, right in stepwise.judged_steps(len(scores), labels.first_wrong)]
    return out


@pytest.mark.slow
def test_prm_tells_the_policys_wrong_steps_from_its_right_ones(testbed_backend):
    """The PRM scores the policy's wrong steps below its right ones, pooled over problems (step AUROC as
    evaluate_prm reports it; the old PRM scored by position, near 0.5 here). Held-out steps3 problems
    (never trained on), the policy's own samples through the hf backend, every step up to the first
    wrong one labelled by the exact checker; measured 0.81. Not tested, because not yet true: ranking
    siblings (steps of the same problem, what beam search compares), about 0.5 (docs/performance.md)."""
    import tts.testbed

    judged = judged_scores(testbed_backend, tts.testbed.prm(device="cpu", max_batch=64), limit=40, n=3)
    right = [score for _, _, is_right, score in judged if is_right]
    wrong = [score for _, _, is_right, score in judged if not is_right]
    assert len(right) >= 40 and len(wrong) >= 20, (len(right), len(wrong))
    value = auroc(right, wrong)
    assert value >= 0.65, value


def test_verifier_scores_a_step_by_its_least_likely_token():
    """The stronger testbed model read as a LikelihoodPRM: the digit it would not have written sinks the
    step; the steps before it score the same in every candidate (a causal model reads a prefix once)."""
    pytest.importorskip("transformers")
    import tts.testbed
    from tts.verifiers.prm import LikelihoodPRM

    verifier = tts.testbed.load_prm("testbed-verifier", device="cpu")
    assert isinstance(verifier, LikelihoodPRM) and verifier.reduce == "min"
    problem = stepwise.problem("steps3", 0, "7 * 9 + 17 * 2")
    right, wrong_step, wrong_answer = verifier.step_scores(problem, [
        "63 + 17 * 2\n63 + 34\nAnswer: 97", "63 + 17 * 2\n63 + 56\nAnswer: 119", "63 + 17 * 2\n63 + 34\nAnswer: 98"])
    assert min(right) > 0.5 and wrong_step[1] < 0.1 and wrong_answer[2] < 0.1
    assert right[0] == pytest.approx(wrong_step[0], abs=1e-6) == pytest.approx(wrong_answer[0], abs=1e-6)
    assert right[1] == pytest.approx(wrong_answer[1], abs=1e-6)
    mean = tts.testbed.load_prm("testbed-verifier", device="cpu", reduce="mean").step_scores(
        problem, ["63 + 17 * 2\n63 + 56\nAnswer: 119"])[0]
    assert all(m >= w for m, w in zip(mean, wrong_step))


def test_verifier_settings_are_checked(tmp_path):
    import json

    import tts.testbed
    from tts.verifiers.prm import LikelihoodPRM

    with pytest.raises(ValueError, match="reduce must be one of min, mean"):
        LikelihoodPRM("m", reduce="max")
    with pytest.raises(ValueError, match="tagged format only"):
        LikelihoodPRM("m", format="chat")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "tokenizer.json").write_text("{}")
    for settings, message in (({"kind": "judge"}, "kind must be one of token_logit, likelihood"),
                              ({"kind": "likelihood", "bogus": 1}, "unknown PRM setting"),
                              ({"reduce": "min"}, "unknown PRM setting"),  # a likelihood setting on a token-logit PRM
                              ("[1]", "must hold a JSON object")):
        (tmp_path / "tts_prm.json").write_text(settings if isinstance(settings, str) else json.dumps(settings))
        with pytest.raises(ValueError, match=message):
            tts.testbed.load_prm(tmp_path)
    (tmp_path / "tts_prm.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        tts.testbed.load_prm(tmp_path)


@pytest.mark.slow
def test_verifier_ranks_sibling_steps_of_the_policy(testbed_backend):
    """What beam search asks of a step scorer: among the policy's samples of one problem, a right step
    scores above a wrong one at the same index (sibling AUROC, as evaluate_prm reports it). Held-out
    steps3 problems; measured 0.96 (79 pairs). The trained PRM ranks siblings near chance (0.5)."""
    import tts.testbed

    verifier = tts.testbed.load_prm("testbed-verifier", device="cpu", max_batch=64)
    slots: dict[tuple[int, int], tuple[list, list]] = {}
    for problem, k, is_right, score in judged_scores(testbed_backend, verifier, limit=30, n=4):
        slots.setdefault((problem, k), ([], []))[not is_right].append(score)
    value, pairs = grouped_auroc(slots.values())
    assert pairs >= 20, pairs
    assert value >= 0.8, value


@pytest.mark.slow
def test_beam_search_with_the_prm_on_the_policy(testbed_backend):
    import tts
    from tts.strategies import create
    from tts.strategies.steps import PRMStepScorer

    problems = data.load("steps3", limit=2, seed=7)
    params = tts.SamplingParams(temperature=0.7, max_tokens=128)
    beam = create("beam_search", 4, params, {"prm": "testbed", "expansions": 2})
    assert isinstance(beam.scorer, PRMStepScorer) and beam.segmenter.delimiter == "\n"
    results = tts.run(problems, beam, testbed_backend)
    for problem, r in zip(problems, results):
        assert r.trace.candidates and r.trace.answer is not None
        nodes = [n for n in r.trace.info["tree"]["nodes"] if n["kind"] == "step"]
        # one node per line: no step holds the delimiter, and paths end by the level's step count
        assert all("\n" not in n["step"] for n in nodes)
        assert max(n["depth"] for n in nodes) <= problem.metadata["steps"] + 1
        assert r.trace.ledger["verifier_tokens"] > 0
    assert all(r.correct is not None for r in results)
