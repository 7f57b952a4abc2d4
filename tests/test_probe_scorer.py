"""The probe step scorer (issue 24 part 3): a head on the testbed policy's own hidden states."""

import asyncio
import json
import os

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import tts.testbed  # noqa: E402
from tts.budget import Budget, BudgetExhausted, Ledger  # noqa: E402
from tts.data import stepwise  # noqa: E402
from tts.verifiers import probe as probe_mod  # noqa: E402
from tts.verifiers.probe import ProbePRM, fit, head_forward, read_folder, save_folder  # noqa: E402

LAYOUT = {"question_prefix": "User: ", "question_separator": "\nAssistant: ", "step_tag": "\n", "step_join": "",
          "step_separator": "\n"}

if not (tts.testbed.POLICY_DIR / "model.safetensors").is_file():
    pytest.skip("testbed models not built (experiments/testbed/build.py)", allow_module_level=True)


def logits(tensors, x):
    import torch

    return head_forward({k: torch.as_tensor(v) for k, v in tensors.items()}, torch.as_tensor(x, dtype=torch.float32)).numpy()


def random_probe(folder, layers=(2,), hidden=0, seed=0):
    """A probe folder on the testbed policy with seeded random weights."""
    rng = np.random.default_rng(seed)
    d = len(probe_mod.LOGPROB_FEATURES) + 128 * len(layers)
    tensors = {"mean": rng.normal(size=d).astype(np.float32), "std": np.ones(d, np.float32),
               "w0": rng.normal(size=(hidden or 1, d)).astype(np.float32) / np.sqrt(d),
               "b0": np.zeros(hidden or 1, np.float32)}
    if hidden:
        tensors.update(w1=rng.normal(size=(1, hidden)).astype(np.float32), b1=np.zeros(1, np.float32))
    settings = {"policy": os.path.relpath(tts.testbed.POLICY_DIR, folder), "layers": list(layers), "hidden": hidden,
                **LAYOUT, "label": "test_probe"}
    folder.mkdir(parents=True, exist_ok=True)
    save_folder(folder, tensors, settings)
    return folder


def test_fit_separates_a_separable_dataset():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 6)) * 3 + 1
    w = np.array([1.0, -2.0, 0.5, 0.0, 1.5, -1.0])
    y = x @ w - 1.0 > 0
    for hidden in (0, 16):
        tensors = fit(x, y.tolist(), hidden=hidden, epochs=300, seed=1)
        acc = ((logits(tensors, x) > 0) == y).mean()
        assert acc >= 0.97, (hidden, acc)
    # a ring: not linearly separable, so only the MLP separates it
    r = np.linalg.norm(x[:, :2] - 1, axis=1)
    ring = r > np.median(r)
    linear = ((logits(fit(x, ring.tolist(), hidden=0, seed=1), x) > 0) == ring).mean()
    mlp = ((logits(fit(x, ring.tolist(), hidden=32, epochs=600, lr=3e-2, seed=1), x) > 0) == ring).mean()
    assert mlp >= 0.95 and linear < 0.8, (mlp, linear)
    # seeded: the same data and seed give the same weights
    a, b = fit(x, y.tolist(), hidden=16, epochs=50, seed=4), fit(x, y.tolist(), hidden=16, epochs=50, seed=4)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="both classes"):
        fit(x, [True] * len(x))


