"""Reward models on vLLM (``--prm-backend vllm``, tts/verifiers/vllm_rm.py) score as the transformers
path does: tiny randomly initialised models built from configs, and the testbed's PRM and verifier.

Both paths run in float32 on the CPU. They differ only in kernels (vLLM's paged CPU attention and
fused ops against PyTorch's eager ones) and so in the order of float sums: about 1e-6 relative on
logits of size 1-100 (the tiny models' heads are scaled up so steps score visibly differently), so
at most about 1e-4 absolute on a logit and less on a probability (whose slope is at most 1/4).
TOLERANCE is that bound; the largest difference seen is printed by each comparison (-s shows it).

Engine starts cost about 25 s each on a small CPU: each test below uses one engine, and the fixture
shuts it down afterwards so that no more than one runs at a time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tts.budget import Ledger  # noqa: E402
from tts.types import Completion, Problem  # noqa: E402
from tts.verifiers.metering import metered  # noqa: E402
from tts.verifiers.orm import SequenceClassifierORM  # noqa: E402
from tts.verifiers.prm import RewardHeadPRM, TokenLogitPRM  # noqa: E402

from .test_prm_incremental import make_testbed_step, make_word_step, random_tree  # noqa: E402
from .test_verifier_rm import PROBLEM, SPECIAL, TEXTS, WORDS, _model, _tokenizer  # noqa: E402

TOLERANCE = 1e-4
#: the output layers are scaled up so that steps score visibly differently, and not so far that the
#: probabilities saturate at 0 or 1 (where any two paths agree exactly)
HEAD_SCALE = 4


def _tiny(path, cls, scale=HEAD_SCALE, **extra):
    """A tiny Llama that vLLM's CPU attention takes (head size 32: 8 is refused with "Unsupported CPU
    attention configuration: head_dim=8")."""
    return _model(path, cls, hidden_size=64, intermediate_size=64, scale=scale, **extra)


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    # One checkpoint for the reward-head PRM (read as token classification) and the ORM (sequence
    # classification): the same weights, so one vLLM pooling engine serves both.
    return _tiny(tmp_path_factory.mktemp("cls"), transformers.LlamaForSequenceClassification, num_labels=2)


@pytest.fixture(scope="module")
def causal_dir(tmp_path_factory):
    return _tiny(tmp_path_factory.mktemp("lm"), transformers.LlamaForCausalLM)


@pytest.fixture
def engines():
    """Engines started by a test are shut down after it (so the next one does not run beside them)."""
    pytest.importorskip("vllm")
    from tts.verifiers import vllm_rm

    yield vllm_rm
    vllm_rm.close_engines()


def _scored(verifier, problem, texts):
    ledger = Ledger()
    steps = asyncio.run(_steps(verifier, problem, texts, ledger))
    return steps, ledger


async def _steps(verifier, problem, texts, ledger):
    return await metered(ledger, verifier.score_steps_with_cost, problem, texts)


def _same(got, want):
    assert [len(s) for s in got] == [len(s) for s in want]
    pairs = [(a, b) for g, w in zip(got, want) for a, b in zip(g, w)]
    worst = max(abs(a - b) for a, b in pairs)
    # relative too: a likelihood PRM's scores are token probabilities, some far below TOLERANCE
    relative = max(abs(a - b) / abs(b) for a, b in pairs if b)
    print(f"largest difference vLLM - transformers: {worst:.2e} absolute, {relative:.2e} relative")
    assert worst <= TOLERANCE and relative <= TOLERANCE
    return worst


def _distinct_inputs(prm, problem, texts):
    """The texts whose PRM inputs differ (vLLM reads one input once per call; the transformers path
    reads a repeated one again, so the ledgers compare only on distinct inputs)."""
    seen, out = set(), []
    for text in texts:
        ids, positions = prm.encode(problem, text)
        if tuple(ids[:positions[-1] + 1]) not in seen:
            seen.add(tuple(ids[:positions[-1] + 1]))
            out.append(text)
    return out


