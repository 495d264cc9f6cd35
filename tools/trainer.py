"""Meta-train a model from its config, PaddleRec style.

    python tools/trainer.py -m models/multitask/maml/config.yaml [-o runner.epochs=2 ...]

Knows only PaddleRec's model interface (models/common/fewshot_model.py) and
the runner.* keys. Prints the loss, the model's metrics (create_metrics) and
instances (tasks) per second every runner.print_interval iterations; writes a
checkpoint per epoch to runner.model_save_path and, with runner.resume (default
True), continues from the newest complete checkpoint there. The printed numbers
are also appended, one JSON object per line, to MODEL_SAVE_PATH/train_log.jsonl
(a resumed run appends the iterations it redoes again: the last line of an
iteration counts), and with runner.use_visual written for VisualDL. With
runner.val_data_dir, the model is evaluated on runner.val_episodes validation
episodes after every epoch (a "val" line in train_log.jsonl), which
infer.py's runner.infer_best_epoch selects by.
"""
import itertools
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from utils import checkpoint, cli, distributed, evaluation, runtime, visual_log  # noqa: E402
import numpy as np  # noqa: E402
import paddle  # noqa: E402  (after utils: it sets the MKL path first)


def backward(model_def, model, metrics, batch, config, rank=0, world=1):
    """This process's share of the batch BATCH (shared across processes) through
    the model's train_forward, then backward: leaves the gradient of the whole
    batch's mean loss in every parameter's .grad, on every process. Returns that
    loss (a float, the same on every process)."""
    local = distributed.shard(batch, rank, world)
    loss, _, _ = model_def.train_forward(model, metrics, local, config)
    scaled = loss * (len(local) / len(batch))  # the mean over the whole batch, once summed over processes
    scaled.backward()
    distributed.sum_gradients(model, world)
    return float(distributed.sum_over_processes(scaled.detach(), world))


def train_step(model_def, model, optimizer, metrics, batch, config, where, save_path, rank=0, world=1):
    """One update on the batch BATCH: backward, then the optimizer step. A
    non-finite loss or gradient stops the run before the parameters change
    (FloatingPointError naming WHERE)."""
    loss_value = backward(model_def, model, metrics, batch, config, rank, world)
    problem = f"loss is {loss_value}" if not math.isfinite(loss_value) else None
    if problem is None:
        grad_square_sum = float(paddle.add_n([(p.grad * p.grad).sum() for p in model.parameters()
                                              if p.grad is not None]))
        if not math.isfinite(grad_square_sum):
            problem = f"gradient is {grad_square_sum}"
    if problem is not None:
        last = checkpoint.latest_good(save_path, warn=lambda _: None)
        kept = f"; the last good checkpoint is {last[1]}" if last else ""
        raise FloatingPointError(f"{problem} at {where}; stopped before the update, nothing saved{kept}")
    optimizer.step()
    optimizer.clear_grad()
    scheduler = runtime.lr_scheduler_of(optimizer)
    if scheduler is not None:
        scheduler.step()
    return loss_value


def resume(runner, model_def, model, optimizer, dataset, network, say):
    """Load the newest verified checkpoint of runner.model_save_path into the model,
    the optimizer, the random generators, the sampler and the model's own state;
    returns the epoch to start from (0 when there is none)."""
    save_path = runner["model_save_path"]
    found = checkpoint.latest_good(save_path, warn=say)
    if found is None:
        if checkpoint.epochs_in(save_path):
            raise ValueError(f"no checkpoint in {save_path} verifies (see the warnings above); "
                             f"remove them or set runner.resume=False to start anew")
        return 0
    epoch, path, meta = found
    checkpoint.check_network(path, meta, network)
    state = checkpoint.load(path, model, optimizer)
    runtime.set_rng_states(state["rng"])
    dataset.set_state(state["sampler"])
    if state.get("model_state") is not None:
        model_def.set_state(state["model_state"])
    say(f"resumed from {path} (epoch {epoch} done)")
    return epoch + 1


def gather_means(metrics, world):
    """Mean of each metric over every episode of every process since the last
    call; resets the metrics."""
    shares = distributed.gather([m.values() for m in metrics], world)
    for m in metrics:
        m.reset()
    return [float(np.concatenate(per_metric).mean()) for per_metric in zip(*shares)]


def validation_episodes(config):
    """The validation episodes (runner.val_data_dir, decoded once), through the infer reader."""
    val_config = evaluation.validation_config(config)
    reader = runtime.import_from_config_dir(config["config_dir"], config["runner"]["infer_reader_path"],
                                            "runner.infer_reader_path")
    return val_config, reader.RecDataset.from_config(val_config, "infer")


