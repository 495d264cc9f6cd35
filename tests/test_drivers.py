"""trainer.py and infer.py end to end on the sample data, as a user runs them."""
import glob
import json
import os
import re
import subprocess
import sys

import paddle
import pytest

from conftest import MODEL_DIR, ROOT, quick_run_overrides, shipped_configs

pytestmark = pytest.mark.slow  # end-to-end: runs the drivers or prepares data (python -m pytest -m "not slow" skips it)

SMALL = ["-o", "runner.train_batch_size=2", "-o", "runner.train_batches_per_epoch=3",
         "-o", "runner.epochs=2", "-o", "runner.print_interval=1", "-o", "runner.infer_episodes=12",
         "-o", "runner.infer_start_epoch=0", "-o", "runner.infer_end_epoch=2",
         "-o", "runner.infer_batch_size=4"]


def run(args, cwd):
    return subprocess.run([sys.executable] + args, cwd=cwd, capture_output=True, text=True, timeout=300)


def paths(tmp_path):
    out = str(tmp_path / "ckpt")
    return ["-o", f"runner.model_save_path={out}", "-o", f"runner.infer_load_path={out}"], out


def test_train_then_infer_from_the_repository_root(tmp_path):
    where, out = paths(tmp_path)
    train = run(["tools/trainer.py", "-m", "models/multitask/maml/config.yaml"] + SMALL + where, ROOT)
    assert train.returncode == 0, train.stderr
    assert re.search(r"epoch: 1, batch_id: 3/3, loss: [\d.]+, acc_step0: [\d.]+, "
                     r"acc_step1: [\d.]+, ins/s: [\d.]+", train.stdout)
    for epoch in ("0", "1"):
        assert sorted(os.listdir(os.path.join(out, epoch))) == [
            "meta.json", "rec.pdopt", "rec.pdparams", "trainer_state.pkl"]
    infer = run(["tools/infer.py", "-m", "models/multitask/maml/config.yaml"] + SMALL + where, ROOT)
    assert infer.returncode == 0, infer.stderr
    for epoch in (0, 1):
        assert f"epoch {epoch}: 12 test episodes" in infer.stdout
    for step in range(4):  # update_step_test = 3
        assert re.search(rf"acc_step{step}: [\d.]+ \+- [\d.]+ %", infer.stdout)
    assert os.path.isfile(os.path.join(out, "infer_results.json"))


def test_train_from_the_model_folder_paddlerec_style(tmp_path):
    where, out = paths(tmp_path)
    train = run(["../../../tools/trainer.py", "-m", "config.yaml"] + SMALL + where +
                ["-o", "runner.use_gpu=True"], MODEL_DIR)
    assert train.returncode == 0, train.stderr
    if not paddle.is_compiled_with_cuda():
        assert train.stdout.count("no CUDA support; running on CPU") == 1
    again = run(["../../../tools/trainer.py", "-m", "config.yaml"] + SMALL + where, MODEL_DIR)
    assert "training already complete" in again.stdout
    more = run(["../../../tools/trainer.py", "-m", "config.yaml"] + SMALL + where +
               ["-o", "runner.epochs=3"], MODEL_DIR)
    assert "resumed from" in more.stdout and os.path.isdir(os.path.join(out, "2"))


def test_bad_input_is_one_line_and_exit_code_2(tmp_path):
    where, _ = paths(tmp_path)
    bad = run(["tools/trainer.py", "-m", "models/multitask/maml/config.yaml",
               "-o", "hyper_parameters.n_way=1"] + where, ROOT)
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("error: config file") and "n_way = 1" in bad.stderr
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    debug = run(["tools/trainer.py", "-m", "models/multitask/maml/config.yaml", "--debug",
                 "-o", "hyper_parameters.n_way=1"] + where, ROOT)
    assert "Traceback" in debug.stderr
    none = run(["tools/infer.py", "-m", "models/multitask/maml/config.yaml"] + where, ROOT)
    assert none.returncode == 2 and "no checkpoint for epochs 1..1" in none.stderr