def _compare(hf, vllm, problem, texts, flops_rel=1e-12):
    """Scores within TOLERANCE, and the ledger charging the same tokens and FLOPs as transformers'
    full rescoring (vLLM recomputes every path: no cached tokens), one engine request per path."""
    full = dataclasses.replace(hf, state_cache_bytes=0)
    texts = _distinct_inputs(hf, problem, texts)
    want, hf_ledger = _scored(full, problem, texts)
    stats = vllm.rm_engine().stats
    before = dataclasses.replace(stats)
    got, ledger = _scored(vllm, problem, texts)
    _same(got, want)
    sent, cached = stats.prompt_tokens - before.prompt_tokens, stats.cached_tokens - before.cached_tokens
    assert sent == hf_ledger.verifier_tokens  # every distinct input, once, in full
    assert ledger.verifier_tokens == sent - cached  # charged: what vLLM computed
    if cached:
        assert ledger.flops < hf_ledger.flops
    else:
        assert ledger.flops == pytest.approx(hf_ledger.flops, rel=flops_rel)
    assert ledger.engine_calls == len(texts) == stats.requests - before.requests
    again, ledger = _scored(vllm, problem, texts)  # every path was scored: answered from the memo
    assert again == got and ledger.verifier_tokens == 0 and ledger.engine_calls == 0
    return got


# --- no engine --------------------------------------------------------------------------------------

def test_the_backend_is_chosen_by_name_and_a_bad_one_is_refused():
    from tts.verifiers import registry
    from tts.verifiers.confidence import ConfidenceVerifier

    with pytest.raises(ValueError, match="unknown PRM backend 'gpu'; choose from hf, vllm"):
        registry.resolve("testbed", backend="gpu")
    # a verifier that runs no model is the same on either backend
    assert isinstance(registry.resolve("confidence", backend="vllm"), ConfidenceVerifier)
    assert registry.current_prm_backend() == "hf"
    with registry.prm_backend("vllm"):
        assert registry.current_prm_backend() == "vllm"
    assert registry.current_prm_backend() == "hf"


def test_each_reward_model_kind_has_its_vllm_twin_with_the_same_settings():
    from tts.options import config_of
    from tts.testbed import load_prm
    from tts.verifiers.vllm_rm import (VLLMLikelihoodPRM, VLLMRewardHeadPRM, VLLMSequenceClassifierORM,
                                       VLLMTokenLogitPRM, on_vllm)

    hf = [load_prm("testbed"), load_prm("testbed-verifier"), RewardHeadPRM("m", chat=False),
          SequenceClassifierORM("m", positive_label=1)]
    twins = [on_vllm(v) for v in hf]
    assert [type(t) for t in twins] == [VLLMTokenLogitPRM, VLLMLikelihoodPRM, VLLMRewardHeadPRM, VLLMSequenceClassifierORM]
    for v, t in zip(hf, twins):
        want = {k: x for k, x in config_of(v).items() if k != "type"}
        assert {k: x for k, x in config_of(t).items() if k != "type"} == want
        assert config_of(t)["type"] != config_of(v)["type"]  # results of the two backends never share a file
    from tts.verifiers.base import StepVerifier, Verifier

    assert all(isinstance(t, StepVerifier) for t in twins[:3]) and isinstance(twins[3], Verifier)
    assert not isinstance(twins[3], StepVerifier)
    with pytest.raises(ValueError, match="bad_token=None .* not available on --prm-backend vllm"):
        on_vllm(TokenLogitPRM("m", bad_token=None))


def test_the_command_line_refuses_a_bad_prm_backend_in_one_line(tmp_path, script):
    for args in (["--prm-backend", "gpu"], ["--config", str(_recipe(tmp_path, "prm-backend: gpu\n"))]):
        proc = subprocess.run([sys.executable, "-m", "tts.cli", "run", "--backend", "scripted", "--model", script,
                               "--limit", "2", "--out", str(tmp_path / "r.jsonl"), *args],
                              capture_output=True, text=True)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "prm-backend" in lines[0] and "'gpu'" in lines[0], proc.stderr
        assert not (tmp_path / "r.jsonl").exists()


