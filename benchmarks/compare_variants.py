"""The MAML family on full Omniglot (5-way 1-shot) under the same CPU budget.

    sh datasets/omniglot/run.sh                     # once
    python benchmarks/compare_variants.py --out /tmp/variants [--budget-minutes 20]
    python benchmarks/compare_variants.py --out /tmp/variants --summarize-only

Every variant's shipped config is trained for the same wall-clock budget on
one thread (OMP_NUM_THREADS=1), two variants at a time on a 2-core machine,
and killed (SIGKILL) when the budget is up; the newest checkpoint (written at
the end of every epoch; epochs are made short for that) is then evaluated by
infer.py on the same 600 test episodes. Schedules that depend on the run's
length (cosine and Reptile's linear annealing, MAML++'s multi-step loss
annealing) keep the shipped config's full length, so each variant is seen
as a user sees the first minutes of its full run. Prints a markdown table.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAML = "models/multitask/maml/"
REPTILE = "models/multitask/reptile/"

# name, label, config, meta-batch, meta-iterations per epoch, extra overrides (same run length as shipped)
VARIANTS = [
    ("maml", "MAML, second order", MAML + "config_bigdata.yaml", 32, 100, ["runner.epochs=600"]),
    ("reptile", "Reptile, batched (5 tasks)", REPTILE + "config_bigdata.yaml", 5, 250, ["runner.epochs=400"]),
    ("fomaml", "first-order MAML", MAML + "config_bigdata_first_order.yaml", 32, 100, ["runner.epochs=600"]),
    ("mamlpp", "MAML++ (all options)", MAML + "config_bigdata_maml_plus_plus.yaml", 8, 50,
     ["runner.epochs=1000", "hyper_parameters.multi_step_loss_epochs=100"]),
    ("anil", "ANIL, second order", MAML + "config_bigdata_anil.yaml", 32, 100, ["runner.epochs=600"]),
    ("reptile_serial", "Reptile, serial (1 task)", REPTILE + "config_bigdata_serial.yaml", 1, 1000,
     ["runner.epochs=100"]),
    ("meta_sgd", "Meta-SGD", "models/multitask/meta_sgd/config_bigdata.yaml", 32, 100, ["runner.epochs=600"]),
    ("matching_net", "Matching Networks", "models/multitask/matching_net/config_bigdata.yaml", 1, 100,
     ["runner.epochs=200", "runner.infer_episodes=600"]),
    ("relation_net", "Relation Networks", "models/multitask/relation_net/config_bigdata.yaml", 1, 100,
     ["runner.epochs=10000", "runner.infer_episodes=600"]),
]


def overrides(variant, out):
    name, _, _, _, per_epoch, extra = variant
    items = [f"runner.model_save_path={out}/{name}", "runner.print_interval=50",
             f"runner.train_batches_per_epoch={per_epoch}"] + extra
    return [a for o in items for a in ("-o", o)]


def start(script, variant, out, extra, log):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, f"tools/{script}.py", "-m", variant[2]] + overrides(variant, out) + extra,
                            cwd=ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)


def last_epoch(out, name):
    folder = os.path.join(out, name)
    epochs = [int(d) for d in os.listdir(folder) if d.isdigit() and os.path.isfile(os.path.join(folder, d, "meta.json"))] \
        if os.path.isdir(folder) else []
    if not epochs:
        raise SystemExit(f"{name}: no complete checkpoint in {folder}: the budget ended before the first "
                         f"epoch did (see {out}/train_{name}.log); give a larger --budget-minutes")
    return max(epochs)


def run_pairs(out, budget_s, variants):
    pairs = [variants[i:i + 2] for i in range(0, len(variants), 2)]
    for pair in pairs:
        procs = [start("trainer", v, out, [], f"{out}/train_{v[0]}.log") for v in pair]
        deadline = time.time() + budget_s
        for p in procs:
            try:
                p.wait(timeout=max(deadline - time.time(), 0))
            except subprocess.TimeoutExpired:
                p.kill()  # SIGKILL: the per-epoch checkpoints are atomic
                p.wait()
    for pair in pairs:
        procs = []
        for v in pair:
            e = last_epoch(out, v[0])
            procs.append(start("infer", v, out, ["-o", f"runner.infer_load_path={out}/{v[0]}",
                                                 "-o", f"runner.infer_start_epoch={e}",
                                                 "-o", f"runner.infer_end_epoch={e + 1}"], f"{out}/infer_{v[0]}.log"))
        for p in procs:
            if p.wait() != 0:
                raise SystemExit(f"infer failed, see {out}/infer_*.log")


def summarize(out, variants):
    rows = ["| variant | meta-batch | meta-iterations in the budget | tasks seen | s / meta-iteration (1 thread) "
            "| test steps | 5-way 1-shot accuracy, 600 episodes |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, label, _, batch, per_epoch, _ in variants:
        epoch = last_epoch(out, name)
        log = [r for r in map(json.loads, open(os.path.join(out, name, "train_log.jsonl"))) if "loss" in r]
        seconds = statistics.median(batch / r.get("ins_per_s", r.get("tasks_per_s")) for r in log)
        results = json.load(open(os.path.join(out, name, "infer_results.json")))
        final = results["epochs"][str(epoch)][-1]
        steps = final["metric"][len("acc_step"):] if final["metric"].startswith("acc_step") else "-"
        iterations = (epoch + 1) * per_epoch
        rows.append(f"| {label} | {batch} | {iterations} | {iterations * batch} | {seconds:.3f} | {steps} | "
                    f"{100 * final['mean']:.2f} ± {100 * final['ci95']:.2f} % |")
    return "\n".join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for checkpoints and logs")
    parser.add_argument("--budget-minutes", type=float, default=20.0)
    parser.add_argument("--summarize-only", action="store_true", help="print the table of an earlier run")
    names = [v[0] for v in VARIANTS]
    parser.add_argument("--variants", nargs="+", choices=names, default=names,
                        help="which variants (default: all), two at a time in this order")
    args = parser.parse_args()
    out = os.path.abspath(args.out)
    variants = [v for name in args.variants for v in VARIANTS if v[0] == name]
    if not args.summarize_only:
        os.makedirs(out, exist_ok=True)
        run_pairs(out, 60 * args.budget_minutes, variants)
    print(summarize(out, variants))


if __name__ == "__main__":
    main()
