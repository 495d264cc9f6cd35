"""Evaluate saved epochs on test episodes, the way few-shot papers report.

    python tools/infer.py -m models/multitask/maml/config.yaml [-o ...]

For each epoch runner.infer_start_epoch .. runner.infer_end_epoch - 1 found in
runner.infer_load_path, adapts to runner.infer_episodes test tasks (the same
episodes for every epoch, from runner.infer_seed) and prints the query accuracy
mean +- 95 % confidence interval after 0, 1, ..., update_step_test inner steps.
Also writes the numbers to INFER_LOAD_PATH/infer_results.json (adding to the
epochs already there if they were evaluated with the same test settings).
"""
import itertools
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from utils import checkpoint, cli, distributed, runtime  # noqa: E402
import numpy as np  # noqa: E402


def evaluate_epoch(model_def, model, dataset, config, rank=0, world=1):
    """Per-step (mean, ci95, episodes) over all of DATASET's episodes. With
    several processes each adapts episodes rank, rank + world, ... and the
    accuracies of all episodes are gathered, so the numbers equal a single
    process's over the same episodes."""
    steps = config["hyper_parameters"]["update_step_test"]
    metrics, _ = model_def.create_metrics(steps)
    # Every process draws every episode (the sampler stays in step) and keeps its share.
    mine = (episode for i, episode in enumerate(dataset) if i % world == rank)
    while True:
        batch = list(itertools.islice(mine, config["runner"]["infer_batch_size"]))
        if not batch:
            break
        model_def.infer_forward(model, metrics, batch, config)
    shares = distributed.gather([m.values() for m in metrics], world)
    rows = []
    for k, per_rank in enumerate(zip(*shares)):
        values = np.concatenate(per_rank)
        mean, ci95 = model_def.mean_and_ci95(values)
        rows.append({"step": k, "accuracy": mean, "ci95": ci95, "episodes": len(values)})
    return rows


def read_results(path, settings):
    """Earlier results in PATH made with the same test settings (their epochs are
    kept, so evaluating epochs one range at a time builds one curve), else None."""
    try:
        with open(path) as f:
            earlier = json.load(f)
    except (OSError, ValueError):
        return None
    return earlier if earlier.get("settings") == settings else None


def infer(args):
    config, model_def, _ = runtime.load_model_and_config(args.config_yaml, args.opt)
    runner = config["runner"]
    runtime.set_device(runner["use_gpu"])
    rank, world = distributed.init(runner["use_fleet"], config["config_path"])
    say = print if rank == 0 else (lambda *a, **k: None)  # only rank 0 prints and writes
    runtime.seed_everything(runner["seed"])
    load_path, first, end = runner["infer_load_path"], runner["infer_start_epoch"], runner["infer_end_epoch"]
    if end <= first:
        raise ValueError(f"config file {config['config_path']}: runner.infer_end_epoch = {end} must be "
                         f"greater than runner.infer_start_epoch = {first} (the range excludes the end)")
    epochs = [e for e in checkpoint.epochs_in(load_path) if first <= e < end]
    if not epochs:
        raise ValueError(f"no checkpoint for epochs {first}..{end - 1} in {load_path} "
                         f"(runner.infer_load_path); train first or change runner.infer_start_epoch/"
                         f"infer_end_epoch")
    reader = runtime.import_from_config_dir(config["config_dir"], runner["infer_reader_path"],
                                            "runner.infer_reader_path")
    characters = reader.RecDataset.from_config(config, "infer").characters  # decode once
    model = model_def.create_model(config)
    network = model_def.network_description(config)
    hp = config["hyper_parameters"]
    settings = {"test_data_dir": runner["test_data_dir"], "episodes": runner["infer_episodes"],
                "seed": runner["infer_seed"], "n_way": hp["n_way"], "k_spt": hp["k_spt"],
                "k_query_test": hp["k_query_test"], "update_step_test": hp["update_step_test"],
                "inner_lr": model_def.inner_lr(config), "rotations": hp["rotations"]}
    out = os.path.join(load_path, "infer_results.json")
    results = read_results(out, settings) or {"settings": settings, "epochs": {}}
    results["config"] = config["config_path"]
    results["train_batches_per_epoch"] = runner["train_batches_per_epoch"]
    for epoch in epochs:
        path = os.path.join(load_path, str(epoch))
        try:
            meta = checkpoint.verify(path)
        except checkpoint.CheckpointError as e:
            say(f"warning: {e}; skipped")
            continue
        checkpoint.check_network(path, meta, network)
        checkpoint.load(path, model)
        start = time.time()
        dataset = reader.RecDataset.from_config(config, "infer", characters=characters)
        per_step = evaluate_epoch(model_def, model, dataset, config, rank, world)
        seconds = time.time() - start
        results["epochs"][str(epoch)] = per_step
        say(f"epoch {epoch}: {per_step[0]['episodes']} test episodes, {seconds:.1f} s"
            + (f" on {world} processes" if world > 1 else ""))
        for row in per_step:
            say(f"  after {row['step']} inner steps: accuracy {100 * row['accuracy']:.2f} "
                  f"+- {100 * row['ci95']:.2f} %")
        sys.stdout.flush()
    if rank == 0:
        with open(out + ".tmp", "w") as f:
            json.dump(results, f, indent=1)
        os.replace(out + ".tmp", out)
        print(f"results written to {out}")


def main(argv=None):
    cli.run(infer, argv, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    main()
