"""Train the testbed's probe step scorer: a small head on the policy's own hidden states, labelled by the
exact checker (tts/testbed/probe, ``--step-scorer probe``).

Data, as for the trained PRM (train_prm.py's own functions): the policy's samples of training problems
of every level at two temperatures, and controlled mistakes (a right solution cut after a random step,
half the time ending in a plausible wrong step instead), each step labelled by
tts.data.stepwise; only the steps up to the first wrong one are used (the later ones are wrong by
definition, and training on them teaches position, not content). Never an evaluation problem.

Features (tts.verifiers.probe.step_features): the policy, teacher-forced over the question and the
steps in its own layout (the input the probe verifier builds, TokenLogitPRM.encode), gives each step

* four numbers from its final hidden states through its own LM head: the lowest and mean
  log-probability of the step's tokens, the lowest with the line break that ends the step, and that
  line break's own. This is where the policy's knowledge of a step is: it writes a wrong digit where it
  was unsure of it. Read without training (the lowest probability alone), it ranks siblings at about
  0.85 on the validation split;
* its hidden states at the last token of the step, the line break the policy wrote to end it: the first
  position that has seen the whole step, and where the policy decides what comes next. Alone (a first
  version read only these, at every layer, with a logistic regression or an MLP) they rank siblings at
  0.54-0.59 and pooled steps at 0.55-0.60; the state there is about the next step, not whether this one
  was right. Read at every token of the step (trained on train_prm's per-token labels, a step scored
  by its lowest token) no better: 0.49-0.56.

Which hidden states join the four numbers (none, one layer or two) and whether a logistic regression or
a one-hidden-layer MLP reads them is chosen on a validation split of the training problems (policy
samples only, by sibling AUROC, the ranking beam search needs); the table of candidates goes into
probe.json. The chosen head is then refitted on all training data, seeded. About 1.5 CPU minutes (most
of it sampling the policy).

    .venv/bin/python experiments/testbed/train_probe.py
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

import common
from common import stepwise
from evaluate_prm import prm_metrics
from train_prm import PRM_OPTIONS, training_samples

#: the tagged layout the probe reads (the trained PRM's: the policy's own prompt and one step per line)
LAYOUT = {k: PRM_OPTIONS[k] for k in ("question_prefix", "question_separator", "step_tag", "step_join", "step_separator")}
#: (hidden states, MLP width) tried on the validation split ([]: the log-probability features alone)
CANDIDATES = [([], 0), ([1], 0), ([2], 0), ([3], 0), ([4], 0), ([2, 4], 0), ([], 16), ([2], 16)]
#: every hidden state of the testbed policy (embeddings, four layers): computed once, sliced per candidate
ALL_LAYERS = [0, 1, 2, 3, 4]


def encode(encoder, rows):
    """Per sample: (ids, step positions, question length) exactly as the probe verifier builds its input."""
    out = []
    for s in rows:
        problem = stepwise.problem(s["level"], 0, s["expression"])
        ids, positions = encoder.encode(problem, s["text"])
        assert len(positions) == len(s["labels"]), s
        out.append((ids, positions, len(encoder._question_ids(problem))))
    return out


def judged(samples, states):
    """(features [steps, all features], labels) of the steps up to each sample's first wrong one."""
    import torch

    feats, labels = [], []
    for s, h in zip(samples, states):
        for i, right in stepwise.judged_steps(len(s["labels"]), s["first_wrong"]):
            feats.append(h[i])
            labels.append(right)
    return torch.stack(feats), labels


def flat(feats, layers):
    """The columns a probe reading ``layers`` sees, from features of ALL_LAYERS."""
    from tts.verifiers.probe import LOGPROB_FEATURES

    n, hidden = len(LOGPROB_FEATURES), (feats.shape[1] - len(LOGPROB_FEATURES)) // len(ALL_LAYERS)
    cols = list(range(n)) + [n + ALL_LAYERS.index(lay) * hidden + j for lay in layers for j in range(hidden)]
    return feats[:, cols]


