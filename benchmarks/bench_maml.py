"""Seconds per MAML meta-iteration: this project against a naive Paddle loop and PyTorch.

    python benchmarks/bench_maml.py            # every setting (about 25 minutes)
    python benchmarks/bench_maml.py --quick    # fewer repetitions, 5-way only (about 5 minutes)

Every measurement runs in its own subprocess (clean peak memory, its own
environment), at the shapes of config_bigdata.yaml (5-way 1-shot),
config_bigdata_20way1shot.yaml, config_bigdata_miniimagenet_1shot.yaml and
config_bigdata_maml_plus_plus.yaml (bench_workers.SETTINGS), second and first order:
  project  the project's own training step (DygraphModel.train_forward, backward, Adam step)
  naive    a per-task Paddle loop written here, PaddleRec style: F.conv2d with its bias,
           batch norm from primitives on NCHW, no fused kernels, no MKL setting
  torch    a functional PyTorch loop (torch.func-free: autograd.grad), if torch is importable
Also, per setting, meta-iterations per second with 1 and 2 processes
(paddle.distributed.launch, runner.use_fleet); evaluation episodes per second (infer
path) against PyTorch; the reader's time per meta-batch; issue 18's targets, met or not.
Each variant is measured in several rounds, the variants one after another in
each round, because a shared virtual machine's speed drifts (here up to 2x within
minutes); a ratio compares the project with a reference of the same round and
the printed ratio is the median over the rounds. Prints a table of medians (of
>= 5 runs after a warm-up) with ratios, writes JSON (with every round and the
CPU seconds next to the wall-clock seconds).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

if not __package__:  # run as a script: make the project root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.bench_workers import ROOT, SETTINGS, WORKERS, peak_rss_mb


def run_worker(variant, setting, order, reps, threads, processes=1):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    if variant == "naive":
        env.pop("MKL_DEBUG_CPU_TYPE", None)
    script = [os.path.abspath(__file__), "--worker", variant, setting, order, str(reps)]
    if processes == 1:
        result = subprocess.run([sys.executable] + script, env=env, capture_output=True, text=True)
        output = result.stdout
    else:
        import tempfile

        with tempfile.TemporaryDirectory() as logs:
            result = subprocess.run([sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node",
                                     str(processes), "--log_dir", logs] + script,
                                    env=env, capture_output=True, text=True)
            output = open(os.path.join(logs, "workerlog.0")).read()
    if result.returncode != 0:
        return {"error": (result.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(output.strip().splitlines()[-1])


def median_of(rounds, variant, key):
    values = [r[variant][key] for r in rounds if key in r[variant]]
    return statistics.median(values) if values else float("nan")


def median_ratio(rounds, reference):
    """Median over the rounds of project time / reference time within a round."""
    ratios = [r["project"]["seconds"] / r[reference]["seconds"] for r in rounds
              if "seconds" in r["project"] and "seconds" in r[reference]]
    return statistics.median(ratios) if ratios else float("nan")


def print_targets(results):
    """Issue 18's targets, each row: met or not (the reasons are measured in benchmarks/README.md)."""
    print("targets: second order <= 1.5x PyTorch, first order <= 1.0x, >= 5x faster than the naive loop, "
          "evaluation >= 150 episodes/s")
    for row in results["rows"]:
        limit = 1.5 if row["order"] == "second" else 1.0
        torch_ratio, naive_ratio = row.get("ratio_vs_torch", float("nan")), row.get("ratio_vs_naive", float("nan"))
        naive = "naive loop fails" if naive_ratio != naive_ratio else \
            f"{1 / naive_ratio:.1f}x the naive loop: {'met' if naive_ratio <= 0.2 else 'NOT met'}"
        print(f"  {row['setting']:15} {row['order']:6} {torch_ratio:.2f}x PyTorch: "
              f"{'met' if torch_ratio <= limit else 'NOT met'}; {naive}; peak {row['project_peak_rss_mb']:.0f} MB")
    rate = results["eval_episodes_per_s"]
    print(f"  evaluation {rate:.1f} episodes/s: {'met' if rate >= 150 else 'NOT met'}")
    print("why a target is not met, measured, and what was tried: benchmarks/README.md ('Every setting in one "
          "run'; the operators alone: benchmarks/kernel_gap.py; the compiled step: benchmarks/compiled_step.py)")


