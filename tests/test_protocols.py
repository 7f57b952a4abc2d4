"""Every registered implementation against the protocol the rest of the code relies on (issue 20, item 4):
backends, strategies, verifiers and step scorers, so code that uses them needs no getattr probing."""

import dataclasses
import inspect

import pytest

from tts.backends.base import Backend
from tts.backends.scripted import ScriptedBackend
from tts.runtime import Strategy
from tts.strategies import STRATEGIES
from tts.strategies.steps import PRMStepScorer, StepScorer, VerifierStepScorer
from tts.types import SamplingParams
from tts.verifiers.base import Verifier
from tts.verifiers.registry import CONFIDENCE, resolve

BACKEND_CLASSES = {
    "hf": ("tts.backends.hf", "HFBackend"),
    "vllm": ("tts.backends.vllm", "VLLMBackend"),
    "openai": ("tts.backends.openai", "OpenAIBackend"),
    "scripted": ("tts.backends.scripted", "ScriptedBackend"),
}
#: what a backend sets per instance (checked on a live one); the rest are methods on the class
INSTANCE = {"model_name", "shape", "tokenizer"}


def test_every_registered_backend_is_listed_here():
    from tts.backends import BACKENDS

    assert set(BACKENDS) == set(BACKEND_CLASSES)


@pytest.mark.parametrize("name", list(BACKEND_CLASSES))
def test_backend_classes_have_every_protocol_method(name):
    import importlib

    module, cls_name = BACKEND_CLASSES[name]
    cls = getattr(importlib.import_module(module), cls_name)
    members = {m for m in dir(Backend) if not m.startswith("_")} | set(Backend.__annotations__)
    for member in sorted(members - INSTANCE - {"name"}):
        assert callable(getattr(cls, member, None)), f"{cls_name} lacks {member}()"
        expected = inspect.iscoroutinefunction(getattr(Backend, member))
        assert inspect.iscoroutinefunction(getattr(cls, member)) == expected, f"{cls_name}.{member} sync/async"
    assert getattr(cls, "name", None) == name


def test_a_live_backend_conforms():
    backend = ScriptedBackend(["4"])
    assert isinstance(backend, Backend)
    assert backend.tokenizer is None and backend.render is not None


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_strategies_are_frozen_dataclasses_with_solve(name):
    cls = STRATEGIES[name]
    assert issubclass(cls, Strategy) and dataclasses.is_dataclass(cls)
    assert cls.__dataclass_params__.frozen, f"{name} must be frozen (no state between problems)"
    assert inspect.iscoroutinefunction(cls.solve)
    assert cls.width_option is None or cls.width_option in {f.name for f in dataclasses.fields(cls)}
    assert "config" not in cls.__dict__, f"{name} hand-writes config(); it is derived from the fields"


@pytest.mark.parametrize("spec", CONFIDENCE)
def test_registry_verifiers_conform(spec):
    verifier = resolve(spec)
    assert isinstance(verifier, Verifier)
    assert isinstance(VerifierStepScorer(verifier), StepScorer)


def test_prm_verifiers_conform():
    from tts.testbed import PRM_DIR
    from tts.verifiers.prm import TokenLogitPRM

    prm = TokenLogitPRM(str(PRM_DIR))  # not loaded until it scores
    assert isinstance(prm, Verifier) and isinstance(PRMStepScorer(prm), StepScorer)


def test_default_strategy_objects_build_and_hash():
    for name, cls in STRATEGIES.items():
        from tts.strategies import create

        strategy = create(name, 4 if name != "deepconf" else 8, SamplingParams())
        assert strategy.config()["strategy"] == strategy.name


def test_prms_are_step_verifiers_and_outcome_verifiers_are_not():
    from tts.testbed import PRM_DIR
    from tts.verifiers.base import StepVerifier
    from tts.verifiers.prm import TokenLogitPRM

    assert isinstance(TokenLogitPRM(str(PRM_DIR)), StepVerifier)
    assert not isinstance(resolve("confidence_mean"), StepVerifier)