def test_probe_scores_are_deterministic_in_range_and_one_per_step(tmp_path):
    prm = ProbePRM.from_folder(random_probe(tmp_path / "p", layers=(1, 4), hidden=8))
    problem = stepwise.generate("steps3", 1, 5)[0]
    right = stepwise.solution(problem.metadata["expression"])
    texts = [right, right.split("\n")[0], right.split("\n")[0] + "\n1 + 1\nAnswer: 2"]
    first = prm.step_scores(problem, texts)
    assert [len(s) for s in first] == [len(stepwise.split_solution(t)) for t in texts]
    assert all(0.0 <= s <= 1.0 for row in first for s in row)
    assert len({round(s, 6) for row in first for s in row}) > 2  # the scores read the text, not a constant
    # again (from the cached states), and on a fresh copy that rescores everything from the start
    assert prm.step_scores(problem, texts) == first
    fresh = ProbePRM.from_folder(tmp_path / "p", state_cache_bytes=0)
    for a, b in zip(fresh.step_scores(problem, texts[::-1])[::-1], first):
        assert np.allclose(a, b, atol=1e-5)
    # a step's score depends only on the prefix: the shared first step scores the same in every text
    assert np.allclose([row[0] for row in first], first[0][0], atol=1e-5)


def test_probe_reads_the_policys_token_logprobs_and_hidden_state_at_each_line_break(tmp_path):
    """A step's features, computed here by hand from one plain forward of the policy: its tokens' lowest
    and mean log-probability, the lowest with the line break ending it, the line break's own, then the
    chosen hidden states at that line break; the score is the head's sigmoid of them."""
    import torch

    from tts.backends.hf import load_pretrained

    prm = ProbePRM.from_folder(random_probe(tmp_path / "p", layers=(0, 3)))
    problem = stepwise.generate("steps3", 1, 2)[0]
    text = stepwise.solution(problem.metadata["expression"])
    ids, tags = prm.encode(problem, text)
    tok, lm, _ = load_pretrained(tts.testbed.POLICY_DIR)
    assert tok.decode([ids[p] for p in tags]) == "\n" * len(tags)
    question = tok("User: " + problem.prompt + "\nAssistant: ", add_special_tokens=False)["input_ids"]
    assert ids[:len(question)] == question
    with torch.inference_mode():
        out = lm(input_ids=torch.tensor([ids]), output_hidden_states=True)
    logp = torch.log_softmax(out.logits[0].float(), -1)
    rows, start = [], len(question)
    for t in tags:
        lp = [float(logp[j - 1, ids[j]]) for j in range(start, t + 1)]
        step = lp[:-1] or lp
        rows.append([min(step), sum(step) / len(step), min(lp), lp[-1]] +
                    out.hidden_states[0][0, t].tolist() + out.hidden_states[3][0, t].tolist())
        start = t + 1
    _, tensors = read_folder(tmp_path / "p")
    want = 1 / (1 + np.exp(-logits(tensors, np.array(rows))))
    assert np.allclose(prm.step_scores(problem, [text])[0], want, atol=1e-4)
    # the training path (one padded batch of several texts) computes the same features
    feats = probe_mod.probe_features(lm, [0, 3], [(ids, tags, len(question)), (ids[:tags[0] + 1], tags[:1], len(question))])
    assert np.allclose(feats[0].numpy(), np.array(rows), atol=1e-4) and np.allclose(feats[1].numpy(), rows[:1], atol=1e-4)


def test_registry_resolves_probe_and_the_strategies_take_it(tmp_path):
    from tts import options
    from tts.strategies import create
    from tts.strategies.steps import PRMStepScorer
    from tts.types import SamplingParams
    from tts.verifiers.registry import resolve

    from tts.strategies.steps import StepScorer
    from tts.verifiers.base import StepVerifier, Verifier

    scorer = resolve("probe")
    assert isinstance(scorer, ProbePRM) and scorer is resolve("probe")
    assert isinstance(scorer, Verifier) and isinstance(scorer, StepVerifier)
    assert isinstance(PRMStepScorer(scorer), StepScorer)
    # vLLM returns no hidden states: on --prm-backend vllm the probe stays on transformers, in-process
    on_vllm = resolve("probe", "vllm")
    assert type(on_vllm) is ProbePRM and on_vllm.probe == scorer.probe
    assert scorer.probe == tts.testbed.PROBE_DIR and scorer.model == str(tts.testbed.POLICY_DIR.resolve())
    assert scorer.step_separator == "\n"
    beam = create("beam_search", 4, SamplingParams(), {"step_scorer": "probe"})
    assert isinstance(beam.scorer, PRMStepScorer) and beam.scorer.prm is scorer
    assert beam.segmenter.delimiter is None or beam.segmenter.delimiter == "\n"
    other = resolve(f"probe:{random_probe(tmp_path / 'q')}")
    assert isinstance(other, ProbePRM) and other.label == "test_probe"
    # the configuration hash tells probes apart by their weights, not only by their path
    before = options.config_of(other)
    assert before != options.config_of(scorer)
    random_probe(tmp_path / "q", seed=9)
    assert options.config_of(ProbePRM.from_folder(tmp_path / "q")) != before
    with pytest.raises(ValueError, match="give the probe folder"):
        resolve("probe:")


