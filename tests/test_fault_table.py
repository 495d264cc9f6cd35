"""The fault-injection table, for every learner (tools/README.md, "What survives
which fault"): each learner's sample config is trained and evaluated by the
shared drivers while its writers meet a kill, Ctrl-C or SIGTERM, a second
writer, a damaged file left by a crash, a full disk and a read-only target
(tests/inject_fault.py). Every fault ends in one line naming the path and a
non-zero exit, or in the documented recovery, and nothing saved before is lost.
MAML's drivers have the deeper tests (test_reliability.py, test_run_safety.py)."""
import glob
import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import ROOT, quick_run_overrides
from models.lib import checkpoint
from test_run_safety import lock_holder, one_line, wait_for
from test_reliability import losses, sigint_as_in_a_terminal

pytestmark = pytest.mark.slow

LEARNERS = sorted(os.path.basename(os.path.dirname(p))
                  for p in glob.glob(os.path.join(ROOT, "models", "multitask", "*", "config.yaml")))
SHORT = ["-o", "runner.train_batches_per_epoch=2", "-o", "runner.print_interval=1",
         "-o", "runner.checkpoint_interval=0", "-o", "runner.infer_episodes=4"]


def driver(script, learner, out, *extra, inject=(), wait=True):
    """Run tools/SCRIPT.py on LEARNER's sample config with its run folder OUT,
    through tests/inject_fault.py when INJECT = (pattern, errno name, allowed)."""
    config = f"models/multitask/{learner}/config.yaml"
    args = ([sys.executable] + (["tests/inject_fault.py", *map(str, inject)] if inject else [])
            + [f"tools/{script}.py", "-m", config] + quick_run_overrides(os.path.join(ROOT, config), 5) + SHORT
            + ["-o", f"runner.model_save_path={out}", "-o", f"runner.infer_load_path={out}"] + list(extra))
    if not wait:
        return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=sigint_as_in_a_terminal)
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          preexec_fn=sigint_as_in_a_terminal)  # CI runs the suite in the background


def epochs(out):
    return checkpoint.epochs_in(str(out))


def snapshot(out):
    """Every epoch checkpoint's files and bytes: what a fault must not change."""
    return {path: open(path, "rb").read() for e in epochs(out) for path in glob.glob(f"{out}/{e}/*")}


def last_line(stderr):
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines and "Traceback" not in stderr, stderr
    return lines[-1]


