"""The server's counters, in the Prometheus text format (no client library: a few counters, gauges
and one histogram are a page of code, and the core stays free of dependencies)."""

from __future__ import annotations

from collections import defaultdict
from typing import Mapping

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                     for k, v in sorted(labels.items()))
    return "{" + inner + "}"


class Metrics:
    """Touched only from the server's event loop, so it needs no locks."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = defaultdict(int)  # (endpoint, strategy, status)
        self.active = 0  # requests being solved (the queue the concurrency limit bounds)
        self.engine_in_flight = 0  # engine requests awaiting the backend right now
        self.engine_requests = 0
        self.latency: dict[str, list[int]] = defaultdict(lambda: [0] * (len(LATENCY_BUCKETS) + 1))
        self.latency_sum: dict[str, float] = defaultdict(float)
        self.latency_count: dict[str, int] = defaultdict(int)

    def count(self, endpoint: str, strategy: str, status: int) -> None:
        self.requests[(endpoint, strategy, str(status))] += 1

    def observe(self, strategy: str, seconds: float) -> None:
        buckets = self.latency[strategy]
        for i, edge in enumerate(LATENCY_BUCKETS):
            if seconds <= edge:
                buckets[i] += 1
        buckets[-1] += 1
        self.latency_sum[strategy] += seconds
        self.latency_count[strategy] += 1

    def render(self, ledger: Mapping[str, float]) -> str:
        out = ["# HELP tts_requests_total Requests by endpoint, strategy and HTTP status.",
               "# TYPE tts_requests_total counter"]
        for (endpoint, strategy, status), n in sorted(self.requests.items()):
            out.append(f"tts_requests_total{_labels({'endpoint': endpoint, 'strategy': strategy, 'status': status})} {n}")
        out += ["# HELP tts_requests_active Requests being solved now.", "# TYPE tts_requests_active gauge",
                f"tts_requests_active {self.active}",
                "# HELP tts_engine_requests_in_flight Engine requests awaiting the backend now.",
                "# TYPE tts_engine_requests_in_flight gauge", f"tts_engine_requests_in_flight {self.engine_in_flight}",
                "# HELP tts_engine_requests_total Engine requests sent.", "# TYPE tts_engine_requests_total counter",
                f"tts_engine_requests_total {self.engine_requests}"]
        for key, help_text in (("generated_tokens", "Tokens generated"), ("prompt_tokens", "Prompt tokens computed"),
                               ("cached_prompt_tokens", "Prompt tokens served from the prefix cache"),
                               ("verifier_tokens", "Tokens verifiers processed"), ("flops", "FLOPs spent"),
                               ("engine_calls", "Engine calls counted by the ledger")):
            name = f"tts_{key}_total"
            out += [f"# HELP {name} {help_text}, all requests.", f"# TYPE {name} counter", f"{name} {ledger.get(key, 0):g}"]
        out += ["# HELP tts_request_seconds Wall seconds per solved request, by strategy.",
                "# TYPE tts_request_seconds histogram"]
        for strategy, buckets in sorted(self.latency.items()):
            for edge, n in zip((*LATENCY_BUCKETS, "+Inf"), buckets):
                out.append(f"tts_request_seconds_bucket{_labels({'strategy': strategy, 'le': str(edge)})} {n}")
            out.append(f"tts_request_seconds_sum{_labels({'strategy': strategy})} {self.latency_sum[strategy]:.6f}")
            out.append(f"tts_request_seconds_count{_labels({'strategy': strategy})} {self.latency_count[strategy]}")
        return "\n".join(out) + "\n"


class MeteredBackend:
    """The server's backend with its in-flight engine requests counted (for /metrics, and for the
    test that a disconnected client leaves none behind); everything else is the backend's own."""

    def __init__(self, inner, metrics: Metrics):
        self._inner = inner
        self._metrics = metrics

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    async def generate(self, request, on_cancel=None):
        self._metrics.engine_in_flight += 1
        self._metrics.engine_requests += 1
        try:
            return await self._inner.generate(request, on_cancel=on_cancel)
        finally:
            self._metrics.engine_in_flight -= 1