def test_committed_probe_ranks_the_policys_right_steps_above_its_wrong_ones():
    """The shipped weights read as a probe: on held-out problems, right steps score above wrong ones."""
    from tts.metrics import auroc

    prm = tts.testbed.load_probe()
    good, bad = [], []
    for level in ("steps3", "steps5"):
        for p in stepwise.generate(level, 12, 1):
            right = stepwise.split_solution(stepwise.solution(p.metadata["expression"]))
            rng = __import__("random").Random(p.id)
            cut = rng.randrange(len(right))
            wrong = stepwise.wrong_step(([p.metadata["expression"]] + right)[cut], rng)
            if wrong is None:
                continue
            texts = ["\n".join(right[:cut + 1]), "\n".join(right[:cut] + [wrong])]
            a, b = prm.step_scores(p, texts)
            good.append(a[-1])
            bad.append(b[-1])
    assert len(good) >= 15
    assert auroc(bad, good) is not None
    # auroc(positives, negatives): how often a right step outscores a wrong one at the same slot
    assert auroc(good, bad) >= 0.75, auroc(good, bad)


def test_probe_work_is_charged_to_the_ledger_as_verifier_work(tmp_path):
    from tts.strategies.steps import Partial, PRMStepScorer

    prm = ProbePRM.from_folder(random_probe(tmp_path / "p"))
    scorer = PRMStepScorer(prm)
    problem = stepwise.generate("steps3", 1, 3)[0]
    steps = stepwise.split_solution(stepwise.solution(problem.metadata["expression"]))

    def partial(k):
        return Partial(tuple(steps[:k]), "\n".join(steps[:k]), 0, None, False)

    ledger = Ledger()
    scores = asyncio.run(scorer.score_steps(problem, [partial(1)], ledger))
    ids, positions = prm.encode(problem, "\n".join(steps[:1]))
    shape = prm.engine().shape
    assert ledger.verifier_tokens == len(ids) == positions[-1] + 1
    assert ledger.flops == pytest.approx(shape.flops(0, len(ids)))
    assert ledger.engine_calls >= 1 and ledger.generated_tokens == 0 and 0 <= scores[0] <= 1
    # the policy's own shape (decoder and LM head) and the head's weights
    from tts.budget import model_shape

    assert shape.n_params == model_shape(prm.engine().model.lm).n_params + 4 + 128 * 1
    # the child reads only its new step (the parent's state is reused), and pays only for that
    ids2, _ = prm.encode(problem, "\n".join(steps[:2]))
    before = ledger.verifier_tokens
    asyncio.run(scorer.score_steps(problem, [partial(2)], ledger))
    assert ledger.verifier_tokens - before == len(ids2) - len(ids)
    # a verifier-token budget that cannot pay stops it before it runs
    poor = Ledger(Budget(total_tokens=3))
    with pytest.raises(BudgetExhausted):
        asyncio.run(PRMStepScorer(ProbePRM.from_folder(tmp_path / "p", state_cache_bytes=0)).score_steps(
            problem, [partial(3)], poor))
    assert poor.verifier_tokens == 0


