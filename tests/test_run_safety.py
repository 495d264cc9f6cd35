"""One trainer per run folder, write errors, memory bounds, data checked at start,
clean interrupts, mid-epoch checkpoints and the chance-loss warning."""
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, SAMPLE_DATA
from test_reliability import CONFIG, TINY, losses, sigint_as_in_a_terminal, trainer

from tools import infer as infer_tool
from models.lib import checkpoint
from tools.utils import run_lock
from tools.utils.watch import ChanceWatch

pytestmark = pytest.mark.slow  # end-to-end: runs the drivers or prepares data (python -m pytest -m "not slow" skips it)

LONG = ["-o", "runner.epochs=100000"]  # never ends by itself: a signal cannot arrive after a normal exit


def wait_for(condition, seconds=240):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def one_line(stderr):
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def lock_holder(out):
    try:
        return json.loads(open(out / run_lock.LOCK_NAME).read() or "null")
    except (OSError, ValueError):
        return None


def test_second_trainer_stops_naming_the_holder_and_infer_may_read(tmp_path):
    out = tmp_path / "run"
    first = trainer(out, *LONG, wait=False)
    try:
        assert wait_for(lambda: os.path.isdir(out / "0") and lock_holder(out))
        second = trainer(out, *LONG)
        assert second.returncode == 2
        line = one_line(second.stderr)
        assert f"is in use by another trainer (PID {first.pid} on host" in line
        assert "runner.model_save_path" in line
        read = trainer(out, "-o", "runner.infer_start_epoch=0", "-o", "runner.infer_end_epoch=1",
                       script="tools/infer.py")
        assert read.returncode == 0, read.stderr
        assert "epoch 0: 4 test episodes" in read.stdout
    finally:
        first.kill()
        first.wait()


def test_the_lock_of_a_killed_trainer_is_taken_over(tmp_path):
    out = tmp_path / "run"
    os.makedirs(out)
    with open(out / run_lock.LOCK_NAME, "w") as f:  # what a SIGKILLed trainer leaves: content, no flock
        json.dump({"pid": 999999, "host": "elsewhere", "started": "2026-01-01T00:00:00"}, f)
    result = trainer(out, "-o", "runner.epochs=1")
    assert result.returncode == 0, result.stderr
    assert "no longer running (PID 999999 on host elsewhere" in result.stdout
    assert lock_holder(out) is None  # released at the end


def test_a_failed_checkpoint_write_names_it_and_leaves_nothing_behind(tmp_path, monkeypatch):
    import paddle

    layer = paddle.nn.Linear(2, 2)
    saved = checkpoint.save(str(tmp_path), 0, layer, None, {"epoch": 0}, {})
    real_save = paddle.save

    def disk_full(obj, path, *args, **kwargs):
        real_save(obj, path, *args, **kwargs)  # a partial file first, as a full disk leaves
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(paddle, "save", disk_full)
    with pytest.raises(checkpoint.CheckpointWriteError) as error:
        checkpoint.save(str(tmp_path), 1, layer, None, {"epoch": 1}, {})
    assert str(error.value).startswith(f"cannot write the checkpoint of epoch 1 to {tmp_path / '1'}: "
                                       f"No space left on device")
    assert sorted(os.listdir(tmp_path)) == ["0"]
    checkpoint.verify(saved)


