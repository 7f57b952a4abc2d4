"""The OpenAI-compatible backend.

Part one runs against a fake server behind a fault-injecting proxy (no model needed): retries, backoff
bounds, errors, concurrency limit, usage accounting. Part two starts a real vLLM OpenAI server on the
embedded model (skipped without vLLM) and runs strategies through it, directly and through the proxy.
"""

from __future__ import annotations

import random
import time

import pytest

httpx = pytest.importorskip("httpx")

import tts  # noqa: E402
from tts.backends.base import GenerationRequest  # noqa: E402
from tts.backends.openai import (  # noqa: E402
    OpenAIBackend, OpenAIBackendError, RequestFailed, RetryPolicy, ServerGeneration, ServerUnreachable, UnknownModel,
)
from tts.budget import ModelShape  # noqa: E402
from tts.backends.vllm_server import free_port  # noqa: E402
from tts.types import Message, SamplingParams  # noqa: E402

from .conftest import run  # noqa: E402
from .fault_proxy import FakeOpenAI, FaultProxy  # noqa: E402

SHAPE = ModelShape(1e6, 4, 64)
FAST_RETRY = RetryPolicy(max_attempts=6, initial_delay_s=0.01, max_delay_s=0.05, max_total_s=20)
# A real CPU server under CI load can take seconds per generation, and a "drop_after" fault throws a
# finished generation away: the deadline must cover several real generations, not fake-server replies.
REAL_SERVER_RETRY = RetryPolicy(max_attempts=12, initial_delay_s=0.01, max_delay_s=0.05, max_total_s=600)


def fake_backend(proxy: FaultProxy, **kw) -> OpenAIBackend:
    kw.setdefault("retry", FAST_RETRY)
    return OpenAIBackend("fake-model", base_url=proxy.url, shape=SHAPE, seed=0, **kw).connect()


# --- part one: fake server -----------------------------------------------------------------------------
def test_backoff_is_bounded_and_jittered():
    policy = RetryPolicy(initial_delay_s=0.5, max_delay_s=4.0)
    rng = random.Random(0)
    for attempt in range(8):
        waits = [policy.delay(attempt, rng) for _ in range(200)]
        cap = min(4.0, 0.5 * 2 ** attempt)
        assert all(0 <= w <= cap for w in waits)
        assert max(waits) > 0.8 * cap and min(waits) < 0.2 * cap  # spread over the whole range
    assert policy.delay(0, rng, retry_after=3.0) >= 3.0
    assert policy.delay(0, rng, retry_after=100.0) <= 4.0
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


def test_faults_are_retried_and_every_problem_is_answered():
    problems = tts.data.load("add1", limit=12)
    # Each kind of transient failure, several times, interleaved with normal requests.
    plan = [None] + [503, "drop", 429, None, 500, "delay:0.2", "drop_after", 502, None] * 3
    with FaultProxy(FakeOpenAI(), plan) as proxy:
        # Faults come in request order, whoever sends it: with 4 requests in flight one request can meet
        # several in a row, so allow more attempts than the plan has faults in a row.
        backend = fake_backend(proxy, retry=RetryPolicy(max_attempts=12, initial_delay_s=0.01, max_delay_s=0.05))
        results = tts.run(problems, tts.Majority(n=3), backend, concurrency=4)
    assert all(r.trace.answer is not None for r in results)
    assert all(r.correct for r in results)  # the fake server answers correctly
    for kind in ("503", "drop", "429", "500", "delay", "drop_after", "502"):
        assert proxy.counts[kind] >= 1, kind
    assert backend.retries == sum(proxy.counts[k] for k in ("503", "drop", "429", "500", "drop_after", "502"))
    # Only answered requests are charged: one call per problem, generated tokens as the server counted.
    for r in results:
        assert r.trace.ledger["engine_calls"] == 1
        assert r.trace.ledger["generated_tokens"] == sum(c.num_tokens for c in r.trace.candidates) == 3 * 4


def test_timeouts_are_retried():
    with FaultProxy(FakeOpenAI(), [None, "delay:1.5", "delay:1.5", None]) as proxy:
        backend = fake_backend(proxy, timeout_s=0.5)
        req = GenerationRequest((Message("user", "What is 2 + 2?"),), SamplingParams(n=2))
        gen = run(backend.generate(req))
    assert [c.text for c in gen.completions] == ["The answer is 4."] * 2
    assert backend.retries == 2


def test_retries_stop_at_the_attempt_limit():
    with FaultProxy(FakeOpenAI(), lambda i, path: None if path == "/models" else 503) as proxy:
        backend = fake_backend(proxy, retry=RetryPolicy(max_attempts=4, initial_delay_s=0.01, max_delay_s=0.02))
        with pytest.raises(RequestFailed, match="4 attempt.*HTTP 503"):
            run(backend.generate(GenerationRequest("1 + 1", SamplingParams())))
    assert proxy.counts["503"] == 4


