"""PRM and ORM plumbing on tiny randomly initialised models built from configs (no download)."""

import asyncio
import math

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from tts.budget import Ledger  # noqa: E402
from tts.types import Completion, Problem  # noqa: E402
from tts.verifiers.orm import SequenceClassifierORM  # noqa: E402
from tts.verifiers.prm import AGGREGATIONS, RewardHeadPRM, TokenLogitPRM, aggregate, split_steps  # noqa: E402

SPECIAL = ["<unk>", "<pad>", "<s>", "</s>", "<extra_0>", "<|im_start|>", "<|im_end|>"]
WORDS = ["ки", "+", "-", "=", "user", "assistant", "system", "what", "is", "add", "then", "so", "the", "answer",
         "step", "we", "get", "please", "reason", "by", ".", ",", "{", "}", "\\", "boxed", *map(str, range(20))]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
    "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
)
PROBLEM = Problem("p", prompt="what is 2 add 3")
TEXTS = [
    "step 1 we add 2 then 3\n\nstep 2 we get 5\n\nso the answer is 5",
    "the answer is 6",
    "step 1 add\n\n\n\nstep 2 add 2\n\nstep 3 we get 4\n\nstep 4 so 4",
]


def _tokenizer(path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIAL + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        additional_special_tokens=["<extra_0>", "<|im_start|>", "<|im_end|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(path))
    return fast


def _model(path, cls, hidden_size=16, intermediate_size=32, scale=50, **extra):
    from transformers import LlamaConfig

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(SPECIAL) + len(WORDS), hidden_size=hidden_size, intermediate_size=intermediate_size, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256, pad_token_id=1,
        bos_token_id=2, eos_token_id=3, **extra,
    )
    model = cls(config)
    # Random init gives near-uniform heads; scale the output layer so scores differ visibly per step.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("lm_head", "score")):
                p.mul_(scale)
    model.save_pretrained(str(path))
    _tokenizer(path)
    return str(path)


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    return _model(tmp_path_factory.mktemp("lm"), transformers.LlamaForCausalLM)


@pytest.fixture(scope="module")
def head_dir(tmp_path_factory):
    return _model(tmp_path_factory.mktemp("tok"), transformers.LlamaForTokenClassification, num_labels=2)


def _alone(model, ids):
    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids])).logits[0].float()


def test_aggregations_are_exact():
    s = [0.9, 0.5, 0.8]
    assert aggregate(s, "last") == 0.8
    assert aggregate(s, "min") == 0.5
    assert aggregate(s, "product") == pytest.approx(0.36, abs=1e-15)
    assert aggregate(s, "mean") == pytest.approx(2.2 / 3, abs=1e-15)
    assert aggregate([], "min") == float("-inf")
    with pytest.raises(ValueError, match="aggregation"):
        aggregate(s, "max")
    assert split_steps("a\n\n\n\nb\n\n", "\n\n") == ["a", "b"]
    assert split_steps("", "\n\n") == [""]


def test_settings_are_validated():
    with pytest.raises(ValueError, match="TokenLogitPRM.aggregation"):
        TokenLogitPRM("m", aggregation="max")
    with pytest.raises(ValueError, match="TokenLogitPRM.bad_token"):
        TokenLogitPRM("m", good_token="+", bad_token="+")
    with pytest.raises(ValueError, match="TokenLogitPRM.step_join"):
        TokenLogitPRM("m", step_join=None)
    with pytest.raises(ValueError, match="RewardHeadPRM.model_class"):
        RewardHeadPRM("m", model_class="x")
    with pytest.raises(ValueError, match="SequenceClassifierORM.max_batch"):
        SequenceClassifierORM("m", max_batch=0)