def test_short_training_raises_query_accuracy():
    """40 meta-iterations on the sample data lift the accuracy after one inner
    step on held-out characters well above its starting point."""
    from conftest import load_model_config
    from models.multitask.maml.omniglot_reader import RecDataset
    from tools.utils import runtime

    config, model_def = load_model_config(["runner.infer_episodes=60", "hyper_parameters.update_step_test=1"])
    runtime.seed_everything(0)
    model = model_def.create_model(config)
    optimizer = model_def.create_optimizer(model, config)
    test = RecDataset.from_config(config, "infer")

    def test_accuracy():
        metrics, _ = model_def.create_metrics(config, "infer")
        for episode in test:
            model_def.infer_forward(model, metrics, [episode], config)
        return metrics[1].accumulate()

    before = test_accuracy()
    episodes = iter(RecDataset.from_config(config, "train"))
    metrics, _ = model_def.create_metrics(config)
    for _ in range(40):
        loss, _, _ = model_def.train_forward(model, metrics, [next(episodes) for _ in range(4)], config)
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
    after = test_accuracy()
    assert after > before + 0.1, (before, after)


def test_plot_draws_the_curves_of_a_run(tmp_path):
    pytest.importorskip("matplotlib")  # optional dependency; .ci/run installs it
    where, out = paths(tmp_path)
    for script in ("tools/trainer.py", "tools/infer.py"):
        result = run([script, "-m", "models/multitask/maml/config.yaml"] + SMALL + where, ROOT)
        assert result.returncode == 0, result.stderr
    plot = run(["tools/plot.py", "-m", "models/multitask/maml/config.yaml"] + SMALL + where, ROOT)
    assert plot.returncode == 0, plot.stderr
    for name in ("train_curve.png", "test_vs_steps.png", "test_vs_iters.png"):
        data = open(os.path.join(out, name), "rb").read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    results = json.load(open(os.path.join(out, "infer_results.json")))
    assert sorted(results["epochs"]) == ["0", "1"]
    assert results["settings"]["hyper_parameters"]["update_step_test"] == 3


def test_training_log_readers_skip_a_torn_last_line_and_name_any_other(tmp_path):
    from tools.utils.train_log import read_records

    log = tmp_path / "train_log.jsonl"
    log.write_text('{"iteration": 1, "loss": 1.0}\n{"iteration": 2, "lo')  # killed while writing line 2
    assert read_records(str(log)) == [{"iteration": 1, "loss": 1.0}]
    log.write_text('{"iteration": 1, "loss": 1.0}\n{"iteration": 2, "lo\n{"iteration": 3, "loss": 0.5}\n')
    with pytest.raises(ValueError, match=f"{re.escape(str(log))} line 2 is not a JSON record"):
        read_records(str(log))


def test_plot_of_a_run_killed_before_its_first_print_is_one_line(tmp_path):
    pytest.importorskip("matplotlib")
    where, out = paths(tmp_path)
    os.makedirs(out)
    open(os.path.join(out, "train_log.jsonl"), "w").close()  # the trainer creates it at start
    plot = run(["tools/plot.py", "-m", "models/multitask/maml/config.yaml"] + where, ROOT)
    assert plot.returncode == 2 and "Traceback" not in plot.stderr
    assert plot.stderr.strip().splitlines()[-1].startswith("error: nothing to plot"), plot.stderr


# The others: test_miniimagenet.py, test_leo.py; each model's config.yaml runs as its README gives it
# (test_readme_commands.py), so only the config_bigdata*.yaml files are run here, and of those not the
# settings that differ from their base in episode shape alone (5-shot, 20-way: the same code; every
# config's keys and values are resolved and checked by test_config_bases.py).
SHAPE_VARIANT = re.compile(r"config_bigdata_(5way5shot|20way1shot|20way5shot)(_first_order)?\.yaml$")
SHIPPED_CONFIGS = [c for c in shipped_configs("omniglot", pattern="config_bigdata*.yaml")
                   if not SHAPE_VARIANT.search(c)]


