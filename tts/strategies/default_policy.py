"""The packaged default routing policy for ``--strategy auto``: fitted by experiments/compute_optimal.py
for the embedded SmolLM2-135M-Instruct on the built-in arithmetic levels (recipes/compute-optimal-embedded.yaml).
Generated; for another model or task fit your own policy and pass it with --routing-policy."""

POLICY = {
 "format": "tts-routing-policy",
 "version": 1,
 "unit": "generated_tokens",
 "predictor": {
  "probes": 2,
  "feature": "agreement",
  "verifier": "confidence_mean",
  "edges": [
   0.75
  ]
 },
 "params": {
  "temperature": 0.7,
  "top_p": 1.0,
  "max_tokens": 48
 },
 "meta": {
  "model": "embedded",
  "backend": "hf",
  "datasets": [
   "add1",
   "mul1",
   "add2"
  ],
  "train_problems": 45,
  "command": "python experiments/compute_optimal.py --config recipes/compute-optimal-embedded.yaml --figures docs --write-default-policy tts/strategies/default_policy.py",
  "created": "2026-11-23"
 },
 "rules": [
  {
   "bin": 0,
   "budget": 24.0,
   "strategy": "weighted_majority",
   "n": 2,
   "options": {},
   "accuracy": 0.664062,
   "cost": 41.028646,
   "over_budget": True
  },
  {
   "bin": 0,
   "budget": 34.0,
   "strategy": "weighted_majority",
   "n": 2,
   "options": {},
   "accuracy": 0.664062,
   "cost": 41.028646,
   "over_budget": True
  },
  {
   "bin": 0,
   "budget": 47.0,
   "strategy": "weighted_majority",
   "n": 2,
   "options": {},
   "accuracy": 0.664062,
   "cost": 41.028646,
   "over_budget": False
  },
  {
   "bin": 0,
   "budget": 67.0,
   "strategy": "weighted_majority",
   "n": 2,
   "options": {},
   "accuracy": 0.664062,
   "cost": 41.028646,
   "over_budget": False
  },
  {
   "bin": 0,
   "budget": 95.0,
   "strategy": "weighted_majority",
   "n": 4,
   "options": {},
   "accuracy": 0.742188,
   "cost": 82.157552,
   "over_budget": False
  },
  {
   "bin": 0,
   "budget": 134.0,
   "strategy": "weighted_majority",
   "n": 4,
   "options": {},
   "accuracy": 0.742188,
   "cost": 82.157552,
   "over_budget": False
  },
  {
   "bin": 0,
   "budget": 190.0,
   "strategy": "beam_search",
   "n": 4,
   "options": {
    "expansions": 2,
    "step_mode": "tokens",
    "step_tokens": 8
   },
   "accuracy": 0.833333,
   "cost": 135.833333,
   "over_budget": False
  },
  {
   "bin": 0,
   "budget": 268.0,
   "strategy": "beam_search",
   "n": 4,
   "options": {
    "expansions": 2,
    "step_mode": "tokens",
    "step_tokens": 8
   },
   "accuracy": 0.833333,
   "cost": 135.833333,
   "over_budget": False
  },
  {
   "bin": 0,
   "budget": 379.0,
   "strategy": "beam_search",
   "n": 4,
   "options": {
    "expansions": 2,
    "step_mode": "tokens",
    "step_tokens": 8
   },
   "accuracy": 0.833333,
   "cost": 135.833333,
   "over_budget": False
  },
  {
   "bin": 1,
   "budget": 24.0,
   "strategy": "weighted_majority",
   "n": 2,
   "options": {},
   "accuracy": 0.393466,
   "cost": 45.362216,
   "over_budget": True
  },
  {
   "bin": 1,
   "budget": 34.0,
   "strategy": "weighted_majority",
   "n": 2,
   "options": {},
   "accuracy": 0.393466,
   "cost": 45.362216,
   "over_budget": True
  },
  {
   "bin": 1,
   "budget": 47.0,
   "strategy": "weighted_majority",
   "n": 2,
   "options": {},
   "accuracy": 0.393466,
   "cost": 45.362216,
   "over_budget": False
  },
  {
   "bin": 1,
   "budget": 67.0,
   "strategy": "weighted_majority",
   "n": 2,
   "options": {},
   "accuracy": 0.393466,
   "cost": 45.362216,
   "over_budget": False
  },
  {
   "bin": 1,
   "budget": 95.0,
   "strategy": "best_of_n",
   "n": 4,
   "options": {},
   "accuracy": 0.502841,
   "cost": 90.618845,
   "over_budget": False
  },
  {
   "bin": 1,
   "budget": 134.0,
   "strategy": "best_of_n",
   "n": 4,
   "options": {},
   "accuracy": 0.502841,
   "cost": 90.618845,
   "over_budget": False
  },
  {
   "bin": 1,
   "budget": 190.0,
   "strategy": "weighted_majority",
   "n": 8,
   "options": {},
   "accuracy": 0.586648,
   "cost": 180.405303,
   "over_budget": False
  },
  {
   "bin": 1,
   "budget": 268.0,
   "strategy": "weighted_majority",
   "n": 8,
   "options": {},
   "accuracy": 0.586648,
   "cost": 180.405303,
   "over_budget": False
  },
  {
   "bin": 1,
   "budget": 379.0,
   "strategy": "majority",
   "n": 16,
   "options": {},
   "accuracy": 0.619792,
   "cost": 360.363636,
   "over_budget": False
  }
 ]
}
