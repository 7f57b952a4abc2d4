"""Train the testbed's tiny process reward model, labelled by the exact checker.

Two kinds of training solution, both for training problems of every level (never evaluation problems):

1. The policy's own samples (tts/testbed/policy, two temperatures), so the PRM sees the mistakes it
   will have to catch in search. Each step is labelled by tts.data.stepwise.check_steps.
2. Controlled mistakes: a correct solution cut after a random step, half the time with that step
   replaced by a plausible wrong one (stepwise.wrong_step: near-miss arithmetic, precedence ignored,
   a miscopied number or operator, a dropped term, a wrong or premature answer). Right and wrong steps
   then appear equally often at every position, so the only way to tell them apart is their content.

The model is the policy, frozen, with ``--extra-layers`` new decoder layers on top that start as the
identity. The policy already knows which digit or operand should come next (its own lowest token
probability in a step tells a wrong step from a right one with AUROC 0.88 on held-out samples), but
that knowledge is finished only in its last layer; reading it takes two more hops (compare each token
with what the position before it predicted, then gather a step's mismatches where it is scored), which
the new layers learn. A fine-tuned copy of the policy without them stayed at chance for 600 steps.

The input is laid out exactly as the policy reads a problem and writes a solution (PRM_OPTIONS: the
prompt of tts.backends.base.render_chat_fallback, one step per line), and each step is scored at the
line break that ends it, by the probability of "+" against "-" there; the input is built by
tts.verifiers.prm.TokenLogitPRM.encode itself.

Loss is taken at every token up to the end of the first wrong step, not only where steps are scored:
a token is labelled right while the step written so far can still become a right step, wrong from the
token where it cannot (the digit that breaks the sum), so the PRM is told where a step goes wrong, not
only that it did (``--tag-weight`` weighs the scored positions more). Nothing is trained after the
first wrong step: those steps are wrong by definition, and the policy's later steps are mostly wrong,
so training on them teaches the PRM that late steps are bad rather than what a bad step looks like
(the first testbed PRM, trained so, scored by position: first-wrong-step F1 0.19). Combine its step
scores with ``min`` (``--aggregation min``), which reads it the same way. Right and wrong labels are
weighted equally; progress is measured on held-out policy samples while it trains.

The folder's tts_prm.json holds the verifier's settings, so ``tts.testbed.load_prm(folder)`` (and
``--prm``) load it with the PRM verifier unchanged.

What it does not learn: ranking siblings (a right and a wrong step at the same index of the same
problem; evaluate_prm's sibling AUROC is about 0.55), which is what beam search needs. It leans on how
hard a problem and a line look. Tried, none above 0.65 (docs/performance.md): a ranking loss between
siblings; the policy's token probabilities as an extra target at every token and tag; the policy
trained further (tts/testbed/verifier) as the frozen base; unfreezing the base. That verifier's own
token probabilities rank siblings at 0.96: the knowledge is in the base, but two new layers do not learn
to compare a written token with what the position before it predicted. Search uses the verifier.

    .venv/bin/python experiments/testbed/train_prm.py
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
from evaluate_prm import prm_metrics

#: TokenLogitPRM settings written to the PRM folder's tts_prm.json
#: The input is laid out exactly as the policy reads a problem and writes its solution (the prompt of
#: tts.backends.base.render_chat_fallback, one step per line), and each step is scored at the line
#: break that ends it, so the fine-tuned policy reads its own format and no tag token is new to it.
PRM_OPTIONS = {"format": "tagged", "question_prefix": "User: ", "question_separator": "\nAssistant: ",
               "step_tag": "\n", "step_join": "", "good_token": "+", "bad_token": "-",
               "step_separator": "\n", "label": "testbed_prm"}


def labelled(level: str, expr: str, text: str) -> dict | None:
    lab = stepwise.StepLabels.of(expr, text)
    if not lab.steps:
        return None
    return {"level": level, "expression": expr, "text": text, "labels": list(lab.labels),
            "first_wrong": lab.first_wrong}


def policy_samples(model, tok, per_level: int, k: int, temperatures, seed: int, exclude) -> list[dict]:
    """Policy samples of training problems with their exact step labels (duplicates dropped)."""
    out, seen = [], set()
    for level in stepwise.LEVELS:
        exprs = common.train_expressions(level, per_level, seed + 1000, exclude)
        for t in temperatures:
            texts = common.sample_solutions(model, tok, exprs, k, t, common.hash_seed(seed, level, t))
            for expr, samples in zip(exprs, texts):
                for text in samples:
                    if (expr, text) not in seen:
                        seen.add((expr, text))
                        row = labelled(level, expr, text)
                        if row:
                            out.append(row)
    return out


def training_samples(model, tok, args, exclude) -> tuple[list[dict], list[dict]]:
    """The policy's samples and the controlled mistakes a PRM or probe trains on: read from
    ``args.samples`` when that file exists, else drawn (and written there when it is given), so several
    trainings on one policy sample once."""
    if args.samples and args.samples.is_file():
        cached = json.loads(args.samples.read_text())
        return cached["sampled"], cached["made"]
    sampled = policy_samples(model, tok, args.per_level, args.k, (0.7, 1.2), args.seed, exclude)
    made = mistake_samples(args.mistakes, args.seed, exclude)
    if args.samples:
        args.samples.write_text(json.dumps({"sampled": sampled, "made": made}))
    return sampled, made


def mistake_samples(per_level: int, seed: int, exclude) -> list[dict]:
    """Correct solutions cut after a random step; half of them end in a wrong step instead."""
    rng = random.Random(f"prm-mistakes:{seed}")
    out = []
    for level in stepwise.LEVELS:
        for expr in common.train_expressions(level, per_level, seed + 2000, exclude):
            steps = stepwise.split_solution(stepwise.solution(expr))
            states = [expr] + steps[:-1]
            cut = rng.randrange(len(steps))
            prefix = steps[:cut]
            last = steps[cut]
            if rng.random() < 0.5:
                for _ in range(10):
                    wrong = stepwise.wrong_step(states[cut], rng)
                    if wrong is not None:
                        last = wrong
                        break
            row = labelled(level, expr, "\n".join(prefix + [last]))
            if row:
                out.append(row)
    return out


def token_labels(tok, expr: str, steps: list[str], step_labels: list[bool]) -> list[list[bool]]:
    """Per token of each step: can the step written so far still become a right step? False from the
    token where it goes wrong (the digit that does not match the sum, the miscopied operand) on. The
    tag after the step keeps the checker's label."""
    state = stepwise.tokens(expr)
    out = []
    for step, ok in zip(steps, step_labels):
        ids = tok(step, add_special_tokens=False)["input_ids"]
        if ok:
            out.append([True] * len(ids))
        else:
            valid = stepwise.right_steps(state)
            row, good = [], True
            for i in range(len(ids)):
                good = good and any(v.startswith(tok.decode(ids[:i + 1])) for v in valid)
                row.append(good)
            out.append(row)
            break
        state = stepwise.tokens(step) or state
    return out


