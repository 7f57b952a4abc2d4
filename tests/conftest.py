"""Shared fixtures. Real-model fixtures are session-scoped: one engine per test session."""

from __future__ import annotations

import asyncio
import json

from hypothesis import settings as hypothesis_settings

# Property tests draw the same examples on every run (CI must not pass or fail by chance); the
# examples still come from hypothesis's search, and the profile "explore" draws new ones locally:
# HYPOTHESIS_PROFILE=explore pytest ...
hypothesis_settings.register_profile("ci", derandomize=True)
hypothesis_settings.register_profile("explore", derandomize=False)
import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("TTS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def run(coro):
    """Run a coroutine to completion (tests use plain asyncio, no plugin needed)."""
    return asyncio.run(coro)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared benchmark data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def embedded_model_dir() -> str:
    pytest.importorskip("transformers")
    from tts.backends import embedded

    return str(embedded.model_dir())


@pytest.fixture(scope="session")
def hf_backend(embedded_model_dir):
    from tts.backends.hf import HFBackend

    return HFBackend(embedded_model_dir)


@pytest.fixture
def script(tmp_path):
    """A scripted-backend reply file keyed by the built-in add1 prompts' shared instruction: every sample
    answers "9" or "8"."""
    path = tmp_path / "script.json"
    path.write_text(json.dumps({"Reply with just the number": ["9", "The answer is 8.", "9"]}))
    return str(path)


def pytest_configure(config):
    import os

    hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