def validate(model_def, model, validation, rank, world):
    """Rows of the validation metrics of the current weights; the model back in training mode."""
    val_config, dataset = validation
    rows = evaluation.evaluate_epoch(model_def, model, dataset, val_config, rank, world, say=lambda *a, **k: None)
    model.train()
    return rows


def train(args):
    config, model_def, _ = runtime.load_model_and_config(args.config_yaml, args.opt)
    runner = config["runner"]
    runtime.set_device(runner["use_gpu"])
    rank, world = distributed.init(runner["use_fleet"], config["config_path"])
    if world > runner["train_batch_size"]:
        raise ValueError(f"config file {config['config_path']}: runner.train_batch_size = "
                         f"{runner['train_batch_size']} cannot be shared by {world} processes")
    say = print if rank == 0 else (lambda *a, **k: None)  # only rank 0 prints and writes
    visual = visual_log.open_writer(runner["use_visual"] and rank == 0, runner["model_save_path"])
    runtime.seed_everything(runner["seed"])  # the same seed everywhere: identical initial weights
    reader = runtime.import_from_config_dir(config["config_dir"], runner["train_reader_path"],
                                            "runner.train_reader_path")
    dataset = reader.RecDataset.from_config(config, "train")
    validation = validation_episodes(config) if runner["val_data_dir"] else None
    model = model_def.create_model(config)
    optimizer = model_def.create_optimizer(model, config)
    network = model_def.network_description(config)
    save_path = runner["model_save_path"]

    start_epoch = resume(runner, model_def, model, optimizer, dataset, network, say) if runner["resume"] else 0
    if start_epoch == 0:
        model_def.init_weights(model, config)
    if start_epoch >= runner["epochs"]:
        say(f"training already complete: {save_path} holds epoch {start_epoch - 1} of "
            f"runner.epochs = {runner['epochs']}; raise runner.epochs to train on, or set "
            f"runner.resume=False to start anew")
        return

    if rank == 0:
        os.makedirs(save_path, exist_ok=True)
        log = open(os.path.join(save_path, "train_log.jsonl"), "a")  # one JSON line per print
    model.train()
    items = iter(dataset)
    metrics, names = model_def.create_metrics(config, "train")
    batch_size, per_epoch = runner["train_batch_size"], runner["train_batches_per_epoch"]
    for epoch in range(start_epoch, runner["epochs"]):
        model_def.set_epoch(epoch)
        interval_start, interval_losses = time.time(), []
        for it in range(per_epoch):
            batch = list(itertools.islice(items, batch_size))
            iteration = epoch * per_epoch + it + 1
            loss_value = train_step(model_def, model, optimizer, metrics, batch, config,
                                    f"iteration {iteration} (epoch {epoch}, batch {it + 1})", save_path,
                                    rank, world)
            interval_losses.append(loss_value)
            if (it + 1) % runner["print_interval"] == 0 or it + 1 == per_epoch:
                record = {"epoch": epoch, "iteration": iteration,
                          "loss": sum(interval_losses) / len(interval_losses),
                          "metrics": dict(zip(names, gather_means(metrics, world))),
                          "ins_per_s": len(interval_losses) * batch_size / (time.time() - interval_start)}
                shown = "".join(f", {n}: {v:.4f}" for n, v in record["metrics"].items())
                say(f"epoch: {epoch}, batch_id: {it + 1}/{per_epoch}, loss: {record['loss']:.4f}{shown}, "
                    f"ins/s: {record['ins_per_s']:.1f}", flush=True)
                if rank == 0:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    visual_log.add_training(visual, record)
                interval_start, interval_losses = time.time(), []
        state = {"epoch": epoch, "iteration": (epoch + 1) * per_epoch, "rng": runtime.rng_states(),
                 "sampler": dataset.get_state(), "model_state": model_def.get_state()}
        val_rows = validate(model_def, model, validation, rank, world) if validation else None
        if rank == 0:
            path = checkpoint.save(save_path, epoch, model, optimizer, state, network)
            checkpoint.prune(save_path, runner["keep_last_checkpoints"])
            print(f"epoch {epoch} done, checkpoint saved to {path}", flush=True)
            if val_rows:
                record = {"epoch": epoch, "iteration": (epoch + 1) * per_epoch,
                          "val": {row["metric"]: row["mean"] for row in val_rows},
                          "val_ci95": {row["metric"]: row["ci95"] for row in val_rows}}
                say("validation: " + ", ".join(f"{row['metric']}: {100 * row['mean']:.2f} +- "
                                              f"{100 * row['ci95']:.2f} %" for row in val_rows), flush=True)
                log.write(json.dumps(record) + "\n")
                log.flush()
                visual_log.add_validation(visual, record)


def main(argv=None):
    cli.run(train, argv, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    main()