def encode_all(prm, tok, samples):
    """PRM inputs exactly as the verifier builds them, with a label at every token of the solution up to
    and including the tag of the first wrong step: (ids, positions, labels)."""
    rows = []
    for s in samples:
        problem = stepwise.problem(s["level"], 0, s["expression"])
        ids, tags = prm.encode(problem, s["text"])
        assert len(tags) == len(s["labels"]), (s, tags)
        steps = stepwise.split_solution(s["text"])
        positions, labels = [], []
        for k, per_token in enumerate(token_labels(tok, s["expression"], steps, s["labels"])):
            start = tags[k] - len(per_token)
            assert start > (tags[k - 1] if k else 0), (s, k)
            positions += list(range(start, tags[k] + 1))
            labels += per_token + [s["labels"][k]]
        rows.append((ids, positions, labels, [p in tags for p in positions]))
    return rows


def add_layers(model, count: int):
    """Append ``count`` decoder layers that start as the identity (zero output projections), so the
    model computes exactly what it did until training moves them."""
    import copy

    import torch

    layers = model.model.layers
    for _ in range(count):
        layer = copy.deepcopy(layers[-1])
        layer.self_attn.layer_idx = len(layers)
        with torch.no_grad():
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        layers.append(layer)
    model.config.num_hidden_layers = len(layers)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[0]] * len(layers)
    return model


