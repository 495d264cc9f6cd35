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
import math
import os
import sys
import time

if not __package__:  # run as a script: make the project root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.utils import cli, distributed, evaluation, memory, run_lock, runtime, train_log  # before Paddle: MKL
from tools.utils import resolved_config, visual_log
from tools.utils.watch import ChanceWatch
import numpy as np
import paddle

from models.lib import checkpoint


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
    (FloatingPointError naming WHERE), unless the model replaces the gradients
    (its replace_nonfinite_gradients hook, e.g. LEO's authors' guard)."""
    loss_value = backward(model_def, model, metrics, batch, config, rank, world)
    problem = f"loss is {loss_value}" if not math.isfinite(loss_value) else None
    if problem is None:
        grad_square_sum = float(paddle.add_n([(p.grad * p.grad).sum() for p in model.parameters()
                                              if p.grad is not None]))
        if not math.isfinite(grad_square_sum):
            problem = f"gradient is {grad_square_sum}"
    if problem is not None and model_def.replace_nonfinite_gradients(model, config):
        print(f"warning: {problem} at {where}; the model's fallback gradient is used instead")
        problem = None
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
    """Load the newest verified checkpoint of runner.model_save_path (an epoch's, or
    the newer in_progress one of the epoch after it) into the model, the
    optimizer, the random generators, the sampler and the model's own state.
    Returns (epoch, batches of it done, iterations done): (0, 0, 0) when there is none."""
    save_path, per_epoch = runner["model_save_path"], runner["train_batches_per_epoch"]
    found = checkpoint.latest_good(save_path, warn=say)
    partial = checkpoint.in_progress(save_path, warn=say)
    if partial is not None and (found is None or partial[1]["epoch"] > found[0]):
        path, meta = partial
    elif found is not None:
        path, meta = found[1], found[2]
    else:
        if checkpoint.epochs_in(save_path) or os.path.isdir(os.path.join(save_path, checkpoint.IN_PROGRESS)):
            raise ValueError(f"no checkpoint in {save_path} verifies (see the warnings above); "
                             f"remove them or set runner.resume=False to start anew")
        return 0, 0, 0
    checkpoint.check_network(path, meta, network)
    state = checkpoint.load(path, model, optimizer)
    runtime.set_rng_states(state["rng"])
    dataset.set_state(state["sampler"])
    if state.get("model_state") is not None:
        model_def.set_state(state["model_state"])
    epoch, batch = state["epoch"], state.get("batch", per_epoch)
    if state["iteration"] != epoch * per_epoch + batch:
        raise ValueError(f"checkpoint {path} was saved with another runner.train_batches_per_epoch "
                         f"(iteration {state['iteration']} is not epoch {epoch} batch {batch} of "
                         f"{per_epoch}); keep the value the run started with")
    say(f"resumed from {path} (epoch {epoch}, {batch} of {per_epoch} batches done, "
        f"iteration {state['iteration']})")
    if batch == per_epoch:
        return epoch + 1, 0, state["iteration"]
    return epoch, batch, state["iteration"]


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


def check_inputs(config, model_def, train_reader, infer_reader, world):
    """Before anything is decoded or written: the infer settings can be used after
    training, the training, validation and test data exist and suit the episodes
    (the readers' check_data), and the decoded data plus one training or evaluation batch fit in memory."""
    runner = config["runner"]
    if world > runner["train_batch_size"]:
        raise ValueError(f"config file {config['config_path']}: runner.train_batch_size = "
                         f"{runner['train_batch_size']} cannot be shared by {world} processes")
    if runner["infer_end_epoch"] <= runner["infer_start_epoch"]:
        raise ValueError(f"config file {config['config_path']}: runner.infer_end_epoch = {runner['infer_end_epoch']} "
                         f"must be greater than runner.infer_start_epoch = {runner['infer_start_epoch']} "
                         f"(infer.py would evaluate nothing after training)")
    if (runner["infer_best_epoch"] or runner["infer_ensemble_top"]) and not runner["val_data_dir"]:
        key = "infer_best_epoch" if runner["infer_best_epoch"] else "infer_ensemble_top"
        raise ValueError(f"config file {config['config_path']}: runner.{key} selects epochs by validation, "
                         f"but runner.val_data_dir is empty: training would log no validation")
    needs = [train_reader.check_data(config, "train"), infer_reader.check_data(config, "infer")]
    if runner["val_data_dir"]:
        needs.append(infer_reader.check_data(evaluation.validation_config(config), "infer"))
    needs.append(max(model_def.estimate_batch_bytes(config), model_def.estimate_eval_batch_bytes(config)))
    memory.check(needs, config["config_path"])


class Progress:
    """Where training is, for the line printed when it is interrupted."""

    def __init__(self, save_path, iteration, saved):
        self.save_path, self.iteration, self.saved = save_path, iteration, saved

    def interrupted(self):
        kept = (f"the newest checkpoint is {self.saved}; rerun the same command to resume"
                if self.saved else "no checkpoint was saved yet; rerunning starts anew")
        return f"interrupted at iteration {self.iteration}; {kept}"


def describe_checkpoint(iteration, per_epoch, path):
    epoch, batch = divmod(iteration, per_epoch)
    where = f"epoch {epoch - 1}" if batch == 0 else f"epoch {epoch} at batch {batch}"
    return f"{where} (iteration {iteration}, {path})"


def train(args):
    config, model_def, _ = runtime.load_model_and_config(args.config_yaml, args.opt)
    runner = config["runner"]
    runtime.set_device(runner["use_gpu"])
    rank, world = distributed.init(runner["use_fleet"], config["config_path"])
    say = print if rank == 0 else (lambda *a, **k: None)  # only rank 0 prints and writes
    train_reader, infer_reader = runtime.import_readers(config["config_dir"], runner)
    check_inputs(config, model_def, train_reader, infer_reader, world)
    lock = run_lock.acquire(runner["model_save_path"], say) if rank == 0 else None
    try:
        if rank == 0:
            checkpoint.clean_stale(runner["model_save_path"], say)
            resolved_config.announce(config, ["python", "tools/trainer.py", "-m", args.config_yaml] +
                                     [a for o in args.opt for a in ("-o", o)], say)
        run_training(config, model_def, train_reader, rank, world, say)
    finally:
        run_lock.release(lock)


def run_training(config, model_def, reader, rank, world, say):
    runner = config["runner"]
    save_path = runner["model_save_path"]
    visual = visual_log.open_writer(runner["use_visual"] and rank == 0, save_path)
    runtime.seed_everything(runner["seed"])  # the same seed everywhere: identical initial weights
    dataset = reader.RecDataset.from_config(config, "train")
    validation = validation_episodes(config) if runner["val_data_dir"] else None
    model = model_def.create_model(config)
    optimizer = model_def.create_optimizer(model, config)
    network = model_def.network_description(config)
    batch_size, per_epoch = runner["train_batch_size"], runner["train_batches_per_epoch"]

    start_epoch, start_batch, done = (resume(runner, model_def, model, optimizer, dataset, network, say)
                                      if runner["resume"] else (0, 0, 0))
    if done == 0:
        model_def.init_weights(model, config)
    if start_epoch >= runner["epochs"]:
        say(f"training already complete: {save_path} holds epoch {start_epoch - 1} of "
            f"runner.epochs = {runner['epochs']}; raise runner.epochs to train on, or set "
            f"runner.resume=False to start anew")
        return

    log = train_log.TrainLog(os.path.join(save_path, "train_log.jsonl"), done) if rank == 0 else None
    progress = Progress(save_path, done, None)
    if done:
        progress.saved = describe_checkpoint(done, per_epoch, save_path)
    watch = ChanceWatch(model_def.chance_loss(config))
    model.train()
    items = iter(dataset)
    metrics, names = model_def.create_metrics(config, "train")

    def save(epoch, batch, folder=None):
        state = {"epoch": epoch, "batch": batch, "iteration": epoch * per_epoch + batch,
                 "rng": runtime.rng_states(), "sampler": dataset.get_state(),
                 "model_state": model_def.get_state()}
        path = checkpoint.save(save_path, epoch, model, optimizer, state, network, folder)
        progress.saved = describe_checkpoint(state["iteration"], per_epoch, path)
        return path

    last_saved = done
    try:
        for epoch in range(start_epoch, runner["epochs"]):
            model_def.set_epoch(epoch)
            interval_start, interval_losses = time.time(), []
            for it in range(start_batch if epoch == start_epoch else 0, per_epoch):
                batch = list(itertools.islice(items, batch_size))
                iteration = epoch * per_epoch + it + 1
                loss_value = train_step(model_def, model, optimizer, metrics, batch, config,
                                        f"iteration {iteration} (epoch {epoch}, batch {it + 1})", save_path,
                                        rank, world)
                progress.iteration = iteration
                interval_losses.append(loss_value)
                if (it + 1) % runner["print_interval"] == 0 or it + 1 == per_epoch:
                    record = {"epoch": epoch, "iteration": iteration,
                              "loss": sum(interval_losses) / len(interval_losses),
                              "metrics": dict(zip(names, gather_means(metrics, world))),
                              "ins_per_s": len(interval_losses) * batch_size / (time.time() - interval_start)}
                    watch.add(record["loss"])
                    shown = "".join(f", {n}: {v:.4f}" for n, v in record["metrics"].items())
                    say(f"epoch: {epoch}, batch_id: {it + 1}/{per_epoch}, loss: {record['loss']:.4f}{shown}, "
                        f"ins/s: {record['ins_per_s']:.1f}", flush=True)
                    if rank == 0:
                        log.write(record)
                        visual_log.add_training(visual, record)
                    if (rank == 0 and runner["checkpoint_interval"] and it + 1 < per_epoch
                            and iteration - last_saved >= runner["checkpoint_interval"]):
                        save(epoch, it + 1, folder=checkpoint.IN_PROGRESS)
                        last_saved = iteration
                    interval_start, interval_losses = time.time(), []
            val_rows = validate(model_def, model, validation, rank, world) if validation else None
            if rank == 0:
                if val_rows:  # logged before the checkpoint: a rerun of this epoch drops the line
                    record = {"epoch": epoch, "iteration": (epoch + 1) * per_epoch,
                              "val": {row["metric"]: row["mean"] for row in val_rows},
                              "val_ci95": {row["metric"]: row["ci95"] for row in val_rows}}
                    log.write(record)
                    visual_log.add_validation(visual, record)
                path = save(epoch, per_epoch)
                last_saved = (epoch + 1) * per_epoch
                checkpoint.remove_in_progress(save_path)
                checkpoint.prune(save_path, runner["keep_last_checkpoints"],
                                 keep=evaluation.best_so_far(log.path, runner["infer_ensemble_top"]))
                print(f"epoch {epoch} done, checkpoint saved to {path}", flush=True)
                if val_rows:
                    say("validation: " + ", ".join(f"{row['metric']}: {100 * row['mean']:.2f} +- "
                                                  f"{100 * row['ci95']:.2f} %" for row in val_rows), flush=True)
            warning = watch.end_epoch(epoch)
            if warning:
                say(warning, flush=True)
    except KeyboardInterrupt as e:
        raise cli.Interrupted(progress.interrupted() if rank == 0 else "",
                              terminated=isinstance(e, cli.Terminated)) from None
    except checkpoint.CheckpointWriteError as e:
        kept = f"; the newest checkpoint is {progress.saved}" if progress.saved else ""
        raise checkpoint.CheckpointWriteError(f"{e}{kept}") from None
    finally:
        if log is not None:
            log.close()


def main(argv=None):
    cli.run(train, argv, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    main()
