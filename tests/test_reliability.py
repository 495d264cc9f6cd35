"""Kill-safe checkpoints and exact resume, reproducibility, and one-line errors."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, SAMPLE_DATA
from models.lib import checkpoint
from tools.utils import evaluation, memory, train_log

pytestmark = pytest.mark.slow  # end-to-end: runs the drivers or prepares data (python -m pytest -m "not slow" skips it)

CONFIG = "models/multitask/maml/config.yaml"
TINY = ["-o", "runner.train_batch_size=2", "-o", "runner.train_batches_per_epoch=4",
        "-o", "runner.print_interval=1", "-o", "runner.infer_episodes=4",
        "-o", "hyper_parameters.bn_channel=16", "-o", "hyper_parameters.k_query=2"]


def sigint_as_in_a_terminal():
    """Restore Ctrl-C's default in a child: a suite started in the background
    (`cmd &` in a script) passes SIGINT ignored on to every process it starts."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def trainer(out, *extra, script="tools/trainer.py", wait=True):
    args = [sys.executable, script, "-m", CONFIG] + TINY + [
        "-o", f"runner.model_save_path={out}", "-o", f"runner.infer_load_path={out}"] + list(extra)
    if not wait:
        return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                preexec_fn=sigint_as_in_a_terminal)
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


def losses(out):
    """{iteration: loss} from train_log.jsonl, the last line of an iteration winning."""
    result = {}
    with open(os.path.join(out, "train_log.jsonl")) as f:
        for line in f:
            record = json.loads(line)
            if "loss" in record:  # not a validation line
                result[record["iteration"]] = record["loss"]
    return result


def test_sigkill_then_resume_gives_the_same_losses_as_an_uninterrupted_run(tmp_path):
    straight = tmp_path / "straight"
    assert trainer(straight, "-o", "runner.epochs=3").returncode == 0
    killed = tmp_path / "killed"
    proc = trainer(killed, "-o", "runner.epochs=3", wait=False)
    deadline = time.time() + 240
    while time.time() < deadline:  # kill in the middle of epoch 1, after checkpoint 0
        if os.path.isdir(killed / "0") and os.path.exists(killed / "train_log.jsonl") and \
                max(losses(killed), default=0) >= 6:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.isdir(killed / "2")
    resumed = trainer(killed, "-o", "runner.epochs=3")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout
    assert losses(killed) == losses(straight)  # exact, every iteration 1..12
    assert len(losses(straight)) == 12


def test_resume_is_exact_with_the_annealed_options(tmp_path):
    """Cosine meta learning rate, multi-step loss, derivative-order annealing and learned inner rates
    all depend on the epoch or the iteration: a resumed run must continue them."""
    annealed = ["-o", "hyper_parameters.meta_optimizer.lr_schedule=cosine", "-o", "hyper_parameters.update_step=2",
                "-o", "hyper_parameters.multi_step_loss=True", "-o", "hyper_parameters.first_order_epochs=1",
                "-o", "hyper_parameters.multi_step_loss_epochs=2", "-o", "hyper_parameters.learn_inner_lr=True"]
    straight = tmp_path / "straight"
    assert trainer(straight, "-o", "runner.epochs=2", *annealed).returncode == 0
    resumed = tmp_path / "resumed"  # as if killed during epoch 1: only checkpoint 0 survives
    shutil.copytree(straight / "0", resumed / "0")
    assert trainer(resumed, "-o", "runner.epochs=2", *annealed).returncode == 0
    expected = {i: v for i, v in losses(straight).items() if i > 4}
    assert losses(resumed) == expected and len(expected) == 4


def test_same_seed_same_curve_other_seed_other_curve(tmp_path):
    runs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        assert trainer(tmp_path / name, "-o", "runner.epochs=1", "-o", f"runner.seed={seed}").returncode == 0
        runs[name] = losses(tmp_path / name)
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]


def test_corrupt_checkpoint_is_named_and_the_previous_one_used(tmp_path):
    out = tmp_path / "out"
    assert trainer(out, "-o", "runner.epochs=2").returncode == 0
    params = out / "1" / "rec.pdparams"
    params.write_bytes(params.read_bytes()[:100])  # truncated
    result = trainer(out, "-o", "runner.epochs=2")
    assert result.returncode == 0, result.stderr
    assert f"checkpoint file {params} is corrupt" in result.stdout
    assert f"resumed from {out / '0'}" in result.stdout
    assert (out / "1" / "meta.json").is_file()  # epoch 1 trained again, checkpoint rewritten
    infer = trainer(out, "-o", "runner.infer_start_epoch=0", "-o", "runner.infer_end_epoch=2",
                    script="tools/infer.py")
    assert infer.returncode == 0 and "epoch 1: 4 test episodes" in infer.stdout