def scored_records(tensors, layers, samples, states):
    """evaluate_prm records (problem, first wrong step, every step's score) of held-out samples."""
    import torch

    from tts.verifiers.probe import head_forward

    head = {k: torch.as_tensor(v) for k, v in tensors.items()}
    out = []
    for s, h in zip(samples, states):
        scores = torch.sigmoid(head_forward(head, flat(h, layers))).tolist()
        out.append({"problem": s["expression"], "first_wrong": s["first_wrong"], "scores": scores, "level": s["level"]})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", type=Path, default=common.POLICY_DIR)
    ap.add_argument("--out", type=Path, default=common.PROBE_DIR)
    ap.add_argument("--per-level", type=int, default=100, help="training problems per level the policy samples")
    ap.add_argument("--k", type=int, default=4, help="policy samples per problem and temperature")
    ap.add_argument("--mistakes", type=int, default=600, help="controlled-mistake solutions per level")
    ap.add_argument("--val", type=float, default=0.25, help="share of the sampled problems kept for choosing the head")
    ap.add_argument("--epochs", type=int, default=400)
    ap.add_argument("--samples", type=Path, default=None,
                    help="JSON file of the training samples: read if it exists, else written after sampling")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    common.setup(args.seed)
    import torch

    from tts.verifiers.prm import TokenLogitPRM
    from tts.verifiers.probe import fit, probe_features, save_folder

    started = time.time()
    model, tok = common.load_policy(args.policy)
    sampled, made = training_samples(model, tok, args, common.held_out())
    print(f"{len(sampled)} policy samples, {len(made)} controlled mistakes ({time.time() - started:.0f} s)", flush=True)

    # validation: the policy samples of a share of the problems (whole problems, so siblings stay together)
    problems = sorted({s["expression"] for s in sampled})
    random.Random(f"probe-val:{args.seed}").shuffle(problems)
    val_set = set(problems[:int(len(problems) * args.val)])
    train = [s for s in sampled if s["expression"] not in val_set] + made
    val = [s for s in sampled if s["expression"] in val_set]

    encoder = TokenLogitPRM(str(args.policy), device="cpu", **LAYOUT)  # the verifier's own encoder
    train_states = probe_features(model, ALL_LAYERS, encode(encoder, train))
    val_states = probe_features(model, ALL_LAYERS, encode(encoder, val))
    feats, labels = judged(train, train_states)
    print(f"{len(labels)} training steps, {labels.count(False) / len(labels):.1%} wrong; "
          f"{len(val)} validation samples ({time.time() - started:.0f} s)", flush=True)

    table = []
    for layers, hidden in CANDIDATES:
        t = time.time()
        tensors = fit(flat(feats, layers), labels, hidden=hidden, epochs=args.epochs, seed=args.seed)
        records = scored_records(tensors, layers, val, val_states)
        per_level = [prm_metrics([r for r in records if r["level"] == lv], 0.5)["sibling_auroc"] for lv in stepwise.LEVELS]
        per_level = [x for x in per_level if x is not None]
        m = prm_metrics(records, 0.5)
        row = {"layers": layers, "hidden": hidden, "sibling_auroc": round(m["sibling_auroc"], 4),
               "sibling_auroc_level_mean": round(sum(per_level) / len(per_level), 4),
               "step_auroc": round(m["step_auroc"], 4), "f1": round(m["f1"], 4), "seconds": round(time.time() - t, 1)}
        table.append(row)
        print(row, flush=True)
    best = max(table, key=lambda r: (r["sibling_auroc"], -len(r["layers"]), -r["hidden"]))
    layers, hidden = best["layers"], best["hidden"]
    val_feats, val_labels = judged(val, val_states)
    tensors = fit(torch.cat([flat(feats, layers), flat(val_feats, layers)]), labels + val_labels,
                  hidden=hidden, epochs=args.epochs, seed=args.seed)
    policy = os.path.relpath(args.policy.resolve(), args.out.resolve())
    settings = {"policy": policy, "layers": layers, "hidden": hidden, **LAYOUT, "label": "testbed_probe",
                "training": {"what": "probe of the testbed policy's token log-probabilities and hidden states at the last token of each step",
                             "policy_samples": len(sampled), "mistake_samples": len(made),
                             "training_steps": len(labels) + len(val_labels),
                             "wrong_steps": labels.count(False) + val_labels.count(False),
                             "chosen_on": f"{len(val)} policy samples of {len(val_set)} held-out training problems",
                             "candidates": table,
                             "args": {k: str(v) for k, v in vars(args).items() if k not in ("out", "policy", "samples")}}}
    save_folder(args.out, tensors, settings)
    print(f"chose layers {layers}, hidden {hidden}; saved {args.out} in {time.time() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