def test_retries_stop_at_the_time_limit():
    policy = RetryPolicy(max_attempts=1000, initial_delay_s=0.2, max_delay_s=0.2, max_total_s=1.0)
    with FaultProxy(FakeOpenAI(), lambda i, path: None if path == "/models" else "drop") as proxy:
        backend = fake_backend(proxy, retry=policy)
        start = time.monotonic()
        with pytest.raises(RequestFailed, match="drop|Disconnect|Protocol|closed|Read"):
            run(backend.generate(GenerationRequest("1 + 1", SamplingParams())))
        assert time.monotonic() - start < 1.5
    assert 2 <= proxy.counts["drop"] < 1000


def test_client_errors_are_not_retried():
    with FaultProxy(FakeOpenAI(), lambda i, path: None if path == "/models" else 400) as proxy:
        backend = fake_backend(proxy)
        with pytest.raises(RequestFailed, match="HTTP 400.*injected 400"):
            run(backend.generate(GenerationRequest("1 + 1", SamplingParams())))
    assert proxy.counts["400"] == 1 and backend.retries == 0


def test_unreachable_server_and_unknown_model_fail_clearly():
    with pytest.raises(ServerUnreachable, match="cannot reach"):
        OpenAIBackend("m", base_url=f"http://127.0.0.1:{free_port()}/v1", shape=SHAPE).connect()
    with FaultProxy(FakeOpenAI()) as proxy:
        with pytest.raises(UnknownModel, match="does not serve model 'other'.*fake-model"):
            OpenAIBackend("other", base_url=proxy.url, shape=SHAPE).connect()
    with pytest.raises(OpenAIBackendError, match="shape"):
        OpenAIBackend("m", base_url="http://127.0.0.1:1/v1")
    from tts.backends import BackendError, create

    with pytest.raises(BackendError, match="cannot reach"):
        create("openai", "m", base_url=f"http://127.0.0.1:{free_port()}/v1", shape="1e6,4,64")


def test_concurrency_limit_holds():
    problems = tts.data.load("add1", limit=10)
    with FaultProxy(FakeOpenAI(latency=0.1)) as proxy:
        backend = fake_backend(proxy, max_concurrency=3)
        tts.run(problems, tts.Majority(n=2), backend, concurrency=10)
    assert proxy.max_in_flight == 3


def test_usage_from_server_and_local_fallbacks(embedded_model_dir):
    chat = (Message("user", "What is 2 + 3?"),)
    req = GenerationRequest(chat, SamplingParams(n=2, logprobs=True))
    with FaultProxy(FakeOpenAI(cached_tokens=2)) as proxy:
        gen = run(fake_backend(proxy).generate(req))
    assert isinstance(gen, ServerGeneration) and gen.usage_source == "server"
    assert gen.prompt_tokens == 5 and gen.cached_prompt_tokens == 2  # the fake's whitespace count
    assert [c.num_tokens for c in gen.completions] == [4, 4]
    assert gen.completions[0].logprobs == pytest.approx((-0.1, -0.2, -0.3, -0.4))

    with FaultProxy(FakeOpenAI(usage=False)) as proxy:
        estimate = run(fake_backend(proxy).generate(req))
        local = fake_backend(proxy, tokenizer=embedded_model_dir)
        counted = run(local.generate(GenerationRequest(chat, SamplingParams(n=2))))
    assert estimate.usage_source == "estimate" and estimate.prompt_tokens > 0
    assert counted.usage_source == "tokenizer"
    assert counted.prompt_tokens == local.count_prompt_tokens(GenerationRequest(chat, SamplingParams()))
    expected = len(local.tokenizer("The answer is 5.", add_special_tokens=False)["input_ids"])
    assert [c.num_tokens for c in counted.completions] == [expected, expected]
    assert local.usage_sources["tokenizer"] == 1


def test_prefix_uses_completions_with_a_local_template(embedded_model_dir):
    chat = (Message("user", "What is 2 + 3?"),)
    with FaultProxy(FakeOpenAI()) as proxy:
        local = fake_backend(proxy, tokenizer=embedded_model_dir)
        run(local.generate(GenerationRequest(chat, SamplingParams(), prefix="So 2 + 3")))
        remote = fake_backend(proxy)
        run(remote.generate(GenerationRequest(chat, SamplingParams(), prefix="So 2 + 3")))
        bodies = proxy.upstream.bodies
    assert bodies[0]["prompt"].endswith("<|im_start|>assistant\nSo 2 + 3") and bodies[0]["add_special_tokens"] is False
    assert bodies[1]["messages"][-1] == {"role": "assistant", "content": "So 2 + 3"}
    assert bodies[1]["continue_final_message"] is True and bodies[1]["add_generation_prompt"] is False