@pytest.mark.parametrize("config", SHIPPED_CONFIGS)
def test_every_shipped_config_trains_and_infers_on_the_sample_data(tmp_path, config):
    """A short run of each config of every model folder with the bundled sample
    data in place of full Omniglot."""
    sample = os.path.join(MODEL_DIR, "data", "sample_data")
    where, _ = paths(tmp_path)
    small = ["-o", f"runner.train_data_dir={sample}/train", "-o", f"runner.test_data_dir={sample}/test",
             "-o", "hyper_parameters.rotations=[0]", "-o", "runner.train_batch_size=2",
             "-o", "runner.train_batches_per_epoch=2", "-o", "runner.epochs=1", "-o", "runner.infer_episodes=2",
             "-o", "runner.infer_start_epoch=0", "-o", "runner.infer_end_epoch=1",
             "-o", f"runner.val_data_dir={sample}/test", "-o", "runner.val_episodes=2"]
    small += quick_run_overrides(os.path.join(ROOT, config), classes=20)
    for script in ("tools/trainer.py", "tools/infer.py"):
        result = run([script, "-m", config] + small + where, ROOT)
        assert result.returncode == 0, result.stderr
    assert "epoch 0: 2 test episodes" in result.stdout
    assert re.search(r"^  (acc|acc_step1): [\d.]+ \+- [\d.]+ %$", result.stdout, flags=re.M)


def test_infer_reports_progress_on_long_evaluations():
    """A progress line when an evaluation outlasts progress_seconds (0 here:
    after every batch but the last)."""
    from conftest import load_model_config
    from tools.utils.evaluation import evaluate_epoch
    from models.multitask.maml.omniglot_reader import RecDataset

    config, model_def = load_model_config(["runner.infer_episodes=12", "runner.infer_batch_size=4",
                                          "hyper_parameters.update_step_test=1"])
    model = model_def.create_model(config)
    lines = []
    rows = evaluate_epoch(model_def, model, RecDataset.from_config(config, "infer"), config,
                          say=lambda text, **_: lines.append(text), progress_seconds=0)
    assert lines == ["  4 of 12 episodes", "  8 of 12 episodes"]
    assert [r["metric"] for r in rows] == ["acc_step0", "acc_step1"] and rows[0]["episodes"] == 12


def test_visualdl_logs_training_and_test_curves(tmp_path):
    pytest.importorskip("visualdl")  # optional dependency; .ci/run installs it
    where, out = paths(tmp_path)
    for script in ("tools/trainer.py", "tools/infer.py"):
        result = run([script, "-m", "models/multitask/maml/config.yaml", "-o", "runner.use_visual=True"]
                     + SMALL + where, ROOT)
        assert result.returncode == 0, result.stderr
    from visualdl import LogReader

    scalars = {}  # the trainer and infer each write a record file (the same folder here)
    for path in glob.glob(os.path.join(out, "visualdl", "vdlrecords.*")):
        reader = LogReader(file_path=path)
        for tag in reader.get_tags()["scalar"]:
            scalars[tag] = [record.id for record in reader.get_data("scalar", tag)]
    assert {"train/loss", "train/acc_step1", "test/acc_step3"} <= set(scalars)
    assert scalars["train/loss"] == [1, 2, 3, 4, 5, 6]
    assert scalars["test/acc_step3"] == [3, 6]  # after epochs 0 and 1


def test_visualdl_missing_is_one_clear_line(tmp_path):
    fake = tmp_path / "fake" / "visualdl"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no visualdl here')\n")
    where, _ = paths(tmp_path)
    result = subprocess.run([sys.executable, "tools/trainer.py", "-m", "models/multitask/maml/config.yaml",
                             "-o", "runner.use_visual=True"] + SMALL + where, cwd=ROOT, capture_output=True,
                            text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(tmp_path / "fake")))
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: runner.use_visual is True but visualdl is not installed "
                                     "(pip install visualdl, or -o runner.use_visual=False)")