def test_bad_probe_folders_are_one_clear_error(tmp_path):
    good = random_probe(tmp_path / "good", hidden=4)
    cases = {
        "missing": (lambda f: None, "not a folder"),
        "nojson": (lambda f: f.mkdir(), "no probe.json"),
        "badjson": (lambda f: (f.mkdir(), (f / "probe.json").write_text("{not json")), "not valid JSON"),
        "unknown": (lambda f: (f.mkdir(), (f / "probe.json").write_text(json.dumps({"policy": "x", "layers": [1], "colour": 1}))),
                    "unknown setting"),
        "layers": (lambda f: (f.mkdir(), (f / "probe.json").write_text(json.dumps({"policy": "x", "layers": "2"}))),
                   "'layers' must be"),
        "noweights": (lambda f: (f.mkdir(), (f / "probe.json").write_text((good / "probe.json").read_text())),
                      "no probe.safetensors"),
        "garbage": (lambda f: (f.mkdir(), (f / "probe.json").write_text((good / "probe.json").read_text()),
                               (f / "probe.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{junk")),
                    "not a readable safetensors file"),
    }
    for name, (make, message) in cases.items():
        folder = tmp_path / name
        make(folder)
        with pytest.raises(ValueError, match=message):
            ProbePRM.from_folder(folder)
    # weights of the wrong shape for their settings, and for the policy
    settings = json.loads((good / "probe.json").read_text())
    (good / "probe.json").write_text(json.dumps({**settings, "hidden": 5}))
    with pytest.raises(ValueError, match="tensor 'w0' has shape"):
        ProbePRM.from_folder(good)
    random_probe(tmp_path / "wide", layers=(1, 2))
    wide = tmp_path / "wide" / "probe.json"
    wide.write_text(json.dumps({**json.loads(wide.read_text()), "layers": [1]}))
    with pytest.raises(ValueError, match="its head reads 260 features, but .* are 132"):
        ProbePRM.from_folder(tmp_path / "wide")
    random_probe(tmp_path / "deep", layers=(7,))
    with pytest.raises(ValueError, match="it reads hidden state 7, but its policy has only 5"):
        ProbePRM.from_folder(tmp_path / "deep")


def test_cli_bad_probe_is_one_error_line_exit_2(tmp_path):
    from click.testing import CliRunner

    from tts.cli import cli

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "probe.json").write_text("[1, 2]")
    out = tmp_path / "r.jsonl"
    result = CliRunner().invoke(cli, ["run", "--backend", "scripted", "--dataset", "steps2", "--limit", "1",
                                      "--strategy", "beam_search", "--step-scorer", f"probe:{tmp_path / 'bad'}",
                                      "--out", str(out)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "probe.json must hold a JSON object" in lines[0] and not out.exists()


def test_beam_search_with_the_probe_on_the_policy():
    """End to end, as `tts run --step-scorer probe` builds it: the probe scores every node, its work is in
    the problem's ledger, and it reads only new tokens (not every path again)."""
    import tts
    from tts import data
    from tts.backends.hf import HFBackend
    from tts.strategies import create

    problems = data.load("steps2", limit=2, seed=3)
    beam = create("beam_search", 4, tts.SamplingParams(temperature=0.7, max_tokens=64),
                  {"step_scorer": "probe", "expansions": 2, "aggregation": "min"})
    assert beam.segmenter.delimiter in (None, "\n")
    results = tts.run(problems, beam, HFBackend(tts.testbed.POLICY_DIR))
    for problem, r in zip(problems, results):
        assert r.trace.answer is not None and r.trace.candidates
        spent = r.trace.ledger
        question = len(beam.scorer.prm._question_ids(problem))
        nodes = [n for n in r.trace.info["tree"]["nodes"] if n["kind"] == "step"]
        # incremental: the question once, then each node's own step and tag (each generated step ends in
        # the line break its tag stands for); rescoring every path in full would read the question per node
        assert 0 < spent["verifier_tokens"] <= spent["generated_tokens"] + question + len(nodes)
        assert len(nodes) * question > spent["generated_tokens"] + question + len(nodes)
