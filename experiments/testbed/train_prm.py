"""Train the testbed's tiny process reward model on the policy's own samples, labelled by the exact checker.

1. The policy (tts/testbed/policy) samples solutions to training problems of every level (never the
   evaluation problems), at two temperatures so there are enough mistakes to learn from.
2. tts.data.stepwise.check_steps labels every step (steps after the first wrong one are wrong).
3. A copy of the policy is fine-tuned as a token-logit PRM in Math-Shepherd's tagged format, the input
   built by tts.verifiers.prm.TokenLogitPRM.encode itself (question, then each step followed by the tag
   " ки"): cross-entropy of {"+", "-"} at every tag. The folder's tts_prm.json holds the verifier's
   settings, so ``tts.testbed.load_prm(folder)`` (and ``--prm``) load it with the PRM verifier unchanged.

    .venv/bin/python experiments/testbed/train_prm.py               # about 12 minutes on one core
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

#: TokenLogitPRM settings written to the PRM folder's tts_prm.json
PRM_OPTIONS = {"format": "tagged", "step_tag": " ки", "good_token": "+", "bad_token": "-",
               "step_separator": "\n", "question_separator": "\n", "label": "testbed_prm"}


def labelled_samples(model, tok, per_level: int, k: int, temperatures, seed: int, exclude) -> list[dict]:
    """Policy samples of training problems with their exact step labels (duplicates dropped)."""
    out, seen = [], set()
    for level in stepwise.LEVELS:
        exprs = common.train_expressions(level, per_level, seed + 1000, exclude)
        for t in temperatures:
            texts = common.sample_solutions(model, tok, exprs, k, t, common.hash_seed(seed, level, t))
            for expr, samples in zip(exprs, texts):
                for text in samples:
                    if (expr, text) in seen:
                        continue
                    seen.add((expr, text))
                    lab = stepwise.StepLabels.of(expr, text)
                    if lab.steps:
                        out.append({"level": level, "expression": expr, "text": text,
                                    "labels": list(lab.labels), "first_wrong": lab.first_wrong})
    return out


def encode_all(prm, samples):
    """PRM inputs exactly as the verifier builds them: (ids, tag positions, labels)."""
    rows = []
    for s in samples:
        problem = stepwise.problem(s["level"], 0, s["expression"])
        ids, positions = prm.encode(problem, s["text"])
        assert len(positions) == len(s["labels"]), (s, positions)
        rows.append((ids, positions, s["labels"]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", type=Path, default=common.POLICY_DIR)
    ap.add_argument("--out", type=Path, default=common.PRM_DIR)
    ap.add_argument("--per-level", type=int, default=200, help="training problems per level")
    ap.add_argument("--k", type=int, default=4, help="samples per problem and temperature")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    common.setup(args.seed)
    import torch
    from tts.verifiers.prm import TokenLogitPRM

    started = time.time()
    model, tok = common.load_policy(args.policy)
    samples = labelled_samples(model, tok, args.per_level, args.k, (0.7, 1.2), args.seed, common.held_out())
    steps_total = sum(len(s["labels"]) for s in samples)
    wrong = sum(not x for s in samples for x in s["labels"])
    print(f"{len(samples)} samples, {steps_total} steps, {wrong / steps_total:.1%} wrong steps, "
          f"{sum(s['first_wrong'] is not None for s in samples) / len(samples):.1%} samples with an error "
          f"({time.time() - started:.0f} s)", flush=True)

    # The verifier's own encoder, reading the policy folder's tokenizer (same tokenizer as the PRM's).
    prm = TokenLogitPRM(str(args.policy), device="cpu", **PRM_OPTIONS)
    rows = encode_all(prm, samples)
    good, bad = tok.convert_tokens_to_ids("+"), tok.convert_tokens_to_ids("-")
    # Sequences with an error are rarer than right ones: weight the two step classes equally.
    w_bad = (steps_total - wrong) / max(1, wrong)
    rng = random.Random(f"prm-batches:{args.seed}")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    warmup = max(1, args.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps))))
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
    buckets = [order[i:i + args.batch] for i in range(0, len(order), args.batch)]  # similar lengths together
    log = []
    for step in range(args.steps):
        group = [rows[i] for i in rng.choice(buckets)]
        width = max(len(r[0]) for r in group)
        ids = torch.full((len(group), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for b, (x, _, _) in enumerate(group):
            ids[b, :len(x)] = torch.tensor(x)
            mask[b, :len(x)] = 1
        logits = model(input_ids=ids, attention_mask=mask).logits
        picked, target = [], []
        for b, (_, pos, labels) in enumerate(group):
            picked.append(logits[b, pos][:, [good, bad]])
            target += [0 if ok else 1 for ok in labels]
        picked = torch.cat(picked)
        target = torch.tensor(target)
        loss = torch.nn.functional.cross_entropy(picked, target, weight=torch.tensor([1.0, w_bad]))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % 50 == 0 or step == args.steps - 1:
            acc = (picked.argmax(-1) == target).float().mean().item()
            log.append({"step": step, "loss": round(loss.item(), 4), "step_acc": round(acc, 3),
                        "seconds": round(time.time() - started, 1)})
            print(log[-1], flush=True)
    model.eval()
    info = {"what": "testbed PRM for tts.data.stepwise, fine-tuned from the testbed policy",
            "samples": len(samples), "steps": steps_total, "wrong_steps": wrong,
            "args": {k: str(v) for k, v in vars(args).items() if k not in ("out", "policy")}, "log": log}
    common.save_model(model, tok, args.out, {"training.json": json.dumps(info, indent=1) + "\n",
                                             common.PRM_CONFIG: json.dumps(PRM_OPTIONS, indent=1) + "\n"})
    print(f"saved {args.out} in {time.time() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
