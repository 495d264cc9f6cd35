"""Draw a run's curves as PNG files (needs matplotlib: pip install matplotlib).

    python tools/plot.py -m models/multitask/maml/config.yaml [-o ...] [--out DIR]

From MODEL_SAVE_PATH/train_log.jsonl (written by trainer.py) and
INFER_LOAD_PATH/infer_results.json (written by infer.py):
  train_curve.png     the training loss and the model's metrics (and the validation
                      results, with runner.val_data_dir) against iterations
  test_vs_steps.png   every test metric with its 95 % confidence band (for MAML: the accuracy
                      after 0, 1, ... inner steps at test), one line per evaluated epoch
  test_vs_iters.png   the last test metric (+- 95 % CI) against training iterations
The files go to --out (default: MODEL_SAVE_PATH).
"""
import json
import os
import sys

if not __package__:  # run as a script: make the project root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.utils import cli, runtime, train_log
from models.lib.atomic_file import atomic_write


def read_train_log(path, key="loss"):
    """The records holding KEY ("loss": training, "val": validation) by iteration,
    the last record of an iteration winning (resumed runs redo some)."""
    records = {r["iteration"]: r for r in train_log.read_records(path) if key in r}
    return [records[i] for i in sorted(records)]


def train_metrics(record):
    """{name: value} of a train_log.jsonl record (older logs: a list of query accuracies)."""
    if "metrics" in record:
        return record["metrics"]
    return {f"acc_step{k}": v for k, v in enumerate(record["query_accuracy"])}


def test_rows(rows):
    """infer_results.json rows as (name, mean, ci95) (older files: step and accuracy)."""
    return [(r["metric"], r["mean"], r["ci95"]) if "metric" in r else (f"acc_step{r['step']}", r["accuracy"], r["ci95"])
            for r in rows]


def plot(args):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("tools/plot.py needs matplotlib: pip install matplotlib") from None
    config, _, _ = runtime.load_model_and_config(args.config_yaml, args.opt)
    runner = config["runner"]
    out_dir = args.out or runner["model_save_path"]
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise OSError(f"cannot create the plots' folder {out_dir} (--out, or runner.model_save_path): "
                      f"{e.strerror or e}") from None
    written = []
    log_path = os.path.join(runner["model_save_path"], "train_log.jsonl")
    records = read_train_log(log_path) if os.path.isfile(log_path) else []
    if records:  # (a run killed before its first print has an empty log)
        iters = [r["iteration"] for r in records]
        fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
        ax_loss.plot(iters, [r["loss"] for r in records])
        ax_loss.set(xlabel="iteration", ylabel="training loss", yscale="log")
        for name in train_metrics(records[0]):
            ax_acc.plot(iters, [100 * train_metrics(r)[name] for r in records], label=name)
        validation = read_train_log(log_path, key="val")
        for name in (validation[0]["val"] if validation else []):
            ax_acc.plot([r["iteration"] for r in validation], [100 * r["val"][name] for r in validation],
                        marker="o", linestyle="--", label=f"validation {name}")
        ax_acc.set(xlabel="iteration", ylabel="training metric (%)")
        ax_acc.legend()
        fig.suptitle(os.path.basename(config["config_path"]) + ": training")
        written.append(_save(fig, out_dir, "train_curve.png"))
    results_path = os.path.join(runner["infer_load_path"], "infer_results.json")
    if os.path.isfile(results_path):
        with open(results_path) as f:
            results = json.load(f)
        epochs = sorted(results["epochs"], key=int)
        title = (f"{os.path.basename(results.get('config', config['config_path']))}, "
                 f"{results.get('settings', {}).get('episodes', '?')} test episodes")
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for epoch in epochs:
            names, mean, ci = zip(*test_rows(results["epochs"][epoch]))
            acc, ci = [100 * m for m in mean], [100 * c for c in ci]
            ax.plot(range(len(acc)), acc, marker="o", label=f"epoch {epoch}")
            ax.fill_between(range(len(acc)), [a - c for a, c in zip(acc, ci)], [a + c for a, c in zip(acc, ci)],
                            alpha=0.2)
        ax.set_xticks(range(len(names)), names, rotation=30 if len(names) > 6 else 0)
        ax.set(xlabel="test metric", ylabel="test accuracy (%)", title=title)
        ax.legend(fontsize="small")
        written.append(_save(fig, out_dir, "test_vs_steps.png"))
        per_epoch = results.get("train_batches_per_epoch", runner["train_batches_per_epoch"])
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        final = [test_rows(results["epochs"][e])[-1] for e in epochs]
        ax.errorbar([(int(e) + 1) * per_epoch for e in epochs], [100 * r[1] for r in final],
                    yerr=[100 * r[2] for r in final], marker="o", capsize=3)
        ax.set(xlabel="iteration", ylabel=f"test {final[0][0]} (%)", title=title)
        written.append(_save(fig, out_dir, "test_vs_iters.png"))
    if not written:
        raise ValueError(f"nothing to plot: neither {log_path} nor {results_path} exists")
    for path in written:
        print(f"wrote {path}")


def _save(fig, out_dir, name):
    """Write FIG to OUT_DIR/NAME whole or not at all: a temporary file renamed over
    the old one, so a kill or a full disk leaves the previous plot as it was."""
    path = os.path.join(out_dir, name)
    fig.tight_layout()
    try:
        with atomic_write(path, "wb") as f:
            fig.savefig(f, dpi=90, format="png")
    except OSError as e:
        raise OSError(f"cannot write the plot {path}: {e.strerror or e}; the earlier file is kept") from None
    return path


def main(argv=None):
    import argparse

    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--out", default=None)
    known, rest = extra.parse_known_args(argv if argv is not None else sys.argv[1:])

    def run(args):
        args.out = known.out
        plot(args)

    cli.run(run, rest, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    main()
