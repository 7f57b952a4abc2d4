"""Train the testbed's tiny policy: a 1M-parameter Llama that solves tts.data.stepwise problems step by step.

Plain supervised fine-tuning on canonical solutions of every level (loss on the solution only), seeded,
on one CPU thread (common.THREADS). It is kept deliberately short of perfect (few steps, a small model): its errors grow
with the number of steps and the size of the numbers, so sampling more and searching better have room
to pay off. Writes a bf16 HF folder (default tts/testbed/policy).

The committed policy took two runs (experiments/testbed/build.py runs both): ``--steps 1500 --seed 0``
from scratch, then ``--init <that folder> --steps 2000 --seed 1``; about 25 minutes on one core of a
busy 2-core machine. A small char-level model first learns the layout of a solution and only later
to copy the expression from line to line (the loss sits near 1.0-1.2 for a thousand steps, then falls).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import common
from common import stepwise

ARCH = dict(hidden=128, layers=4, heads=2, intermediate=512)  # head_dim 64: vLLM's CPU attention takes it
#: how tts.testbed.load_prm reads the verifier (the policy trained further): a LikelihoodPRM on the
#: policy's own layout, a step scored by its least likely token
VERIFIER_OPTIONS = {"kind": "likelihood", "format": "tagged", "question_prefix": "User: ",
                    "question_separator": "\nAssistant: ", "step_tag": "\n", "step_join": "", "step_separator": "\n",
                    "reduce": "min", "label": "testbed_verifier"}


def encode_example(tok, expr: str) -> tuple[list[int], list[int]]:
    """Token ids of prompt + solution + EOS, and labels (-100 on the prompt)."""
    prompt = tok(common.prompt_text(expr), add_special_tokens=False)["input_ids"]
    answer = tok(stepwise.solution(expr), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return prompt + answer, [-100] * len(prompt) + answer


def batch_tensors(examples, pad_id: int):
    import torch

    width = max(len(x) for x, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (x, y) in enumerate(examples):
        ids[i, :len(x)] = torch.tensor(x)
        labels[i, :len(y)] = torch.tensor(y)
        mask[i, :len(x)] = 1
    return ids, labels, mask


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--pool", type=int, default=20000, help="training expressions per level")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=common.POLICY_DIR)
    ap.add_argument("--init", type=Path, default=None, help="start from this policy folder (a second phase)")
    ap.add_argument("--verifier", action="store_true",
                    help="write the folder as the testbed verifier: a tts_prm.json that reads it as a LikelihoodPRM")
    args = ap.parse_args()

    common.setup(args.seed)
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    tok = common.build_tokenizer()
    if args.init is not None:
        model = LlamaForCausalLM.from_pretrained(str(args.init), dtype=torch.float32)
    else:
        model = LlamaForCausalLM(common.llama_config(tok, **ARCH))
    exclude = common.held_out()
    levels = list(stepwise.LEVELS)
    pools = {lvl: common.train_expressions(lvl, args.pool, args.seed, exclude) for lvl in levels}
    rng = random.Random(f"policy-batches:{args.seed}")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    warmup = max(1, args.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps))))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"policy: {n_params:,} parameters, {args.steps} steps of {args.batch}", flush=True)
    started, log, recent = time.time(), [], []
    model.train()
    for step in range(args.steps):
        pool = pools[rng.choice(levels)]  # one level per batch: little padding
        exprs = [rng.choice(pool) for _ in range(args.batch)]
        ids, labels, mask = batch_tensors([encode_example(tok, e) for e in exprs], tok.pad_token_id)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        recent.append(loss.item())
        if step % 50 == 0 or step == args.steps - 1:
            log.append({"step": step, "loss": round(sum(recent) / len(recent), 4),
                        "seconds": round(time.time() - started, 1)})
            recent = []
            print(log[-1], flush=True)
    model.eval()
    model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                               pad_token_id=tok.pad_token_id)
    info = {"what": "testbed policy for tts.data.stepwise (steps2..steps6)", "parameters": n_params,
            "arch": ARCH, "args": {k: str(v) for k, v in vars(args).items() if k != "out"}, "log": log}
    if args.init is not None and args.init.is_absolute():
        info["args"]["init"] = args.init.name  # a temporary folder's path says nothing on another machine
    files = {"training.json": json.dumps(info, indent=1) + "\n"}
    if args.verifier:
        files[common.PRM_CONFIG] = json.dumps(VERIFIER_OPTIONS, indent=1) + "\n"
    common.save_model(model, tok, args.out, files)
    print(f"saved {args.out} in {time.time() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
