"""The packaged default routing policy for ``--strategy auto`` (placeholder until the sweep writes it)."""

POLICY = {
    "format": "tts-routing-policy", "version": 1, "unit": "generated_tokens",
    "predictor": {"probes": 2, "feature": "mean_score", "verifier": "confidence_mean", "edges": [0.5]},
    "params": {}, "meta": {"note": "placeholder"},
    "rules": [
        {"bin": b, "budget": budget, "strategy": "majority", "n": n, "options": {}}
        for b in (0, 1) for budget, n in ((48, 2), (96, 4), (192, 8), (384, 16))
    ],
}
