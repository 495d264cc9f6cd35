"""Evaluate saved epochs on test episodes, the way few-shot papers report.

    python tools/infer.py -m models/multitask/maml/config.yaml [-o ...]

For each epoch runner.infer_start_epoch .. runner.infer_end_epoch - 1 found in
runner.infer_load_path (with runner.infer_best_epoch: only the one of them with
the best validation result, see trainer.py), runs the model's infer_forward over runner.infer_episodes
test episodes (the same episodes for every epoch, from runner.infer_seed) and
prints each of the model's metrics (create_metrics(config, "infer")) as mean
+- 95 % confidence interval over the episodes. Also writes the numbers to
INFER_LOAD_PATH/infer_results.json (adding to the epochs already there if they
were evaluated with the same settings) and, with runner.use_visual, for VisualDL.
"""
import fcntl
import hashlib
import json
import os
import sys
import time

if not __package__:  # run as a script: make the project root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.utils import cli, distributed, memory, runtime, train_log, visual_log  # before Paddle: MKL
from tools.utils.evaluation import ensemble_rows, evaluate_epoch, top_epochs
from models.lib import checkpoint
from models.lib.atomic_file import atomic_write


def read_results(path, settings):
    """Earlier results in PATH made with the same settings (their epochs are
    kept, so evaluating epochs one range at a time builds one curve), else None.
    Nothing is moved here: results of other settings are moved aside only when
    new ones are written (write_results), so a refused or interrupted infer
    leaves PATH as it was."""
    try:
        with open(path) as f:
            earlier = json.load(f)
    except (OSError, ValueError):
        return None
    return earlier if earlier.get("settings") == settings else None


def move_aside_other_settings(path, settings, say):
    """Results of other settings in PATH (e.g. 20-way after 5-way) moved to PATH
    with the hash of their settings in the name, never overwritten."""
    try:
        with open(path) as f:
            earlier = json.load(f)
    except (OSError, ValueError):
        return
    if earlier.get("settings") == settings:
        return
    digest = hashlib.sha256(json.dumps(earlier.get("settings"), sort_keys=True).encode()).hexdigest()[:8]
    aside = path[: -len(".json")] + f".{digest}.json"
    os.replace(path, aside)
    say(f"results of other settings moved to {aside}")


def select_by_validation(load_path, epochs, n, key, say):
    """The N epochs of EPOCHS with the best validation records in
    LOAD_PATH/train_log.jsonl, best first (KEY names the setting asking)."""
    log_path = os.path.join(load_path, "train_log.jsonl")
    try:
        records = train_log.read_records(log_path)
    except OSError:
        records = []
    chosen = top_epochs([r for r in records if r.get("epoch") in epochs], n)
    if not chosen:
        raise ValueError(f"{key}: {log_path} holds no validation result for epochs "
                         f"{epochs[0] if epochs else '-'}..{epochs[-1] if epochs else '-'}; train with "
                         f"runner.val_data_dir set")
    if len(chosen) < n:
        raise ValueError(f"{key} = {n}: {log_path} has validation results for {len(chosen)} epochs of "
                         f"{epochs[0]}..{epochs[-1]} only")
    say(f"epoch {chosen[0]} has the best validation result" if n == 1 else
        f"the {n} epochs with the best validation results: {', '.join(map(str, chosen))}")
    return chosen


def evaluation_settings(config):
    """What the numbers depend on besides the weights: the test data and episodes
    and every hyper-parameter (the model's and its readers')."""
    runner = config["runner"]
    return {"test_data_dir": runner["test_data_dir"], "infer_reader_path": runner["infer_reader_path"],
            "episodes": runner["infer_episodes"], "seed": runner["infer_seed"],
            "hyper_parameters": config["hyper_parameters"]}