def test_no_usable_checkpoint_is_an_error_not_a_silent_restart(tmp_path):
    out = tmp_path / "out"
    assert trainer(out, "-o", "runner.epochs=1").returncode == 0
    (out / "0" / "rec.pdopt").write_bytes(b"garbage")
    result = trainer(out, "-o", "runner.epochs=2")
    assert result.returncode == 2 and f"checkpoint file {out / '0' / 'rec.pdopt'} is corrupt" in result.stdout
    assert f"no checkpoint in {out} verifies" in result.stderr
    fresh = trainer(out, "-o", "runner.epochs=1", "-o", "runner.resume=False")
    assert fresh.returncode == 0 and (out / "0" / "meta.json").is_file()


def test_a_damaged_mid_epoch_state_alone_is_an_error_not_a_restart(tmp_path):
    """Killed inside epoch 0 (only the in_progress state exists) and that state
    damaged since: the trainer stops naming it, and the log is left as it was."""
    out = tmp_path / "out"
    assert trainer(out, "-o", "runner.epochs=1").returncode == 0
    os.rename(out / "0", out / checkpoint.IN_PROGRESS)
    (out / checkpoint.IN_PROGRESS / "rec.pdopt").write_bytes(b"garbage")
    log = (out / "train_log.jsonl").read_text()
    result = trainer(out, "-o", "runner.epochs=2")
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"no checkpoint in {out} verifies" in result.stderr
    assert (out / "train_log.jsonl").read_text() == log


def test_half_written_checkpoint_folder_is_ignored(tmp_path):
    out = tmp_path / "out"
    assert trainer(out, "-o", "runner.epochs=1").returncode == 0
    shutil.copytree(out / "0", out / "1")
    os.remove(out / "1" / "meta.json")  # as if killed before the last write
    result = trainer(out, "-o", "runner.epochs=2")
    assert "checkpoint " + str(out / "1") + " is incomplete" in result.stdout
    assert f"resumed from {out / '0'}" in result.stdout and result.returncode == 0


def test_keep_last_checkpoints(tmp_path):
    out = tmp_path / "out"
    assert trainer(out, "-o", "runner.epochs=3", "-o", "runner.keep_last_checkpoints=2").returncode == 0
    assert sorted(p.name for p in out.iterdir() if p.name.isdigit()) == ["1", "2"]
    # With validation, the best epoch so far survives too: infer_best_epoch's choice.
    validated = tmp_path / "validated"
    assert trainer(validated, "-o", "runner.epochs=3", "-o", "runner.keep_last_checkpoints=1",
                   "-o", f"runner.val_data_dir={SAMPLE_DATA}/test", "-o", "runner.val_episodes=4").returncode == 0
    best = evaluation.top_epochs(train_log.read_records(str(validated / "train_log.jsonl")), 1)[0]
    assert sorted(p.name for p in validated.iterdir() if p.name.isdigit()) == sorted({"2", str(best)})


def test_pruning_keeps_the_best_validated_epochs(tmp_path):
    for epoch in range(5):
        os.makedirs(tmp_path / str(epoch) / "x")
    log = tmp_path / "train_log.jsonl"
    log.write_text("".join(json.dumps({"epoch": e, "val": {"acc": acc}}) + "\n"
                           for e, acc in enumerate([0.5, 0.9, 0.7, 0.8, 0.6])))
    checkpoint.prune(str(tmp_path), 1, keep=evaluation.best_so_far(str(log), 0))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["1", "4"]
    checkpoint.prune(str(tmp_path), 1, keep=evaluation.best_so_far(str(log), 2))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["1", "4"]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "out"
    assert trainer(out, "-o", "runner.epochs=1").returncode == 0
    before = (out / "0" / "rec.pdparams").read_bytes()
    result = trainer(out, "-o", "runner.epochs=2", "-o", "hyper_parameters.base_optimizer.learning_rate=1e30")
    assert result.returncode == 2
    assert "is nan at iteration 5 (epoch 1, batch 1); stopped before the update" in result.stderr
    assert f"the last good checkpoint is {out / '0'}" in result.stderr
    assert (out / "0" / "rec.pdparams").read_bytes() == before and not (out / "1").exists()


