"""Start and stop a local ``vllm serve`` (vLLM's OpenAI-compatible server) for the openai backend.

Used by the openai backend's tests and by benchmarks that compare clients against one server; users
who already run a server only need ``--backend openai --base-url``. The server runs in its own process
group, so stopping it also stops the engine processes it starts, and every one of its processes dies
with the process that started it, even on SIGKILL (tts.backends.serve_entry). On a CPU it gets the settings vLLM
needs there (eager mode, a memory fraction, threads bound to this process's cores).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from .vllm import core_ranges


class VLLMServerError(RuntimeError):
    """The server exited or did not become ready; the message names its log file."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _on_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


class VLLMServer:
    """``with VLLMServer(folder) as server: ... server.url ...`` (``http://127.0.0.1:PORT/v1``).

    ``memory_fraction`` and ``block_size`` apply on a CPU only (a GPU server keeps vLLM's defaults);
    a small block size lets short shared prompts hit the prefix cache there.
    """

    def __init__(self, model: str | Path, *, port: int | None = None, max_model_len: int = 2048,
                 memory_fraction: float = 0.25, block_size: int | None = 32, served_name: str | None = None,
                 extra_args: Sequence[str] = (), ready_timeout: float = 300.0, log_path: str | Path | None = None):
        self.model = str(model)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        # tts.backends.serve_entry runs vLLM's api_server so that every process of the server dies with us
        cmd = [sys.executable, "-m", "tts.backends.serve_entry", "--model", self.model,
               "--host", "127.0.0.1", "--port", str(self.port), "--max-model-len", str(max_model_len),
               "--enable-prompt-tokens-details"]
        if served_name:
            cmd += ["--served-model-name", served_name]
        if not _on_gpu():
            cmd += ["--gpu-memory-utilization", str(memory_fraction), "--enforce-eager"]
            if block_size:
                cmd += ["--block-size", str(block_size)]
        self.cmd = cmd + list(extra_args)
        self.ready_timeout = ready_timeout
        self.log_path = Path(log_path) if log_path else Path(tempfile.gettempdir()) / f"tts-vllm-server-{self.port}.log"
        self._proc: subprocess.Popen | None = None

    def start(self) -> "VLLMServer":
        import httpx

        env = dict(os.environ)
        # the same binding the in-process vllm backend uses: every core this process may run on
        env.setdefault("VLLM_CPU_OMP_THREADS_BIND", core_ranges(os.sched_getaffinity(0)))
        log = self.log_path.open("w")
        from ..lifeline import die_with_parent

        self._proc = subprocess.Popen(self.cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                      preexec_fn=die_with_parent)
        log.close()  # the child keeps its own handle
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if self._proc.poll() is not None:
                raise VLLMServerError(f"vllm serve exited with {self._proc.returncode}; see {self.log_path}")
            try:
                if httpx.get(self.url + "/models", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise VLLMServerError(f"vllm serve not ready in {self.ready_timeout:.0f} s; see {self.log_path}")
            time.sleep(1)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def metric(self, name: str) -> float:
        """A counter from the server's Prometheus ``/metrics`` (summed over its label sets), e.g.
        ``vllm:prompt_tokens_total``; used to count what any client made the server do."""
        import httpx

        text = httpx.get(self.url.removesuffix("/v1") + "/metrics", timeout=10).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and line[len(name):len(name) + 1] in ("{", " "):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def __enter__(self) -> "VLLMServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