def torch_available():
    return subprocess.run([sys.executable, "-c", "import torch"], capture_output=True).returncode == 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 repetitions, the 5-way setting only")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions (median taken), >= 5")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of every worker")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of all variants, one after another (the machine's speed drifts)")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results.json"))
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), help="only these settings")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        variant, setting, order, reps = args.worker
        result = WORKERS[variant](SETTINGS[setting], order, int(reps))
        print(json.dumps(dict(result, peak_rss_mb=peak_rss_mb())))
        return
    reps = max(5, args.reps or (5 if args.quick else 7))
    settings = args.settings or (["5way1shot"] if args.quick else list(SETTINGS))
    variants = ["project", "naive"] + (["torch"] if torch_available() else [])
    references = variants[1:]
    results = {"reps": reps, "rounds": args.rounds, "threads": args.threads, "rows": []}
    print(f"median of {reps} meta-iterations after a warm-up, in each of {args.rounds} rounds that run the "
          f"variants one after another; OMP_NUM_THREADS={args.threads}.\nratio = project time / reference "
          f"time in the same round, median over the rounds (below 1: project faster)")
    print(f"{'setting':15} {'order':6} " + " ".join(f"{v + ' s/iter':>14}" for v in variants) +
          "".join(f" {'vs ' + v:>9}" for v in references) + f" {'peak MB':>9}")
    for setting in settings:
        for order in ("second", "first"):
            rounds = [{v: run_worker(v, setting, order, reps, args.threads) for v in variants}
                      for _ in range(args.rounds)]
            row = {"setting": setting, "order": order, "rounds": rounds}
            for v in variants:
                row[v] = median_of(rounds, v, "seconds")
            for ref in references:
                row[f"ratio_vs_{ref}"] = median_ratio(rounds, ref)
            row["project_peak_rss_mb"] = median_of(rounds, "project", "peak_rss_mb")
            print(f"{setting:15} {order:6} " + " ".join(f"{row[v]:14.3f}" for v in variants) +
                  "".join(f" {row['ratio_vs_' + ref]:9.2f}" for ref in references) +
                  f" {row['project_peak_rss_mb']:9.0f}", flush=True)
            results["rows"].append(row)
    results["processes"] = {}
    for setting in settings:  # the same step in two processes (one thread each), the meta-batch split
        row = next(r for r in results["rows"] if (r["setting"], r["order"]) == (setting, "second"))
        one, torch_s = row["project"], row.get("torch", float("nan"))
        two = run_worker("project", setting, "second", reps, 1, processes=2)
        results["processes"][setting] = {"1": one, "2": two.get("seconds", two), "torch": torch_s}
        print(f"{setting} second order: {1 / one:.2f} meta-iterations/s in 1 process ({args.threads} threads), "
              f"{1 / two.get('seconds', float('nan')):.2f} in 2 processes (1 thread each) = "
              f"{two.get('seconds', float('nan')) / torch_s:.2f}x PyTorch's time (one process, "
              f"{args.threads} threads)", flush=True)
    ev = [(run_worker("eval", "5way1shot", "none", reps, args.threads),
           run_worker("eval_torch", "5way1shot", "none", reps, args.threads) if "torch" in variants else {})
          for _ in range(args.rounds)]
    rd = run_worker("reader", "5way1shot", "none", reps, args.threads)
    results["eval_episodes_per_s"] = statistics.median(
        [1.0 / e["seconds"] for e, _ in ev if "seconds" in e] or [float("nan")])
    results["eval_torch_episodes_per_s"] = statistics.median(
        [1.0 / t["seconds"] for _, t in ev if "seconds" in t] or [float("nan")])
    results["reader_s_per_meta_batch"] = rd.get("seconds", rd)
    print(f"evaluation (5-way 1-shot, 3 steps, 32 episodes per pass): {results['eval_episodes_per_s']:.1f} "
          f"episodes/s (PyTorch, one episode at a time: {results['eval_torch_episodes_per_s']:.1f}); "
          f"reader: {1000 * results['reader_s_per_meta_batch']:.2f} ms per meta-batch of 32 episodes")
    print_targets(results)
    errors = [(r["setting"], r["order"], v, one_round[v]["error"]) for r in results["rows"]
              for one_round in r["rounds"] for v in variants if "error" in one_round[v]]
    for e in errors:
        print("error:", *e)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
