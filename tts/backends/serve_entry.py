"""``python -m tts.backends.serve_entry ARGS``: vLLM's OpenAI-compatible server whose processes die
with the process that started it.

vLLM's API server starts its engine core with multiprocessing's "spawn", which imports the parent's
main module in the child: with this module as the main one, that import is what makes every engine
process ask the kernel to kill it when its parent dies (tts.lifeline), so a killed test run or
benchmark leaves no server or engine behind. The server itself is told the same by the Popen that
starts it (tts.backends.vllm_server).
"""

import runpy

from tts import lifeline

lifeline.arm()
lifeline.die_with_parent()

if __name__ == "__main__":
    # alter_sys=False keeps this module as __main__, so spawned engine processes import it again
    runpy.run_module("vllm.entrypoints.openai.api_server", run_name="__main__", alter_sys=False)