def padded(group, pad_id: int):
    import torch

    width = max(len(r[0]) for r in group)
    ids = torch.full((len(group), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, (x, *_) in enumerate(group):
        ids[b, :len(x)] = torch.tensor(x)
        mask[b, :len(x)] = 1
    return ids, mask


def held_out_scores(model, tok, eval_rows, good: int, bad: int) -> dict:
    """Step AUROC (pooled and among siblings) per level of the model being trained, on held-out policy
    samples (evaluate_prm's problems). Per level, because search compares steps of one problem: pooled
    over levels, a PRM that scores the long expressions of steps5/6 (mostly wrong) a little higher than
    steps2's looks worse than chance while it ranks the steps of each level well."""
    import torch

    model.eval()
    scores = []
    with torch.inference_mode():
        for start in range(0, len(eval_rows), 64):
            chunk = eval_rows[start:start + 64]
            ids, mask = padded([(r["ids"],) for r in chunk], tok.pad_token_id)
            logits = model(input_ids=ids, attention_mask=mask).logits
            for b, r in enumerate(chunk):
                scores.append(logits[b, r["positions"]][:, [good, bad]].float().softmax(-1)[:, 0].tolist())
    model.train()
    out = {}
    for level in stepwise.LEVELS:
        records = [{"problem": r["problem"], "first_wrong": r["first_wrong"], "scores": sc}
                   for r, sc in zip(eval_rows, scores) if r["level"] == level]
        metrics = prm_metrics(records, 0.5)
        for key, name in (("step_auroc", "auroc"), ("sibling_auroc", "sibling")):
            out[f"{name}_{level}"] = None if metrics[key] is None else round(metrics[key], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", type=Path, default=common.POLICY_DIR)
    ap.add_argument("--out", type=Path, default=common.PRM_DIR)
    ap.add_argument("--per-level", type=int, default=500, help="training problems per level the policy samples")
    ap.add_argument("--k", type=int, default=4, help="policy samples per problem and temperature")
    ap.add_argument("--mistakes", type=int, default=500, help="controlled-mistake solutions per level")
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--tag-weight", type=float, default=5.0,
                    help="loss weight of a step's tag against one of its tokens (the tags are what search reads)")
    ap.add_argument("--extra-layers", type=int, default=2, help="new layers on top of the policy's")
    ap.add_argument("--train-policy-layers", action="store_true",
                    help="train the policy's own layers and embeddings too (default: frozen)")
    ap.add_argument("--samples", type=Path, default=None,
                    help="JSON file of the training samples: read if it exists, else written after sampling "
                         "(several PRM runs on one policy then sample once)")
    ap.add_argument("--eval-problems", type=int, default=30, help="held-out problems per level for progress")
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    common.setup(args.seed)
    import torch
    from tts.verifiers.prm import TokenLogitPRM

    started = time.time()
    model, tok = common.load_policy(args.policy)
    sampled, made = training_samples(model, tok, args, common.held_out())
    samples = sampled + made
    prm = TokenLogitPRM(str(args.policy), device="cpu", **PRM_OPTIONS)  # the verifier's own encoder
    rows = encode_all(prm, tok, samples)
    labels = [x for _, _, ls, _ in rows for x in ls]
    wrong = labels.count(False)
    print(f"{len(sampled)} policy samples + {len(made)} controlled mistakes; {len(labels)} trained steps, "
          f"{wrong / len(labels):.1%} wrong ({time.time() - started:.0f} s)", flush=True)

    eval_rows = []
    for level in stepwise.LEVELS:
        problems = stepwise.generate(level, args.eval_problems, 1)  # evaluate_prm's held-out problems
        texts = common.sample_solutions(model, tok, [p.metadata["expression"] for p in problems], 2, 0.7,
                                        common.hash_seed("prm-progress", level))
        for p, outs in zip(problems, texts):
            for text in outs:
                row = labelled(level, p.metadata["expression"], text)
                if row:
                    ids, positions = prm.encode(p, text)
                    eval_rows.append({**row, "problem": p.id, "ids": ids, "positions": positions})

    base = len(model.model.layers)
    add_layers(model, args.extra_layers)
    if not args.train_policy_layers:
        # The policy's next-token predictions are what the new layers read: keep them intact.
        for p in [*model.model.embed_tokens.parameters(), *model.model.layers[:base].parameters()]:
            p.requires_grad_(False)
    good, bad = tok.convert_tokens_to_ids("+"), tok.convert_tokens_to_ids("-")
    class_weights = torch.tensor([1.0, (len(labels) - wrong) / max(1, wrong)])  # the two classes equally
    rng = random.Random(f"prm-batches:{args.seed}")
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    warmup = max(1, args.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps))))
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
    buckets = [order[i:i + args.batch] for i in range(0, len(order), args.batch)]  # similar lengths together
    log, recent = [], []
    for step in range(args.steps):
        group = [rows[i] for i in rng.choice(buckets)]
        ids, mask = padded(group, tok.pad_token_id)
        logits = model(input_ids=ids, attention_mask=mask).logits
        picked = torch.cat([logits[b, pos][:, [good, bad]] for b, (_, pos, _, _) in enumerate(group)])
        target = torch.tensor([0 if ok else 1 for _, _, ls, _ in group for ok in ls])
        weight = class_weights[target] * torch.tensor(
            [args.tag_weight if is_tag else 1.0 for *_, tags in group for is_tag in tags])
        loss = (torch.nn.functional.cross_entropy(picked, target, reduction="none") * weight).sum() / weight.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        recent.append(loss.item())
        if step % args.eval_every == 0 or step == args.steps - 1:
            entry = {"step": step, "loss": round(sum(recent) / len(recent), 4),
                     **held_out_scores(model, tok, eval_rows, good, bad),
                     "seconds": round(time.time() - started, 1)}
            recent = []
            log.append(entry)
            print(entry, flush=True)
    model.eval()
    info = {"what": "testbed PRM for tts.data.stepwise, fine-tuned from the testbed policy",
            "policy_samples": len(sampled), "mistake_samples": len(made), "trained_steps": len(labels),
            "wrong_steps": wrong, "args": {k: str(v) for k, v in vars(args).items() if k not in ("out", "policy")},
            "log": log}
    common.save_model(model, tok, args.out, {"training.json": json.dumps(info, indent=1) + "\n",
                                             common.PRM_CONFIG: json.dumps(PRM_OPTIONS, indent=1) + "\n"})
    print(f"saved {args.out} in {time.time() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