# --- part two: a real vLLM server --------------------------------------------------------------------
@pytest.fixture(scope="module")
def vllm_server(embedded_model_dir):
    pytest.importorskip("vllm")
    from tts.backends.vllm_server import VLLMServer, VLLMServerError

    # A CPU engine reserves its memory fraction up front: a quarter leaves room for the vLLM backend
    # tests' engine in the same session.
    server = VLLMServer(embedded_model_dir, memory_fraction=0.25, block_size=32)
    try:
        server.start()
    except VLLMServerError as exc:
        pytest.fail(str(exc))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def served(vllm_server, embedded_model_dir):
    return OpenAIBackend(embedded_model_dir, base_url=vllm_server).connect()


@pytest.mark.engine
def test_majority_through_a_real_server(served):
    problems = tts.data.load("add1", limit=8)
    results = tts.run(problems, tts.Majority(n=4, params=SamplingParams(max_tokens=48)), served)
    assert served.server_kind == "vllm"
    assert all(len(r.trace.candidates) == 4 for r in results)
    assert sum(bool(r.correct) for r in results) >= 3
    for r, p in zip(results, problems):
        led = r.trace.ledger
        # The local template and tokenizer count exactly the prompt the server counted.
        assert led["prompt_tokens"] == served.count_prompt_tokens(GenerationRequest(p.chat(), SamplingParams()))
        assert led["generated_tokens"] == sum(c.num_tokens for c in r.trace.candidates)
    assert served.usage_sources["server"] >= 8


@pytest.mark.engine
def test_real_server_n_logprobs_stop_and_cache(served):
    chat = (Message("system", "You are a careful assistant. " * 12), Message("user", "List three colours."))
    req = GenerationRequest(chat, SamplingParams(n=3, max_tokens=20, seed=4, logprobs=True, stop=("\n",)))
    first = run(served.generate(req))
    second = run(served.generate(req))
    assert len(first.completions) == len(second.completions) == 3
    for c in first.completions + second.completions:
        assert len(c.token_ids) == c.num_tokens == len(c.logprobs)
        assert all(lp <= 0 for lp in c.logprobs) and "\n" not in c.text
    # Not asserted: that the seeded request gives the same samples twice. vLLM on the CPU is not batch
    # invariant: whether a sample's prompt is computed or served from the prefix cache, and which other
    # rows share its engine step, changes its logits in the last bits, which can flip a sampled token.
    # Seen on clean machines (sample 0 differed between two identical requests, with and without a
    # cache hit in between), so exact reproducibility is not something this backend guarantees.
    assert first.prompt_tokens == served.count_prompt_tokens(req)
    assert second.cached_prompt_tokens > 0  # --enable-prompt-tokens-details reports prefix-cache hits


@pytest.mark.engine
def test_real_server_continues_a_prefix(served):
    chat = (Message("user", "What is 3 + 4? Reply with just the number."),)
    greedy = SamplingParams(n=1, temperature=0.0, max_tokens=16)
    full = run(served.generate(GenerationRequest(chat, greedy))).completions[0]
    assert full.num_tokens >= 4
    prefix = served.tokenizer.decode(full.token_ids[:2])
    rest = run(served.generate(GenerationRequest(chat, greedy, prefix=prefix))).completions[0]
    assert rest.token_ids == full.token_ids[2:2 + rest.num_tokens]
    assert prefix + rest.text == full.text


@pytest.mark.engine
def test_real_server_scores_a_text(served):
    lps = run(served.prompt_logprobs("1 + 1 = 2"))
    assert lps[0] is None and len(lps) == len(served.tokenizer("1 + 1 = 2")["input_ids"])
    assert all(lp <= 0 for lp in lps[1:])


@pytest.mark.engine
def test_real_server_through_faults(vllm_server, embedded_model_dir):
    problems = tts.data.load("add1", limit=6)
    plan = lambda i, path: None if path == "/models" or i % 3 == 0 else [503, "drop", "delay:0.3", "drop_after"][i % 4]
    with FaultProxy(vllm_server, plan) as proxy:
        backend = OpenAIBackend(embedded_model_dir, base_url=proxy.url, retry=REAL_SERVER_RETRY, max_concurrency=4).connect()
        results = tts.run(problems, tts.Majority(n=4, params=SamplingParams(max_tokens=48)), backend)
    assert all(len(r.trace.candidates) == 4 for r in results)
    assert all(r.trace.ledger["engine_calls"] == 1 for r in results)
    assert backend.retries >= 3 and proxy.counts["drop"] + proxy.counts["503"] + proxy.counts["drop_after"] >= 3
