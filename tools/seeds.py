"""Train and evaluate one config with several seeds: the spread across runs next to each run's CI.

    python tools/seeds.py -m models/multitask/protonet/config_bigdata.yaml --seeds 1 2 3 [--out DIR] [-o ...]

For each seed S, tools/trainer.py runs with -o runner.seed=S into OUT/seed_S
(rerunning the command resumes every seed's run where it stopped), then
tools/infer.py evaluates the epoch chosen by validation (with runner.val_data_dir;
otherwise the newest) on the config's test episodes, the same for every seed
(runner.infer_seed). Prints each seed's accuracy +- 95 % CI, then the mean and the
sample standard deviation across the seeds (MAML++ reports its results so), and
writes them to OUT/seeds.json. OUT defaults to runner.model_save_path + "_seeds";
-o overrides go to both drivers.
"""
import json
import os
import statistics
import subprocess
import sys

if not __package__:  # run as a script: make the project root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.utils import cli, evaluation, runtime, train_log
from models.lib.atomic_file import atomic_write

HERE = os.path.dirname(os.path.abspath(__file__))


def chosen_epoch(run_dir, validated):
    """The epoch infer_best_epoch would take (validated), else the newest."""
    from models.lib import checkpoint

    epochs = checkpoint.epochs_in(run_dir)
    if not epochs:
        raise ValueError(f"{run_dir} holds no complete checkpoint after training")
    if validated:
        best = evaluation.top_epochs([r for r in train_log.read_records(os.path.join(run_dir, "train_log.jsonl"))
                                      if r.get("epoch") in epochs], 1)
        if best:
            return best[0]
    return epochs[-1]


def driver(script, config_yaml, options):
    command = [sys.executable, os.path.join(HERE, script), "-m", config_yaml] + [a for o in options for a in ("-o", o)]
    code = subprocess.call(command)
    if code != 0:
        raise ValueError(f"{script} exited with {code}: {' '.join(command[1:])}")


def seed_result(run_dir, epoch):
    """(metric, mean, ci95) of the last metric infer wrote for EPOCH."""
    with open(os.path.join(run_dir, "infer_results.json")) as f:
        row = json.load(f)["epochs"][str(epoch)][-1]
    return row["metric"], row["mean"], row["ci95"]


def run_seeds(args):
    config, _, _ = runtime.load_model_and_config(args.config_yaml, args.opt)
    out = os.path.abspath(args.out or config["runner"]["model_save_path"].rstrip("/") + "_seeds")
    validated = bool(config["runner"]["val_data_dir"])
    rows = []
    for seed in args.seeds:
        run_dir = os.path.join(out, f"seed_{seed}")
        print(f"== seed {seed}: {run_dir}", flush=True)
        options = args.opt + [f"runner.seed={seed}", f"runner.model_save_path={run_dir}"]
        driver("trainer.py", args.config_yaml, options)
        epoch = chosen_epoch(run_dir, validated)
        driver("infer.py", args.config_yaml, options + [
            f"runner.infer_load_path={run_dir}", f"runner.infer_start_epoch={epoch}",
            f"runner.infer_end_epoch={epoch + 1}", "runner.infer_best_epoch=False", "runner.infer_ensemble_top=0"])
        metric, mean, ci95 = seed_result(run_dir, epoch)
        rows.append({"seed": seed, "epoch": epoch, "metric": metric, "mean": mean, "ci95": ci95})
    means = [r["mean"] for r in rows]
    summary = {"config": config["config_path"], "overrides": args.opt, "epoch_chosen_by": (
        "validation" if validated else "newest"), "seeds": rows, "mean": statistics.mean(means),
        "std": statistics.stdev(means) if len(means) > 1 else 0.0}
    for r in rows:
        print(f"seed {r['seed']} (epoch {r['epoch']}): {r['metric']}: {100 * r['mean']:.2f} +- "
              f"{100 * r['ci95']:.2f} %")
    print(f"{len(rows)} seeds: {100 * summary['mean']:.2f} +- {100 * summary['std']:.2f} % "
          f"(mean +- standard deviation across seeds)")
    with atomic_write(os.path.join(out, "seeds.json")) as f:
        json.dump(summary, f, indent=1)
    print(f"written to {os.path.join(out, 'seeds.json')}")


def main(argv=None):
    import argparse

    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    extra.add_argument("--out", default=None)
    known, rest = extra.parse_known_args(argv if argv is not None else sys.argv[1:])
    if len(set(known.seeds)) != len(known.seeds) or min(known.seeds) < 0:
        print(f"error: --seeds {' '.join(map(str, known.seeds))}: expected distinct integers >= 0", file=sys.stderr)
        sys.exit(2)

    def run(args):
        args.seeds, args.out = known.seeds, known.out
        return run_seeds(args)

    cli.run(run, rest, description=__doc__.splitlines()[0] + " (--seeds S ..., --out DIR)")


if __name__ == "__main__":
    main()
