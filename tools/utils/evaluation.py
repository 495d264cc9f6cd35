"""Evaluation on a finite set of episodes, shared by infer.py (test episodes)
and trainer.py (validation episodes): the model's infer_forward over every
episode, shared by processes, each metric as mean +- 95 % confidence interval."""
import copy
import itertools
import time

import numpy as np

from utils import distributed
from utils.metrics import mean_and_ci95

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
    return val


def best_epoch(records):
    """The epoch whose end-of-epoch validation record (train_log.jsonl lines with
    "val") has the highest value of the last metric, the latest on ties; None without any."""
    ends = {r["epoch"]: r["val"] for r in records if "val" in r}
    if not ends:
        return None
    return max(ends, key=lambda epoch: (list(ends[epoch].values())[-1], epoch))
