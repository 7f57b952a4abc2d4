"""`tts serve` as users meet it: a real subprocess on 127.0.0.1 talked to with the official openai
client (and raw HTTP where a client would hide what is checked). The scripted backend keeps the
replies known; one end-to-end test runs the embedded model on the hf backend."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

from tts.backends.vllm_server import free_port  # noqa: E402
from tts.budget import Budget  # noqa: E402
from tts.server import Defaults, RequestError, parse  # noqa: E402
from tts.server.app import ranked_choices, split_reasoning  # noqa: E402
from tts.server.tools import ToolCall, ToolVote, parse_tool_calls, parse_tool_vote  # noqa: E402
from tts.strategies import STRATEGIES  # noqa: E402
from tts.types import Candidate, Trace  # noqa: E402

PARIS = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}\n</tool_call>'
PARIS_REORDERED = '<tool_call>{"arguments": {"unit": "c", "city": "Paris"}, "name": "get_weather"}</tool_call>'
ROME = '{"name": "get_weather", "arguments": {"city": "Rome"}}'
REPLIES = {"2 + 3": ["The answer is 5.", "5", "I think 6", "5!", "7"], "weather": [ROME, PARIS, PARIS_REORDERED],
           "slow": ["1"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
#: options a strategy needs at N = 2 on the scripted backend (its defaults assume a larger N)
AT_TWO = {"deepconf": {"deepconf_warmup": 2}, "revise": {"revisions": 2}, "beam_search": {"expansions": 2}}


class Served:
    def __init__(self, tmp: Path, *args: str, latency: float = 0.0, model: str | None = None,
                 backend: str = "scripted", timeout: float = 60):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if model is None:
            model = str(tmp / f"script-{self.port}.json")
            Path(model).write_text(json.dumps({"replies": REPLIES, "latency": latency}))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tts.cli", "serve", "--backend", backend, "--model", model,
             "--port", str(self.port), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tts serve exited: {self.proc.stderr.read()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.close()
        raise RuntimeError("tts serve did not start")

    def client(self, key: str = "none") -> "openai.OpenAI":
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=60)

    def metric(self, name: str, headers=None) -> float:
        text = httpx.get(self.url + "/metrics", headers=headers, timeout=5).text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise KeyError(name)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Served(tmp_path_factory.mktemp("serve"))
    yield s
    s.close()


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory):
    """Each engine batch takes 1.5 s; two requests at most; a key."""
    s = Served(tmp_path_factory.mktemp("slow"), "--api-key", "sekret", "--max-concurrent-requests", "2",
               "--max-body-bytes", "4096", latency=1.5)
    yield s
    s.close()


ASK = [{"role": "user", "content": "What is 2 + 3?"}]


# --- strategies by model name and by body --------------------------------------------------------
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_strategy_by_model_name(server, name):
    done = server.client().chat.completions.create(model=f"{name}@2", messages=ASK,
                                                   extra_body={"tts": AT_TWO.get(name, {})})
    assert isinstance(done.choices[0].message.content, str)
    tts = done.model_extra["tts"]
    assert tts["strategy"] == f"{name}@2"
    assert done.usage.completion_tokens == tts["ledger"]["generated_tokens"] > 0


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_strategy_by_body(server, name):
    done = server.client().chat.completions.create(
        model="tts", messages=ASK, extra_body={"tts": {"strategy": name, "n": 2, **AT_TWO.get(name, {})}})
    assert done.model_extra["tts"]["strategy"] == f"{name}@2"


def test_majority_votes_and_returns_its_trace(server):
    done = server.client().chat.completions.create(model="tts/majority@5", messages=ASK,
                                                   extra_body={"tts": {"return_trace": True}})
    tts = done.model_extra["tts"]
    assert tts["answer"] == "5" and "5" in done.choices[0].message.content
    assert sorted(c["answer"] for c in tts["candidates"]) == ["5", "5", "5", "6", "7"]  # the script's five
    assert sum(c["chosen"] for c in tts["candidates"]) == 1


def test_n_returns_the_top_distinct_answers(server):
    done = server.client().chat.completions.create(model="majority@5", messages=ASK, n=3)
    texts = [c.message.content for c in done.choices]
    assert len(texts) == 3 and "5" in texts[0] and {"I think 6", "7"} == set(texts[1:])


def test_completions_endpoint_and_models(server):
    done = server.client().completions.create(model="majority@3", prompt="What is 2 + 3?")
    assert done.choices[0].text and done.usage.completion_tokens > 0
    ids = [m.id for m in server.client().models.list().data]
    assert "tts/majority" in ids and "tts/beam_search" in ids


# --- streaming ---------------------------------------------------------------------------------------
def test_streaming_sends_progress_then_content_then_usage(server):
    started = time.perf_counter()
    kinds, first_at, content = [], None, ""
    stream = server.client().chat.completions.create(model="majority@5", messages=ASK, stream=True,
                                                     stream_options={"include_usage": True})
    for chunk in stream:
        if first_at is None:
            first_at = time.perf_counter() - started
        extra = chunk.model_extra or {}
        if chunk.usage is not None:
            kinds.append("usage")
        elif not chunk.choices and "tts" in extra:
            kinds.append("progress")
            assert set(extra["tts"]) >= {"samples", "leader", "votes", "generated_tokens"}
        elif chunk.choices and chunk.choices[0].delta.content:
            kinds.append("content")
            content += chunk.choices[0].delta.content
    assert first_at < 1.0
    assert kinds[0] == "progress" and kinds[-1] == "usage" and "content" in kinds
    last_progress = max(i for i, k in enumerate(kinds) if k == "progress")
    assert last_progress < kinds.index("content")
    assert "5" in content


def test_single_streams_the_engine_text_as_it_comes(server):
    kinds, content = [], ""
    for chunk in server.client().chat.completions.create(model="single", messages=ASK, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            kinds.append("content")
            content += chunk.choices[0].delta.content
        elif not chunk.choices:
            kinds.append("progress")
    # the reply arrives before the progress chunk that counts its sample: it was not held back
    assert kinds.index("content") < max(i for i, k in enumerate(kinds) if k == "progress")
    assert content in REPLIES["2 + 3"]


# --- tool calls ----------------------------------------------------------------------------------------
def test_tool_calls_are_voted_canonically(server):
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    done = server.client().chat.completions.create(model="majority@3", messages=ask, tools=TOOLS)
    choice = done.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments)["city"] == "Paris"
    # voting on the name alone makes all three one vote: the first sample (Rome) represents it
    by_name = server.client().chat.completions.create(model="majority@3", messages=ask, tools=TOOLS,
                                                      extra_body={"tts": {"tool_vote": "name"}})
    assert json.loads(by_name.choices[0].message.tool_calls[0].function.arguments)["city"] == "Rome"


def test_tool_calls_stream(server):
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    calls, finish = [], None
    for chunk in server.client().chat.completions.create(model="majority@3", messages=ask, tools=TOOLS, stream=True):
        for choice in chunk.choices:
            calls += choice.delta.tool_calls or []
            finish = choice.finish_reason or finish
    assert finish == "tool_calls" and calls and calls[0].function.name == "get_weather"


# --- errors ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("body, status, param", [
    ({"model": "nope@x", "messages": ASK}, 400, "model"),
    ({"model": "gpt-17", "messages": ASK}, 404, "model"),
    ({"model": "majority@3", "messages": []}, 400, "messages"),
    ({"model": "majority@3", "messages": ASK, "tts": {"expansions": 3}}, 400, "tts.expansions"),
    ({"model": "majority@3", "messages": ASK, "tts": {"budget": {"tokens": 3}}}, 400, "tts.budget.tokens"),
    ({"model": "majority@3", "messages": ASK, "temperature": -1}, 400, "temperature"),
    ({"model": "majority@3", "messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0].role"),
])
def test_bad_requests_are_openai_errors(server, body, status, param):
    got = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=10)
    assert got.status_code == status, got.text
    err = got.json()["error"]
    assert err["param"] == param and err["message"] and "\n" not in err["message"]


def test_a_taken_port_is_one_line_and_exit_2(server, tmp_path):
    script = tmp_path / "s.json"
    script.write_text(json.dumps(REPLIES))
    done = subprocess.run([sys.executable, "-m", "tts.cli", "serve", "--backend", "scripted", "--model", str(script),
                           "--port", str(server.port)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and f"--host/--port 127.0.0.1:{server.port}: cannot listen" in done.stderr


@pytest.mark.parametrize("args, recipe, message", [
    (["--prm-backend", "tpu"], None, "Invalid value for '--prm-backend'"),
    ([], "prm-backend: gpu\n", "prm-backend must be hf or vllm, got 'gpu'"),
])
def test_prm_backend_is_checked(tmp_path, args, recipe, message):
    script = tmp_path / "s.json"
    script.write_text(json.dumps(REPLIES))
    extra = []
    if recipe is not None:
        (tmp_path / "r.yaml").write_text(recipe)
        extra = ["--config", str(tmp_path / "r.yaml")]
    done = subprocess.run([sys.executable, "-m", "tts.cli", "serve", "--backend", "scripted", "--model", str(script),
                           "--port", str(free_port()), *args, *extra], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], lines


@pytest.mark.parametrize("option, message", [
    ("nope", "--engine-option 'nope': write KEY=VALUE"),
    ("bogus=1", "--backend hf: engine options bogus: "),
])
def test_engine_options_are_checked(option, message):
    done = subprocess.run([sys.executable, "-m", "tts.cli", "serve", "--backend", "hf", "--port", str(free_port()),
                           "--engine-option", option], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


def test_not_json_and_unknown_paths(server):
    got = httpx.post(server.url + "/v1/chat/completions", content=b"{nope", timeout=10)
    assert got.status_code == 400 and "not valid JSON" in got.json()["error"]["message"]
    got = httpx.get(server.url + "/v1/engines", timeout=10)
    assert got.status_code == 404 and "/v1/chat/completions" in got.json()["error"]["message"]


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                    max_leaves=12)
FIELDS = st.fixed_dictionaries({}, optional={
    "model": st.sampled_from(["majority@2", "tts", "single", "beam_search@2", "x@0"]) | JSON,
    "messages": st.just(ASK) | JSON, "prompt": JSON, "temperature": JSON, "top_p": JSON, "max_tokens": JSON,
    "n": JSON, "stream": JSON, "stop": JSON, "seed": JSON, "tools": st.just(TOOLS) | JSON,
    "tts": st.fixed_dictionaries({}, optional={"strategy": JSON, "n": JSON, "budget": JSON, "answer": JSON,
                                               "tool_vote": JSON, "expansions": JSON, "return_trace": JSON}) | JSON,
})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=FIELDS | JSON, path=st.sampled_from(["/v1/chat/completions", "/v1/completions"]))
def test_malformed_bodies_never_give_a_500(server, body, path):
    got = httpx.post(server.url + path, json=body, timeout=30)
    assert got.status_code < 500, got.text
    if got.status_code != 200:
        assert got.json()["error"]["message"]
    elif got.headers["content-type"].startswith("application/json"):
        assert got.json()["choices"]


@settings(max_examples=300, deadline=None)
@given(body=FIELDS | JSON, kind=st.sampled_from(["chat", "completion"]))
def test_the_parser_gives_a_job_or_a_request_error(body, kind):
    try:
        job = parse(body, DEFAULTS, kind)
    except RequestError as err:
        assert err.status in (400, 404) and err.message and "\n" not in err.message
        assert err.param is None or isinstance(err.param, str)
    else:
        assert job.strategy is not None and job.budget.generated_tokens <= 100


# --- access, limits, cancellation ---------------------------------------------------------------------
def test_api_key_is_required_but_not_for_health(slow_server):
    with pytest.raises(openai.AuthenticationError):
        slow_server.client("wrong").models.list()
    assert httpx.get(slow_server.url + "/v1/models", timeout=5).status_code == 401
    assert httpx.get(slow_server.url + "/health", timeout=5).status_code == 200
    assert slow_server.client("sekret").models.list().data


def test_large_bodies_are_refused(slow_server):
    got = httpx.post(slow_server.url + "/v1/chat/completions", headers={"Authorization": "Bearer sekret"},
                     json={"model": "single", "messages": [{"role": "user", "content": "x" * 5000}]}, timeout=10)
    assert got.status_code == 413


def test_past_the_concurrency_limit_is_429(slow_server):
    key = {"Authorization": "Bearer sekret"}
    body = {"model": "single", "messages": [{"role": "user", "content": "slow"}]}
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        httpx.post(slow_server.url + "/v1/chat/completions", json=body, headers=key, timeout=30).status_code))
        for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    third = httpx.post(slow_server.url + "/v1/chat/completions", json=body, headers=key, timeout=30)
    for t in threads:
        t.join()
    assert third.status_code == 429 and third.headers["retry-after"] == "1"
    assert results == [200, 200]


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_leaves_cancels_its_engine_requests(slow_server, stream):
    key = {"Authorization": "Bearer sekret"}
    body = {"model": "majority@4", "messages": [{"role": "user", "content": "slow"}], "stream": stream}
    with httpx.Client(timeout=30) as client:
        if stream:
            with client.stream("POST", slow_server.url + "/v1/chat/completions", json=body, headers=key) as got:
                lines = got.iter_lines()  # kept: dropping the iterator would close the stream here
                first = next(lines)  # the first progress chunk: the search is running
                assert got.status_code == 200 and '"samples": 0' in first, first
                time.sleep(0.2)
                assert slow_server.metric("tts_engine_requests_in_flight", key) == 1, httpx.get(slow_server.url + "/metrics", headers=key).text
        else:
            with pytest.raises(httpx.ReadTimeout):
                client.post(slow_server.url + "/v1/chat/completions", json=body, headers=key, timeout=0.5)
    deadline = time.monotonic() + 1.0
    while slow_server.metric("tts_engine_requests_in_flight", key) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert slow_server.metric("tts_engine_requests_in_flight", key) == 0
    assert slow_server.metric("tts_requests_active", key) == 0


# --- the pieces, without a socket ---------------------------------------------------------------------
DEFAULTS = Defaults(model="m", max_budget=Budget(generated_tokens=100))


def test_budget_is_capped_by_the_server():
    job = parse({"model": "majority@2", "messages": ASK}, DEFAULTS)
    assert job.budget.generated_tokens == 100  # the cap is the default
    job = parse({"model": "majority@2", "messages": ASK, "tts": {"budget": {"generated_tokens": 50, "seconds": 2}}},
                DEFAULTS)
    assert job.budget.generated_tokens == 50 and job.budget.seconds == 2
    assert parse({"model": "single", "messages": ASK, "tts": {"budget": {"seconds": 0.25}}}, DEFAULTS).budget.seconds == 0.25
    with pytest.raises(RequestError, match="above this server's --max-budget generated_tokens 100"):
        parse({"model": "majority@2", "messages": ASK, "tts": {"budget": {"generated_tokens": 500}}}, DEFAULTS)


def test_requests_do_not_share_settings():
    a = parse({"model": "m", "messages": ASK, "tts": {"strategy": "beam_search", "n": 4, "expansions": 2}}, DEFAULTS)
    b = parse({"model": "m", "messages": ASK}, DEFAULTS)
    assert a.strategy.expansions == 2 and b.strategy.name == "single"
    forced = parse({"model": "majority@2", "messages": ASK, "tts": {"max_thinking_tokens": 20}}, DEFAULTS)
    assert type(forced.strategy).__name__ == "BudgetForced"


@pytest.mark.parametrize("extra, key", [
    ({"strategy": "auto", "routing_policy": "/etc/passwd"}, "routing_policy"),
    ({"strategy": "auto", "routing_policy": "../../policy.json"}, "routing_policy"),
    ({"strategy": "adaptive", "adaptive_calibration": "/etc/hostname"}, "adaptive_calibration"),
    ({"strategy": "best_of_n", "verifier": "qwen_prm:/tmp"}, "verifier"),
    ({"strategy": "beam_search", "prm": "/srv/models/prm"}, "prm"),
    ({"strategy": "beam_search", "step_scorer": "probe:/tmp"}, "step_scorer"),
    ({"strategy": "mcts", "rollout_verifier": "/tmp"}, "rollout_verifier"),
    ({"strategy": "revise", "verifier": ["confidence"]}, "verifier"),
])
def test_a_client_cannot_make_the_server_read_files_or_load_models(extra, key):
    """Options that name files or models on the server take only packaged/built-in names from a request."""
    with pytest.raises(RequestError, match=f"tts.{key}: a request may name .*set by its --config") as info:
        parse({"model": "m", "messages": ASK, "tts": extra}, DEFAULTS)
    assert info.value.param == f"tts.{key}" and "\n" not in info.value.message


def test_packaged_and_builtin_names_and_the_recipes_own_paths_are_allowed(tmp_path):
    import shutil

    from tts.server import server_defaults
    from tts.strategies.stopping import packaged_names

    job = parse({"model": "m", "messages": ASK, "tts": {"strategy": "auto", "routing_policy": "embedded"}}, DEFAULTS)
    assert job.strategy.routing_policy == "embedded"
    job = parse({"model": "m", "messages": ASK, "tts": {"strategy": "best_of_n", "verifier": "confidence_tail"}}, DEFAULTS)
    assert job.strategy.verifier.name.startswith("confidence")
    # the operator's recipe may name a file; a request may repeat that value, not another
    assert "testbed-steps4" in packaged_names()
    table = tmp_path / "mine.json"
    shutil.copy(Path(tts_root(), "tts/strategies/calibrations/testbed-steps4.json"), table)
    defaults = server_defaults("m", {"strategy": "adaptive", "adaptive_rule": "calibrated",
                                     "adaptive_calibration": str(table), "n": 16}, max_budget=Budget())
    job = parse({"model": "m", "messages": ASK, "tts": {"adaptive_calibration": str(table)}}, defaults)
    assert job.strategy.calibration is not None
    with pytest.raises(RequestError, match="tts.adaptive_calibration: a request may name"):
        parse({"model": "m", "messages": ASK, "tts": {"adaptive_calibration": str(tmp_path / "other.json")}}, defaults)


def tts_root() -> Path:
    return Path(__file__).resolve().parents[1]


def test_a_recipe_is_the_default_request():
    from tts.recipes import RecipeError
    from tts.server import server_defaults

    defaults = server_defaults("m", {"strategy": ["beam_search"], "n": 4, "expansions": 2, "temperature": 0.3,
                                     "dataset": "add1", "limit": 5}, max_budget=Budget())
    job = parse({"model": "m", "messages": ASK}, defaults)
    assert type(job.strategy).__name__ == "BeamSearch" and job.strategy.expansions == 2 and job.label == "beam_search@4"
    assert job.strategy.params.temperature == 0.3
    # a request that names its own strategy does not inherit the default's options
    other = parse({"model": "majority@3", "messages": ASK}, defaults)
    assert other.label == "majority@3"
    with pytest.raises(RecipeError, match="the default request does not build: tts.beam_search takes no option 'k'"):
        server_defaults("m", {"strategy": "beam_search", "k": 3}, max_budget=Budget())


def test_tool_call_reading():
    known = {"get_weather"}
    assert parse_tool_calls(PARIS, known) == parse_tool_calls(PARIS_REORDERED, known)
    assert parse_tool_calls('{"name": "rm_rf", "arguments": {}}', known) == []  # not an offered tool
    assert parse_tool_calls("no call here", known) == []
    call = ToolCall("f", {"a": 1, "ts": 5})
    assert call.canonical(ToolVote("name_arguments", frozenset({"ts"}))) == ToolCall("f", {"a": 1}).canonical(ToolVote())
    assert parse_tool_vote({"ignore": ["ts"]}).ignore == {"ts"}
    with pytest.raises(ValueError, match="tts.tool_vote must be one of name, name_arguments"):
        parse_tool_vote("names")


def test_reasoning_split_and_ranked_choices():
    assert split_reasoning("<think>hmm</think> 42") == ("hmm", "42")
    assert split_reasoning("42") == (None, "42")
    cands = [Candidate(t, a, 1, "stop") for t, a in (("a", "1"), ("b", "2"), ("c", "1"), ("d", "3"), ("e", "2"))]
    trace = Trace("p", "majority", cands, "1", 2, {})
    assert ranked_choices(trace, 3) == [2, 1, 3]
    assert ranked_choices(trace, 1) == [2]


def test_solve_stream_text_events_reach_only_their_own_request():
    import asyncio

    import tts
    from tts.backends.scripted import ScriptedBackend

    async def main():
        backend = ScriptedBackend(REPLIES)

        async def collect(stream_text):
            return [e async for e in tts.solve_stream("What is 2 + 3?", tts.Single(), backend, stream_text=stream_text)]

        return await asyncio.gather(collect(True), collect(False))

    with_text, without = asyncio.run(main())
    assert [e.text for e in with_text if isinstance(e, tts.Text)] == [with_text[-1].trace.candidates[0].text]
    assert not any(isinstance(e, tts.Text) for e in without)


def test_solve_stream_yields_progress_then_the_trace():
    import asyncio

    import tts
    from tts.backends.scripted import ScriptedBackend

    async def main():
        events = [e async for e in tts.solve_stream("What is 2 + 3?", tts.Majority(n=5), ScriptedBackend(REPLIES))]
        return events

    events = asyncio.run(main())
    assert isinstance(events[-1], tts.Finished) and events[-1].trace.answer == "5"
    progress = [e for e in events if isinstance(e, tts.Progress)]
    assert progress and progress[-1].samples == 5 and progress[-1].leader == "5" and progress[-1].votes == 3


# --- real engines --------------------------------------------------------------------------------------
ADD = [{"role": "user", "content": "What is 3 + 4? Reply with just the number."}]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["hf", "vllm"])
def test_end_to_end_on_the_embedded_model(tmp_path, backend):
    if backend == "vllm":
        pytest.importorskip("vllm")
    s = Served(tmp_path, model="embedded", backend=backend, timeout=300)
    try:
        client = s.client()
        done = client.chat.completions.create(model="majority@4", messages=ADD, max_tokens=16, seed=1,
                                              extra_body={"tts": {"return_trace": True}})
        tts = done.model_extra["tts"]
        assert len(tts["candidates"]) == 4 and tts["ledger"]["generated_tokens"] == done.usage.completion_tokens > 0
        [chosen] = [c for c in tts["candidates"] if c["chosen"]]
        assert done.choices[0].message.content == chosen["text"] and tts["answer"] == chosen["answer"]
        kinds = []
        for chunk in client.chat.completions.create(model="majority@4", messages=ADD, max_tokens=16, stream=True,
                                                    stream_options={"include_usage": True}):
            kinds.append("usage" if chunk.usage else "content" if chunk.choices else "progress")
        assert kinds[0] == "progress" and kinds[-1] == "usage"
        # single streams the engine's tokens: content chunks come before the sample is counted
        live = []
        for chunk in client.chat.completions.create(model="single", messages=ADD, max_tokens=16, stream=True):
            live.append("content" if chunk.choices and chunk.choices[0].delta.content else
                        "progress" if not chunk.choices else "other")
        assert live.index("content") < max(i for i, k in enumerate(live) if k == "progress")
        # tool calls through a real model: whatever it writes, the response is well formed
        tooled = client.chat.completions.create(model="majority@2", max_tokens=40, tools=TOOLS,
                                                messages=[{"role": "user", "content": "Weather in Paris?"}])
        choice = tooled.choices[0]
        assert choice.finish_reason in ("tool_calls", "stop", "length")
        assert (choice.message.tool_calls is not None) == (choice.finish_reason == "tool_calls")
        assert s.metric("tts_engine_requests_in_flight") == 0
    finally:
        s.close()


def test_a_process_prm_backend_reaches_threads_a_context_does_not():
    import threading

    from tts.verifiers import registry

    seen = []
    try:
        registry.set_process_prm_backend("vllm")
        thread = threading.Thread(target=lambda: seen.append(registry.current_prm_backend()))
        thread.start()
        thread.join()
        with registry.prm_backend("hf"):
            seen.append(registry.current_prm_backend())  # a block still wins inside it
        with pytest.raises(ValueError, match="choose from hf, vllm"):
            registry.set_process_prm_backend("tpu")
    finally:
        registry.set_process_prm_backend("hf")
    assert seen == ["vllm", "hf"] and registry.current_prm_backend() == "hf"
