"""Evaluation on a finite set of episodes, shared by infer.py (test episodes)
and trainer.py (validation episodes): the model's infer_forward over every
episode, shared by processes, each metric as mean +- 95 % confidence interval."""
import copy
import itertools
import time

import numpy as np

from tools.utils import distributed, train_log
from models.lib.metrics import mean_and_ci95

PROGRESS_SECONDS = 10  # a progress line at most this often on long evaluations


def evaluate_epoch(model_def, model, dataset, config, rank=0, world=1, say=print,
                   progress_seconds=PROGRESS_SECONDS):
    """Rows {"metric", "mean", "ci95", "episodes"} over all of DATASET's episodes.
    With several processes each evaluates episodes rank, rank + world, ... and the
    values of all episodes are gathered, so the numbers equal a single process's
    over the same episodes."""
    runner = config["runner"]
    model.eval()  # batch norm with running statistics (where a model has them) uses them
    metrics, names = model_def.create_metrics(config, "infer")
    # Every process draws every episode (the sampler stays in step) and keeps its share.
    mine = (episode for i, episode in enumerate(dataset) if i % world == rank)
    done, last_report = 0, time.time()
    while True:
        batch = list(itertools.islice(mine, runner["infer_batch_size"]))
        if not batch:
            break
        model_def.infer_forward(model, metrics, batch, config)
        done += len(batch) * world
        if time.time() - last_report >= progress_seconds and done < runner["infer_episodes"]:
            say(f"  {done} of {runner['infer_episodes']} episodes", flush=True)
            last_report = time.time()
    shares = distributed.gather([m.values() for m in metrics], world)
    rows = []
    for name, per_rank in zip(names, zip(*shares)):
        values = np.concatenate(per_rank)
        mean, ci95 = mean_and_ci95(values)
        rows.append({"metric": name, "mean": mean, "ci95": ci95, "episodes": len(values)})
    return rows


def validation_config(config):
    """CONFIG with the validation episodes in place of the test episodes
    (runner.val_data_dir, val_episodes, infer_seed), for the infer reader."""
    val = copy.deepcopy(config)
    val["runner"].update(test_data_dir=config["runner"]["val_data_dir"],
                         infer_episodes=config["runner"]["val_episodes"])
    val["validation"] = True  # readers name runner.val_data_dir in their errors
    return val


def ensemble_rows(model_def, model, load_epoch, epochs, dataset, config, rank=0, world=1, say=print):
    """MAML++'s test protocol: for every episode of DATASET the query logits of the
    models of EPOCHS (load_epoch(e) loads one into MODEL) are averaged, and the
    accuracy of the averaged logits is the episode's. One row like evaluate_epoch's."""
    runner = config["runner"]
    summed, labels = None, None
    for epoch in epochs:
        load_epoch(epoch)
        model.eval()
        mine = (episode for i, episode in enumerate(dataset) if i % world == rank)
        per_batch = []
        while True:
            batch = list(itertools.islice(mine, runner["infer_batch_size"]))
            if not batch:
                break
            per_batch.append(model_def.infer_logits(model, batch, config))
        logits = np.concatenate([b[0] for b in per_batch])
        labels = np.concatenate([b[1] for b in per_batch])
        summed = logits.astype("float64") if summed is None else summed + logits
        say(f"  epoch {epoch}: logits of {len(logits) * world} episodes", flush=True)
    accuracies = (summed.argmax(axis=-1) == labels).mean(axis=-1)
    values = np.concatenate(distributed.gather(accuracies, world))
    mean, ci95 = mean_and_ci95(values)
    return [{"metric": f"acc_ensemble_of_{len(epochs)}", "mean": mean, "ci95": ci95, "episodes": len(values)}]


def best_so_far(log_path, ensemble_top):
    """The epochs of training log LOG_PATH that infer's infer_best_epoch /
    infer_ensemble_top would pick: the trainer keeps them when pruning."""
    return top_epochs(train_log.read_records(log_path), max(1, ensemble_top))


def top_epochs(records, n):
    """The N epochs with the best end-of-epoch validation result (last metric), best first."""
    ends = {r["epoch"]: r["val"] for r in records if "val" in r}
    return sorted(ends, key=lambda epoch: (list(ends[epoch].values())[-1], epoch), reverse=True)[:n]