def test_validation_after_every_epoch_and_infer_of_the_best_epoch(tmp_path):
    """runner.val_data_dir: a validation line per epoch in train_log.jsonl and the
    output; runner.infer_best_epoch evaluates the epoch with the best one."""
    where, out = paths(tmp_path)
    val = ["-o", f"runner.val_data_dir={os.path.join(MODEL_DIR, 'data', 'sample_data', 'test')}",
           "-o", "runner.val_episodes=6"]
    train = run(["tools/trainer.py", "-m", "models/multitask/maml/config.yaml"] + SMALL + where + val, ROOT)
    assert train.returncode == 0, train.stderr
    assert len(re.findall(r"^validation: acc_step0: [\d.]+ \+- [\d.]+ %, acc_step1: ", train.stdout, re.M)) == 2
    records = [json.loads(line) for line in open(os.path.join(out, "train_log.jsonl"))]
    val_records = [r for r in records if "val" in r]
    assert [(r["epoch"], r["iteration"]) for r in val_records] == [(0, 3), (1, 6)]
    best = max(val_records, key=lambda r: (list(r["val"].values())[-1], r["epoch"]))["epoch"]  # after the last step
    infer = run(["tools/infer.py", "-m", "models/multitask/maml/config.yaml", "-o", "runner.infer_best_epoch=True"]
                + SMALL + where, ROOT)
    assert infer.returncode == 0, infer.stderr
    assert f"epoch {best} has the best validation result" in infer.stdout
    assert f"epoch {best}: 12 test episodes" in infer.stdout and f"epoch {1 - best}:" not in infer.stdout
    # MAML++'s protocol: the logits of the top epochs averaged per episode. An ensemble of one
    # is that epoch's own accuracy after the last step, on the same episodes.
    alone = run(["tools/infer.py", "-m", "models/multitask/maml/config.yaml", "-o", "runner.infer_ensemble_top=1"]
                + SMALL + where, ROOT)
    assert alone.returncode == 0, alone.stderr
    single = re.search(r"acc_step3: ([\d.]+) \+- ([\d.]+) %", infer.stdout).groups()
    assert re.search(r"acc_ensemble_of_1: ([\d.]+) \+- ([\d.]+) %", alone.stdout).groups() == single
    both = run(["tools/infer.py", "-m", "models/multitask/maml/config.yaml", "-o", "runner.infer_ensemble_top=2"]
               + SMALL + where, ROOT)
    assert both.returncode == 0, both.stderr
    assert f"the 2 epochs with the best validation results: {best}, {1 - best}" in both.stdout
    assert re.search(r"acc_ensemble_of_2: [\d.]+ \+- [\d.]+ %", both.stdout)
    saved = json.load(open(os.path.join(out, "infer_results.json")))
    assert list(saved["ensembles"]) == [f"{best},{1 - best}"] or len(saved["ensembles"]) == 2
    three = run(["tools/infer.py", "-m", "models/multitask/maml/config.yaml", "-o", "runner.infer_ensemble_top=3"]
                + SMALL + where, ROOT)
    assert three.returncode == 2 and "has validation results for 2 epochs" in three.stderr
    plain = run(["tools/trainer.py", "-m", "models/multitask/maml/config.yaml"] + SMALL +
                ["-o", f"runner.model_save_path={tmp_path / 'plain'}"], ROOT)
    assert plain.returncode == 0 and "validation:" not in plain.stdout
    none = run(["tools/infer.py", "-m", "models/multitask/maml/config.yaml", "-o", "runner.infer_best_epoch=True",
                "-o", f"runner.infer_load_path={tmp_path / 'plain'}"] + SMALL, ROOT)
    assert none.returncode == 2 and "holds no validation result" in none.stderr


def test_infer_that_evaluates_nothing_fails(tmp_path):
    where, out = paths(tmp_path)
    small = SMALL + ["-o", "runner.epochs=1", "-o", "runner.infer_end_epoch=1"]
    assert run(["tools/trainer.py", "-m", "models/multitask/maml/config.yaml"] + small + where, ROOT).returncode == 0
    with open(os.path.join(out, "0", "rec.pdparams"), "ab") as f:
        f.write(b"damage")
    infer = run(["tools/infer.py", "-m", "models/multitask/maml/config.yaml"] + small + where, ROOT)
    assert infer.returncode == 2 and "is corrupt (checksum mismatch); skipped" in infer.stdout
    assert infer.stderr.strip().endswith("nothing was evaluated")