def small_filesystem(path, size):
    os.makedirs(path, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_disk_full_on_a_small_filesystem(tmp_path):
    mount = tmp_path / "small"
    if not small_filesystem(mount, "300k"):  # a TINY checkpoint is about 110 kB
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        out = mount / "run"
        result = trainer(out, "-o", "runner.epochs=5")
        assert result.returncode == 2
        line = one_line(result.stderr)
        assert "No space left on device" in line and "cannot write" in line
        assert str(out) in line
        kept = checkpoint.epochs_in(str(out))
        assert kept and all(checkpoint.verify(str(out / str(e))) for e in kept)
        assert not [n for n in os.listdir(out) if n.startswith(".tmp")]
    finally:
        subprocess.run(["umount", str(mount)])


def test_leftovers_of_killed_runs_are_cleaned_and_a_checkpoint_between_renames_restored(tmp_path):
    out = tmp_path / "run"
    assert trainer(out, "-o", "runner.epochs=2").returncode == 0
    os.replace(out / "1", out / ".old-1-4242")  # killed between the two renames of a rerun's save
    os.makedirs(out / ".tmp-2-4242")
    open(out / "train_log.jsonl.tmp", "w").close()
    result = trainer(out, "-o", "runner.epochs=3")
    assert result.returncode == 0, result.stderr
    assert f"restored checkpoint {out / '1'}" in result.stdout
    assert "resumed from" in result.stdout and "(epoch 1, 4 of 4 batches done" in result.stdout
    assert sorted(n for n in os.listdir(out) if n.startswith(".") and n != run_lock.LOCK_NAME) == []
    assert not os.path.exists(out / "train_log.jsonl.tmp")


def test_infer_write_error_keeps_the_old_results_and_no_temporary_file(tmp_path, monkeypatch):
    out = tmp_path / "infer_results.json"
    out.write_text('{"old": 1}')

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(infer_tool.json, "dump", disk_full)
    with pytest.raises(OSError) as error:
        infer_tool.write_results(str(out), {"epochs": {"3": []}})
    assert f"cannot write the results to {out}: No space left on device" in str(error.value)
    assert out.read_text() == '{"old": 1}'
    assert os.listdir(tmp_path) == ["infer_results.json"]


def test_two_infers_on_one_folder_both_keep_what_they_evaluated(tmp_path):
    """Both read the file before either wrote (epochs 0 and 1 evaluated at once in two
    terminals): the second write merges into the first's, under the folder's lock."""
    out = tmp_path / "infer_results.json"
    settings = {"hyper_parameters": {"n_way": 5}}
    first = {"settings": settings, "epochs": {"0": [{"metric": "acc", "mean": 0.9}]}}
    second = {"settings": settings, "epochs": {"1": [{"metric": "acc", "mean": 0.95}]}}
    infer_tool.write_results(str(out), first)
    infer_tool.write_results(str(out), second)
    assert json.loads(out.read_text()) == {"settings": settings, "epochs": {**first["epochs"], **second["epochs"]}}
    assert os.listdir(tmp_path) == ["infer_results.json"]


def test_a_refused_infer_leaves_the_earlier_results_where_they_were(tmp_path):
    """Results of other settings are moved aside only when new results are written:
    an infer refused after reading them (a checkpoint made for another network)
    leaves the file in place; a successful one moves it aside."""
    out = tmp_path / "out"
    assert trainer(out, "-o", "runner.epochs=1").returncode == 0
    one_epoch = ["-o", "runner.infer_start_epoch=0", "-o", "runner.infer_end_epoch=1"]
    assert trainer(out, *one_epoch, script="tools/infer.py").returncode == 0
    earlier = (out / "infer_results.json").read_text()
    refused = trainer(out, *one_epoch, "-o", "hyper_parameters.n_way=3", script="tools/infer.py")
    assert refused.returncode == 2 and "was made for n_way = 5" in refused.stderr
    assert (out / "infer_results.json").read_text() == earlier
    assert not [n for n in os.listdir(out) if n.startswith("infer_results.") and n != "infer_results.json"]
    other = trainer(out, *one_epoch, "-o", "hyper_parameters.update_step_test=2", script="tools/infer.py")
    assert other.returncode == 0, other.stderr
    aside = [n for n in os.listdir(out) if n.startswith("infer_results.") and n != "infer_results.json"]
    assert len(aside) == 1 and (out / aside[0]).read_text() == earlier
    assert f"results of other settings moved to {out / aside[0]}" in other.stdout


@pytest.mark.parametrize("override, key", [
    ("hyper_parameters.imgsize=1024", "images of 1024x1024"),
    ("runner.train_batch_size=100000", "one training batch (runner.train_batch_size = 100000"),
    ("hyper_parameters.imgsize=100000", "hyper_parameters.imgsize = 100000, expected an integer from 16 to 1024"),
    (f"runner.test_data_dir={SAMPLE_DATA}/missing", "runner.test_data_dir: data directory"),
    ("hyper_parameters.n_way_test=31", "runner.test_data_dir: "),
    ("hyper_parameters.k_query_test=20", "fewer than the 21 (shots + queries)"),
    (f"runner.val_data_dir={SAMPLE_DATA}/missing", "runner.val_data_dir: data directory"),
    ("runner.infer_start_epoch=3", "runner.infer_end_epoch = 2 must be greater than runner.infer_start_epoch = 3"),
    ("runner.infer_best_epoch=True", "runner.infer_best_epoch selects epochs by validation, but runner.val_data_dir"),
    ("runner.infer_batch_size=8000 runner.infer_episodes=8000",  # not after an epoch, at the first validation
     "one evaluation batch (runner.infer_batch_size = 8000"),
])
def test_impossible_configs_stop_before_anything_is_written(tmp_path, override, key):
    out = tmp_path / "run"
    result = trainer(out, *[a for o in override.split() for a in ("-o", o)])
    assert result.returncode == 2
    assert key in one_line(result.stderr)
    assert not os.path.exists(out)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_is_one_line_saying_what_is_kept(tmp_path, sig, code):
    out = tmp_path / "run"
    proc = trainer(out, *LONG, wait=False)
    assert wait_for(lambda: os.path.isdir(out / "1") and max(losses(out), default=0) >= 10)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code
    line = one_line(stderr.decode())
    assert line.startswith("interrupted at iteration ")
    assert "the newest checkpoint is epoch " in line and line.endswith("rerun the same command to resume")
    assert lock_holder(out) is None
    again = trainer(out, "-o", "runner.epochs=4")
    assert again.returncode == 0 and "resumed from" in again.stdout


def test_interrupt_under_distributed_launch(tmp_path):
    out, logs = tmp_path / "run", tmp_path / "log"
    args = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(logs),
            "tools/trainer.py", "-m", CONFIG] + TINY + LONG + [
        "-o", "runner.use_fleet=True", "-o", f"runner.model_save_path={out}"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=sigint_as_in_a_terminal)
    try:
        assert wait_for(lambda: os.path.isdir(out / "1"))
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: every process of the terminal's group
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    rank0, rank1 = (open(logs / f"workerlog.{r}").read() for r in (0, 1))
    assert "Traceback" not in rank0 and "Traceback" not in rank1
    assert rank0.strip().splitlines()[-1].startswith("interrupted at iteration ")


