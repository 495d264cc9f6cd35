"""tools/seeds.py: several seeds of one config, each trained, evaluated on the
same test episodes, and summarised as the mean and spread across the runs."""
import json
import statistics
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow

TINY = ["-o", "runner.epochs=2", "-o", "runner.train_batches_per_epoch=3", "-o", "runner.infer_episodes=12"]


def seeds(out, *extra):
    return subprocess.run([sys.executable, "tools/seeds.py", "-m", "models/multitask/protonet/config.yaml",
                           "--out", str(out)] + TINY + list(extra), cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_each_seed_is_its_own_run_and_the_summary_is_their_mean_and_spread(tmp_path):
    result = seeds(tmp_path, "--seeds", "3", "4")
    assert result.returncode == 0, result.stderr
    summary = json.load(open(tmp_path / "seeds.json"))
    per_seed = []
    for row in summary["seeds"]:
        run = tmp_path / f"seed_{row['seed']}"
        assert f"seed: {row['seed']}" in (run / "config_resolved.yaml").read_text()
        written = json.load(open(run / "infer_results.json"))["epochs"][str(row["epoch"])][-1]
        assert (written["mean"], written["ci95"]) == (row["mean"], row["ci95"])
        per_seed.append(written["mean"])
    assert per_seed[0] != per_seed[1]  # other seeds, other runs
    assert summary["mean"] == pytest.approx(statistics.mean(per_seed))
    assert summary["std"] == pytest.approx(statistics.stdev(per_seed))
    assert summary["epoch_chosen_by"] == "newest" and [r["epoch"] for r in summary["seeds"]] == [1, 1]
    assert f"2 seeds: {100 * summary['mean']:.2f} +- {100 * summary['std']:.2f} %" in result.stdout
    again = seeds(tmp_path, "--seeds", "3", "4")  # every run complete: nothing retrained, the same numbers
    assert again.returncode == 0 and "epoch 0 done" not in again.stdout
    assert json.load(open(tmp_path / "seeds.json"))["seeds"] == summary["seeds"]


def test_bad_seeds_are_one_line():
    result = seeds("/nonexistent", "--seeds", "1", "1")
    assert result.returncode == 2 and result.stderr.strip() == "error: --seeds 1 1: expected distinct integers >= 0"