def test_checkpoint_for_another_network_is_refused(tmp_path):
    out = tmp_path / "out"
    assert trainer(out, "-o", "runner.epochs=1").returncode == 0
    result = trainer(out, "-o", "runner.infer_start_epoch=0", "-o", "runner.infer_end_epoch=1",
                     "-o", "hyper_parameters.n_way=3", script="tools/infer.py")
    assert result.returncode == 2 and "was made for n_way = 5, but the config says 3" in result.stderr
    result = trainer(out, "-o", "runner.epochs=2", "-o", "hyper_parameters.downsample=maxpool")
    assert result.returncode == 2 and "downsample = 'stride'" in result.stderr


def make_data(tmp_path, mutate):
    data = tmp_path / "data"
    shutil.copytree(os.path.join(SAMPLE_DATA, "test"), data)
    target = mutate(data)
    return data, target


def first_character(data):
    alphabet = sorted(data.iterdir())[0]
    return sorted(alphabet.iterdir())[0]


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d / "missing", "data directory {} does not exist"),
    (lambda d: (shutil.rmtree(d), d.mkdir(), d)[2], "data directory {} holds no <alphabet>/<character>/"),
    (lambda d: (first_character(d) / "notes.txt").write_text("x") and first_character(d) / "notes.txt",
     "{} is not a .png image"),
    (lambda d: (first_character(d) / "0000_99.png").write_bytes(b"not a png") and
     first_character(d) / "0000_99.png", "{} cannot be read as an image"),
    (lambda d: [os.remove(p) for p in sorted(first_character(d).iterdir())[:18]] and first_character(d),
     "runner.train_data_dir: {} has 2 images, fewer than the 3 (shots + queries)"),
])
def test_bad_data_is_one_line_naming_the_path(tmp_path, mutate, message):
    data, target = make_data(tmp_path, mutate)
    if "missing" in str(target):
        data = target
    result = trainer(tmp_path / "out", "-o", f"runner.train_data_dir={data}", "-o", "runner.epochs=1")
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert message.format(target) in result.stderr


def test_fewer_classes_than_n_way(tmp_path):
    result = trainer(tmp_path / "out", "-o", "hyper_parameters.n_way=41", "-o", "runner.epochs=1")
    assert result.returncode == 2 and "runner.train_data_dir: " in result.stderr
    assert "has 40 classes (40 characters x 1 rotations), fewer than the 41 ways of an episode" in result.stderr


def test_the_committed_run_resumes_with_its_optimizer_state():
    """The shipped 5-way 1-shot checkpoint, the newest of its long run (made in another process, whose
    layers had other internal names) loads into today's model and optimizer and takes a
    step: Paddle keys Adam's state by internal parameter names, which checkpoint.load maps
    from the saved tensors' names."""
    from conftest import MODEL_DIR, load_model_config
    from tools.trainer import backward
    from models.lib import checkpoint

    run_dir = os.path.join(MODEL_DIR, "weights", "omniglot_5way1shot")
    epoch, path, meta = checkpoint.latest_good(run_dir)
    config, model_def = load_model_config(path=os.path.join(MODEL_DIR, "config_bigdata.yaml"))
    for _ in range(2):  # as after other tests in one process: the parameters' internal names move on
        model_def.create_model(config)
    model = model_def.create_model(config)
    optimizer = model_def.create_optimizer(model, config)
    checkpoint.check_network(path, meta, model_def.network_description(config))
    state = checkpoint.load(path, model, optimizer)
    assert state["epoch"] == epoch and state["iteration"] == (epoch + 1) * 500
    rng = np.random.RandomState(0)
    batch = [(rng.rand(5, 1, 28, 28).astype("float32"), np.arange(5), rng.rand(5, 1, 28, 28).astype("float32"),
              np.arange(5)) for _ in range(2)]
    before = model.weights()["fc.bias"].numpy().copy()
    metrics, _ = model_def.create_metrics(config)
    backward(model_def, model, metrics, batch, config)
    optimizer.step()  # raised "Optimizer set error ... should in state dict" when the names changed
    assert np.abs(model.weights()["fc.bias"].numpy() - before).max() > 0


def test_memory_check_names_the_largest_need():
    memory.check([(10, "a"), (40, "b")], "c.yaml", available=100)
    with pytest.raises(ValueError) as error:
        memory.check([(10, "the images (runner.x)"), (95, "one batch (runner.y)")], "c.yaml", available=100)
    assert str(error.value).startswith("config file c.yaml: one batch (runner.y): about 95 B of memory")