@pytest.mark.parametrize("learner", LEARNERS)
def test_the_writers_of_every_learner_survive_each_fault(tmp_path, learner):
    out = tmp_path / "run"
    forever = ["-o", "runner.epochs=100000"]

    # Killed (SIGKILL) while a second trainer tries the same folder: the second stops,
    # naming the holder; the killed run's complete epochs stay and its lock is taken over.
    first = driver("trainer", learner, out, *forever, wait=False)
    assert wait_for(lambda: len(epochs(out)) >= 2 or first.poll() is not None), first.communicate()
    second = driver("trainer", learner, out, "-o", "runner.epochs=3")
    assert second.returncode == 2 and "is in use by another trainer" in one_line(second.stderr)
    first.kill()
    first.wait()
    kept = snapshot(out)

    # Ctrl-C or SIGTERM: resumed, then stopped with one line naming the newest checkpoint.
    sig, code = (signal.SIGINT, 130) if LEARNERS.index(learner) % 2 else (signal.SIGTERM, 143)
    newest = epochs(out)[-1]
    resumed = driver("trainer", learner, out, *forever, wait=False)
    assert wait_for(lambda: epochs(out)[-1] > newest or resumed.poll() is not None)
    resumed.send_signal(sig)
    stdout, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == code, stderr
    assert one_line(stderr).startswith("interrupted at iteration ") and "resumed from" in stdout
    assert lock_holder(out) is None
    assert all(open(path, "rb").read() == data for path, data in kept.items())

    # A checkpoint cut short by a crash, then a full disk at the next save: the damaged
    # epoch is named and the one before used; the save fails in one line, nothing half-written.
    newest = epochs(out)[-1]
    params = out / str(newest) / "rec.pdparams"
    os.truncate(params, os.path.getsize(params) // 2)
    full = driver("trainer", learner, out, "-o", f"runner.epochs={newest + 3}",
                  inject=("rec.pdparams", "ENOSPC", 0))
    assert full.returncode == 2, full.stderr
    assert str(params) in full.stdout + full.stderr
    line = last_line(full.stderr)
    assert line.startswith("error: cannot write the checkpoint of epoch ") and "No space left on device" in line
    assert all(checkpoint.verify(str(out / str(e))) for e in epochs(out) if e != newest)
    assert not [name for name in os.listdir(out) if name.startswith(".tmp")]

    # The training log read-only: one line naming it, the checkpoints untouched.
    kept = snapshot(out)
    denied = driver("trainer", learner, out, "-o", f"runner.epochs={newest + 3}",
                    inject=("train_log.jsonl", "EACCES", 0))
    assert denied.returncode == 2 and "train_log.jsonl" in one_line(denied.stderr)
    assert snapshot(out) == kept

    # infer_results.json empty after a crash: replaced; then a full disk: kept as it was.
    good = [e for e in epochs(out) if e != newest][-1]
    results = out / "infer_results.json"
    results.write_text("")
    one_epoch = ["-o", f"runner.infer_start_epoch={good}", "-o", f"runner.infer_end_epoch={good + 1}"]
    infer = driver("infer", learner, out, *one_epoch)
    assert infer.returncode == 0, infer.stderr
    written = results.read_bytes()
    assert str(good) in json.loads(written)["epochs"]
    full = driver("infer", learner, out, *one_epoch, inject=("infer_results*", "ENOSPC", 0))
    assert full.returncode == 2 and "No space left on device" in one_line(full.stderr)
    assert results.read_bytes() == written
    assert not [name for name in os.listdir(out) if ".tmp" in name]


def run_with_a_log(tmp_path):
    """A run folder holding only a three-line training log: what plot.py draws."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "train_log.jsonl").write_text("".join(
        json.dumps({"epoch": 0, "iteration": i, "loss": 1.0 / i, "metrics": {"acc": 0.1 * i}}) + "\n"
        for i in range(1, 4)))
    return out


def plot_command(out, *extra, inject=()):
    return ([sys.executable] + (["tests/inject_fault.py", *map(str, inject)] if inject else [])
            + ["tools/plot.py", "-m", "models/multitask/maml/config.yaml", "-o", f"runner.model_save_path={out}",
               "-o", f"runner.infer_load_path={out}"] + list(extra))


def plot(out, *extra, inject=()):
    return subprocess.run(plot_command(out, *extra, inject=inject), cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_plots_are_replaced_whole_or_not_at_all(tmp_path):
    pytest.importorskip("matplotlib")
    out = run_with_a_log(tmp_path)
    assert plot(out).returncode == 0
    drawn = (out / "train_curve.png").read_bytes()
    full = plot(out, inject=("train_curve.png*", "ENOSPC", 0))
    assert full.returncode == 2
    assert one_line(full.stderr) == (f"error: cannot write the plot {out / 'train_curve.png'}: No space left on "
                                     f"device; the earlier file is kept")
    assert (out / "train_curve.png").read_bytes() == drawn
    assert sorted(os.listdir(out)) == ["train_curve.png", "train_log.jsonl"]
    (tmp_path / "a_file").write_text("")
    nowhere = plot(out, "--out", str(tmp_path / "a_file" / "plots"))
    assert nowhere.returncode == 2 and str(tmp_path / "a_file" / "plots") in one_line(nowhere.stderr)


def test_a_run_folder_that_cannot_be_created_is_one_line_naming_the_key(tmp_path):
    (tmp_path / "a_file").write_text("")
    result = driver("trainer", "maml", tmp_path / "a_file" / "run")
    assert result.returncode == 2
    assert one_line(result.stderr).startswith(f"error: runner.model_save_path {tmp_path / 'a_file' / 'run'}: "
                                              f"cannot create the folder")


def test_visualdl_logs_that_cannot_be_written(tmp_path):
    """Not writable at the start: one line naming the folder and the key. A disk that
    fills later: VisualDL warns and drops its records, training goes on and
    train_log.jsonl keeps every number (documented in tools/README.md)."""
    pytest.importorskip("visualdl")
    visual = ["-o", "runner.use_visual=True", "-o", "runner.epochs=1"]
    denied = driver("trainer", "maml", tmp_path / "denied", *visual, inject=("vdlrecords*", "EACCES", 0))
    assert denied.returncode == 2
    assert one_line(denied.stderr) == (f"error: runner.use_visual: cannot write VisualDL's logs to "
                                       f"{tmp_path / 'denied' / 'visualdl'}: Permission denied")
    full = driver("trainer", "maml", tmp_path / "full", *visual, inject=("vdlrecords*", "ENOSPC", 1))
    assert full.returncode == 0 and "No space left on device" in full.stdout + full.stderr
    assert epochs(tmp_path / "full") == [0] and len(losses(tmp_path / "full")) == 2


@pytest.mark.parametrize("name", [".trainer.lock", "config_resolved.yaml*"])
@pytest.mark.parametrize("code, says", [("EACCES", "Permission denied"), ("ENOSPC", "No space left on device")])
def test_the_run_folder_s_first_writes_fail_in_one_line_before_training(tmp_path, name, code, says):
    """The lock and the resolved config are written before any training: a read-only or
    full run folder stops there, naming the file, with no checkpoint and no log."""
    out = tmp_path / "run"
    result = driver("trainer", "maml", out, inject=(name, code, 0))
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert name.rstrip("*") in line and says in line and str(out) in line
    assert not epochs(out) and not os.path.exists(out / "train_log.jsonl")


def killed_pid(out):
    """The PID in the temporary file a killed writer left in OUT (the first one)."""
    names = [name for name in os.listdir(out) if ".tmp-" in name]
    return names[0].rsplit("-", 1)[1] if names else None


def test_a_kill_or_ctrl_c_while_infer_writes_keeps_the_previous_results(tmp_path):
    out = tmp_path / "run"
    assert driver("trainer", "maml", out, "-o", "runner.epochs=1").returncode == 0
    assert driver("infer", "maml", out, "-o", "runner.infer_start_epoch=0", "-o", "runner.infer_end_epoch=1").returncode == 0
    previous = (out / "infer_results.json").read_bytes()
    killed = driver("infer", "maml", out, "-o", "runner.infer_start_epoch=0", "-o", "runner.infer_end_epoch=1",
                    inject=("infer_results.json.tmp-*", "SIGKILL", 0))
    assert killed.returncode == -signal.SIGKILL
    assert (out / "infer_results.json").read_bytes() == previous
    assert [name for name in os.listdir(out) if ".tmp" in name] == [f"infer_results.json.tmp-{killed_pid(out)}"]
    interrupted = driver("infer", "maml", out, "-o", "runner.infer_start_epoch=0", "-o", "runner.infer_end_epoch=1",
                         inject=("infer_results.json.tmp-*", "SIGINT", 0))
    assert interrupted.returncode == 130, interrupted.stderr
    assert "Traceback" not in interrupted.stderr and one_line(interrupted.stderr)
    assert (out / "infer_results.json").read_bytes() == previous
    assert not [name for name in os.listdir(out) if ".tmp" in name]  # its own and the killed writer's removed
    again = driver("infer", "maml", out, "-o", "runner.infer_start_epoch=0", "-o", "runner.infer_end_epoch=1")
    assert again.returncode == 0 and json.loads((out / "infer_results.json").read_text())


@pytest.mark.parametrize("fault, code", [("ENOSPC", 2), ("SIGINT", 130)])
def test_a_mid_epoch_save_that_fails_or_is_interrupted_keeps_the_epoch_checkpoints(tmp_path, fault, code):
    """A full disk, or Ctrl-C in the middle of the in_progress write: one line, the epoch
    checkpoints byte for byte as they were, nothing half-written, and a rerun resumes."""
    out = tmp_path / "run"
    often = ["-o", "runner.train_batches_per_epoch=4", "-o", "runner.checkpoint_interval=1"]
    assert driver("trainer", "maml", out, *often, "-o", "runner.epochs=1").returncode == 0
    kept = snapshot(out)
    failed = driver("trainer", "maml", out, *often, "-o", "runner.epochs=2", inject=("rec.pdparams", fault, 0))
    assert failed.returncode == code, failed.stderr
    line = one_line(failed.stderr)
    if fault == "ENOSPC":
        assert line.startswith(f"error: cannot write the checkpoint of epoch 1 to {out / 'in_progress'}: "
                               f"No space left on device")
        assert not os.path.exists(out / "in_progress")
    assert snapshot(out) == kept
    assert not [name for name in os.listdir(out) if name.startswith(".tmp")]
    resumed = driver("trainer", "maml", out, *often, "-o", "runner.epochs=2")
    assert resumed.returncode == 0, resumed.stderr
    assert epochs(out) == [0, 1]


def test_a_plot_killed_while_writing_leaves_the_earlier_file(tmp_path):
    pytest.importorskip("matplotlib")
    out = run_with_a_log(tmp_path)
    assert plot(out).returncode == 0
    drawn = (out / "train_curve.png").read_bytes()
    killed = plot(out, inject=("train_curve.png.tmp-*", "SIGKILL", 0))
    assert killed.returncode == -signal.SIGKILL
    assert (out / "train_curve.png").read_bytes() == drawn
    assert plot(out).returncode == 0
    assert sorted(os.listdir(out)) == ["train_curve.png", "train_log.jsonl"]  # the killed writer's temporary removed


def test_a_resolved_config_cut_short_by_a_crash_is_rewritten(tmp_path):
    out = tmp_path / "run"
    assert driver("trainer", "maml", out, "-o", "runner.epochs=1").returncode == 0
    (out / "config_resolved.yaml").write_text("runner: {seed: ")
    again = driver("trainer", "maml", out, "-o", "runner.epochs=2")
    assert again.returncode == 0, again.stderr
    assert "runner:" in (out / "config_resolved.yaml").read_text() and epochs(out)[-1] == 1


def test_two_plots_of_one_folder_at_once_both_finish_with_a_whole_file(tmp_path):
    pytest.importorskip("matplotlib")
    out = run_with_a_log(tmp_path)
    both = [subprocess.Popen(plot_command(out), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(2)]
    assert [p.wait(timeout=120) for p in both] == [0, 0]
    assert (out / "train_curve.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert sorted(os.listdir(out)) == ["train_curve.png", "train_log.jsonl"]
