"""Data-parallel meta-training and evaluation with two CPU processes."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow  # end-to-end: runs the drivers or prepares data (python -m pytest -m "not slow" skips it)

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = "models/multitask/maml/config.yaml"
SMALL = ["-o", "runner.train_batch_size=4", "-o", "runner.train_batches_per_epoch=3", "-o", "runner.epochs=1",
         "-o", "runner.print_interval=1", "-o", "runner.infer_episodes=9", "-o", "runner.infer_start_epoch=0",
         "-o", "runner.infer_end_epoch=1", "-o", "runner.infer_batch_size=2",
         "-o", "hyper_parameters.bn_channel=16"]


def launch(args, log_dir, processes=2):
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(processes),
           "--log_dir", str(log_dir)] + args
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    logs = {r: open(os.path.join(log_dir, f"workerlog.{r}")).read()
            for r in range(processes) if os.path.exists(os.path.join(log_dir, f"workerlog.{r}"))}
    return result, logs


def single(args):
    return subprocess.run([sys.executable] + args, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_two_process_meta_gradient_equals_single_process_and_parameters_stay_identical(tmp_path):
    result, logs = launch([os.path.join(HERE, "dist_worker.py"), str(tmp_path)], tmp_path / "log")
    assert result.returncode == 0, logs
    assert single([os.path.join(HERE, "dist_worker.py"), str(tmp_path)]).returncode == 0
    one = np.load(tmp_path / "rank0_of1.npz")
    ranks = [np.load(tmp_path / f"rank{r}_of2.npz") for r in (0, 1)]
    grads = [k for k in one.files if k.startswith("grad")]
    assert len(grads) == 18
    for r in ranks:
        assert abs(float(r["loss"]) - float(one["loss"])) < 1e-12
        for k in grads:  # 2 tasks per process, summed = the 4-task meta-gradient
            np.testing.assert_allclose(r[k], one[k], rtol=1e-10, atol=1e-13)
    for k in ranks[0].files:
        if k.startswith("param"):
            assert np.array_equal(ranks[0][k], ranks[1][k])  # bit-identical across processes


def accuracy_lines(text):
    return re.findall(r"acc_step\d+: [\d.]+ \+- [\d.]+ %", text)


def test_readme_multiprocess_commands_train_and_infer_like_one_process(tmp_path):
    out = tmp_path / "ckpt"
    paths = ["-o", f"runner.model_save_path={out}", "-o", f"runner.infer_load_path={out}",
             "-o", "runner.use_fleet=True"]
    result, logs = launch(["tools/trainer.py", "-m", CONFIG] + SMALL + paths, tmp_path / "log_train")
    assert result.returncode == 0, logs
    assert "epoch: 0, batch_id: 3/3" in logs[0] and "epoch: 0, batch_id" not in logs[1]  # rank 0 logs
    assert (out / "0" / "meta.json").is_file()
    infer2, logs = launch(["tools/infer.py", "-m", CONFIG] + SMALL + paths, tmp_path / "log_infer")
    assert infer2.returncode == 0, logs
    assert "9 test episodes, " in logs[0] and "on 2 processes" in logs[0]
    infer1 = single(["tools/infer.py", "-m", CONFIG] + SMALL + paths)
    assert infer1.returncode == 0, infer1.stderr
    assert accuracy_lines(logs[0]) == accuracy_lines(infer1.stdout) and len(accuracy_lines(infer1.stdout)) == 4


def test_launching_several_processes_needs_use_fleet(tmp_path):
    result, logs = launch(["tools/trainer.py", "-m", CONFIG] + SMALL +
                          ["-o", f"runner.model_save_path={tmp_path / 'x'}"], tmp_path / "log")
    assert result.returncode != 0
    assert "launched with 2 processes but runner.use_fleet is False" in logs[0]