def infer(args):
    config, model_def, _ = runtime.load_model_and_config(args.config_yaml, args.opt)
    runner = config["runner"]
    runtime.set_device(runner["use_gpu"])
    rank, world = distributed.init(runner["use_fleet"], config["config_path"])
    say = print if rank == 0 else (lambda *a, **k: None)  # only rank 0 prints and writes
    load_path, first, end = runner["infer_load_path"], runner["infer_start_epoch"], runner["infer_end_epoch"]
    visual = visual_log.open_writer(runner["use_visual"] and rank == 0, load_path)
    runtime.seed_everything(runner["seed"])
    if end <= first:
        raise ValueError(f"config file {config['config_path']}: runner.infer_end_epoch = {end} must be "
                         f"greater than runner.infer_start_epoch = {first} (the range excludes the end)")
    reader = runtime.import_from_config_dir(config["config_dir"], runner["infer_reader_path"],
                                            "runner.infer_reader_path")
    memory.check([reader.check_data(config, "infer"), model_def.estimate_eval_batch_bytes(config)],
                 config["config_path"])
    epochs = [e for e in checkpoint.epochs_in(load_path) if first <= e < end]
    if runner["infer_ensemble_top"]:
        epochs = select_by_validation(load_path, epochs, runner["infer_ensemble_top"],
                                      "runner.infer_ensemble_top", say)
    elif runner["infer_best_epoch"]:
        epochs = select_by_validation(load_path, epochs, 1, "runner.infer_best_epoch", say)
    if not epochs:
        raise ValueError(f"no checkpoint for epochs {first}..{end - 1} in {load_path} "
                         f"(runner.infer_load_path); train first or change runner.infer_start_epoch/"
                         f"infer_end_epoch")
    dataset = reader.RecDataset.from_config(config, "infer")  # decoded once; every pass: the same episodes
    model = model_def.create_model(config)
    network = model_def.network_description(config)
    settings = evaluation_settings(config)
    out = os.path.join(load_path, "infer_results.json")
    results = (read_results(out, settings) if rank == 0 else None) or {"settings": settings, "epochs": {}}
    results["config"] = config["config_path"]
    results["train_batches_per_epoch"] = runner["train_batches_per_epoch"]
    evaluated = []
    if runner["infer_ensemble_top"]:
        evaluate_ensemble(model_def, model, network, dataset, config, epochs, results, rank, world, say)
        epochs = []  # evaluated together
        evaluated = ["ensemble"]
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
        rows = evaluate_epoch(model_def, model, dataset, config, rank, world, say)
        seconds = time.time() - start
        results["epochs"][str(epoch)] = rows
        evaluated.append(epoch)
        visual_log.add_test(visual, (epoch + 1) * runner["train_batches_per_epoch"], rows)
        say(f"epoch {epoch}: {rows[0]['episodes']} test episodes, {seconds:.1f} s"
            + (f" on {world} processes" if world > 1 else ""))
        for row in rows:
            say(f"  {row['metric']}: {100 * row['mean']:.2f} +- {100 * row['ci95']:.2f} %")
        sys.stdout.flush()
    if not evaluated:
        raise ValueError(f"no checkpoint of epochs {epochs[0]}..{epochs[-1]} in {load_path} verifies "
                         f"(see the warnings above); nothing was evaluated")
    if rank == 0:
        write_results(out, results, say)
        print(f"results written to {out}")


def evaluate_ensemble(model_def, model, network, dataset, config, epochs, results, rank, world, say):
    """MAML++'s protocol: the query logits of EPOCHS averaged per test episode."""
    load_path = config["runner"]["infer_load_path"]

    def load_epoch(epoch):
        path = os.path.join(load_path, str(epoch))
        meta = checkpoint.verify(path)  # a damaged member is an error: the ensemble would be another
        checkpoint.check_network(path, meta, network)
        checkpoint.load(path, model)

    start = time.time()
    rows = ensemble_rows(model_def, model, load_epoch, epochs, dataset, config, rank, world, say)
    results.setdefault("ensembles", {})[",".join(map(str, epochs))] = rows
    say(f"ensemble of epochs {', '.join(map(str, epochs))}: {rows[0]['episodes']} test episodes, "
        f"{time.time() - start:.1f} s")
    say(f"  {rows[0]['metric']}: {100 * rows[0]['mean']:.2f} +- {100 * rows[0]['ci95']:.2f} %", flush=True)


def write_results(out, results, say=print):
    """Write RESULTS to OUT atomically (written, synced, renamed; results of other
    settings moved aside first); on a write error (disk full, permission) one line
    naming OUT, the temporary file removed and the old results kept. Under an flock
    on OUT's folder the file is read again and RESULTS' epochs and ensembles merged
    into it, so two infers on one folder at once both keep what they evaluated."""
    try:
        folder = os.open(os.path.dirname(out) or ".", os.O_RDONLY)
        try:
            fcntl.flock(folder, fcntl.LOCK_EX)
            latest = read_results(out, results.get("settings"))
            if latest is not None:
                for key in ("epochs", "ensembles"):
                    if key in latest or key in results:
                        results[key] = {**latest.get(key, {}), **results.get(key, {})}
            with atomic_write(out) as f:  # the temporary file removed on any failure, Ctrl-C included
                json.dump(results, f, indent=1)
                f.flush()
                os.fsync(f.fileno())  # whole on disk before the other settings' results move aside
                move_aside_other_settings(out, results.get("settings"), say)
        finally:
            os.close(folder)  # releases the lock
    except OSError as e:
        raise OSError(f"cannot write the results to {out}: {e.strerror or e}; the results of epochs "
                      f"{', '.join(results['epochs'])} are lost, the file's earlier content is kept") from None


def main(argv=None):
    cli.run(infer, argv, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    main()
