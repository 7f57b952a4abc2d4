"""The its_hub side of benchmarks/peers.py. Runs in its own environment with its_hub 1.2.0 installed
(a peer to compare with, not a dependency of tts), so it imports nothing from tts.

Reads a JSON job on stdin ({url, model, problems: [{id, messages}], budget, temperature, max_tokens,
concurrency}); solves the problems one after another with its_hub's SelfConsistency, voting on the
last integer of each response; prints {wall, answers: {id: response text}} as JSON.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time


def last_integer(text: str) -> str:
    found = re.findall(r"-?\d+", text or "")
    return found[-1] if found else ""


async def solve_all(job: dict) -> dict:
    from its_hub import OpenAICompatibleLanguageModel, SelfConsistency

    lm = OpenAICompatibleLanguageModel(endpoint=job["url"], api_key="none", model_name=job["model"],
                                       temperature=job["temperature"], max_tokens=job["max_tokens"],
                                       max_concurrency=job["concurrency"])
    sc = SelfConsistency(consistency_space_projection_func=last_integer)
    answers = {}
    started = time.perf_counter()
    for problem in job["problems"]:
        response = await sc.ainfer(lm, problem["messages"], budget=job["budget"], return_response_only=True)
        answers[problem["id"]] = response.get("content") if isinstance(response, dict) else str(response)
    return {"wall": time.perf_counter() - started, "answers": answers}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(solve_all(json.load(sys.stdin)))))