def test_mid_epoch_checkpoint_resumes_exactly_without_repeated_log_lines(tmp_path):
    # 100 batches an epoch: epoch 1 must still be running when the poll below sees its first state
    per_epoch = ["-o", "runner.train_batches_per_epoch=100", "-o", "runner.epochs=3"]
    straight = tmp_path / "straight"
    assert trainer(straight, *per_epoch).returncode == 0
    killed = tmp_path / "killed"
    proc = trainer(killed, *per_epoch, "-o", "runner.checkpoint_interval=2", wait=False)

    def mid_epoch_saved():
        try:  # the trainer may be replacing the state while it is read
            found = checkpoint.in_progress(str(killed), warn=lambda _: None)
        except (OSError, ValueError):
            return False
        return found is not None and found[1]["epoch"] == 1

    assert wait_for(mid_epoch_saved, seconds=240)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.isdir(killed / "1")  # killed inside epoch 1: only the in_progress state has it
    resumed = trainer(killed, *per_epoch, "-o", "runner.checkpoint_interval=2")
    assert resumed.returncode == 0, resumed.stderr
    assert re.search(r"resumed from \S+in_progress \(epoch 1, \d+ of 100 batches done", resumed.stdout)
    assert losses(killed) == losses(straight)
    iterations = [json.loads(line)["iteration"] for line in open(killed / "train_log.jsonl")]
    assert iterations == list(range(1, 301))  # each once, in order
    assert not os.path.exists(killed / checkpoint.IN_PROGRESS)  # gone once its epoch is saved


def test_chance_warning_after_two_epochs_at_chance():
    watch = ChanceWatch(1.6)
    for epoch, losses_of_epoch in enumerate([[1.7, 1.6], [1.58, 1.65], [1.6]]):
        for loss in losses_of_epoch:
            watch.add(loss)
        warning = watch.end_epoch(epoch)
        assert (warning is not None) == (epoch >= 1)
    watch.add(1.2)
    assert watch.end_epoch(3) is None  # learning again


def test_a_model_without_a_chance_loss_is_never_warned_about():
    watch = ChanceWatch(None)  # the chance_loss hook may return None (no meaningful chance value)
    for epoch in range(3):
        watch.add(5.0)
        assert watch.end_epoch(epoch) is None


def test_diverged_run_warns(tmp_path):
    result = trainer(tmp_path / "run", "-o", "runner.epochs=3",
                     "-o", "hyper_parameters.meta_optimizer.learning_rate=1000000")
    assert result.returncode == 0, result.stderr
    assert "warning: the training loss has stayed at or above its chance value 1.609 for 2 epochs" in result.stdout