@pytest.mark.parametrize("fmt", ["tagged", "chat"])
def test_token_logit_prm_scores_each_step(lm_dir, fmt):
    prm = TokenLogitPRM(lm_dir, format=fmt, max_batch=2, aggregation="product")
    steps = prm.step_scores(PROBLEM, TEXTS)
    assert [len(s) for s in steps] == [3, 1, 4]
    assert all(0 < x < 1 for s in steps for x in s)
    assert len({round(x, 6) for s in steps for x in s}) > 3  # steps really get different scores
    eng = prm.engine()
    good, bad = eng.single_id("+", "good"), eng.single_id("-", "bad")
    tag = eng.single_id("ки", "tag")
    for text, got in zip(TEXTS, steps):
        ids, positions = prm.encode(PROBLEM, text)
        for p, score in zip(positions, got):
            if fmt == "tagged":
                assert ids[p] == tag
            else:
                assert ids[p + 1] == good
            # The same probability from the prefix alone, unbatched and unpadded.
            logits = _alone(eng.model, ids[: p + 1])[-1]
            assert score == pytest.approx(float(torch.softmax(logits[[good, bad]], -1)[0]), abs=1e-5)

    completions = [Completion(t, 5, "stop") for t in TEXTS]
    ledger = Ledger()
    again = asyncio.run(prm.score(PROBLEM, completions, ledger))  # every path was scored above: read from states
    assert again == pytest.approx([math.prod(s) for s in steps], abs=1e-6)
    assert ledger.verifier_tokens == 0 and ledger.engine_calls == 0
    ledger = Ledger()
    full = TokenLogitPRM(lm_dir, format=fmt, max_batch=2, aggregation="product", state_cache_bytes=0)
    scores = asyncio.run(full.score(PROBLEM, completions, ledger))
    assert scores == pytest.approx([math.prod(s) for s in steps], abs=1e-6)
    # read up to the last step's scored token (what follows it cannot change a causal model's scores)
    lengths = [prm.encode(PROBLEM, t)[1][-1] + 1 for t in TEXTS]
    assert ledger.verifier_tokens == sum(lengths)
    assert ledger.engine_calls == 2  # three candidates, two per forward
    assert ledger.flops == pytest.approx(sum(eng.shape.flops(0, n) for n in lengths))
    for how in AGGREGATIONS:
        other = TokenLogitPRM(lm_dir, format=fmt, aggregation=how)
        expected = [aggregate(s, how) for s in steps]
        assert asyncio.run(other.score(PROBLEM, completions, Ledger())) == pytest.approx(expected, abs=1e-6)
    assert prm.name == "prm_product"


def test_token_logit_prm_without_bad_token_uses_the_whole_vocabulary(lm_dir):
    prm = TokenLogitPRM(lm_dir, bad_token=None)
    eng = prm.engine()
    ids, positions = prm.encode(PROBLEM, TEXTS[0])
    got = prm.step_scores(PROBLEM, [TEXTS[0]])[0]
    logits = _alone(eng.model, ids)
    want = [float(torch.softmax(logits[p], -1)[eng.single_id("+", "good")]) for p in positions]
    assert got == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("chat", [True, False])
def test_reward_head_prm_reads_the_head_at_each_step_token(head_dir, chat):
    prm = RewardHeadPRM(head_dir, step_token="<extra_0>", chat=chat, max_batch=3, aggregation="min")
    texts = TEXTS + ["step 1 <extra_0> sneaky\n\nstep 2"]
    steps = prm.step_scores(PROBLEM, texts)
    assert [len(s) for s in steps] == [3, 1, 4, 2]
    eng = prm.engine()
    sep = eng.single_id("<extra_0>", "sep")
    for text, got in zip(texts, steps):
        ids, positions = prm.encode(PROBLEM, text)
        assert [ids[p] for p in positions] == [sep] * len(got)
        alone = _alone(eng.model, ids)
        assert got == pytest.approx([float(torch.softmax(alone[p], -1)[1]) for p in positions], abs=1e-5)
    ledger = Ledger()
    full = RewardHeadPRM(head_dir, step_token="<extra_0>", chat=chat, max_batch=3, aggregation="min", state_cache_bytes=0)
    scores = asyncio.run(full.score(PROBLEM, [Completion(t, 1, "stop") for t in texts], ledger))
    assert scores == pytest.approx([min(s) for s in steps], abs=1e-6)
    assert ledger.engine_calls == 2 and ledger.verifier_tokens > 0


@pytest.mark.parametrize("labels", [1, 2])
def test_orm_scores_batched_like_alone(tmp_path, labels):
    path = _model(tmp_path, transformers.LlamaForSequenceClassification, num_labels=labels)
    orm = SequenceClassifierORM(path, max_batch=4)
    texts = TEXTS + ["5", "the answer is 5 <|im_end|>"]
    ledger = Ledger()
    got = asyncio.run(orm.score(PROBLEM, [Completion(t, 1, "stop") for t in texts], ledger))
    eng = orm.engine()
    for text, score in zip(texts, got):
        ids = orm.encode(PROBLEM, text)
        with torch.inference_mode():
            # Unpadded, the model pools the last token; take the head's value there directly.
            hidden = eng.model.model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
            logits = eng.model.score(hidden)
        want = float(logits[0]) if labels == 1 else float(torch.softmax(logits, -1)[1])
        assert score == pytest.approx(want, abs=1e-4)
    assert len(set(round(s, 6) for s in got)) == len(texts)
    assert ledger.engine_calls == 2
    assert ledger.verifier_tokens == sum(len(orm.encode(PROBLEM, t)) for t in texts)
