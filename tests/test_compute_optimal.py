"""The compute-optimal sweep script end to end on the scripted backend: a recipe in, a policy that
`auto` loads, tables and plots out; a rerun reuses the cached pool and runs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tts.routing import Policy

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def recipe(tmp_path):
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"Reply with just the number": ["9", "The answer is 8.", "9", "12", "no idea"]}))
    path = tmp_path / "recipe.yaml"
    path.write_text(f"""
model: {script}
backend: scripted
dataset: add1
limit: 4
strategy: [auto]
temperature: 0.7
max-tokens: 8
seed: 0
compute_optimal:
  datasets: [add1, add2]
  pool_n: 4
  bootstrap: 4
  revise: {{pairs: [[2, 2]]}}
  tree:
    - {{strategy: beam_search, n: [2], options: {{expansions: 2, step_mode: tokens, step_tokens: 4}}}}
  bins: 2
  probes: 2
  auto_check: [6, 30]
  out: {tmp_path / "out"}
""")
    return path


def sweep(recipe, *extra):
    return subprocess.run([sys.executable, str(REPO / "experiments" / "compute_optimal.py"), "--config", str(recipe), *extra],
                          capture_output=True, text=True, timeout=300, cwd=REPO)


def test_sweep_writes_policy_tables_and_plots(recipe, tmp_path):
    done = sweep(recipe)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "out"
    policy = Policy.load(out / "policy.json")
    assert policy.predictor.probes == 2 and policy.meta["datasets"] == ["add1", "add2"]
    report = (out / "report.md").read_text()
    for heading in ("## Difficulty", "## Every setting", "## Chosen setting", "## Held-out split", "## Cross-fitted",
                    "## `auto` for real"):
        assert heading in report
    assert "revise@2[revisions=2]" in report and "beam_search@2" in report
    summary = json.loads((out / "summary.json").read_text())
    assert {r["budget"] for r in summary["auto"]} == {6, 30}
    assert all(r["max_tokens"] <= r["budget"] for r in summary["auto"])  # hard per-problem cap
    assert (out / "compute_optimal_frontier.png").stat().st_size > 0
    assert (out / "compute_optimal_policies.png").stat().st_size > 0
    # a rerun samples nothing new
    again = sweep(recipe)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "(0 cached)" not in again.stderr and "pool:" not in again.stderr


def test_unknown_section_key_is_one_error_line(recipe):
    recipe.write_text(recipe.read_text() + "  pool_size: 3\n")
    done = sweep(recipe)
    assert done.returncode != 0
    assert "unknown compute_optimal key 'pool_size'" in done.stderr and "Traceback" not in done.stderr


def test_sweep_in_flops_with_a_mean_allocation(recipe, tmp_path):
    """FLOPs budgets by default, a mean policy whose real `auto` runs route by --route-budget, and
    savings with bootstrap intervals in the report."""
    text = recipe.read_text().replace("  auto_check: [6, 30]\n", "  unit: flops\n  allocation: mean\n  resamples: 50\n")
    recipe.write_text(text)
    done = sweep(recipe)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "out"
    policy = Policy.load(out / "policy.json")
    assert policy.unit == "flops" and policy.allocation == "mean"
    report = (out / "report.md").read_text()
    assert "Allocation: mean" in report and "bootstrap interval" in report and "`--route-budget`" in report
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["auto"]) == 3 and all(r["budget"] > 1e3 for r in summary["auto"])  # FLOPs, not tokens
    routes = [row for rows in summary["held_out"].values() for row in rows]
    assert all("vs_best_of_n_flops_interval" in row for row in routes)
    assert all(lo <= hi for row in routes for lo, hi in [row["vs_best_of_n_flops_interval"]])
    crossed = summary["cross_fitted"]  # both halves held out once: every budget, an interval each
    assert len(crossed) == len(summary["budgets"]) and all(c["interval"][0] <= c["interval"][1] for c in crossed)