@pytest.mark.engine
def test_a_reward_model_vllm_cannot_load_is_one_line_before_the_run(tmp_path, script, engines):
    import json
    import shutil

    from tts.testbed import PRM_DIR

    folder = tmp_path / "prm"
    shutil.copytree(PRM_DIR, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["NoSuchModelForCausalLM"]}))
    proc = subprocess.run([sys.executable, "-m", "tts.cli", "run", "--backend", "scripted", "--model", script,
                           "--limit", "2", "--strategy", "best_of_n", "--verifier", str(folder),
                           "--prm-backend", "vllm", "--out", str(tmp_path / "r.jsonl")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "vLLM could not start reward model" in errors[0], proc.stderr[-3000:]
    assert not (tmp_path / "r.jsonl").exists()


def _recipe(tmp_path, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_scoring_calls_that_wait_on_an_engine_are_all_in_flight_at_once():
    """32 problems' calls to a verifier that only waits on its engine are all waiting together (so
    their requests can share the engine's batches), not 6 at a time as asyncio's default pool has it
    on 2 cores: a barrier of 32 passes only if they are."""
    import threading

    from tts.verifiers import metering

    barrier = threading.Barrier(32, timeout=20)

    class Waiting:
        waits_on_engine = True

        def score(self, k):
            barrier.wait()
            return k, (0, 0.0, 0)

    async def many():
        return await asyncio.gather(*(metering.metered(Ledger(), Waiting().score, k) for k in range(32)))

    assert asyncio.run(many()) == list(range(32))
    assert metering.SCORING_THREADS >= 32


def test_importing_the_vllm_reward_models_starts_nothing():
    code = ("import sys, tts.verifiers.registry, tts.verifiers.vllm_rm; "
            "print('vllm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# --- engines ----------------------------------------------------------------------------------------

@pytest.mark.engine
def test_reward_head_prm_and_orm_on_the_pooling_runner_match_transformers(classifier_dir, engines):
    texts = TEXTS + ["step 1 <extra_0> sneaky\n\nstep 2"]
    # transformers reads the sequence-classification checkpoint as token classification with a head
    # bias of its own (2 zero parameters the checkpoint, and so vLLM, does not have): 4e-5 more FLOPs
    rel = 1e-4
    for chat in (True, False):
        hf = RewardHeadPRM(classifier_dir, chat=chat, max_batch=3)
        _compare(hf, engines.on_vllm(hf), PROBLEM, texts, rel)
    tree = random_tree(random.Random(4), make_word_step, 4, 3)
    paths = ["\n\n".join(p) for level in tree for p in level]
    hf = RewardHeadPRM(classifier_dir, chat=True, max_batch=4)
    _compare(hf, engines.on_vllm(hf), PROBLEM, paths, rel)

    completions = [Completion(t, 1, "stop") for t in TEXTS + ["5", "the answer is 5 <|im_end|>"]]
    hf_orm = SequenceClassifierORM(classifier_dir, max_batch=4)
    want_ledger, ledger = Ledger(), Ledger()
    want = asyncio.run(hf_orm.score(PROBLEM, completions, want_ledger))
    orm = engines.on_vllm(hf_orm)
    got = asyncio.run(orm.score(PROBLEM, completions, ledger))
    _same([got], [want])
    assert ledger.verifier_tokens == want_ledger.verifier_tokens and ledger.engine_calls == len(completions)
    assert ledger.flops == pytest.approx(want_ledger.flops, rel=1e-12)
    assert len(engines._engines) == 1  # the PRM and the ORM shared one engine


def _qwen_process_reward_model(path):
    """A tiny checkpoint of Qwen2.5-Math-PRM's architecture (Qwen2ForProcessRewardModel: a Qwen2 model
    and a Linear-ReLU-Linear head of 2 labels), which vLLM implements natively and transformers only
    through the model's remote code; returns the backbone and head to compute the reference with."""
    import json

    from safetensors.torch import save_file
    from transformers import Qwen2Config, Qwen2Model

    torch.manual_seed(1)
    config = Qwen2Config(vocab_size=len(SPECIAL) + len(WORDS), hidden_size=64, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=256, pad_token_id=1, bos_token_id=2, eos_token_id=3)
    backbone = Qwen2Model(config).eval()
    head = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2))
    with torch.no_grad():
        head[2].weight.mul_(HEAD_SCALE)
    weights = {f"model.{k}": v.contiguous() for k, v in backbone.state_dict().items()}
    weights.update({f"score.{k}": v.contiguous() for k, v in head.state_dict().items()})
    path.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(path / "model.safetensors"))
    saved = config.to_dict()
    saved.update(architectures=["Qwen2ForProcessRewardModel"], num_labels=2, torch_dtype="float32")
    (path / "config.json").write_text(json.dumps(saved))
    _tokenizer(path)
    return backbone, head


@pytest.mark.engine
def test_qwen_math_prm_architecture_on_vllm_matches_its_head_computed_by_hand(tmp_path, engines):
    """The Qwen2.5-Math-PRM layout (``qwen_prm:MODEL``) on vLLM's own Qwen2ForProcessRewardModel,
    against the same weights run by transformers' Qwen2Model and the head applied by hand."""
    from tts.verifiers import registry

    backbone, head = _qwen_process_reward_model(tmp_path / "qwen_prm")
    prm = registry.resolve(f"qwen_prm:{tmp_path / 'qwen_prm'}", backend="vllm")
    assert isinstance(prm, engines.VLLMRewardHeadPRM) and prm.trust_remote_code
    texts = TEXTS + ["step 1 <extra_0> sneaky\n\nstep 2"]
    got, ledger = _scored(prm, PROBLEM, texts)
    want = []
    for text in texts:
        ids, positions = prm.encode(PROBLEM, text)
        with torch.inference_mode():
            logits = head(backbone(input_ids=torch.tensor([ids])).last_hidden_state[0])
        want.append([float(p) for p in torch.softmax(logits[positions], -1)[:, 1]])
    _same(got, want)
    assert len({round(x, 4) for s in got for x in s}) > 3  # the steps really score differently
    assert ledger.verifier_tokens == sum(prm.encode(PROBLEM, t)[1][-1] + 1 for t in texts)


@pytest.mark.engine
def test_token_logit_prms_through_the_lm_heads_good_and_bad_rows_match_transformers(causal_dir, engines):
    tree = random_tree(random.Random(3), make_word_step, 4, 3)
    paths = ["\n\n".join(p) for level in tree for p in level]
    for fmt in ("tagged", "chat"):  # Math-Shepherd and RLHFlow layouts
        hf = TokenLogitPRM(causal_dir, format=fmt, max_batch=3)
        _compare(hf, engines.on_vllm(hf), PROBLEM, TEXTS + paths)
    assert len(engines._engines) == 1


@pytest.mark.engine
@pytest.mark.parametrize("spec", ["testbed", "testbed-verifier"])
def test_testbed_prms_on_vllm_match_transformers_with_problems_in_flight(spec, engines, script, tmp_path):
    """Random trees of many problems scored at once (as concurrent problems do): every score as the
    transformers path's, whatever else shared the engine's batches."""
    from tts.verifiers import registry

    hf, vllm = registry.resolve(spec, backend="hf"), registry.resolve(spec, backend="vllm")
    rng = random.Random(7)
    problems = [Problem(id=f"t{k}", prompt=f"Compute {k}+{k + 3}+7 step by step.") for k in range(6)]
    work = []
    for problem in problems:
        levels = random_tree(rng, make_testbed_step, depth=4, width=3)
        work.append((problem, ["\n".join(p) for level in levels for p in level]))

    async def all_at_once():
        ledgers = [Ledger() for _ in work]
        steps = await asyncio.gather(*(_steps(vllm, p, texts, ledger) for (p, texts), ledger in zip(work, ledgers)))
        return steps, ledgers

    work = [(problem, _distinct_inputs(hf, problem, texts)) for problem, texts in work]
    stats = vllm.rm_engine().stats
    before = dataclasses.replace(stats)
    got, ledgers = asyncio.run(all_at_once())
    full = dataclasses.replace(hf, state_cache_bytes=0)
    sent = 0
    for (problem, texts), steps, ledger in zip(work, got, ledgers):
        want, hf_ledger = _scored(full, problem, texts)
        _same(steps, want)
        assert ledger.verifier_tokens <= hf_ledger.verifier_tokens
        assert ledger.flops <= hf_ledger.flops * (1 + 1e-12)
        sent += hf_ledger.verifier_tokens
    assert stats.prompt_tokens - before.prompt_tokens == sent
    assert sum(x.verifier_tokens for x in ledgers) == sent - (stats.cached_tokens - before.cached_tokens)
    if spec == "testbed":
        _levels_read_their_parents_from_the_cache(hf, vllm)
    if spec == "testbed-verifier":  # on the engine this test started: the command line end to end
        _same_runs_on_both_backends(script, tmp_path)


def _levels_read_their_parents_from_the_cache(hf, vllm):
    """A tree scored level by level, as tree search scores it: each child's input continues its
    parent's, which vLLM computed in the level before, so vLLM serves that prefix from its cache (in
    whole 32-token blocks), computes only the rest, and the ledger charges only that; every score is
    still full rescoring's."""
    problem = Problem(id="levels", prompt="Compute 12+30+7+25+9 step by step.")
    levels = random_tree(random.Random(11), make_testbed_step, depth=5, width=3)
    stats = vllm.rm_engine().stats
    before = dataclasses.replace(stats)
    ledger, hf_ledger = Ledger(), Ledger()
    full = dataclasses.replace(hf, state_cache_bytes=0)
    for level in levels:
        texts = _distinct_inputs(hf, problem, ["\n".join(path) for path in level])
        got = asyncio.run(_steps(vllm, problem, texts, ledger))
        _same(got, asyncio.run(_steps(full, problem, texts, hf_ledger)))
    cached = stats.cached_tokens - before.cached_tokens
    print(f"levels: {hf_ledger.verifier_tokens} tokens in full, vLLM computed {ledger.verifier_tokens} "
          f"({cached} served from its cache)")
    assert cached > 0 and ledger.verifier_tokens == hf_ledger.verifier_tokens - cached
    assert ledger.flops < hf_ledger.flops


def _same_runs_on_both_backends(script, tmp_path):
    """`tts run --prm-backend vllm` scores with the vLLM twin (a different configuration, so its own
    results file) and chooses the same answers from the same samples as `--prm-backend hf`."""
    import json

    from click.testing import CliRunner

    from tts.cli import cli
    from tts.verifiers import registry

    records = {}
    for backend in ("hf", "vllm"):
        out = tmp_path / f"{backend}.jsonl"
        result = CliRunner().invoke(cli, ["run", "--backend", "scripted", "--model", script, "--limit", "6",
                                          "--strategy", "best_of_n", "--n", "3", "--verifier", "testbed-verifier",
                                          "--prm-backend", backend, "--out", str(out)])
        assert result.exit_code == 0, result.output
        # lines are written as problems finish: in id order to compare
        records[backend] = sorted((json.loads(line) for line in out.read_text().splitlines()), key=lambda r: r["id"])
    assert registry.current_prm_backend() == "hf"  # the command's backend ended with it
    hf, vllm = records["hf"], records["vllm"]
    assert [r["answer"] for r in hf] == [r["answer"] for r in vllm] and len(hf) == 6
    assert hf[0]["config_hash"] != vllm[0]["config_hash"]
    scores = [[[c["scores"][k] for k in sorted(c["scores"])] for c in r["candidates"]] for r in hf + vllm]
    _same([sum(s, []) for s in scores[6:]], [sum(s, []) for s in scores[:6]])
    assert all(r["ledger"]["verifier_tokens"] > 0 for r in vllm)
