"""Incremental PRM scoring (tts/verifiers/prm_states.py): a child's step is read from its parent's
cached state, and every score equals full rescoring's on random trees, for every PRM kind; the byte
cap holds with recompute on a miss; the ledger charges only the tokens read."""

from __future__ import annotations

import asyncio
import dataclasses
import random

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tts.budget import Ledger  # noqa: E402
from tts.testbed import load_prm  # noqa: E402
from tts.types import Problem  # noqa: E402
from tts.verifiers.prm import RewardHeadPRM, TokenLogitPRM  # noqa: E402

from .test_verifier_rm import PROBLEM, WORDS, head_dir, lm_dir  # noqa: E402,F401  (fixtures)

TOLERANCE = 1e-5


def random_tree(rng: random.Random, make_step, depth: int, width: int) -> list[list[str]]:
    """Levels of node paths (each a list of steps): every node at a level has 1..width children."""
    levels = [[[make_step(rng)] for _ in range(width)]]
    for _ in range(depth - 1):
        parents = rng.sample(levels[-1], k=max(1, len(levels[-1]) // 2))  # some are pruned
        levels.append([path + [make_step(rng)] for path in parents for _ in range(rng.randint(1, width))])
    return levels


def score_levels(prm, problem, levels, sep):
    """Each level scored in one call, as tree search does; then the leaves again as final candidates."""
    ledger = Ledger()
    got = {}
    for level in levels:
        texts = [sep.join(path) for path in level]
        steps = asyncio.run(_steps(prm, problem, texts, ledger))
        got.update(zip(texts, steps))
    return got, ledger


async def _steps(prm, problem, texts, ledger):
    from tts.verifiers.metering import metered

    return await metered(ledger, prm.score_steps_with_cost, problem, texts)


def check_same(incremental, full, problem, levels, sep):
    got, ledger = score_levels(incremental, problem, levels, sep)
    want, full_ledger = score_levels(full, problem, levels, sep)
    assert got.keys() == want.keys()
    for text in want:
        assert len(got[text]) == len(want[text])
        assert got[text] == pytest.approx(want[text], abs=TOLERANCE), text
    assert ledger.verifier_tokens < full_ledger.verifier_tokens
    return ledger, full_ledger


def make_testbed_step(rng):
    a, b = rng.randint(1, 99), rng.randint(1, 99)
    return f"{a}+{b}={a + b if rng.random() < 0.7 else a + b + 1}"


@pytest.mark.parametrize("folder", ["testbed", "testbed-verifier"])
@pytest.mark.parametrize("seed", [0, 1])
def test_testbed_prms_score_random_trees_as_full_rescoring(folder, seed):
    rng = random.Random(seed)
    problem = Problem(id="t", prompt="Compute 12+30+7 step by step.")
    incremental = load_prm(folder)
    full = dataclasses.replace(incremental, state_cache_bytes=0)
    levels = random_tree(rng, make_testbed_step, depth=5, width=3)
    ledger, full_ledger = check_same(incremental, full, problem, levels, incremental.step_separator)
    # a child reads about its own step only: far fewer tokens than rereading every path
    assert ledger.verifier_tokens * 2 < full_ledger.verifier_tokens


def make_word_step(rng):
    return " ".join(rng.choice(WORDS[:12]) for _ in range(rng.randint(1, 4)))


@pytest.mark.parametrize("fmt", ["tagged", "chat"])
def test_token_logit_prm_formats_match_full_rescoring(lm_dir, fmt):
    incremental = TokenLogitPRM(lm_dir, format=fmt, max_batch=3)
    full = TokenLogitPRM(lm_dir, format=fmt, max_batch=3, state_cache_bytes=0)
    check_same(incremental, full, PROBLEM, random_tree(random.Random(3), make_word_step, 4, 3), "\n\n")


@pytest.mark.parametrize("chat", [True, False])
def test_reward_head_prm_matches_full_rescoring(head_dir, chat):
    incremental = RewardHeadPRM(head_dir, chat=chat, max_batch=4)
    full = RewardHeadPRM(head_dir, chat=chat, max_batch=4, state_cache_bytes=0)
    check_same(incremental, full, PROBLEM, random_tree(random.Random(4), make_word_step, 4, 3), "\n\n")


def test_the_byte_cap_holds_and_a_miss_recomputes():
    problem = Problem(id="t", prompt="Compute 12+30+7 step by step.")
    roomy = load_prm("testbed-verifier")
    levels = random_tree(random.Random(5), make_testbed_step, depth=5, width=3)
    score_levels(roomy, problem, levels, "\n")
    one_state = max(s.nbytes for s in roomy._states_cache()._entries.values())
    tight = dataclasses.replace(roomy, state_cache_bytes=int(one_state * 2.5))
    full = dataclasses.replace(roomy, state_cache_bytes=0)
    check_same(tight, full, problem, levels, "\n")
    cache = tight._states_cache()
    assert cache.bytes <= cache.max_bytes and len(cache) <= 2 and cache.evictions > 0
    assert cache.misses > 0  # evicted parents were recomputed, with the same scores


def test_scoring_the_same_paths_again_costs_nothing():
    problem = Problem(id="t", prompt="Compute 1+2 step by step.")
    prm = load_prm("testbed-verifier")
    texts = ["1+2=3\n3+4=7", "1+2=4"]
    first = prm.step_scores(problem, texts)
    ledger = Ledger()
    again = asyncio.run(_steps(prm, problem, texts, ledger))
    assert again == first and ledger.verifier_tokens == 0 and ledger.engine_calls == 0


def test_state_cache_bytes_is_checked_and_not_part_of_the_configuration():
    from tts.options import config_of

    with pytest.raises(ValueError, match="state_cache_bytes"):
        dataclasses.replace(load_prm("testbed"), state_cache_bytes=-1)
    prm = load_prm("testbed")
    assert config_of(prm) == config_of(dataclasses.replace(prm, state_cache_bytes=0))


def test_deep_paths_scored_cold_match_full_rescoring():
    problem = Problem(id="t", prompt="Compute 12+30+7 step by step.")
    levels = random_tree(random.Random(6), make_testbed_step, depth=5, width=2)
    texts = ["\n".join(path) for path in levels[-1]]
    cold = load_prm("testbed-verifier")  # nothing cached: each path read from the question's state
    full = dataclasses.replace(cold, state_cache_bytes=0)
    got, want = cold.step_scores(problem, texts), full.step_scores(problem, texts)
    assert all(len(s) == 5 for s in got)
    for a, b in zip(got, want):
        assert a == pytest.approx(b, abs=TOLERANCE)


def test_forget_states_makes_the_next_strategy_pay_its_own_verifier_work():
    """tts run forgets every loaded verifier's scored prefixes before each strategy: what the second
    strategy of a run is charged equals what it is charged alone."""
    from tts.verifiers.registry import forget_states, resolve

    prm = resolve("testbed")
    problem = Problem(id="t", prompt="Compute 12+30+7 step by step.")
    texts = ["12+30 = 42\n42+7 = 49\nAnswer: 49", "12+30 = 42\n42+7 = 48\nAnswer: 48"]
    forget_states()
    first = prm.score_steps_with_cost(problem, texts)
    again = prm.score_steps_with_cost(problem, texts)
    assert again[1][0] < first[1][0]  # the states were kept: read for free the second time
    forget_states()
    fresh = prm.score_steps_with_cost(problem, texts)
    assert fresh[1] == first[1] and fresh[0] == first[0]
